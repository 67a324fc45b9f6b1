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
#include <conflux/detail/operation_slot.hpp>
#include <conflux/detail/platform.hpp>
#include <conflux/detail/system_error.hpp>
#if CONFLUX_PLATFORM_POSIX
#include <conflux/detail/io_watch.hpp>
#include <conflux/detail/unique_fd.hpp>
#else
#include <conflux/detail/work_item.hpp>
#endif

#include <cerrno>
#include <coroutine>
#include <cstddef>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>

namespace conflux::detail {

#if CONFLUX_PLATFORM_POSIX
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
    bool m_library_pipe = false; // see stream_access::mark_library_pipe
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

#else
struct stream_access;

/// What the readable and writable streams share on Windows: an overlapped pipe handle whose
/// reads and writes complete on the loop's port, and the slot of the one operation it allows
/// at a time. Operations are issued, then awaited until their completion packet comes back;
/// a cancellation asks the system to end the operation and still waits for that packet, so
/// bytes that arrived meanwhile are returned, not lost.
class stream_base {
public:
    stream_base() noexcept = default;
    stream_base(conflux::native_handle handle, event_loop& loop, std::string name)
        : m_name(std::move(name)), m_loop(&loop) {
        m_pipe.reset(overlapped_pipe::adopt(handle, loop_access::reactor(loop), m_name));
    }

    bool is_open() const noexcept { return static_cast<bool>(m_pipe); }
    conflux::native_handle native_handle() const noexcept {
        return m_pipe ? m_pipe->handle() : nullptr;
    }
    const std::string& name() const noexcept { return m_name; }
    overlapped_pipe& pipe() const noexcept { return *m_pipe; }
    event_loop& loop() const noexcept { return *m_loop; }

    [[nodiscard]] operation_slot::claim enter(operation_slot& slot,
                                              std::string_view operation) const {
        if (!is_open()) operation_slot::throw_closed("stream", m_name);
        return slot.enter(operation, "stream", m_name);
    }

protected:
    void close(std::string_view operation) {
        m_slot.require_idle(operation, "stream", m_name);
        m_pipe.reset();
    }
    void abandon() noexcept { m_pipe.reset(); }

    struct releaser {
        void operator()(overlapped_pipe* p) const noexcept { p->release(); }
    };
    std::unique_ptr<overlapped_pipe, releaser> m_pipe;
    std::string m_name;
    event_loop* m_loop = nullptr;
    operation_slot m_slot;
    bool m_library_pipe = false; // see stream_access::mark_library_pipe
};

/// Awaits the completion packet of an operation already issued on an overlapped pipe;
/// resumes on the loop's thread. The stop token (any thread) cancels the operation in the
/// kernel; the coroutine still resumes only when the packet is back.
class overlapped_awaiter {
public:
    overlapped_awaiter(overlapped_pipe::operation& op, event_loop& loop,
                       const std::stop_token& token) noexcept
        : m_op(op), m_loop(&loop), m_token(token) {}
    overlapped_awaiter(const overlapped_awaiter&) = delete;
    overlapped_awaiter& operator=(const overlapped_awaiter&) = delete;
    ~overlapped_awaiter() {
        // Destroyed while the operation is in flight (its loop going away): the packet, if it
        // ever comes, finds nobody to notify; the pipe's own buffer takes the bytes.
        if (m_op.pending) {
            m_op.notify = nullptr;
            m_op.pipe->cancel(m_op);
        }
    }

    bool await_ready() const noexcept { return !m_op.pending; }
    void await_suspend(std::coroutine_handle<> h) {
        m_resume.handle = h;
        m_op.context = this;
        m_op.notify = [](void* self) noexcept {
            auto* me = static_cast<overlapped_awaiter*>(self);
            any_executor(*me->m_loop).enqueue(&me->m_resume);
        };
        // Constructed last: a token already stopped cancels at once, in this call.
        if (m_token.stop_possible()) m_callback.emplace(m_token, on_stop{&m_op});
    }
    void await_resume() noexcept {
        m_callback.reset();
        m_op.notify = nullptr;
    }

private:
    struct on_stop {
        overlapped_pipe::operation* op;
        void operator()() const noexcept { op->pipe->cancel(*op); }
    };
    overlapped_pipe::operation& m_op;
    event_loop* m_loop;
    std::stop_token m_token;
    resume_item m_resume;
    std::optional<std::stop_callback<on_stop>> m_callback;
};

inline bool is_broken_pipe(DWORD error) noexcept {
    return error == ERROR_BROKEN_PIPE || error == ERROR_NO_DATA ||
           error == ERROR_PIPE_NOT_CONNECTED;
}

/// One overlapped write of up to overlapped_pipe::buffer_size bytes of `data`; returns how
/// many were written. A reader that went away is `EPIPE`, as on POSIX systems.
inline task<std::size_t> write_chunk(stream_base& stream, const std::byte* data, std::size_t size,
                                     const std::stop_token& token) {
    // A stopped token still lets the write be issued: it is cancelled at once unless the
    // pipe takes it, as a POSIX write is attempted before any wait.
    overlapped_pipe::operation& op = stream.pipe().writer();
    if (stream.pipe().start_write(data, size)) {
        co_await overlapped_awaiter(op, stream.loop(), token);
    }
    if (op.error == 0 || op.bytes != 0) co_return op.bytes;
    if (op.error == ERROR_OPERATION_ABORTED) throw operation_cancelled();
    if (is_broken_pipe(op.error)) {
        // EPIPE as an errno value (the system category means Win32 errors here, where 32 is
        // ERROR_SHARING_VIOLATION), so that it compares equal to std::errc::broken_pipe.
        throw std::system_error(EPIPE, std::generic_category(), "write \"" + stream.name() + "\"");
    }
    throw_system_error(static_cast<int>(op.error), "write", stream.name());
}

/// `write` of `data` on `stream`, holding `slot`: at least one byte.
[[nodiscard]] inline task<std::size_t> write_some_async(stream_base& stream, operation_slot& slot,
                                                        write_kind, std::span<const std::byte> data,
                                                        std::stop_token token) {
    if (!token.stop_possible()) token = co_await get_stop_token();
    const auto claim = stream.enter(slot, "write");
    if (data.empty()) co_return 0;
    co_return co_await write_chunk(stream, data.data(), data.size(), token);
}

/// `write_all` of `data` on `stream`, holding `slot`: every byte.
[[nodiscard]] inline task<void> write_all_async(stream_base& stream, operation_slot& slot,
                                                write_kind, std::span<const std::byte> data,
                                                std::stop_token token) {
    if (!token.stop_possible()) token = co_await get_stop_token();
    const auto claim = stream.enter(slot, "write");
    std::size_t done = 0;
    while (done < data.size()) {
        done += co_await write_chunk(stream, data.data() + done, data.size() - done, token);
    }
}

/// One read of up to `size` bytes from `stream` into `data`: at least one byte, or 0 at the
/// end of the stream (the writer closed its end: ERROR_BROKEN_PIPE). The caller holds the
/// stream's read slot.
[[nodiscard]] inline task<std::size_t> read_some_async(stream_base& stream, void* data,
                                                       std::size_t size, std::stop_token token) {
    // A stopped token still lets the read be issued: what the pipe already holds is returned
    // (exec reads what was written before it ended the call), an empty pipe is cancelled at
    // once.
    overlapped_pipe::operation& op = stream.pipe().reader();
    for (;;) {
        if (stream.pipe().start_read(size)) {
            co_await overlapped_awaiter(op, stream.loop(), token);
        }
        if (op.bytes != 0) {
            std::memcpy(data, op.buffer.get(), op.bytes);
            co_return op.bytes;
        }
        if (op.error == ERROR_OPERATION_ABORTED) throw operation_cancelled();
        if (op.error == ERROR_BROKEN_PIPE || op.error == ERROR_HANDLE_EOF) co_return 0;
        if (op.error != 0 && op.error != ERROR_MORE_DATA) {
            throw_system_error(static_cast<int>(op.error), "read", stream.name());
        }
        // A read of 0 bytes that is not the end (a writer's empty write): read again.
        if (token.stop_requested()) throw operation_cancelled();
    }
}
#endif

/// For owners of streams inside the library: a child process's pipes, a socket's write side.
struct stream_access {
    /// Closes the stream whatever is pending; see stream_base::abandon.
    template <class Stream>
    static void abandon(Stream& s) noexcept {
        s.abandon();
    }

    /// Marks a pipe the library made for a child: a bulk transfer on it may widen it
    /// (detail/pipe_size.hpp). A stream over a descriptor the user handed in is never
    /// resized: its size is the user's choice, and it may be shared with other processes.
    template <class Stream>
    static void mark_library_pipe(Stream& s) noexcept {
        s.m_library_pipe = true;
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
