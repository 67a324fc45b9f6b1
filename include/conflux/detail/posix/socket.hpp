#pragma once

#include <conflux/detail/posix/fd_io.hpp>
#include <conflux/detail/posix/unique_fd.hpp>
#include <conflux/detail/system_error.hpp>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

namespace conflux::detail {

/// A socket address of any family this library speaks (IPv4, IPv6, Unix), stored by value.
struct socket_address {
    sockaddr_storage storage{};
    socklen_t length = 0;

    int family() const noexcept { return storage.ss_family; }
    const sockaddr* get() const noexcept { return reinterpret_cast<const sockaddr*>(&storage); }
    sockaddr* get() noexcept { return reinterpret_cast<sockaddr*>(&storage); }

    std::uint16_t port() const noexcept {
        if (family() == AF_INET)
            return ntohs(reinterpret_cast<const sockaddr_in*>(&storage)->sin_port);
        if (family() == AF_INET6) {
            return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_port);
        }
        return 0;
    }

    /// The host part: "127.0.0.1", "::1", or a Unix socket's path ("@name" for the abstract
    /// namespace, "" for an unnamed socket).
    std::string host() const {
        char text[INET6_ADDRSTRLEN] = {};
        if (family() == AF_INET) {
            ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage)->sin_addr, text,
                        sizeof text);
            return text;
        }
        if (family() == AF_INET6) {
            ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage)->sin6_addr, text,
                        sizeof text);
            return text;
        }
        if (family() == AF_UNIX) {
            const auto* un = reinterpret_cast<const sockaddr_un*>(&storage);
            const std::size_t offset = offsetof(sockaddr_un, sun_path);
            if (length <= offset) return {};
            std::size_t n = length - offset;
            if (un->sun_path[0] == '\0') return "@" + std::string(un->sun_path + 1, n - 1);
            return std::string(un->sun_path, ::strnlen(un->sun_path, n));
        }
        return {};
    }

    /// "127.0.0.1:8080", "[::1]:8080", or the Unix path.
    std::string to_string() const {
        if (family() == AF_INET) return host() + ":" + std::to_string(port());
        if (family() == AF_INET6) return "[" + host() + "]:" + std::to_string(port());
        return host();
    }
};

/// How a host and port are written in messages: "127.0.0.1:80", "[::1]:80".
inline std::string host_port(std::string_view host, std::uint16_t port) {
    std::string out;
    if (host.find(':') != std::string_view::npos && host.front() != '[') {
        out = "[" + std::string(host) + "]";
    } else {
        out = std::string(host);
    }
    return out + ":" + std::to_string(port);
}

/// The addresses a host stands for, in the order to try them. Numeric IPv4 and IPv6 (with or
/// without brackets) and "localhost" only: name resolution blocks, and an event loop must not.
/// An empty host means every interface: "::" (dual stack) first, then "0.0.0.0".
inline std::vector<socket_address> resolve_numeric(std::string_view host, std::uint16_t port) {
    std::vector<socket_address> out;
    auto add_v4 = [&](const char* text) {
        socket_address a;
        auto* in = reinterpret_cast<sockaddr_in*>(&a.storage);
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        if (::inet_pton(AF_INET, text, &in->sin_addr) != 1) return false;
        a.length = sizeof(sockaddr_in);
        out.push_back(a);
        return true;
    };
    auto add_v6 = [&](const char* text) {
        socket_address a;
        auto* in6 = reinterpret_cast<sockaddr_in6*>(&a.storage);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        if (::inet_pton(AF_INET6, text, &in6->sin6_addr) != 1) return false;
        a.length = sizeof(sockaddr_in6);
        out.push_back(a);
        return true;
    };
    if (host.empty()) {
        add_v6("::");
        add_v4("0.0.0.0");
        return out;
    }
    if (host == "localhost") {
        add_v4("127.0.0.1");
        add_v6("::1");
        return out;
    }
    std::string text(host);
    if (text.size() >= 2 && text.front() == '[' && text.back() == ']') {
        text = text.substr(1, text.size() - 2);
    }
    if (add_v4(text.c_str()) || add_v6(text.c_str())) return out;
    throw std::invalid_argument("conflux: host \"" + std::string(host) +
                                "\" is not a numeric IPv4/IPv6 address nor \"localhost\" (names "
                                "are not resolved: resolve them first)");
}

/// A Unix-domain address; a path starting with '@' names the abstract namespace.
inline socket_address unix_address(std::string_view path) {
    socket_address a;
    auto* un = reinterpret_cast<sockaddr_un*>(&a.storage);
    un->sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof un->sun_path) {
        throw_system_error(ENAMETOOLONG, "unix socket path", path);
    }
    std::memcpy(un->sun_path, path.data(), path.size());
    if (path.front() == '@') un->sun_path[0] = '\0';
    a.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() +
                                      (path.front() == '@' ? 0 : 1));
    return a;
}

/// A non-blocking, close-on-exec stream socket.
inline unique_fd open_stream_socket(int family, std::string_view object) {
    unique_fd fd(::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd) throw_errno("socket", object);
    return fd;
}

inline void set_int_option(int fd, int level, int name, int value, std::string_view object) {
    if (::setsockopt(fd, level, name, &value, sizeof value) != 0) {
        throw_errno("setsockopt", object);
    }
}

inline socket_address local_address(int fd) {
    socket_address a;
    a.length = sizeof a.storage;
    if (::getsockname(fd, a.get(), &a.length) != 0) throw_errno("getsockname");
    return a;
}

inline socket_address peer_address(int fd) {
    socket_address a;
    a.length = sizeof a.storage;
    if (::getpeername(fd, a.get(), &a.length) != 0) throw_errno("getpeername");
    return a;
}

/// Turns Nagle's algorithm off (`true`) or on: TCP_NODELAY.
inline void set_no_delay(int fd, bool on, std::string_view object) {
    set_int_option(fd, IPPROTO_TCP, TCP_NODELAY, on ? 1 : 0, object);
}

/// A bound, listening stream socket (non-blocking, close-on-exec) for `address`. The reuse
/// options apply to TCP only; `ipv6_only` to IPv6 only.
inline unique_fd listen_socket(const socket_address& address, int backlog, bool reuse_address,
                               bool reuse_port, bool ipv6_only, const std::string& object) {
    auto fd = open_stream_socket(address.family(), object);
    if (address.family() != AF_UNIX) {
        if (reuse_address) set_int_option(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1, object);
        if (reuse_port) set_int_option(fd.get(), SOL_SOCKET, SO_REUSEPORT, 1, object);
    }
    if (address.family() == AF_INET6) {
        set_int_option(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, ipv6_only ? 1 : 0, object);
    }
    if (::bind(fd.get(), address.get(), address.length) != 0) throw_errno("bind", object);
    if (::listen(fd.get(), backlog) != 0) throw_errno("listen", object);
    return fd;
}

/// One non-blocking accept: the connection (non-blocking, close-on-exec) and its peer's
/// address, or an empty descriptor and the errno.
struct accepted {
    unique_fd fd;
    socket_address peer;
    int error = 0;
};

inline accepted accept_some(int listener) noexcept {
    accepted a;
    a.peer.length = sizeof a.peer.storage;
    const int fd = ::accept4(listener, a.peer.get(), &a.peer.length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
        a.fd = unique_fd(fd);
    } else {
        a.error = errno;
    }
    return a;
}

/// Starts connecting `fd` to `address`: 0 when connected at once, else the errno (EINPROGRESS:
/// wait for writability, then ask `connect_outcome`).
inline int connect_start(int fd, const socket_address& address) noexcept {
    for (;;) {
        if (::connect(fd, address.get(), address.length) == 0) return 0;
        if (errno != EINTR) return errno;
    }
}

/// After a writability edge on a connecting socket: 0 once connected, EINPROGRESS while the
/// handshake still runs (the edge was a remembered one), else the error that ended it.
inline int connect_outcome(int fd) noexcept {
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) return err;
    sockaddr_storage peer{};
    socklen_t peer_len = sizeof peer;
    return ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &peer_len) == 0 ? 0 : EINPROGRESS;
}

/// Shuts down the sending side (the peer reads end of stream); 0 or the errno.
inline int shutdown_send(int fd) noexcept { return ::shutdown(fd, SHUT_WR) == 0 ? 0 : errno; }

/// Removes a Unix socket's path from the file system, if it is still there.
inline void remove_socket_path(const std::string& path) noexcept { ::unlink(path.c_str()); }

/// sendmsg(2) of `size` bytes with the descriptors `fds` attached (SCM_RIGHTS), non-blocking
/// and without SIGPIPE: the byte write of `fd_write_some` for a socket, plus descriptors.
inline io_result send_with_fds(int fd, const void* data, std::size_t size,
                               std::span<const int> fds) noexcept {
    iovec iov{const_cast<void*>(data), size};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    constexpr std::size_t max_fds = 253; // SCM_MAX_FD
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * max_fds)];
    if (!fds.empty()) {
        if (fds.size() > max_fds) return {0, EINVAL};
        const std::size_t bytes = sizeof(int) * fds.size();
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(bytes);
        cmsghdr* c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(bytes);
        std::memcpy(CMSG_DATA(c), fds.data(), bytes);
    }
    for (;;) {
        const ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n >= 0) return {static_cast<std::size_t>(n), 0};
        if (errno != EINTR) return {0, errno};
    }
}

/// Errors of accept(2) that concern one aborted connection, not the listener: try again.
inline bool accept_error_is_transient(int err) noexcept {
    switch (err) {
    case EINTR:
    case ECONNABORTED:
    case EPROTO:
    case EPERM: // a firewall rule refused this connection
    case ENETDOWN:
    case ENOPROTOOPT:
    case EHOSTDOWN:
    case ENONET:
    case EHOSTUNREACH:
    case EOPNOTSUPP:
    case ENETUNREACH:
        return true;
    default:
        return false;
    }
}

/// Errors of accept(2) that mean "out of descriptors or memory right now": back off and retry.
inline bool accept_error_is_exhaustion(int err) noexcept {
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

} // namespace conflux::detail
