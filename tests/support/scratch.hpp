#pragma once

// What the process-level tests share: a scratch directory, the leak probe that checks a test
// left no descriptor open and no child behind, and waits for a process to be gone.

#include "support/test_support.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <signal.h>
#include <stdlib.h>
#include <sys/types.h>

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

/// Whether `pid` still exists (a zombie does).
inline bool alive(pid_t pid) { return ::kill(pid, 0) == 0; }

/// `sh -c "sleep 5 & echo $!"`: the shell exits at once, its background `sleep` keeps the
/// pipes open; the shell prints the sleeper's pid.
inline constexpr const char* background_sleeper = "sleep 5 & echo $!";

/// Waits (a bounded while) for `pid` to be gone, or a zombie; reparented grandchildren are
/// reaped by init.
inline bool gone_within(pid_t pid, std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (alive(pid) && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!alive(pid)) return true;
    std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    std::getline(stat, line);
    const auto close = line.rfind(')');
    return close != std::string::npos && line.size() > close + 2 && line[close + 2] == 'Z';
}

} // namespace conflux_test
