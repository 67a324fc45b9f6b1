#pragma once

// What the process-level tests share: a scratch directory, and the leak probe that checks a
// test left no descriptor open and no child behind.

#include "support/test_support.hpp"

#include <doctest/doctest.h>

#include <filesystem>
#include <string>
#include <system_error>
#include <vector>

#include <stdlib.h>

namespace conflux_test {

/// A fresh directory under /tmp, removed with everything in it at the end of the scope.
struct temp_dir {
    std::filesystem::path path;
    temp_dir() {
        char tmpl[] = "/tmp/conflux_test_XXXXXX";
        path = ::mkdtemp(tmpl);
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
};

/// The leak probe: at the end of its scope, the same descriptors are open as at its start, and
/// no child is left, reaped or not.
struct no_leaks {
    std::vector<std::string> fds_before = open_fds();
    no_leaks() = default;
    no_leaks(const no_leaks&) = delete;
    no_leaks& operator=(const no_leaks&) = delete;
    ~no_leaks() {
        CHECK(open_fds() == fds_before);
        CHECK(zombie_children().empty());
        CHECK(no_children_left());
    }
};

} // namespace conflux_test
