#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/loop_wait.hpp>
#include <conflux/detail/timer_heap.hpp>

#include <chrono>
#include <coroutine>
#include <stop_token>

namespace conflux {

namespace detail {

/// Suspends until a deadline on the current event loop, cancellable by a stop token.
class timer_awaiter {
public:
    timer_awaiter(std::chrono::steady_clock::time_point deadline, std::stop_token token)
        : m_token(std::move(token)) {
        m_entry.deadline = deadline;
        m_entry.context = this;
        m_entry.fire = [](timer_entry* e) noexcept {
            static_cast<timer_awaiter*>(e->context)->m_wait.complete();
        };
    }
    timer_awaiter(const timer_awaiter&) = delete;
    timer_awaiter& operator=(const timer_awaiter&) = delete;
    ~timer_awaiter() {
        // Destroyed while still queued: the frame is going away during loop shutdown.
        if (m_entry.queued()) loop_access::remove_timer(*m_loop, &m_entry);
    }

    bool await_ready() const {
        if (m_token.stop_requested()) throw operation_cancelled();
        return false;
    }

    void await_suspend(std::coroutine_handle<> h) {
        m_loop = &require_loop("conflux::sleep_for");
        loop_access::add_timer(*m_loop, &m_entry);
        m_wait.arm(
            h, any_executor(*m_loop), m_token,
            [](void* context) noexcept {
                auto* self = static_cast<timer_awaiter*>(context);
                loop_access::remove_timer(*self->m_loop, &self->m_entry);
            },
            this);
    }

    void await_resume() {
        if (m_wait.finish()) throw operation_cancelled();
    }

private:
    timer_entry m_entry;
    loop_wait m_wait;
    event_loop* m_loop = nullptr;
    std::stop_token m_token;
};

} // namespace detail

/// Suspends the calling coroutine until `deadline` (steady clock) passes.
///
/// Must be awaited on an event loop's thread (throws `std::logic_error` otherwise); resumes
/// on that loop. Cancelled by `token` — or, when none is given, by the stop token the
/// coroutine inherited (see `get_stop_token`) — with `operation_cancelled`.
template <class Duration>
task<void> sleep_until(std::chrono::time_point<std::chrono::steady_clock, Duration> deadline,
                       std::stop_token token = {}) {
    if (!token.stop_possible()) token = co_await get_stop_token();
    co_await detail::timer_awaiter(
        std::chrono::time_point_cast<std::chrono::steady_clock::duration>(deadline),
        std::move(token));
}

/// Suspends the calling coroutine for at least `duration`. A zero or negative duration still
/// yields to the loop once.
///
/// ```
/// co_await conflux::sleep_for(std::chrono::milliseconds(10));
/// ```
///
/// Must be awaited on an event loop's thread; resumes there. Cancelled by `token` (or the
/// inherited stop token) with `operation_cancelled`.
template <class Rep, class Period>
task<void> sleep_for(std::chrono::duration<Rep, Period> duration, std::stop_token token = {}) {
    return sleep_until(std::chrono::steady_clock::now() +
                           std::chrono::ceil<std::chrono::steady_clock::duration>(duration),
                       std::move(token));
}

} // namespace conflux
