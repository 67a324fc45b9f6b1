#pragma once

// The IPC transport of POSIX systems: a connected Unix stream socket carrying bytes, with
// descriptors attached to them (SCM_RIGHTS). What `ipc_channel` asks of the platform besides
// the write path's `send_with_fds` (detail/posix/socket.hpp).

#include <conflux/detail/posix/unique_fd.hpp>
#include <conflux/detail/system_error.hpp>

#include <array>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <span>
#include <utility>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>

namespace conflux::detail {

/// Two connected ends of a new transport, both close-on-exec.
inline std::pair<unique_fd, unique_fd> ipc_socketpair() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        throw_errno("socketpair", "ipc channel");
    }
    return {unique_fd(sv[0]), unique_fd(sv[1])};
}

/// Makes `fd` ready to be a transport end: checks it is a socket (ENOTSOCK otherwise) and
/// makes it non-blocking. Throws `std::system_error`.
inline void prepare_ipc_endpoint(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw_errno("ipc channel", "fstat");
    if (!S_ISSOCK(st.st_mode)) throw_system_error(ENOTSOCK, "ipc channel");
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
        throw_errno("ipc channel", "O_NONBLOCK");
    }
}

/// Whether a read that returns less than asked proves the transport empty: true for a Unix
/// stream socket without SO_PASSCRED, whose reads stop short only when the queue ran out or
/// after data that carried descriptors. Anything else is read until it would block.
inline bool short_read_empties(int fd) noexcept {
    int domain = 0, type = 0, passcred = 1;
    socklen_t length = sizeof(int);
    if (::getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &length) != 0) return false;
    length = sizeof(int);
    if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &length) != 0) return false;
    length = sizeof(int);
    if (::getsockopt(fd, SOL_SOCKET, SO_PASSCRED, &passcred, &length) != 0) return false;
    return domain == AF_UNIX && type == SOCK_STREAM && passcred == 0;
}

/// What one `receive_with_fds` got. Every descriptor in `fds` is owned by the caller (open,
/// close-on-exec), whatever else the result says.
struct ipc_received {
    static constexpr std::size_t max_fds = 253; // SCM_MAX_FD

    std::size_t bytes = 0;
    int error = 0;          ///< 0, or the errno (never EINTR); EAGAIN: nothing to read
    bool truncated = false; ///< descriptors were dropped for want of room (MSG_CTRUNC)
    std::size_t fd_count = 0;
    std::array<int, max_fds> fds;

    bool would_block() const noexcept { return error == EAGAIN || error == EWOULDBLOCK; }
};

/// One non-blocking read of up to `into.size()` bytes and the descriptors that came with
/// them. 0 bytes without an error is the end of the stream.
inline ipc_received receive_with_fds(int fd, std::span<std::byte> into) noexcept {
    ipc_received out;
    iovec iov{into.data(), into.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * ipc_received::max_fds)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n;
    do {
        n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        out.error = errno;
        return out;
    }
    out.bytes = static_cast<std::size_t>(n);
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
        const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        const auto* data = reinterpret_cast<const unsigned char*>(CMSG_DATA(c));
        for (std::size_t i = 0; i < count && out.fd_count < ipc_received::max_fds; ++i) {
            std::memcpy(&out.fds[out.fd_count++], data + i * sizeof(int), sizeof(int));
        }
    }
    out.truncated = (msg.msg_flags & MSG_CTRUNC) != 0;
    return out;
}

/// Ends both directions: a pending read on either end sees the end of the stream.
inline void shut_down_transport(int fd) noexcept { ::shutdown(fd, SHUT_RDWR); }

} // namespace conflux::detail
