#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/awaitable.hpp>
#include <conflux/detail/capture_string.hpp>
#include <conflux/detail/fd_io.hpp>
#include <conflux/detail/pipe_size.hpp>
#include <conflux/detail/stream_io.hpp>
#include <conflux/detail/system_error.hpp>

#include <algorithm>
#include <cstddef>
#include <cstring>
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

/// Thrown by `read_line` when a line is longer than the stream's `max_line_length()`.
class line_too_long : public error {
public:
    using error::error;
};

/// The reading end of a pipe (or any non-blocking-capable fd: a socket, a FIFO), read
/// asynchronously on the event loop it belongs to: a child's stdout/stderr from
/// `child_process::out()`/`err()`.
///
/// Every operation must be awaited on the loop's thread and resumes there. Each takes a
/// `std::stop_token` (default: the one the awaiting coroutine inherited); stopping it ends the
/// wait with `operation_cancelled`, and no data is lost (bytes not yet returned stay in the
/// pipe or in the stream's line buffer). One operation at a time; a second concurrent one
/// throws `std::logic_error`. Read errors throw `std::system_error` naming the stream.
class readable_stream : private detail::stream_base {
public:
    /// An empty stream (`is_open()` false).
    readable_stream() noexcept = default;

    /// Adopts `fd` (closes it on destruction), makes it non-blocking and watches it on `loop`
    /// (on Windows: a pipe handle opened for overlapped I/O, associated with the loop's
    /// completion port). `name` appears in error messages.
    readable_stream(conflux::native_handle fd, event_loop& loop, std::string name = "stream")
        : stream_base(fd, loop, std::move(name)) {}

    readable_stream(readable_stream&&) noexcept = default;
    readable_stream& operator=(readable_stream&&) noexcept = default;

    using stream_base::is_open;
    using stream_base::name;
    using stream_base::native_handle;

    friend struct detail::stream_access;

    /// Closes the fd. Idempotent. Throws `std::logic_error` while a read is pending.
    void close() { stream_base::close("read"); }

    /// Reads at least one byte into `buffer`, waiting until some are available; returns how
    /// many, or 0 at end of stream (the writer closed its end).
    ///
    /// The reads return an awaitable: awaited as it is, raced in `when_any` (a read that lost
    /// consumes nothing: bytes it had read are kept for the next read), or stored as the
    /// `task` it converts to.
    [[nodiscard]] auto read_some(std::span<std::byte> buffer, std::stop_token token = {}) {
        auto start = [this, buffer, token = std::move(token)](detail::race_gate gate) {
            return read_some_gated(buffer, token, gate);
        };
        return detail::gated_operation<std::size_t, decltype(start)>(std::move(start));
    }

    /// Same, for a span of chars.
    [[nodiscard]] auto read_some(std::span<char> buffer, std::stop_token token = {}) {
        return read_some(std::as_writable_bytes(buffer), std::move(token));
    }

    /// Reads until end of stream and returns everything. Cancelled, it keeps what it had read
    /// for the next read.
    [[nodiscard]] auto read_all(std::stop_token token = {}) {
        auto start = [this, token = std::move(token)](detail::race_gate gate) {
            return read_all_gated(token, gate);
        };
        return detail::gated_operation<std::string, decltype(start)>(std::move(start));
    }

    /// Appends to `out` until end of stream, or until `out` holds `limit` bytes (0 = no
    /// limit) and one more is available, which sets `*overflow`. On cancellation what was
    /// read so far stays in `out` and `operation_cancelled` is thrown.
    ///
    /// Reads go straight into `out`'s spare capacity: an `out` reserved ahead (or reused from
    /// an earlier call, `clear()`ed) is filled without growing. Grown here, `out` doubles up
    /// to 1 MiB and then grows fourfold, and a large `out` is backed by huge pages where the
    /// system gives them on request (Linux, transparent huge pages in `madvise` mode).
    [[nodiscard]] task<void> read_into(std::string& out, std::size_t limit, bool* overflow,
                                       std::stop_token token = {}) {
        if (!token.stop_possible()) token = co_await get_stop_token();
        auto busy = enter(m_slot, "read");
        if (overflow != nullptr) *overflow = false;
        if (m_pos < m_buffer.size()) {
            out.append(m_buffer, m_pos);
            m_buffer.clear();
            m_pos = 0;
        }
        // One pipe-full per read. Where the spare capacity must be zero-filled before a read
        // (no resize_and_overwrite), a read takes at most one pipe-full's worth of it.
        constexpr std::size_t pipe_full = 64 * 1024;
        constexpr std::size_t window = detail::appends_without_zeroing ? 1024 * 1024 : pipe_full;
        // The most capacity the capture can use: the limit plus the one byte that tells an
        // overflow from an exact fit.
        const std::size_t cap = limit != 0 && limit < out.max_size() ? limit + 1 : out.max_size();
#if !CONFLUX_PLATFORM_WINDOWS
        const int fd = native_handle();
        // A capture that has reached 1 MiB is a bulk transfer: a wider pipe lets each wake-up
        // drain more, and the writer block less often.
        bool widened = false;
#endif
        // A read at a full string's end goes to `spill` first: the string grows only once
        // bytes have arrived, so the end of the stream never costs a reallocation.
        std::unique_ptr<char[]> spill;
        for (;;) {
            if (limit != 0 && out.size() > limit) {
                out.resize(limit);
                if (overflow != nullptr) *overflow = true;
                co_return;
            }
            const std::size_t old = out.size();
            const std::size_t want = std::min(window, cap - old);
            const std::size_t spare = out.capacity() - old;
#if CONFLUX_PLATFORM_WINDOWS
            // Overlapped reads complete on the port, so each one is awaited: into the spare
            // capacity, or into `spill` when the string is full.
            if (spare < want && spare < 4096) {
                if (!spill) spill = std::make_unique_for_overwrite<char[]>(pipe_full);
                const std::size_t got =
                    co_await read_raw(spill.get(), std::min(want, pipe_full), token);
                if (got == 0) co_return;
                detail::reserve_for_capture(out, detail::capture_growth(old, got, cap));
                out.append(spill.get(), got);
                continue;
            }
            const std::size_t room = std::min(want, spare);
            out.resize(old + room);
            std::size_t got = 0;
            try {
                got = co_await read_raw(out.data() + old, room, token);
            } catch (...) {
                out.resize(old);
                throw;
            }
            out.resize(old + got);
            if (got == 0) co_return;
#else
            if (!widened && m_library_pipe && out.capacity() >= detail::bulk_pipe_size) {
                detail::widen_pipe(fd, detail::bulk_pipe_size);
                widened = true;
            }
            detail::io_result r;
            if (spare < want && spare < 4096) {
                if (!spill) spill = std::make_unique_for_overwrite<char[]>(pipe_full);
                r = detail::fd_read_some(fd, spill.get(), std::min(want, pipe_full));
                if (r.error == 0 && r.bytes != 0) {
                    detail::reserve_for_capture(out, detail::capture_growth(old, r.bytes, cap));
                    out.append(spill.get(), r.bytes);
                }
            } else {
                detail::append_in_place(out, std::min(want, spare),
                                        [&](char* at, std::size_t n) noexcept {
                                            r = detail::fd_read_some(fd, at, n);
                                            return r.bytes;
                                        });
            }
            if (r.error == 0) {
                if (r.bytes == 0) co_return;
                continue;
            }
            if (!r.would_block()) detail::throw_system_error(r.error, "read", m_name);
            co_await watch().readable(token);
#endif
        }
    }

    /// Reads one line and returns it without its "\n" (nor a "\r" before it), or an empty
    /// optional at end of stream. A last line without a newline is returned as it is.
    ///
    /// A line is at most `max_line_length()` bytes (default 1 MiB, the newline not counted):
    /// a longer one throws `line_too_long` once that many bytes have arrived without a
    /// newline, so the stream never buffers more than that (plus one read). Nothing is lost:
    /// the bytes stay buffered for `read_some`, and another `read_line` throws again.
    ///
    /// ```
    /// while (auto line = co_await child.out().read_line()) use(*line);
    /// ```
    [[nodiscard]] auto read_line(std::stop_token token = {}) {
        auto start = [this, token = std::move(token)](detail::race_gate gate) {
            return read_line_gated(token, gate);
        };
        return detail::gated_operation<std::optional<std::string>, decltype(start)>(
            std::move(start));
    }

    /// The longest line `read_line` returns; 0 = no limit.
    std::size_t max_line_length() const noexcept { return m_max_line; }
    void set_max_line_length(std::size_t bytes) noexcept { m_max_line = bytes; }

private:
    task<std::size_t> read_some_gated(std::span<std::byte> buffer, std::stop_token token,
                                      detail::race_gate gate) {
        if (!token.stop_possible()) token = co_await get_stop_token();
        auto busy = enter(m_slot, "read");
        char* const into = static_cast<char*>(static_cast<void*>(buffer.data()));
        if (m_pos < m_buffer.size()) {
            if (!gate.claim()) throw operation_cancelled();
            co_return take_buffered(into, buffer.size());
        }
        const std::size_t got = co_await read_raw(buffer.data(), buffer.size(), token);
        if (got != 0 && !gate.claim()) {
            // Lost a race: the bytes are the next read's.
            m_buffer.assign(into, got);
            m_pos = 0;
            throw operation_cancelled();
        }
        co_return got;
    }

    task<std::string> read_all_gated(std::stop_token token, detail::race_gate gate) {
        if (!token.stop_possible()) token = co_await get_stop_token();
        std::string out;
        try {
            co_await read_into(out, 0, nullptr, token);
        } catch (const operation_cancelled&) {
            unread(std::move(out));
            throw;
        }
        if (!gate.claim()) {
            unread(std::move(out));
            throw operation_cancelled();
        }
        co_return out;
    }

    task<std::optional<std::string>> read_line_gated(std::stop_token token,
                                                     detail::race_gate gate) {
        if (!token.stop_possible()) token = co_await get_stop_token();
        auto busy = enter(m_slot, "read");
        std::size_t scan_from = m_pos;
        for (;;) {
            const auto nl = m_buffer.find('\n', scan_from);
            if (nl != std::string::npos) {
                if (m_max_line != 0 && nl - m_pos > m_max_line) throw_line_too_long();
                if (!gate.claim()) throw operation_cancelled();
                std::size_t end = nl;
                if (end > m_pos && m_buffer[end - 1] == '\r') --end;
                std::string line = m_buffer.substr(m_pos, end - m_pos);
                m_pos = nl + 1;
                compact();
                co_return line;
            }
            compact();
            scan_from = m_buffer.size();
            if (m_max_line != 0 && m_buffer.size() - m_pos > m_max_line) throw_line_too_long();
            constexpr std::size_t chunk = 16 * 1024;
            const std::size_t old = m_buffer.size();
            m_buffer.resize(old + chunk);
            std::size_t got = 0;
            try {
                got = co_await read_raw(m_buffer.data() + old, chunk, token);
            } catch (...) {
                m_buffer.resize(old);
                throw;
            }
            m_buffer.resize(old + got);
            if (got == 0) {
                if (m_pos == m_buffer.size()) co_return std::nullopt;
                if (!gate.claim()) throw operation_cancelled();
                std::string rest = m_buffer.substr(m_pos);
                m_buffer.clear();
                m_pos = 0;
                co_return rest;
            }
        }
    }

    [[noreturn]] void throw_line_too_long() const {
        throw line_too_long("read_line on " + m_name + ": a line longer than " +
                            std::to_string(m_max_line) + " bytes (max_line_length)");
    }

    // Puts `bytes`, read but not delivered, back in front of whatever is buffered.
    void unread(std::string bytes) {
        if (bytes.empty()) return;
        bytes.append(m_buffer, m_pos);
        m_buffer = std::move(bytes);
        m_pos = 0;
    }

    task<std::size_t> read_raw(void* data, std::size_t size, const std::stop_token& token) {
        return detail::read_some_async(*this, data, size, token);
    }

    std::size_t take_buffered(char* data, std::size_t size) {
        const std::size_t n = std::min(size, m_buffer.size() - m_pos);
        std::memcpy(data, m_buffer.data() + m_pos, n);
        m_pos += n;
        compact();
        return n;
    }

    void compact() {
        if (m_pos == m_buffer.size()) {
            m_buffer.clear();
            m_pos = 0;
        } else if (m_pos > 64 * 1024 && m_pos * 2 > m_buffer.size()) {
            m_buffer.erase(0, m_pos);
            m_pos = 0;
        }
    }

    std::string m_buffer; // bytes read ahead by read_line, from m_pos on
    std::size_t m_pos = 0;
    std::size_t m_max_line = 1024 * 1024;
};

/// The writing end of a pipe (or socket, FIFO), written asynchronously on the event loop it
/// belongs to: a child's stdin from `child_process::in()`.
///
/// Back-pressure: a write awaits while the pipe is full. A reader that went away makes the
/// write throw `std::system_error` with `EPIPE` — never a SIGPIPE that kills the process (the
/// loop's thread keeps SIGPIPE blocked from its first pipe write until `run()` returns, so a
/// write costs one system call; see docs/process.md, "Signals"). Every
/// operation must be awaited on the loop's thread and resumes there; each takes a
/// `std::stop_token` (default: the inherited one) that ends the wait with
/// `operation_cancelled` (bytes already written stay written). One operation at a time.
class writable_stream : private detail::stream_base {
public:
    writable_stream() noexcept = default;

    /// Adopts `fd`, makes it non-blocking and watches it on `loop` (on Windows: as for
    /// `readable_stream`).
    writable_stream(conflux::native_handle fd, event_loop& loop, std::string name = "stream")
        : stream_base(fd, loop, std::move(name)) {}

    writable_stream(writable_stream&&) noexcept = default;
    writable_stream& operator=(writable_stream&&) noexcept = default;

    using stream_base::is_open;
    using stream_base::name;
    using stream_base::native_handle;

    friend struct detail::stream_access;

    /// Closes the fd: the reader sees end of stream (a child's stdin gets EOF). Idempotent.
    /// Throws `std::logic_error` while a write is pending.
    void close() { stream_base::close("write"); }

    /// Writes at least one byte of `data` (waiting while the pipe is full) and returns how
    /// many were written.
    [[nodiscard]] task<std::size_t> write(std::span<const std::byte> data,
                                          std::stop_token token = {}) {
        return detail::write_some_async(*this, m_slot, detail::write_kind::any, data,
                                        std::move(token));
    }

    [[nodiscard]] task<std::size_t> write(std::string_view data, std::stop_token token = {}) {
        return write(detail::as_bytes(data), std::move(token));
    }

    /// Writes all of `data`, waiting as often as the pipe fills up. On cancellation or error
    /// an unknown prefix of `data` has been written. From 1 MiB on, a child's pipe made by
    /// the library is first widened to 1 MiB where the system allows it (Linux), so that each
    /// wake-up moves more.
    [[nodiscard]] task<void> write_all(std::span<const std::byte> data,
                                       std::stop_token token = {}) {
        if (m_library_pipe && data.size() >= detail::bulk_pipe_size) {
            detail::widen_pipe(native_handle(), detail::bulk_pipe_size);
        }
        return detail::write_all_async(*this, m_slot, detail::write_kind::any, data,
                                       std::move(token));
    }

    [[nodiscard]] task<void> write_all(std::string_view data, std::stop_token token = {}) {
        return write_all(detail::as_bytes(data), std::move(token));
    }
};

/// A queue in front of a `writable_stream` (Node's `writable.write` semantics): `write`
/// appends without awaiting and returns whether to keep writing (false once `high_water_mark`
/// bytes are queued); `co_await flush()` (or `drain()`) writes the queue out through the
/// stream, `co_await close()` flushes then closes it. Nothing is written before a flush.
///
/// ```
/// conflux::buffered_writer w(child.in());
/// for (const auto& row : rows) {
///     if (!w.write(row)) co_await w.drain(); // above the high-water mark: let it out
/// }
/// co_await w.close(); // flushes, then EOF for the child
/// ```
///
/// Errors: a flush to a reader that went away throws `std::system_error` with EPIPE (never a
/// SIGPIPE), and the bytes not written stay queued; `write` after `close` throws
/// `std::logic_error`. Used on the stream's loop thread, like the stream; the stream must
/// outlive it.
class buffered_writer {
public:
    explicit buffered_writer(writable_stream& stream, std::size_t high_water_mark = 64 * 1024)
        : m_stream(&stream), m_high_water(high_water_mark) {}

    buffered_writer(const buffered_writer&) = delete;
    buffered_writer& operator=(const buffered_writer&) = delete;

    /// Queues `data`; true while fewer than `high_water_mark` bytes are queued. Throws
    /// `std::logic_error` after `close()`.
    bool write(std::string_view data) {
        if (m_closed) {
            throw std::logic_error("conflux::buffered_writer: write after close on " +
                                   m_stream->name());
        }
        m_queue.append(data);
        return m_queue.size() - m_pos < m_high_water;
    }

    /// Bytes queued, not yet written.
    std::size_t buffered() const noexcept { return m_queue.size() - m_pos; }
    std::size_t high_water_mark() const noexcept { return m_high_water; }

    /// Writes everything queued. Cancelled or failed, what was not written stays queued.
    [[nodiscard]] task<void> flush(std::stop_token token = {}) {
        while (m_pos < m_queue.size()) {
            const std::string_view rest = std::string_view(m_queue).substr(m_pos);
            m_pos += co_await m_stream->write(rest, token);
        }
        m_queue.clear();
        m_pos = 0;
    }

    /// Node's `'drain'`: returns once the queue is written out (the same as `flush`).
    [[nodiscard]] task<void> drain(std::stop_token token = {}) { return flush(std::move(token)); }

    /// Flushes, then closes the stream (the reader sees end of stream). Later writes throw.
    /// If the flush fails the stream is closed all the same and the error is thrown.
    [[nodiscard]] task<void> close(std::stop_token token = {}) {
        m_closed = true;
        std::exception_ptr failed;
        try {
            co_await flush(std::move(token));
        } catch (...) {
            failed = std::current_exception();
        }
        m_stream->close();
        if (failed) std::rethrow_exception(failed);
    }

private:
    writable_stream* m_stream;
    std::size_t m_high_water;
    std::string m_queue;
    std::size_t m_pos = 0;
    bool m_closed = false;
};

} // namespace conflux
