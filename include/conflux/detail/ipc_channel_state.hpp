#pragma once

// The socket side of `ipc_channel`: the outgoing queue and its background writer, the
// reading side with its frame decoder, back-pressure waits. Lives on one event loop.

#include <conflux/codec.hpp>
#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/awaitable.hpp>
#include <conflux/detail/io_watch.hpp>
#include <conflux/detail/ipc_frame.hpp>
#include <conflux/detail/ipc_json.hpp>
#include <conflux/detail/ipc_message.hpp>
#include <conflux/detail/ipc_transport.hpp>
#include <conflux/detail/loop_wait.hpp>
#include <conflux/detail/operation_slot.hpp>
#include <conflux/detail/socket.hpp>
#include <conflux/detail/stream_io.hpp>
#include <conflux/detail/system_error.hpp>
#include <conflux/detail/unique_fd.hpp>

#include <algorithm>
#include <cerrno>
#include <coroutine>
#include <cstddef>
#include <cstring>
#include <deque>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace conflux::detail {

class ipc_channel_state : public std::enable_shared_from_this<ipc_channel_state> {
public:
    static constexpr std::size_t read_chunk = 64 * 1024;

    ipc_channel_state(event_loop& loop, unique_fd sock, bool json, codec_limits limits,
                      std::size_t high_water_mark)
        : m_loop(&loop), m_sock(std::move(sock)), m_json(json), m_limits(limits),
          m_hwm(high_water_mark), m_decoder(limits.max_message_size), m_json_lines(limits) {
        prepare_ipc_endpoint(m_sock.get());
        m_short_read_empties = short_read_empties(m_sock.get());
        m_watch = std::make_unique<io_watch>(loop, m_sock.get());
        m_flush.owner = this;
        m_flush.invoke = &run_flush;
    }
    ipc_channel_state(const ipc_channel_state&) = delete;
    ipc_channel_state& operator=(const ipc_channel_state&) = delete;
    ~ipc_channel_state() {
        m_watch.reset(); // out of epoll before the descriptor closes
    }

    int fd() const noexcept { return m_sock.get(); }
    event_loop& loop() const noexcept { return *m_loop; }
    bool json() const noexcept { return m_json; }
    std::size_t pending() const noexcept { return m_out.size() - m_out_pos; }
    bool has_room() const noexcept { return pending() < m_hwm; }
    bool connected() const noexcept { return !m_disconnecting && !m_broken && !m_failed && !m_eof; }

    void check_thread(const char* what) const {
        if (!m_loop->running_in_this_thread()) {
            throw std::logic_error(std::string("conflux::ipc_channel::") + what +
                                   " called off the channel's event loop thread");
        }
    }

    // ---- sending ------------------------------------------------------------------------

    void check_sendable() const {
        if (m_disconnecting) throw ipc_error("conflux::ipc: send on a disconnected channel");
        if (m_broken || m_failed) throw ipc_error("conflux::ipc: send on a broken channel");
    }

    template <class T>
    void enqueue(const T& message) {
        check_sendable();
        if (m_json) {
            if constexpr (std::is_convertible_v<const T&, std::string_view>) {
                enqueue_json(std::string_view(message));
                return;
            } else {
                throw std::logic_error("conflux::ipc_channel: a json channel sends strings "
                                       "holding JSON text");
            }
        }
        const std::size_t start = m_out.size();
        std::vector<file_descriptor> fds;
        try {
            // The header, then the type's fingerprint: one resize for both.
            m_out.resize(start + frame_header_size + fingerprint_size);
            const std::uint64_t fingerprint = fingerprint_of<T>();
            std::memcpy(m_out.data() + start + frame_header_size, &fingerprint, fingerprint_size);
            byte_writer w(m_out, &fds, m_limits.max_depth);
            encode_value(w, message);
            finish_frame(start, frame_type::user, fds);
        } catch (...) {
            m_out.resize(start);
            throw;
        }
        schedule_write();
    }

    void enqueue_error(std::string_view type_name, std::string_view message) {
        check_sendable();
        if (m_json) return; // Node has no such message; the exit status tells
        const std::size_t start = m_out.size();
        std::vector<file_descriptor> fds;
        try {
            m_out.resize(start + frame_header_size);
            byte_writer w(m_out, &fds);
            encode_value(w, std::string(type_name.substr(0, 4096)));
            encode_value(w, std::string(message.substr(0, 64 * 1024)));
            finish_frame(start, frame_type::remote_error, fds);
        } catch (...) {
            m_out.resize(start);
            throw;
        }
        schedule_write();
    }

    /// Waits while the queue is at the high-water mark.
    task<void> wait_for_room(std::stop_token token) {
        while (!has_room()) {
            check_sendable();
            co_await waiter(*this, m_room_waiters, token);
        }
        check_sendable();
    }

    task<void> wait_drained(std::stop_token token) {
        while (pending() != 0 && !m_broken) co_await waiter(*this, m_drain_waiters, token);
        if (m_broken) throw ipc_error("conflux::ipc: the channel broke before all was written");
    }

    void disconnect() noexcept {
        if (m_disconnecting) return;
        m_disconnecting = true;
        wake(m_room_waiters);
        if (!m_writer_running) shut();
    }

    // ---- receiving ----------------------------------------------------------------------

    [[nodiscard]] operation_slot::claim begin_receive() {
        return m_receiving.enter("receive", "ipc channel", {});
    }

    /// The next complete frame, or empty at end-of-file. Throws `ipc_error` (and closes the
    /// channel) on malformed input.
    ///
    /// Takes a frame only once `gate` opens (a receive that lost a `when_any` takes none).
    task<std::optional<frame>> next_frame(std::stop_token token, race_gate gate) {
        for (;;) {
            if (m_failed || m_disconnecting) co_return std::nullopt;
            std::optional<frame> f;
            if (m_returned) {
                f.swap(m_returned);
            } else if (m_json) {
                try {
                    f = m_json_lines.next();
                } catch (const ipc_error& e) {
                    fail(e.what());
                }
            } else if (m_decoder.has_frame()) {
                f = m_decoder.pop();
            }
            if (f) {
                if (!gate.claim()) {
                    // Another entrant of the race won: the frame is the next receive's.
                    m_returned = std::move(f);
                    throw operation_cancelled();
                }
                co_return f;
            }
            if (m_eof) {
                if (m_json ? m_json_lines.mid_line() : m_decoder.mid_frame()) {
                    fail("the peer closed the channel in the middle of a message");
                }
                co_return std::nullopt;
            }
            if (std::exchange(m_drained, false) && !m_watch->hung_up()) {
                // The last read emptied the socket: wait for the next edge rather than pay
                // for a read that would only say EAGAIN. Not after a hang-up: the end of the
                // stream is no data, so a short read does not prove it consumed, and its edge
                // may already have been taken together with the last data's.
                co_await m_watch->readable(token);
            }
            if (!read_some()) co_await m_watch->readable(token);
        }
    }

    std::pair<std::string, std::string> decode_error(frame& f) {
        try {
            byte_reader r(f.body, m_limits);
            auto type = decode_value<std::string>(r);
            auto what = decode_value<std::string>(r);
            return {std::move(type), std::move(what)};
        } catch (const ipc_error& e) {
            fail(e.what());
        }
    }

    template <class T>
    T decode_user(frame& f) {
        if (m_json) {
            if constexpr (std::is_same_v<T, std::string>) {
                return std::string(reinterpret_cast<const char*>(f.body.data()), f.body.size());
            } else {
                throw std::logic_error("conflux::ipc_channel: a json channel receives "
                                       "std::string (JSON text)");
            }
        } else {
            return decode_binary([&] { return decode_message<T>(f.body, m_limits, f.fds); });
        }
    }

    template <class... T>
    std::variant<T...> decode_user_one_of(frame& f) {
        if (m_json) {
            throw std::logic_error("conflux::ipc_channel: a json channel receives std::string "
                                   "(JSON text), not one of several types");
        }
        return decode_binary([&] { return decode_message_one_of<T...>(f.body, m_limits, f.fds); });
    }

    /// A message of another type is the receiver's to handle: the channel stays open (the
    /// frame, and any descriptor in it, is dropped by the caller). Malformed input closes it.
    template <class Decode>
    auto decode_binary(Decode decode) {
        try {
            return decode();
        } catch (const ipc_type_mismatch&) {
            throw;
        } catch (const ipc_error& e) {
            fail(e.what());
        }
    }

    /// Closes the channel after malformed input and throws `ipc_error`.
    [[noreturn]] void fail(const std::string& why) {
        m_failed = true;
        m_out.clear();
        m_out_pos = 0;
        m_marks.clear();
        wake(m_room_waiters);
        wake(m_drain_waiters);
        shut_down_transport(m_sock.get());
        throw ipc_error(why);
    }

private:
    struct fd_mark {
        std::size_t offset; // of the frame header in m_out
        std::vector<file_descriptor> fds;
    };

    /// A coroutine waiting for the writer to make progress.
    class waiter {
    public:
        waiter(ipc_channel_state& s, std::vector<loop_wait*>& list, std::stop_token token)
            : m_state(s), m_list(list), m_token(std::move(token)) {}
        waiter(const waiter&) = delete;
        waiter& operator=(const waiter&) = delete;
        ~waiter() { withdraw(this); }

        bool await_ready() const {
            if (m_token.stop_requested()) throw operation_cancelled();
            return false;
        }
        void await_suspend(std::coroutine_handle<> h) {
            m_list.push_back(&m_wait);
            m_wait.arm(h, any_executor(*m_state.m_loop), m_token, &withdraw, this);
        }
        void await_resume() {
            if (m_wait.finish()) throw operation_cancelled();
        }

    private:
        static void withdraw(void* self) noexcept {
            auto* me = static_cast<waiter*>(self);
            std::erase(me->m_list, &me->m_wait);
        }

        ipc_channel_state& m_state;
        std::vector<loop_wait*>& m_list;
        std::stop_token m_token;
        loop_wait m_wait;
    };

    static void wake(std::vector<loop_wait*>& list) noexcept {
        for (loop_wait* w : std::exchange(list, {})) w->complete();
    }

    void finish_frame(std::size_t start, frame_type type, std::vector<file_descriptor>& fds) {
        const std::size_t length = m_out.size() - start - frame_header_size;
        if (length > m_limits.max_message_size || length > 0xffffffffu) {
            throw ipc_error("conflux::ipc: message of " + std::to_string(length) +
                            " bytes exceeds max_message_size " +
                            std::to_string(m_limits.max_message_size));
        }
        if (fds.size() > max_frame_fds) {
            throw ipc_error("conflux::ipc: more than 253 descriptors in one message");
        }
        write_frame_header(m_out.data() + start, type, fds.size(), length);
        if (!fds.empty()) m_marks.push_back({start, std::move(fds)});
    }

    void enqueue_json(std::string_view text) {
        check_json_message(text, m_limits);
        const std::size_t start = m_out.size();
        m_out.resize(start + text.size() + 1);
        std::memcpy(m_out.data() + start, text.data(), text.size());
        m_out[start + text.size()] = std::byte{'\n'};
        schedule_write();
    }

    // Writing is deferred to a flush item on the loop's queue, which runs once the sending
    // coroutine yields: every message queued meanwhile goes out in the same write. The flush
    // writes at once while the socket takes the bytes; only a full socket starts the writer
    // coroutine that waits for space. So a message costs no allocation unless it must wait.
    void schedule_write() {
        if (m_writer_running) return;
        m_writer_running = true;
        m_flush_hold = shared_from_this(); // the queued item must not outlive the state
        m_loop->enqueue(&m_flush);
    }

    struct flush_item : work_item {
        ipc_channel_state* owner = nullptr;
    };

    static void run_flush(work_item* item, work_item::action a) noexcept {
        auto* self = static_cast<flush_item*>(item)->owner;
        auto hold = std::move(self->m_flush_hold);
        if (a == work_item::action::discard) return; // the loop is going away
        if (self->write_some_now() == write_outcome::would_block) {
            try {
                self->m_loop->detach(writer(hold)); // a copy: `hold` outlives a throw
                return;
            } catch (...) {
                self->break_channel(); // no memory for the writer: nothing can be sent
            }
        }
        self->end_writing();
    }

    // The background writer: the library's write loop (see stream_io.hpp). It is detached,
    // and a detached task inherits no stop token: nothing cancels it.
    struct flush_op {
        using result_type = void;
        std::shared_ptr<ipc_channel_state> s;

        operation_slot::claim start() const noexcept { return {}; }
        bool step() const noexcept {
            if (s->write_some_now() == write_outcome::would_block) return false;
            s->end_writing();
            return true;
        }
        io_watch& watch() const noexcept { return *s->m_watch; }
    };

    static task<void> writer(std::shared_ptr<ipc_channel_state> s) {
        return write_loop(flush_op{std::move(s)}, std::stop_token());
    }

    void end_writing() noexcept {
        m_writer_running = false;
        if (pending() == 0) wake(m_drain_waiters);
        if (m_disconnecting) shut();
    }

    void break_channel() noexcept {
        m_broken = true;
        drop_output();
    }

    enum class write_outcome { done, would_block };

    /// Writes what is queued until it is all out, the socket is full (would_block) or the
    /// channel breaks (done, with m_broken set).
    write_outcome write_some_now() noexcept {
        while (!m_broken && !m_failed) {
            compact();
            if (m_out_pos == m_out.size()) break;
            std::size_t end = m_out.size();
            std::vector<file_descriptor>* attach = nullptr;
            if (!m_marks.empty()) {
                if (m_marks.front().offset == m_out_pos) {
                    // This frame's descriptors go with the write that starts at its header,
                    // and that write stops before the next frame that has descriptors.
                    attach = &m_marks.front().fds;
                    if (m_marks.size() > 1) end = m_marks[1].offset;
                } else {
                    end = m_marks.front().offset;
                }
            }
            const io_result r = send(m_out.data() + m_out_pos, end - m_out_pos, attach);
            if (r.error != 0) {
                if (r.would_block()) return write_outcome::would_block;
                m_broken = true; // EPIPE, ECONNRESET: the peer is gone
                break;
            }
            if (attach != nullptr) m_marks.pop_front(); // our duplicates close here
            m_out_pos += r.bytes;
            if (has_room()) wake(m_room_waiters);
        }
        if (m_broken || m_failed) drop_output();
        return write_outcome::done;
    }

    // One non-blocking write: the bytes alone as every socket write goes, or with the frame's
    // descriptors attached.
    io_result send(const std::byte* data, std::size_t size,
                   const std::vector<file_descriptor>* attach) noexcept {
        if (attach == nullptr) return fd_write_some(m_sock.get(), data, size, write_kind::socket);
        int raw[max_frame_fds];
        std::size_t count = 0;
        for (const file_descriptor& f : *attach) raw[count++] = f.get();
        return send_with_fds(m_sock.get(), data, size, std::span<const int>(raw, count));
    }

    // Frees what can no longer be sent, and lets waiting senders see why.
    void drop_output() noexcept {
        m_out.clear();
        m_out_pos = 0;
        m_marks.clear();
        wake(m_room_waiters);
    }

    void compact() {
        if (m_out_pos == m_out.size()) {
            m_out.clear();
            m_out_pos = 0;
            // Do not keep a huge buffer around after one huge message.
            if (m_out.capacity() > 4 * m_hwm + 4 * read_chunk) std::vector<std::byte>().swap(m_out);
            return;
        }
        if (m_out_pos >= read_chunk && m_out_pos >= m_out.size() / 2) {
            m_out.erase(m_out.begin(), m_out.begin() + static_cast<std::ptrdiff_t>(m_out_pos));
            for (fd_mark& m : m_marks) m.offset -= m_out_pos;
            m_out_pos = 0;
        }
    }

    void shut() noexcept {
        if (m_shut) return;
        m_shut = true;
        // Wakes a pending receive (it sees end-of-file) and tells the peer.
        shut_down_transport(m_sock.get());
    }

    /// One read; false when nothing was there (EAGAIN).
    bool read_some() {
        std::span<std::byte> into;
        const bool direct = !m_json && m_decoder.direct_space().size() >= read_chunk;
        if (direct) {
            into = m_decoder.direct_space();
        } else {
            if (m_in.size() < read_chunk) m_in.resize(read_chunk);
            into = std::span(m_in);
        }
        const ipc_received r = receive_with_fds(m_sock.get(), into);
        // Own every descriptor that arrived before looking at anything else, so that
        // each error path below closes them.
        std::vector<file_descriptor> fds;
        fds.reserve(r.fd_count);
        for (std::size_t i = 0; i < r.fd_count; ++i) fds.emplace_back(r.fds[i]);
        if (r.error != 0) {
            if (r.would_block()) return false;
            if (r.error == ECONNRESET) {
                m_eof = true;
                return true;
            }
            throw_system_error(r.error, "recvmsg", "ipc channel");
        }
        if (r.truncated) fail("descriptors were truncated (MSG_CTRUNC)");
        if (r.bytes == 0) {
            if (!fds.empty()) fail("descriptors arrived without data");
            m_eof = true;
            return true;
        }
        const std::size_t got = r.bytes;
        // A Unix stream read stops short of the buffer only when the queue ran out, or
        // after an skb that carried descriptors (or at a change of sender with
        // SO_PASSCRED, checked at construction, or at an out-of-band mark, which no IPC
        // peer sends). So a short read without descriptors left the socket empty, and the
        // next data raises a fresh edge.
        m_drained = m_short_read_empties && got < into.size() && fds.empty();
        try {
            if (m_json) {
                if (!fds.empty()) fail("descriptors on a json channel");
                m_json_lines.feed(into.first(got));
            } else if (direct) {
                if (!fds.empty()) m_decoder.reject_direct_fds();
                m_decoder.commit_direct(got);
            } else {
                m_decoder.feed(into.first(got), std::move(fds));
            }
        } catch (const ipc_error& e) {
            if (!m_failed) fail(e.what());
            throw;
        }
        return true;
    }

    event_loop* m_loop;
    unique_fd m_sock;
    std::unique_ptr<io_watch> m_watch;
    bool m_json;
    codec_limits m_limits;
    std::size_t m_hwm;

    std::vector<std::byte> m_out;
    std::size_t m_out_pos = 0;
    std::deque<fd_mark> m_marks;
    bool m_writer_running = false; // a flush is queued or the writer coroutine runs
    flush_item m_flush;
    std::shared_ptr<ipc_channel_state> m_flush_hold; // this state, while m_flush is queued
    bool m_disconnecting = false;
    bool m_broken = false;
    bool m_shut = false;
    std::vector<loop_wait*> m_room_waiters;
    std::vector<loop_wait*> m_drain_waiters;

    frame_decoder m_decoder;
    std::optional<frame> m_returned; // taken by a receive that lost a race: the next one's
    std::vector<std::byte> m_in;
    json_line_decoder m_json_lines; // json mode
    bool m_eof = false;
    bool m_drained = false;
    bool m_short_read_empties = false;
    bool m_failed = false;
    operation_slot m_receiving;
};

} // namespace conflux::detail
