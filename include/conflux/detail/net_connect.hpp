#pragma once

// The machinery of `conflux::connect` and `connect_unix` (net.hpp): the non-blocking connect
// and the wait for its handshake. The system calls are the backend's (detail/socket.hpp).

#include <conflux/event_loop.hpp>
#include <conflux/sleep.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/io_watch.hpp>
#include <conflux/detail/socket.hpp>
#include <conflux/detail/system_error.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <stop_token>
#include <string>

namespace conflux::detail {

// Connects `fd` to `address`, waiting on `loop` for the handshake to finish.
inline task<void> connect_socket(int fd, const socket_address& address, event_loop& loop,
                                 const std::string& object, std::stop_token token) {
    using namespace std::chrono_literals;
    std::chrono::milliseconds backoff = 1ms;
    for (;;) {
        const int err = connect_start(fd, address);
        if (err == 0) co_return;
        // A Unix listener with a full queue: retry on a timer (there is no readiness to wait
        // for on an unconnected Unix socket).
        if (err == EAGAIN && address.family() == AF_UNIX) {
            co_await sleep_for(backoff, token);
            backoff = std::min<std::chrono::milliseconds>(backoff * 2, 100ms);
            continue;
        }
        if (err != EINPROGRESS) throw_system_error(err, "connect", object);
        break;
    }
    io_watch watch(loop, fd);
    for (;;) {
        co_await watch.writable(token);
        const int err = connect_outcome(fd);
        if (err == 0) co_return;
        // Not connected yet: the wake-up was a remembered edge. Wait for the next one.
        if (err != EINPROGRESS) throw_system_error(err, "connect", object);
    }
}

} // namespace conflux::detail
