#pragma once

// The awaitables of `channel<T>::send` and `channel<T>::receive`, and the waiter nodes they
// link into the channel. They work on the channel's private state under its lock, as its
// friends; `channel<T>` names them `send_awaiter` and `receive_awaiter`.

#include <conflux/detail/cpp20.hpp>

#include <conflux/error.hpp>
#include <conflux/executor.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/waiter_list.hpp>

#include <coroutine>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <utility>

namespace conflux {

template <class T>
class channel;

namespace detail {

template <class T>
struct channel_receive_node : waiter_node {
    std::optional<T>* slot = nullptr;
};

template <class T>
struct channel_send_node : waiter_node {
    T* value = nullptr;
    bool closed = false;
};

template <class... T>
class select_awaiter;

inline any_executor require_executor(const char* operation) {
    any_executor e = current_executor();
    if (!e) {
        throw std::logic_error(std::string("conflux: ") + operation +
                               " must be awaited on an event_loop or thread_pool thread");
    }
    return e;
}

template <class T>
class channel_send_awaiter {
public:
    channel_send_awaiter(channel<T>& ch, T&& value, std::stop_token token) noexcept
        : m_channel(ch), m_value(std::move(value)), m_token(std::move(token)) {}
    /// Movable until awaited (as `when_all`/`when_any` do with an rvalue awaitable).
    channel_send_awaiter(channel_send_awaiter&& other) noexcept
        : m_channel(other.m_channel), m_value(std::move(other.m_value)),
          m_token(std::move(other.m_token)) {}
    channel_send_awaiter(const channel_send_awaiter&) = delete;
    channel_send_awaiter& operator=(const channel_send_awaiter&) = delete;
    ~channel_send_awaiter() { m_channel.abandon(m_pending, m_core, m_node, m_callback); }

    bool await_ready() const noexcept { return false; }

    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> h) {
        if (!m_token.stop_possible()) m_token = stop_token_of(h);
        if (m_token.stop_requested()) {
            m_early = early::cancelled;
            return false;
        }
        const any_executor resume_on = require_executor("conflux::channel::send");
        wake_list wake;
        {
            std::lock_guard lock(m_channel.m_mutex);
            if (m_channel.m_closed) {
                m_early = early::closed;
                return false;
            }
            if (m_channel.send_locked(m_value, wake)) {
                m_early = early::done;
                return false;
            }
            m_core.park.prepare(h, resume_on);
            m_channel.link_sender(m_node, m_core, &m_value);
            m_pending = true;
        }
        return m_channel.finish_suspend(m_core, m_node, m_token, m_callback);
    }

    void await_resume() {
        // First, the common case: sent without waiting (no callback, nothing linked).
        if (m_early == early::done) return;
        m_callback.reset();
        m_pending = false;
        if (m_early == early::cancelled) throw operation_cancelled();
        if (m_early == early::closed) throw channel_closed();
        if (m_core.winner() == wait_core::cancelled) throw operation_cancelled();
        if (m_node.closed) throw channel_closed();
    }

private:
    enum class early { none, done, closed, cancelled };
    channel<T>& m_channel;
    T m_value;
    std::stop_token m_token;
    early m_early = early::none;
    bool m_pending = false;
    wait_core m_core;
    channel_send_node<T> m_node;
    std::optional<std::stop_callback<cancel_wait>> m_callback;
};

template <class T>
class channel_receive_awaiter {
public:
    channel_receive_awaiter(channel<T>& ch, std::stop_token token) noexcept
        : m_channel(ch), m_token(std::move(token)) {}
    /// Movable until awaited (as `when_all`/`when_any` do with an rvalue awaitable).
    channel_receive_awaiter(channel_receive_awaiter&& other) noexcept
        : m_channel(other.m_channel), m_token(std::move(other.m_token)) {}
    channel_receive_awaiter(const channel_receive_awaiter&) = delete;
    channel_receive_awaiter& operator=(const channel_receive_awaiter&) = delete;
    ~channel_receive_awaiter() { m_channel.abandon(m_pending, m_core, m_node, m_callback); }

    bool await_ready() const noexcept { return false; }

    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> h) {
        if (!m_token.stop_possible()) m_token = stop_token_of(h);
        if (m_token.stop_requested()) {
            m_cancelled_early = true;
            return false;
        }
        const any_executor resume_on = require_executor("conflux::channel::receive");
        wake_list wake;
        {
            std::lock_guard lock(m_channel.m_mutex);
            if (m_channel.take_locked(m_slot, wake)) {
                m_taken_early = true;
                return false;
            }
            m_core.park.prepare(h, resume_on);
            m_channel.link_receiver(m_node, m_core, &m_slot);
            m_pending = true;
        }
        return m_channel.finish_suspend(m_core, m_node, m_token, m_callback);
    }

    std::optional<T> await_resume() {
        // First, the common case: taken without waiting (no callback, nothing linked). The
        // stop check is the one below, for the same reason.
        if (m_taken_early) {
            if (m_token.stop_requested()) {
                give_back(std::move(m_slot));
                throw operation_cancelled();
            }
            return std::move(m_slot);
        }
        // Waits for a stop callback running on another thread: past this line the
        // token's state is final for this wait.
        m_callback.reset();
        m_pending = false;
        if (m_cancelled_early || m_core.winner() == wait_core::cancelled) {
            throw operation_cancelled();
        }
        if (m_token.stop_requested()) {
            // The value was handed over, but the stop came before this coroutine went
            // on with it (a sender claimed the wait between the stop request and its
            // callback, or the stop was requested while the resumption was queued, as
            // when another argument of a when_any wins). Whoever stopped us will not
            // use the value: it goes back to the channel instead of being lost.
            give_back(std::move(m_slot));
            throw operation_cancelled();
        }
        return std::move(m_slot);
    }

    /// Puts a value this receive produced back into the channel, first in line (to a
    /// waiting receiver, or at the front of the queue). `when_any` calls it when the
    /// receive took a value after another argument had already won. Throws
    /// `std::bad_alloc` if the queue cannot grow (the value is then dropped).
    void give_back(std::optional<T>&& value) {
        if (value) m_channel.restore(std::move(*value));
        value.reset();
    }

private:
    channel<T>& m_channel;
    std::stop_token m_token;
    bool m_cancelled_early = false;
    bool m_taken_early = false;
    bool m_pending = false;
    std::optional<T> m_slot;
    wait_core m_core;
    channel_receive_node<T> m_node;
    std::optional<std::stop_callback<cancel_wait>> m_callback;
};

} // namespace detail
} // namespace conflux
