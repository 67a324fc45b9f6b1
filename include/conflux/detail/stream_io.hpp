#pragma once

// The machinery of the streams (stream.hpp) and sockets (net.hpp): an owned non-blocking
// descriptor watched on a loop, and the one asynchronous write path of the library. Pipes,
// sockets and the IPC channel's background writer all write through `write_loop`: one
// non-blocking attempt (fd_write_some, or send_with_fds for IPC), and while the descriptor is
// full a cancellable wait for write space on its io_watch. The backend call decides how SIGPIPE
// is kept away (detail/posix/fd_io.hpp); the single-operation guard is detail::operation_slot.

#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/fd_io.hpp>
#include <conflux/detail/io_watch.hpp>
#include <conflux/detail/operation_slot.hpp>
#include <conflux/detail/system_error.hpp>
#include <conflux/detail/unique_fd.hpp>

#include <cstddef>
#include <memory>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace conflux::detail {

/// The loop every asynchronous write runs. `op.start()` claims what the write needs (a
/// stream's write slot) and returns the claim, held until the write ends; `op.step()` makes
/// non-blocking attempts and returns true once the write is finished, false when the
/// descriptor is full; meanwhile the loop waits for write space on `op.watch()`, which `token`
/// (default: the inherited one) cancels with `operation_cancelled`. `Op` lives in the
/// coroutine's frame: one frame per write, and a write that fits costs that frame and the
/// system call alone.
template <class Op>
task<typename Op::result_type> write_loop(Op op, std::stop_token token) {
    if (!token.stop_possible()) token = co_await get_stop_token();
    const auto claim = op.start();
    while (!op.step()) co_await op.watch().writable(token);
    if constexpr (!std::is_void_v<typename Op::result_type>) co_return op.result();
}

struct stream_access;

/// What the readable and writable streams share: an owned non-blocking fd watched on a loop,
/// and the slot of the one operation it allows at a time (a read or a write; a socket's
/// second direction has a slot of its own).
class stream_base {
public:
    stream_base() noexcept = default;
    stream_base(int fd, event_loop& loop, std::string name) : m_fd(fd), m_name(std::move(name)) {
        set_nonblocking(fd, m_name.c_str());
        m_watch = std::make_unique<io_watch>(loop, fd);
    }

    bool is_open() const noexcept { return static_cast<bool>(m_fd); }
    conflux::native_handle native_handle() const noexcept { return m_fd.get(); }
    const std::string& name() const noexcept { return m_name; }
    io_watch& watch() const noexcept { return *m_watch; }

    /// Claims `slot` for one `operation` ("read", "write"): `std::logic_error` when the stream
    /// is closed or the slot is taken.
    [[nodiscard]] operation_slot::claim enter(operation_slot& slot,
                                              std::string_view operation) const {
        if (!is_open()) operation_slot::throw_closed("stream", m_name);
        return slot.enter(operation, "stream", m_name);
    }

protected:
    // `operation` names what a pending operation would be, for the error.
    void close(std::string_view operation) {
        m_slot.require_idle(operation, "stream", m_name);
        m_watch.reset();
        m_fd.reset();
    }

    // Closes whatever is pending: for an owner whose event loop is going away, after every
    // frame that could be inside an operation is gone.
    void abandon() noexcept {
        m_watch.reset();
        m_fd.reset();
    }

    unique_fd m_fd; // destroyed after the watch, which must leave epoll first
    std::unique_ptr<io_watch> m_watch;
    std::string m_name;
    operation_slot m_slot;
};

/// One `write` (`All` false: at least one byte, returns how many) or `write_all` on a stream
/// or socket, for `write_loop`. Trivially copyable, so that starting a write costs little.
template <bool All>
class stream_write {
public:
    using result_type = std::conditional_t<All, void, std::size_t>;

    stream_write(stream_base& stream, operation_slot& slot, write_kind kind,
                 std::span<const std::byte> data) noexcept
        : m_stream(stream), m_slot(slot), m_data(data), m_kind(kind) {}

    [[nodiscard]] operation_slot::claim start() const { return m_stream.enter(m_slot, "write"); }

    bool step() {
        while (m_done < m_data.size()) {
            const io_result r = fd_write_some(m_stream.native_handle(), m_data.data() + m_done,
                                              m_data.size() - m_done, m_kind);
            if (r.error == 0) {
                m_done += r.bytes;
                if constexpr (!All) return true;
                continue;
            }
            if (!r.would_block()) throw_system_error(r.error, "write", m_stream.name());
            return false;
        }
        return true;
    }

    io_watch& watch() const noexcept { return m_stream.watch(); }
    std::size_t result() const noexcept { return m_done; }

private:
    stream_base& m_stream;
    operation_slot& m_slot;
    std::span<const std::byte> m_data;
    std::size_t m_done = 0;
    write_kind m_kind;
};

/// `write` of `data` on `stream`, holding `slot`: at least one byte, waiting while full.
[[nodiscard]] inline task<std::size_t> write_some_async(stream_base& stream, operation_slot& slot,
                                                        write_kind kind,
                                                        std::span<const std::byte> data,
                                                        std::stop_token token) {
    return write_loop(stream_write<false>(stream, slot, kind, data), std::move(token));
}

/// `write_all` of `data` on `stream`, holding `slot`: every byte, waiting as often as full.
[[nodiscard]] inline task<void> write_all_async(stream_base& stream, operation_slot& slot,
                                                write_kind kind, std::span<const std::byte> data,
                                                std::stop_token token) {
    return write_loop(stream_write<true>(stream, slot, kind, data), std::move(token));
}

/// One read of up to `size` bytes from `stream` into `data`: at least one byte, or 0 at the
/// end of the stream; waits while nothing is there. The caller holds the stream's read slot.
[[nodiscard]] inline task<std::size_t> read_some_async(stream_base& stream, void* data,
                                                       std::size_t size, std::stop_token token) {
    for (;;) {
        const io_result r = fd_read_some(stream.native_handle(), data, size);
        if (r.error == 0) co_return r.bytes;
        if (!r.would_block()) throw_system_error(r.error, "read", stream.name());
        co_await stream.watch().readable(token);
    }
}

/// For owners of streams inside the library: a child process's pipes, a socket's write side.
struct stream_access {
    /// Closes the stream whatever is pending; see stream_base::abandon.
    template <class Stream>
    static void abandon(Stream& s) noexcept {
        s.abandon();
    }
    /// The descriptor, watch and name under a stream.
    template <class Stream>
    static stream_base& base(Stream& s) noexcept {
        return s;
    }
};

inline std::span<const std::byte> as_bytes(std::string_view text) noexcept {
    return std::as_bytes(std::span<const char>(text.data(), text.size()));
}

} // namespace conflux::detail
