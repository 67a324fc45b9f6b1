#pragma once

// The two socket operations of the loop backend besides reads and writes (detail/stream_io.hpp),
// as operations that complete: a connect that ends connected, an accept that ends with a
// connection. Here they are built from the backend's non-blocking calls (detail/socket.hpp)
// and waits for readiness; a completion-port backend would issue them and await the result.

#include <conflux/event_loop.hpp>
#include <conflux/sleep.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/io_watch.hpp>
#include <conflux/detail/socket.hpp>
#include <conflux/detail/system_error.hpp>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
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

/// Accepts the next connection on the non-blocking `listener`, watched by `watch`: waits while
/// none is pending, retries errors that concern one aborted connection, and backs off (1 ms
/// doubling to 100 ms, counted in `backoffs`) while descriptors or memory run out. Throws
/// `std::system_error` naming `object` for any other error.
inline task<accepted> accept_connection(int listener, io_watch& watch, const std::string& object,
                                        std::uint64_t& backoffs, std::stop_token token) {
    using namespace std::chrono_literals;
    std::chrono::milliseconds backoff = 1ms;
    for (;;) {
        accepted a = accept_some(listener);
        if (a.fd) co_return a;
        if (a.error == EAGAIN || a.error == EWOULDBLOCK) {
            co_await watch.readable(token);
        } else if (accept_error_is_transient(a.error)) {
            continue;
        } else if (accept_error_is_exhaustion(a.error)) {
            ++backoffs;
            co_await sleep_for(backoff, token);
            backoff = std::min<std::chrono::milliseconds>(backoff * 2, 100ms);
        } else {
            throw_system_error(a.error, "accept", object);
        }
    }
}

} // namespace conflux::detail
