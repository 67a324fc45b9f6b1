#pragma once

// Rows that more than one benchmark program measures: conflux's channel ping-pong (beside a
// condition variable in bench_threads, beside Asio's channel in bench_peers) and the
// hand-written posix_spawn that the process rows and the spawn series take as their baseline.

#include <conflux/channel.hpp>
#include <conflux/run.hpp>

#include <cstddef>
#include <cstdlib>
#include <thread>

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace bench {

/// `n` round trips of a value between two threads over two channels of capacity 1.
inline void channel_ping_pong(std::size_t n) {
    conflux::channel<std::size_t> ping(1);
    conflux::channel<std::size_t> pong(1);
    std::thread echo([&] {
        conflux::run([&]() -> conflux::task<> {
            while (auto v = co_await ping.receive()) co_await pong.send(*v);
        }());
    });
    conflux::run([&]() -> conflux::task<> {
        for (std::size_t i = 0; i < n; ++i) {
            co_await ping.send(i);
            co_await pong.receive();
        }
        ping.close();
    }());
    echo.join();
}

// posix_spawn with three pipes, reading stdout/stderr to EOF, then waitpid: what a careful
// hand-written exec does.
inline pid_t raw_spawn(const char* path, char* const* argv, int& out, int& err, int& in) {
    int p0[2], p1[2], p2[2];
    if (::pipe2(p0, O_CLOEXEC) || ::pipe2(p1, O_CLOEXEC) || ::pipe2(p2, O_CLOEXEC)) std::abort();
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p0[0], 0);
    posix_spawn_file_actions_adddup2(&fa, p1[1], 1);
    posix_spawn_file_actions_adddup2(&fa, p2[1], 2);
    pid_t pid;
    if (posix_spawn(&pid, path, &fa, nullptr, argv, environ) != 0) std::abort();
    posix_spawn_file_actions_destroy(&fa);
    ::close(p0[0]);
    ::close(p1[1]);
    ::close(p2[1]);
    in = p0[1];
    out = p1[0];
    err = p2[0];
    return pid;
}

/// One `/bin/true` through raw_spawn, both output pipes read to the end, then waitpid.
inline void raw_true_once() {
    char arg0[] = "/bin/true";
    char* argv[] = {arg0, nullptr};
    int out, err, in;
    pid_t pid = raw_spawn("/bin/true", argv, out, err, in);
    ::close(in);
    char buf[256];
    while (::read(out, buf, sizeof buf) > 0) {
    }
    while (::read(err, buf, sizeof buf) > 0) {
    }
    ::close(out);
    ::close(err);
    int st;
    ::waitpid(pid, &st, 0);
}

} // namespace bench
