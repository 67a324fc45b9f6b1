#pragma once

#include <conflux/detail/cpp20.hpp>

#if !CONFLUX_HAS_FORK_IPC
#error "conflux/ipc.hpp: IPC channels are not supported on Windows yet"
#include <conflux/detail/compilation_stopped_by_the_error_above>
#endif

#include <conflux/buffer.hpp>
#include <conflux/codec.hpp>
#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/shared_buffer.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/awaitable.hpp>
#include <conflux/detail/gcc12_temporaries.hpp>
#include <conflux/detail/ipc_channel_state.hpp>
#include <conflux/detail/ipc_frame.hpp>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <variant>

namespace conflux {

/// An exception thrown by the process at the other end of a channel and not caught there (an
/// uncaught exception in a forked child): carries its type name and message.
class remote_error : public error {
public:
    remote_error(std::string type_name, std::string message)
        : error("remote_error: " + type_name + ": " + message), m_type(std::move(type_name)),
          m_message(std::move(message)) {}

    /// The exception's type as the remote process named it (demangled), e.g.
    /// "std::runtime_error".
    const std::string& type_name() const noexcept { return m_type; }
    /// Its `what()`.
    const std::string& message() const noexcept { return m_message; }

private:
    std::string m_type;
    std::string m_message;
};

/// How an `ipc_channel` frames its messages.
enum class ipc_mode {
    /// conflux's own framing: typed messages encoded by `codec<T>`, descriptors attached.
    binary,
    /// Node.js's `serialization: 'json'` framing: one JSON text per line. Messages are
    /// strings holding JSON (bring your own JSON library); no descriptors. A received line
    /// that is not JSON text (RFC 8259, nested at most `max_depth` deep) is an `ipc_error`.
    json,
};

/// Options of an IPC channel; an aggregate for designated initialisers.
struct ipc_options {
    ipc_mode mode = ipc_mode::binary;
    /// Largest frame accepted or sent (checked before allocating); default 64 MiB.
    std::size_t max_message_size = std::size_t(64) << 20;
    /// Deepest nesting a received message may have.
    std::size_t max_depth = 64;
    /// `send` waits while this many bytes are queued for a peer that is not reading; memory
    /// stays bounded by this plus one message.
    std::size_t high_water_mark = std::size_t(1) << 20;
};

/// A bidirectional message channel to another process over a Unix stream socket — the
/// `process.send` / `process.on('message')` of Node.js, typed.
///
/// Messages are values of any type `codec<T>` encodes. A `file_descriptor` inside a message
/// travels as a descriptor (SCM_RIGHTS), a `shared_buffer` as its memfd (both processes then
/// share the memory) and a shareable `buffer` as its memfd: zero-copy, and the sender's buffer
/// was moved into `send`, so it is detached. Received descriptors are close-on-exec.
///
/// Small messages sent in a row are coalesced into one write, issued once the sending
/// coroutine yields to the loop. Malformed input from the peer — bad header, lying lengths,
/// a frame over `max_message_size`, descriptors the frame did not declare, truncated control
/// data — throws `ipc_error` from `receive` and closes the channel; the process keeps running.
///
/// A channel belongs to the event loop it was created on: call everything on that loop's
/// thread (`std::logic_error` otherwise). One `receive` at a time; any number of `send`s.
/// Moving the handle is fine; dropping it closes the channel once queued output is written.
class ipc_channel {
public:
    /// An empty handle.
    ipc_channel() noexcept = default;

    /// Adopts a connected Unix stream socket (made non-blocking here) on the calling thread's
    /// event loop. Throws `std::logic_error` off a loop, `std::system_error` if `fd` is no
    /// socket.
    ipc_channel(file_descriptor fd, ipc_options options = {})
        : ipc_channel(detail::require_loop("conflux::ipc_channel"), std::move(fd), options) {}

    /// Adopts `fd` on `loop` (which need not be running yet). Throws `std::system_error`.
    ipc_channel(event_loop& loop, file_descriptor fd, ipc_options options = {})
        : m_state(std::make_shared<detail::ipc_channel_state>(
              loop, detail::unique_fd(fd.release()), options.mode == ipc_mode::json,
              codec_limits{.max_message_size = options.max_message_size,
                           .max_depth = options.max_depth},
              options.high_water_mark)) {}

    /// Two connected channels in this process (`socketpair(AF_UNIX, SOCK_STREAM)`), mostly
    /// for tests; throws `std::system_error`.
    static std::pair<ipc_channel, ipc_channel> pair(ipc_options options = {}) {
        auto [a, b] = detail::ipc_socketpair();
        return {ipc_channel(file_descriptor(a.release()), options),
                ipc_channel(file_descriptor(b.release()), options)};
    }

    ipc_channel(ipc_channel&&) noexcept = default;
    ipc_channel& operator=(ipc_channel&& other) noexcept {
        if (this != &other) {
            close_handle();
            m_state = std::move(other.m_state);
        }
        return *this;
    }
    ipc_channel(const ipc_channel&) = delete;
    ipc_channel& operator=(const ipc_channel&) = delete;
    ~ipc_channel() { close_handle(); }

    explicit operator bool() const noexcept { return static_cast<bool>(m_state); }

    /// Sends `message` (taken by value: a `buffer` inside is moved out of the caller and
    /// leaves it detached). Completes at once while less than `high_water_mark` bytes are
    /// queued; otherwise waits until the peer has read enough (back-pressure).
    ///
    /// Resumes on the channel's loop. Cancelled by `token` (default: the inherited stop
    /// token) with `operation_cancelled`, the message unsent. Throws `ipc_error` once the
    /// channel is disconnected or broken, or when the message cannot be encoded (too large,
    /// too deep, more than 253 descriptors); `std::logic_error` off the channel's loop. In
    /// `json` mode the message is a string holding one JSON text: other text, or a line
    /// feed in it, throws `std::invalid_argument`.
    ///
    /// With GCC 12, a copyable aggregate with a non-trivial destructor written in the call
    /// (`send(P{1, s})`) would be destroyed twice inside `co_await`, so rvalues of such types
    /// do not compile there (a static_assert says what to write): name the message and send
    /// the name, `P m{1, s}; co_await ch.send(m);`.
#if CONFLUX_DETAIL_GCC12_TEMPORARIES
    // Not a coroutine: the by-value copy below is made here, not in the caller's frame.
    template <class T>
    [[nodiscard]] task<void> send(T&& message, std::stop_token token = {}) {
        static_assert(!detail::gcc12_unsafe_message<T>,
                      "GCC 12 destroys an aggregate written inside a co_await expression twice: "
                      "name the message first and send the name (`T m{...}; co_await "
                      "ch.send(m);`) (GCC >= 13 and Clang accept it)");
        return send_value<std::decay_t<T>>(std::forward<T>(message), std::move(token));
    }

private:
    template <class T>
    task<void> send_value(T message, std::stop_token token) {
#else
    template <class T>
    [[nodiscard]] task<void> send(T message, std::stop_token token = {}) {
#endif
        if (!token.stop_possible()) token = co_await get_stop_token();
        std::shared_ptr<detail::ipc_channel_state> s = state("send");
        if (!s->has_room()) co_await s->wait_for_room(token);
        s->enqueue(message);
    }

public:
    /// Queues `message` unless the queue is at `high_water_mark` (returns false then, and
    /// `message` is left untouched), like Node's `send()` returning false — but without
    /// unbounded queueing. `false` only ever means "full, retry later": once the channel is
    /// disconnected or broken it throws `ipc_error`, as `send` does (a closed channel is a
    /// lifecycle error, as with `channel::try_send`); it also throws when the message cannot
    /// be encoded, and `std::logic_error` off the channel's loop.
    template <class T>
    bool try_send(T&& message) {
        auto& s = *state("try_send");
        // Closed before full: `false` must only ever mean "retry later".
        s.check_sendable();
        if (!s.has_room()) return false;
        s.enqueue(message);
        if constexpr (!std::is_lvalue_reference_v<T>) {
            // The message is consumed, as with send: a buffer inside ends up detached.
            std::remove_cvref_t<T> consumed(std::move(message));
        }
        return true;
    }

    /// The next message, decoded as `T`; empty once the peer has closed its end (or after
    /// `disconnect`). In `json` mode `T` is `std::string` (one JSON text).
    ///
    /// Resumes on the channel's loop. Cancelled by `token` (default: the inherited stop
    /// token) with `operation_cancelled`; nothing is lost (a partly received message stays
    /// buffered). A message of another type (its fingerprint is not `fingerprint_of<T>()`)
    /// throws `ipc_type_mismatch`, an `ipc_error` naming the type expected and the fingerprint
    /// received: that message is consumed (descriptors in it closed), the channel stays open.
    /// Throws `ipc_error` on malformed input (the channel is then closed and later calls
    /// return empty), `remote_error` when the peer reported an uncaught exception,
    /// `std::logic_error` for two concurrent receives or off the channel's loop.
    ///
    /// Awaitable as it is, raced in `when_any` (a receive that lost takes no message), or
    /// stored as a `task<std::optional<T>>`.
    template <class T>
    [[nodiscard]] auto receive(std::stop_token token = {}) {
        auto start = [this, token = std::move(token)](detail::race_gate gate) {
            return receive_gated<T>(token, gate);
        };
        return detail::gated_operation<std::optional<T>, decltype(start)>(std::move(start));
    }

    /// The next message, whichever of `T...` it is: a `std::variant<T...>` holding the type
    /// whose fingerprint the message carries (the peer sends a plain `A`, `B` or `C`, not a
    /// variant), for a protocol of several message types without a hand-written tag. Types
    /// with the same fingerprint (the same fields in the same order) do not compile together.
    /// A message of none of them throws `ipc_type_mismatch` and the channel stays open;
    /// otherwise as `receive` (binary mode only: `std::logic_error` on a json channel).
    template <class... T>
    [[nodiscard]] auto receive_one_of(std::stop_token token = {}) {
        auto start = [this, token = std::move(token)](detail::race_gate gate) {
            return receive_gated<std::variant<T...>, T...>(token, gate);
        };
        return detail::gated_operation<std::optional<std::variant<T...>>, decltype(start)>(
            std::move(start));
    }

    /// Waits until everything queued has been written to the socket. Resumes on the
    /// channel's loop; cancelled by `token`; throws `ipc_error` if the channel broke.
    [[nodiscard]] task<void> flush(std::stop_token token = {}) {
        if (!token.stop_possible()) token = co_await get_stop_token();
        std::shared_ptr<detail::ipc_channel_state> s = state("flush");
        co_await s->wait_drained(token);
    }

    /// Closes the channel: queued messages are still written (in the background), then the
    /// peer sees end-of-file. Later `send`s throw `ipc_error`, `receive` returns empty.
    void disconnect() {
        if (m_state) m_state->disconnect();
    }

    /// False once disconnected, broken, or closed by the peer and drained.
    bool connected() const noexcept { return m_state && m_state->connected(); }

    /// Bytes queued and not yet written.
    std::size_t pending_bytes() const noexcept { return m_state ? m_state->pending() : 0; }

    /// Low level: the socket (owned by the channel).
    conflux::native_handle native_handle() const noexcept { return m_state ? m_state->fd() : -1; }

    /// Low level: reports `e` to the peer as a `remote_error` (what a forked child does with
    /// an uncaught exception). Does not wait for it to be written.
    void send_error(std::string_view type_name, std::string_view message) {
        state("send_error")->enqueue_error(type_name, message);
    }

private:
    // `T...` given: `R` is std::variant<T...>, chosen by fingerprint.
    template <class R, class... T>
    task<std::optional<R>> receive_gated(std::stop_token token, detail::race_gate gate) {
        if (!token.stop_possible()) token = co_await get_stop_token();
        std::shared_ptr<detail::ipc_channel_state> s = state("receive");
        auto guard = s->begin_receive();
        std::optional<detail::frame> f = co_await s->next_frame(token, gate);
        if (!f) co_return std::nullopt;
        if (f->type == detail::frame_type::remote_error) {
            auto [type, what] = s->decode_error(*f);
            throw remote_error(std::move(type), std::move(what));
        }
        if constexpr (sizeof...(T) == 0) {
            co_return s->template decode_user<R>(*f);
        } else {
            co_return s->template decode_user_one_of<T...>(*f);
        }
    }

    std::shared_ptr<detail::ipc_channel_state>& state(const char* what) {
        if (!m_state)
            throw std::logic_error(std::string("conflux::ipc_channel::") + what +
                                   " on an empty handle");
        m_state->check_thread(what);
        return m_state;
    }

    void close_handle() noexcept {
        if (m_state) std::exchange(m_state, nullptr)->disconnect();
    }

    std::shared_ptr<detail::ipc_channel_state> m_state;
};

/// A `buffer` in a message: a shareable one travels as its memfd (zero-copy; the receiver maps
/// the same memory), any other as its bytes. A detached buffer arrives detached.
template <>
struct codec<buffer> {
    static constexpr std::string_view schema = "conflux::buffer";
    static constexpr std::size_t min_size = 1;
    static void encode(byte_writer& w, const buffer& b) {
        if (b.detached()) {
            w.write_raw(std::uint8_t(0));
        } else if (b.is_shareable()) {
            w.write_raw(std::uint8_t(2));
            w.write_fd(b.memfd());
            w.write_size(b.memfd_offset());
            w.write_size(b.size());
        } else {
            w.write_raw(std::uint8_t(1));
            w.write_size(b.size());
            w.write(b.bytes());
        }
    }
    static buffer decode(byte_reader& r) {
        switch (r.read_raw<std::uint8_t>()) {
        case 0:
            return {};
        case 1: {
            const std::size_t n = r.read_count(1);
            auto bytes = r.read(n);
            buffer b(n);
            if (n != 0) std::memcpy(b.data(), bytes.data(), n);
            return b;
        }
        case 2: {
            file_descriptor fd = r.read_fd();
            const std::uint64_t offset = r.read_size();
            const std::uint64_t size = r.read_size();
            if (offset > detail::memfd_mapping::max_size() ||
                size > detail::memfd_mapping::max_size() - offset) {
                byte_reader::fail("shareable buffer size out of range");
            }
            try {
                buffer b = buffer::adopt_memfd(fd.release(), offset + size);
                if (offset != 0) return std::move(b).slice(offset, size);
                return b;
            } catch (const std::system_error& e) {
                byte_reader::fail(std::string("shareable buffer refused: ") + e.what());
            }
        }
        default:
            byte_reader::fail("bad buffer kind");
        }
    }
};

/// A `shared_buffer` in a message travels as its memfd: both processes then share the bytes.
template <>
struct codec<shared_buffer> {
    static constexpr std::string_view schema = "conflux::shared_buffer";
    static constexpr std::size_t min_size = 1;
    static void encode(byte_writer& w, const shared_buffer& b) {
        w.write_size(b.size());
        if (!b.empty()) w.write_fd(b.fd());
    }
    static shared_buffer decode(byte_reader& r) {
        const std::uint64_t size = r.read_size();
        if (size == 0) return {};
        if (size > shared_buffer::max_size()) byte_reader::fail("shared_buffer too large");
        file_descriptor fd = r.read_fd();
        try {
            return shared_buffer::from_fd(fd.get(), static_cast<std::size_t>(size));
        } catch (const std::exception& e) {
            byte_reader::fail(std::string("shared_buffer refused: ") + e.what());
        }
    }
};

} // namespace conflux
