#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/buffer.hpp>
#include <conflux/error.hpp>
#include <conflux/executor.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/channel_awaiters.hpp>
#include <conflux/detail/gcc12_temporaries.hpp>
#include <conflux/detail/spinning_mutex.hpp>
#include <conflux/detail/waiter_list.hpp>

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <limits>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

namespace conflux {

/// A multi-producer, multi-consumer queue of `T` between coroutines and threads: Go's
/// channel, and the safe-across-threads counterpart of Node.js's `MessageChannel`.
///
/// - `channel<T>(capacity)`: a sender waits while `capacity` values are queued
///   (back-pressure); capacity 0 is a rendezvous (each send waits for its receiver), and
///   `channel<T>::unbounded` never makes a sender wait.
/// - `co_await send(v)` / `co_await receive()` for coroutines, `try_send` / `try_receive`
///   that never wait, `blocking_send` / `blocking_receive` for plain threads.
/// - `close()`: receivers drain what is queued, then get `std::nullopt`; waiting and later
///   senders get `channel_closed`. Closing twice is a no-op.
///
/// Every member is thread-safe. Values are moved, never copied, and values hand over in FIFO
/// order; waiting senders and receivers are served first come, first served. A waiting
/// coroutine resumes on the executor it was running on, never inline in another party's call
/// and never under the channel's lock. A wait cancelled through its stop token throws
/// `operation_cancelled` and neither loses nor duplicates a value: a wait ends either with
/// a value or cancelled, never both (a value handed over just as the stop arrives goes back
/// to the channel, first in line). So a receive can lose a `when_any` without consuming.
///
/// The channel must outlive every wait on it. Immovable.
///
/// ```
/// conflux::channel<int> ch(16);
/// co_await ch.send(1);
/// while (auto v = co_await ch.receive()) use(*v);   // until closed and drained
/// ```
template <class T>
class channel {
    static_assert(std::is_nothrow_move_constructible_v<T>,
                  "conflux::channel<T>: T must be nothrow move constructible (values are handed "
                  "over under the channel's lock)");
    static_assert(!std::is_reference_v<T>, "conflux::channel<T>: T must be a value type");

    using receive_node = detail::channel_receive_node<T>;
    using send_node = detail::channel_send_node<T>;

public:
    using value_type = T;

    /// The capacity of a channel whose senders never wait.
    static constexpr std::size_t unbounded = std::numeric_limits<std::size_t>::max();

    /// A channel holding up to `capacity` values (0: rendezvous; `unbounded`).
    explicit channel(std::size_t capacity) : m_capacity(capacity) {}

    channel(const channel&) = delete;
    channel& operator=(const channel&) = delete;

    std::size_t capacity() const noexcept { return m_capacity; }

    /// Values queued right now (a snapshot).
    std::size_t size() const {
        std::lock_guard lock(m_mutex);
        return m_queue.size();
    }

    bool closed() const {
        std::lock_guard lock(m_mutex);
        return m_closed;
    }

    using send_awaiter = detail::channel_send_awaiter<T>;
    using receive_awaiter = detail::channel_receive_awaiter<T>;

    /// Awaitable: queues `value`, or hands it to a waiting receiver; waits while the channel
    /// is full. Resumes on the awaiting coroutine's executor. Throws `channel_closed` if the
    /// channel is or gets closed first (the value is dropped), `operation_cancelled` when
    /// `token` — by default the coroutine's inherited stop token — is stopped first (the
    /// value was not sent), `std::logic_error` when awaited outside an executor, and
    /// `conflux::error` for a detached `buffer`.
    ///
    /// With GCC 12, a copyable aggregate with a non-trivial destructor written in the call
    /// (`send(P{1, s})`, `send({1, s})`) would be destroyed twice inside `co_await`, so rvalues
    /// of such a `T` do not compile there (a static_assert says what to write): name the value
    /// and send the name, `P m{1, s}; co_await ch.send(m);`.
#if CONFLUX_DETAIL_GCC12_TEMPORARIES
    // By reference: a copy made here, outside the caller's coroutine frame, is sound.
    [[nodiscard]] send_awaiter
    send(const T& value, std::stop_token token = {}) requires std::is_copy_constructible_v<T> {
        T copy(value);
        check_sendable(copy);
        return send_awaiter(*this, std::move(copy), std::move(token));
    }

    [[nodiscard]] send_awaiter send(T&& value, std::stop_token token = {}) {
        static_assert(!detail::gcc12_unsafe_message<T>,
                      "GCC 12 destroys an aggregate written inside a co_await expression twice: "
                      "name it first and send the name (`T m{...}; co_await ch.send(m);`), or "
                      "give T a constructor (GCC >= 13 and Clang accept it)");
        check_sendable(value);
        return send_awaiter(*this, std::move(value), std::move(token));
    }
#else
    [[nodiscard]] send_awaiter send(T value, std::stop_token token = {}) {
        check_sendable(value);
        return send_awaiter(*this, std::move(value), std::move(token));
    }
#endif

    /// Awaitable: the next value, or `std::nullopt` once the channel is closed and drained.
    /// Resumes on the awaiting coroutine's executor. Throws `operation_cancelled` when
    /// `token` (by default the inherited stop token) is stopped first (no value was taken),
    /// `std::logic_error` when awaited outside an executor.
    [[nodiscard]] receive_awaiter receive(std::stop_token token = {}) {
        return receive_awaiter(*this, std::move(token));
    }

    /// Sends without waiting: true if `value` was queued or handed to a receiver (and moved
    /// from), false if the channel is full (`value` is left untouched) — the only reason for
    /// `false`. Throws `channel_closed` on a closed channel, as `send` does (a closed channel
    /// is a lifecycle error, not a state to poll for; Go's send panics there too), and
    /// `conflux::error` for a detached `buffer`.
    bool try_send(T&& value) {
        check_sendable(value);
        detail::wake_list wake;
        std::lock_guard lock(m_mutex);
        return send_locked(value, wake);
    }

    bool try_send(const T& value) requires std::is_copy_constructible_v<T> {
        T copy(value);
        return try_send(std::move(copy));
    }

    /// Receives without waiting: a value, or `std::nullopt` when none is ready or when the
    /// channel is closed and drained (the end, as `receive` reports it); `closed()` tells the
    /// two apart. Never throws.
    std::optional<T> try_receive() {
        std::optional<T> out;
        detail::wake_list wake;
        std::lock_guard lock(m_mutex);
        take_locked(out, wake);
        return out;
    }

    /// `send` for plain threads: blocks the calling thread (spinning briefly, then sleeping
    /// on a futex) while the channel is full. Throws as `send` does. Never call it on an
    /// event loop's thread: it would block the loop.
    void blocking_send(T value, std::stop_token token = {}) {
        check_sendable(value);
        if (token.stop_requested()) throw operation_cancelled();
        detail::wait_core core;
        send_node node;
        {
            detail::wake_list wake;
            std::lock_guard lock(m_mutex);
            if (send_locked(value, wake)) return;
            core.park.prepare_thread();
            link_sender(node, core, &value);
        }
        block(core, node, token);
        if (node.closed) throw channel_closed();
    }

    /// `receive` for plain threads: blocks while the channel is empty and open. Throws
    /// `operation_cancelled` when `token` is stopped first.
    std::optional<T> blocking_receive(std::stop_token token = {}) {
        if (token.stop_requested()) throw operation_cancelled();
        std::optional<T> out;
        detail::wait_core core;
        receive_node node;
        {
            detail::wake_list wake;
            std::lock_guard lock(m_mutex);
            if (take_locked(out, wake)) return out;
            core.park.prepare_thread();
            link_receiver(node, core, &out);
        }
        block(core, node, token);
        if (token.stop_requested()) {
            // Stopped after the value was handed over: as for `receive`, it goes back.
            if (out) restore(std::move(*out));
            throw operation_cancelled();
        }
        return out;
    }

    /// Closes the channel: queued values stay receivable; waiting receivers get
    /// `std::nullopt`, waiting senders `channel_closed`. Idempotent. Thread-safe.
    void close() noexcept {
        detail::wake_list wake;
        std::lock_guard lock(m_mutex);
        if (m_closed) return;
        m_closed = true;
        while (send_node* s = claim_sender_locked()) {
            s->closed = true;
            wake.push(s);
        }
        while (receive_node* r = claim_receiver_locked()) wake.push(r);
        note_handoff(wake);
    }

private:
    template <class... U>
    friend class detail::select_awaiter;
    friend class detail::channel_send_awaiter<T>;
    friend class detail::channel_receive_awaiter<T>;

    static void check_sendable([[maybe_unused]] const T& value) {
        if constexpr (std::is_same_v<T, buffer>) {
            if (value.detached()) {
                throw error("conflux::channel: cannot send a detached buffer (it was already "
                            "transferred)");
            }
        }
    }

    static void withdraw_sender(detail::waiter_node* n) noexcept {
        auto* self = static_cast<channel*>(n->owner);
        std::lock_guard lock(self->m_mutex);
        self->m_senders.unlink(n);
    }

    static void withdraw_receiver(detail::waiter_node* n) noexcept {
        auto* self = static_cast<channel*>(n->owner);
        std::lock_guard lock(self->m_mutex);
        self->m_receivers.unlink(n);
    }

    void link_sender(send_node& node, detail::wait_core& core, T* value) noexcept {
        node.core = &core;
        node.index = 0;
        node.owner = this;
        node.withdraw = &withdraw_sender;
        node.value = value;
        m_senders.push_back(&node);
    }

    void link_receiver(receive_node& node, detail::wait_core& core, std::optional<T>* slot,
                       std::uint32_t index = 0) noexcept {
        node.core = &core;
        node.index = index;
        node.owner = this;
        node.withdraw = &withdraw_receiver;
        node.slot = slot;
        m_receivers.push_back(&node);
    }

    // Pops the first waiting sender whose wait can still be claimed; the ones already claimed
    // elsewhere (cancelled) are unlinked on the way. Under the lock.
    send_node* claim_sender_locked() noexcept {
        while (detail::waiter_node* n = m_senders.front()) {
            m_senders.unlink(n);
            if (n->core->try_claim(n->index)) return static_cast<send_node*>(n);
        }
        return nullptr;
    }

    receive_node* claim_receiver_locked() noexcept {
        while (detail::waiter_node* n = m_receivers.front()) {
            m_receivers.unlink(n);
            if (n->core->try_claim(n->index)) return static_cast<receive_node*>(n);
        }
        return nullptr;
    }

    // Under the lock: sends `value` (moving from it) if a receiver waits or there is room;
    // false if the channel is full. Throws channel_closed.
    bool send_locked(T& value, detail::wake_list& wake) {
        if (m_closed) throw channel_closed();
        if (receive_node* r = claim_receiver_locked()) {
            r->slot->emplace(std::move(value));
            wake.push(r);
            note_handoff(wake);
            return true;
        }
        if (m_queue.size() < m_capacity) {
            m_queue.push_back(std::move(value));
            return true;
        }
        return false;
    }

    // Puts back a value a receiver took but will not use (its wait was stopped after the
    // hand-over): first in line, so that it keeps its place before the values queued after
    // it. The queue may exceed the capacity by the values so returned.
    void restore(T&& value) {
        detail::wake_list wake;
        std::lock_guard lock(m_mutex);
        if (m_queue.empty()) {
            if (receive_node* r = claim_receiver_locked()) {
                r->slot->emplace(std::move(value));
                wake.push(r);
                note_handoff(wake);
                return;
            }
        }
        m_queue.push_front(std::move(value));
    }

    // Under the lock: takes the next value into `out` (refilling the queue from a waiting
    // sender); true if it did or the channel is closed and drained, false if it must wait.
    bool take_locked(std::optional<T>& out, detail::wake_list& wake) noexcept {
        if (!m_queue.empty()) {
            out.emplace(std::move(m_queue.front()));
            m_queue.pop_front();
            // Not above the capacity: a queue holding returned values (see restore) may be
            // longer, and a rendezvous channel's senders wait for a receiver.
            if (m_queue.size() >= m_capacity) return true;
            if (send_node* s = claim_sender_locked()) {
                // A failure to allocate here has no one to report to; queues of bounded
                // channels rarely allocate, and unbounded ones never have waiting senders.
                m_queue.push_back(std::move(*s->value));
                wake.push(s);
                note_handoff(wake);
            }
            return true;
        }
        if (send_node* s = claim_sender_locked()) {
            out.emplace(std::move(*s->value));
            wake.push(s);
            note_handoff(wake);
            return true;
        }
        return m_closed;
    }

    // True when a value could be taken (or the end seen) without waiting. Under the lock.
    bool ready_locked() const noexcept {
        return !m_queue.empty() || !m_senders.empty() || m_closed;
    }

    // Remembers whether the last hand-off crossed threads: waiters on such a channel spin
    // briefly before sleeping, and on a channel used within one thread they do not (the peer
    // cannot run while they spin).
    void note_handoff(const detail::wake_list& wake) noexcept {
        if (!wake.empty()) m_spin.store(wake.remote(), std::memory_order_relaxed);
    }

    template <class Node>
    bool finish_suspend(detail::wait_core& core, Node& node, const std::stop_token& token,
                        std::optional<std::stop_callback<detail::cancel_wait>>& callback) {
        if (token.stop_possible()) {
            callback.emplace(token, detail::cancel_wait{&core, &node.self, 1});
        }
        if (!m_spin.load(std::memory_order_relaxed) || !m_spin_governor.should_spin()) {
            return core.park.finish_suspend(false);
        }
        // finish_suspend returns false when the spin saw the wake-up (no suspension needed).
        const bool suspended = core.park.finish_suspend(true);
        m_spin_governor.record(!suspended);
        return suspended;
    }

    void block(detail::wait_core& core, detail::waiter_node& node, const std::stop_token& token) {
        std::optional<std::stop_callback<detail::cancel_wait>> callback;
        if (token.stop_possible()) {
            callback.emplace(token, detail::cancel_wait{&core, &node.self, 1});
        }
        core.park.block();
        callback.reset();
        if (core.winner() == detail::wait_core::cancelled) throw operation_cancelled();
    }

    // A waiting awaiter destroyed without being resumed (its coroutine frame destroyed, as
    // when its event loop is torn down): withdraws it so the channel forgets it.
    static void abandon(bool pending, detail::wait_core& core, detail::waiter_node& node,
                        std::optional<std::stop_callback<detail::cancel_wait>>& callback) noexcept {
        if (!pending) return;
        callback.reset();
        if (core.try_claim(detail::wait_core::cancelled)) node.withdraw(&node);
    }

    // Held for a few dozen instructions at a time, by a producer and a consumer that may run
    // on two cores at once: see spinning_mutex.
    mutable detail::spinning_mutex m_mutex;
    std::deque<T> m_queue;
    detail::waiter_list m_senders;
    detail::waiter_list m_receivers;
    const std::size_t m_capacity;
    bool m_closed = false;
    std::atomic<bool> m_spin{false};
    detail::spin_governor m_spin_governor;
};

} // namespace conflux

// receive_any, the select over several channels, has its own header; it is included here
// too, after the channel it needs, so that code written against channel.hpp alone keeps
// compiling.
#include <conflux/receive_any.hpp>
