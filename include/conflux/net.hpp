#pragma once

#include <conflux/detail/cpp20.hpp>

#if !CONFLUX_HAS_NET
#error "conflux/net.hpp: sockets are not supported on Windows yet"
#include <conflux/detail/compilation_stopped_by_the_error_above>
#endif

#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/stream.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/io_watch.hpp>
#include <conflux/detail/operation_slot.hpp>
#include <conflux/detail/socket.hpp>
#include <conflux/detail/socket_io.hpp>
#include <conflux/detail/stream_io.hpp>
#include <conflux/detail/system_error.hpp>
#include <conflux/detail/unique_fd.hpp>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>

namespace conflux {

/// The address of one end of a socket: an IPv4 or IPv6 address and port, or a Unix-domain
/// path.
class endpoint {
public:
    /// An empty endpoint (no family).
    endpoint() noexcept = default;

    /// "127.0.0.1", "::1", or the Unix path ("@name" for the abstract namespace).
    std::string host() const { return m_address.host(); }
    /// The port; 0 for Unix-domain endpoints.
    std::uint16_t port() const noexcept { return m_address.port(); }
    bool is_ipv4() const noexcept { return m_address.family() == AF_INET; }
    bool is_ipv6() const noexcept { return m_address.family() == AF_INET6; }
    bool is_unix() const noexcept { return m_address.family() == AF_UNIX; }
    /// "127.0.0.1:8080", "[::1]:8080", or the Unix path.
    std::string to_string() const { return m_address.to_string(); }

    /// For the library's own layers: the address as the OS holds it.
    explicit endpoint(const detail::socket_address& address) noexcept : m_address(address) {}

private:
    detail::socket_address m_address;
};

/// How `tcp_listener::bind` sets up its socket; an aggregate for designated initialisers:
/// `tcp_listener::bind("127.0.0.1", 0, {.backlog = 1024, .reuse_port = true})`.
struct listen_options {
    /// Length of the kernel's queue of connections not yet accepted (capped by somaxconn).
    int backlog = 511;
    /// SO_REUSEADDR (TCP only): rebinding a port whose old connections sit in TIME_WAIT works.
    bool reuse_address = true;
    /// SO_REUSEPORT (TCP only): several sockets, in this or other processes of the same user,
    /// may bind the same address and port; the kernel spreads new connections among them.
    bool reuse_port = false;
    /// IPv6 sockets accept IPv6 only. Off by default: "::" then also serves IPv4.
    bool ipv6_only = false;
    /// TCP_NODELAY on every accepted connection (no Nagle delay for small writes).
    bool no_delay = false;
};

/// A connected stream socket (TCP, or Unix-domain: both use this type) with the same
/// interface as the pipe streams of `stream.hpp`: `read_some`, `read_all`, `read_into`,
/// `read_line`, `write`, `write_all`, plus `shutdown` (half-close) and `close`.
///
/// Belongs to the event loop it was created on: every operation must be awaited on that loop's
/// thread and resumes there. Each takes a `std::stop_token` (default: the one the awaiting
/// coroutine inherited); stopping it ends the wait with `operation_cancelled` without losing
/// data that was not returned. One read and one write may be in progress at the same time;
/// a second concurrent read (or write) throws `std::logic_error`. OS errors throw
/// `std::system_error` naming the operation and the peer (`read "127.0.0.1:41234": Connection
/// reset by peer`). Writes never raise SIGPIPE: a peer that went away is `EPIPE`.
class tcp_stream {
public:
    /// An empty stream (`is_open()` false).
    tcp_stream() noexcept = default;

    /// Adopts the connected socket `fd` (closed on destruction), makes it non-blocking and
    /// watches it on `loop`. `name` appears in error messages.
    tcp_stream(int fd, event_loop& loop, std::string name) : m_in(fd, loop, std::move(name)) {}

    /// Adopts the connected socket `fd` on the calling thread's event loop (a socket received
    /// from another process, say). Throws `std::logic_error` off a loop thread.
    static tcp_stream adopt(int fd) {
        detail::unique_fd owned(fd);
        event_loop& loop = detail::require_loop("conflux::tcp_stream::adopt");
        std::string name;
        try {
            name = detail::peer_address(fd).to_string();
        } catch (const std::system_error&) {
            name = "socket";
        }
        return tcp_stream(owned.release(), loop, std::move(name));
    }

    tcp_stream(tcp_stream&&) noexcept = default;
    tcp_stream& operator=(tcp_stream&&) noexcept = default;

    bool is_open() const noexcept { return m_in.is_open(); }
    conflux::native_handle native_handle() const noexcept { return m_in.native_handle(); }
    /// The name used in error messages: the peer's address when it has one.
    const std::string& name() const noexcept { return m_in.name(); }

    /// This end's address.
    endpoint local_endpoint() const { return endpoint(detail::local_address(native_handle())); }
    /// The peer's address (empty path for an unnamed Unix peer).
    endpoint remote_endpoint() const { return endpoint(detail::peer_address(native_handle())); }

    /// Turns Nagle's algorithm off (`true`) or on. TCP only.
    void set_no_delay(bool on = true) { detail::set_no_delay(native_handle(), on, name()); }

    /// Reads at least one byte into `buffer`, waiting until some arrive; returns how many, or
    /// 0 once the peer has shut down its sending side.
    /// Like the other reads, an awaitable: raced in `when_any`, a read that lost consumes
    /// nothing. See `readable_stream`.
    [[nodiscard]] auto read_some(std::span<std::byte> buffer, std::stop_token token = {}) {
        return m_in.read_some(buffer, std::move(token));
    }
    [[nodiscard]] auto read_some(std::span<char> buffer, std::stop_token token = {}) {
        return m_in.read_some(buffer, std::move(token));
    }

    /// Reads until the peer shuts down its side and returns everything.
    [[nodiscard]] auto read_all(std::stop_token token = {}) {
        return m_in.read_all(std::move(token));
    }

    /// Appends to `out` until the peer shuts down, or until `out` holds `limit` bytes (0 = no
    /// limit) and more are available, which sets `*overflow`. See `readable_stream::read_into`.
    [[nodiscard]] task<void> read_into(std::string& out, std::size_t limit, bool* overflow,
                                       std::stop_token token = {}) {
        return m_in.read_into(out, limit, overflow, std::move(token));
    }

    /// Reads one line, without its "\n" (nor a "\r" before it); empty optional at the end.
    [[nodiscard]] auto read_line(std::stop_token token = {}) {
        return m_in.read_line(std::move(token));
    }

    /// Writes at least one byte of `data`, waiting while the socket's send buffer is full, and
    /// returns how many were written.
    [[nodiscard]] task<std::size_t> write(std::span<const std::byte> data,
                                          std::stop_token token = {}) {
        return detail::write_some_async(base(), m_writing, detail::write_kind::socket, data,
                                        std::move(token));
    }
    [[nodiscard]] task<std::size_t> write(std::string_view data, std::stop_token token = {}) {
        return write(detail::as_bytes(data), std::move(token));
    }

    /// Writes all of `data`, waiting as often as the send buffer fills. On cancellation or
    /// error an unknown prefix of `data` has been sent.
    [[nodiscard]] task<void> write_all(std::span<const std::byte> data,
                                       std::stop_token token = {}) {
        return detail::write_all_async(base(), m_writing, detail::write_kind::socket, data,
                                       std::move(token));
    }
    [[nodiscard]] task<void> write_all(std::string_view data, std::stop_token token = {}) {
        return write_all(detail::as_bytes(data), std::move(token));
    }

    /// Shuts down the sending side: the peer reads end of stream, while this end can still
    /// read. Throws `std::system_error` if the socket is not connected any more.
    void shutdown() {
        const int err = detail::shutdown_send(native_handle());
        if (err != 0 && err != ENOTCONN) detail::throw_system_error(err, "shutdown", name());
    }

    /// Closes the socket. Idempotent. Throws `std::logic_error` while an operation is pending.
    void close() {
        m_writing.require_idle("write", "stream", name());
        m_in.close();
    }

private:
    // Reads go through a readable_stream (its buffering and line splitting); writes through
    // the library's one write path, on the same descriptor and io_watch, which waits for
    // each direction on its own.
    detail::stream_base& base() noexcept { return detail::stream_access::base(m_in); }

    readable_stream m_in;
    detail::operation_slot m_writing;
};

/// A listening stream socket (TCP over IPv4/IPv6, or Unix-domain) that accepts `tcp_stream`s.
///
/// `bind` is synchronous; the socket is watched on the event loop of the first `accept`, and
/// every later `accept` must be awaited on that same loop. When the process runs out of file
/// descriptors (EMFILE, ENFILE) or memory, `accept` backs off on a timer — 1 ms doubling up to
/// 100 ms — instead of spinning, leaves the waiting connections queued in the kernel, and
/// picks them up once descriptors are free again.
///
/// ```
/// auto listener = conflux::tcp_listener::bind("127.0.0.1", 0);
/// for (;;) conflux::detach(serve(co_await listener.accept()));
/// ```
class tcp_listener {
public:
    /// An empty listener (`is_open()` false).
    tcp_listener() noexcept = default;

    /// Binds `host`:`port` and listens. `host` is a numeric IPv4 or IPv6 address (brackets
    /// allowed), "localhost" (127.0.0.1, else ::1), or "" for every interface ("::" dual-stack,
    /// else "0.0.0.0"); names are not resolved, since resolving blocks. Port 0 picks a free
    /// ephemeral port: read it back with `local_endpoint()`. Throws `std::system_error` naming
    /// the address (`bind "127.0.0.1:8080": Address already in use`), `std::invalid_argument`
    /// for a host that is not numeric.
    static tcp_listener bind(std::string_view host, std::uint16_t port,
                             listen_options options = {}) {
        const auto candidates = detail::resolve_numeric(host, port);
        std::optional<std::system_error> first_error;
        for (const auto& address : candidates) {
            try {
                return tcp_listener(open(address, options, address.to_string()), options);
            } catch (const std::system_error& e) {
                // Only an address family the host lacks moves on to the next candidate.
                const int err = e.code().value();
                if (err != EAFNOSUPPORT && err != EADDRNOTAVAIL) throw;
                if (!first_error) first_error = e;
            }
        }
        throw *first_error;
    }

    /// Binds the Unix-domain socket `path` ("@name": the abstract namespace) and listens. The
    /// path is removed again by `close()` or the destructor. An existing file at `path` makes
    /// it fail with `EADDRINUSE`.
    static tcp_listener bind_unix(std::string_view path, listen_options options = {}) {
        const auto address = detail::unix_address(path);
        options.reuse_address = false;
        options.reuse_port = false;
        tcp_listener l(open(address, options, std::string(path)), options);
        if (path.front() != '@') l.m_unlink_path = std::string(path);
        return l;
    }

    /// Adopts a socket that is already listening (received from another process, say); it is
    /// closed on destruction. `options.no_delay` applies to the connections it accepts.
    static tcp_listener adopt(int fd, listen_options options = {}) {
        detail::unique_fd owned(fd);
        return tcp_listener(std::move(owned), options);
    }

    tcp_listener(tcp_listener&& other) noexcept
        : m_fd(std::move(other.m_fd)), m_watch(std::move(other.m_watch)),
          m_name(std::move(other.m_name)), m_unlink_path(std::move(other.m_unlink_path)),
          m_options(other.m_options), m_unix(other.m_unix), m_backoffs(other.m_backoffs) {
        other.m_unlink_path.clear();
    }
    tcp_listener& operator=(tcp_listener&& other) noexcept {
        if (this != &other) {
            unlink_path();
            m_watch.reset();
            m_fd = std::move(other.m_fd);
            m_watch = std::move(other.m_watch);
            m_name = std::move(other.m_name);
            m_unlink_path = std::exchange(other.m_unlink_path, {});
            m_options = other.m_options;
            m_unix = other.m_unix;
            m_backoffs = other.m_backoffs;
        }
        return *this;
    }
    ~tcp_listener() {
        m_watch.reset();
        unlink_path();
    }

    bool is_open() const noexcept { return static_cast<bool>(m_fd); }
    conflux::native_handle native_handle() const noexcept { return m_fd.get(); }

    /// The address the socket is bound to; after binding port 0 this holds the port chosen.
    endpoint local_endpoint() const { return endpoint(detail::local_address(m_fd.get())); }

    /// How many times `accept` backed off because descriptors or memory ran out.
    std::uint64_t exhaustion_backoffs() const noexcept { return m_backoffs; }

    /// Waits for the next connection and returns it as a `tcp_stream` on this loop
    /// (non-blocking, close-on-exec; TCP_NODELAY when the options say so).
    ///
    /// Must be awaited on an event loop's thread (the same loop every time); resumes there.
    /// Cancelled by `token` (or the inherited stop token) with `operation_cancelled`; the
    /// queued connections stay queued. One accept at a time: a second concurrent one throws
    /// `std::logic_error`. Other OS errors throw `std::system_error` naming the listener.
    [[nodiscard]] task<tcp_stream> accept(std::stop_token token = {}) {
        if (!token.stop_possible()) token = co_await get_stop_token();
        event_loop& loop = detail::require_loop("conflux::tcp_listener::accept");
        std::string name;
        detail::unique_fd fd = co_await accept_fd(loop, token, &name);
        co_return tcp_stream(fd.release(), loop, std::move(name));
    }

    /// Low level: like `accept`, but returns the accepted socket's descriptor (non-blocking,
    /// close-on-exec), which the caller owns and must close, instead of a stream watched on
    /// this loop: for handing the connection to another process or loop.
    [[nodiscard]] task<int> accept_native(std::stop_token token = {}) {
        if (!token.stop_possible()) token = co_await get_stop_token();
        event_loop& loop = detail::require_loop("conflux::tcp_listener::accept_native");
        detail::unique_fd fd = co_await accept_fd(loop, token, nullptr);
        co_return fd.release();
    }

    /// Stops listening and closes the socket (removing a Unix socket's path). Idempotent.
    /// Throws `std::logic_error` while an accept is pending: cancel it first.
    void close() {
        m_accepting.require_idle("accept", "listener", m_name);
        m_watch.reset();
        m_fd.reset();
        unlink_path();
    }

private:
    tcp_listener(detail::unique_fd fd, listen_options options)
        : m_fd(std::move(fd)), m_options(options) {
        const auto address = detail::local_address(m_fd.get());
        m_unix = address.family() == AF_UNIX;
        m_name = address.to_string();
    }

    task<detail::unique_fd> accept_fd(event_loop& loop, std::stop_token token, std::string* name) {
        if (!is_open()) detail::operation_slot::throw_closed("listener", m_name);
        auto busy = m_accepting.enter("accept", "listener", m_name);
        if (!m_watch) {
            m_watch = std::make_unique<detail::io_watch>(loop, m_fd.get());
        } else if (&m_watch->loop() != &loop) {
            throw std::logic_error("conflux: tcp_listener \"" + m_name +
                                   "\" accepted on another event loop before");
        }
        detail::accepted a =
            co_await detail::accept_connection(m_fd.get(), *m_watch, m_name, m_backoffs, token);
        if (m_options.no_delay && !m_unix) detail::set_no_delay(a.fd.get(), true, m_name);
        if (name != nullptr) *name = m_unix ? m_name : a.peer.to_string();
        co_return std::move(a.fd);
    }

    static detail::unique_fd open(const detail::socket_address& address,
                                  const listen_options& options, const std::string& object) {
        return detail::listen_socket(address, options.backlog, options.reuse_address,
                                     options.reuse_port, options.ipv6_only, object);
    }

    void unlink_path() noexcept {
        if (!m_unlink_path.empty()) detail::remove_socket_path(std::exchange(m_unlink_path, {}));
    }

    detail::unique_fd m_fd; // destroyed after the watch, which must leave epoll first
    std::unique_ptr<detail::io_watch> m_watch;
    std::string m_name;
    std::string m_unlink_path;
    listen_options m_options;
    bool m_unix = false;
    detail::operation_slot m_accepting;
    std::uint64_t m_backoffs = 0;
};

/// Connects to `host`:`port` and returns the connected stream on the calling thread's loop.
/// `host` is a numeric IPv4/IPv6 address or "localhost" (127.0.0.1 is tried, then ::1); names
/// are not resolved.
///
/// Must be awaited on an event loop's thread; resumes there. Cancelled by `token` (or the
/// inherited stop token) with `operation_cancelled`, closing the half-made socket. Failure
/// throws `std::system_error` naming the address (`connect "127.0.0.1:1": Connection
/// refused`), `std::invalid_argument` for a host that is not numeric.
[[nodiscard]] inline task<tcp_stream> connect(std::string host, std::uint16_t port,
                                              std::stop_token token = {}) {
    if (!token.stop_possible()) token = co_await get_stop_token();
    event_loop& loop = detail::require_loop("conflux::connect");
    const auto candidates = detail::resolve_numeric(host, port);
    const std::string object = detail::host_port(host, port);
    std::exception_ptr last;
    for (const auto& address : candidates) {
        try {
            auto fd = detail::open_stream_socket(address.family(), object);
            co_await detail::connect_socket(fd.get(), address, loop, object, token);
            co_return tcp_stream(fd.release(), loop, address.to_string());
        } catch (const std::system_error&) {
            last = std::current_exception();
        }
    }
    std::rethrow_exception(last);
}

/// Connects to the Unix-domain socket at `path` ("@name": abstract namespace). Same
/// resumption, cancellation and errors as `connect`.
[[nodiscard]] inline task<tcp_stream> connect_unix(std::string path, std::stop_token token = {}) {
    if (!token.stop_possible()) token = co_await get_stop_token();
    event_loop& loop = detail::require_loop("conflux::connect_unix");
    const auto address = detail::unix_address(path);
    auto fd = detail::open_stream_socket(AF_UNIX, path);
    co_await detail::connect_socket(fd.get(), address, loop, path, token);
    co_return tcp_stream(fd.release(), loop, path);
}

} // namespace conflux
