#pragma once

#include <conflux/detail/posix/sigpipe.hpp>
#include <conflux/detail/system_error.hpp>

#include <cerrno>
#include <cstddef>

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

namespace conflux::detail {

/// Sets O_NONBLOCK on `fd` (the parent's end of a pipe; the child's end stays blocking).
inline void set_nonblocking(int fd, const char* what) {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) throw_errno("fcntl", what);
}

/// What one non-blocking transfer did: `bytes` moved when `error` is 0, else the errno that
/// stopped it (EINTR is retried, never reported).
struct io_result {
    std::size_t bytes = 0;
    int error = 0;

    /// The descriptor is full (writing) or empty (reading): wait for readiness and retry.
    bool would_block() const noexcept { return error == EAGAIN || error == EWOULDBLOCK; }
};

/// How a descriptor is written so that a reader that went away is EPIPE, never SIGPIPE. Chosen
/// once by the descriptor's owner.
enum class write_kind : unsigned char {
    any,    ///< write(2) with SIGPIPE blocked on the thread (see sigpipe.hpp): pipes, FIFOs
    socket, ///< send(2) with MSG_NOSIGNAL, one system call wherever it runs
};

/// The one non-blocking write of the library: up to `size` bytes of `data` to `fd`. A socket
/// is written with MSG_DONTWAIT as well, so a peer process that clears O_NONBLOCK on the shared
/// description cannot make it block.
inline io_result fd_write_some(int fd, const void* data, std::size_t size,
                               write_kind kind) noexcept {
    ssize_t n;
    if (kind == write_kind::socket) {
        do {
            n = ::send(fd, data, size, MSG_NOSIGNAL | MSG_DONTWAIT);
        } while (n < 0 && errno == EINTR);
    } else {
        n = write_no_sigpipe(fd, data, size);
    }
    if (n < 0) return {0, errno};
    return {static_cast<std::size_t>(n), 0};
}

/// One non-blocking read of up to `size` bytes; 0 bytes and no error at end of stream.
inline io_result fd_read_some(int fd, void* data, std::size_t size) noexcept {
    for (;;) {
        const ssize_t n = ::read(fd, data, size);
        if (n >= 0) return {static_cast<std::size_t>(n), 0};
        if (errno != EINTR) return {0, errno};
    }
}

} // namespace conflux::detail
