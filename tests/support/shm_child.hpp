#pragma once

// Starting tests/helpers/shm_child.cpp, the other process of the shared-memory tests.

#include <conflux/shared_buffer.hpp>

#include "support/test_support.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include <spawn.h>
#include <unistd.h>

extern char** environ;

namespace conflux_test {

/// Starts the shm_child helper in `mode`, with a duplicate of `memory`'s fd that it inherits
/// (the memfd itself stays close-on-exec), its size and `n` on the command line. Started
/// with posix_spawn, not through conflux's own process layer, so these tests depend only on
/// shared_buffer.
inline pid_t start_shm_child(const conflux::shared_buffer& memory, const std::string& mode,
                             std::uint64_t n = 0) {
    const int target = memory.fd() == 100 ? 101 : 100;
    const std::string path = (helper_dir() / "conflux_shm_child").string();
    const std::string fd_arg = std::to_string(target);
    const std::string size_arg = std::to_string(memory.size());
    const std::string n_arg = std::to_string(n);
    std::vector<char*> argv = {
        const_cast<char*>(path.c_str()),   const_cast<char*>(mode.c_str()),
        const_cast<char*>(fd_arg.c_str()), const_cast<char*>(size_arg.c_str()),
        const_cast<char*>(n_arg.c_str()),  nullptr};
    posix_spawn_file_actions_t actions;
    ::posix_spawn_file_actions_init(&actions);
    // dup2 gives the child a copy without close-on-exec.
    ::posix_spawn_file_actions_adddup2(&actions, memory.fd(), target);
    pid_t pid = -1;
    const int err = ::posix_spawn(&pid, path.c_str(), &actions, nullptr, argv.data(), environ);
    ::posix_spawn_file_actions_destroy(&actions);
    REQUIRE_MESSAGE(err == 0, "posix_spawn " << path << ": " << err);
    return pid;
}

} // namespace conflux_test
