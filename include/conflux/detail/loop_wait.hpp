#pragma once

#include <conflux/executor.hpp>
#include <conflux/detail/work_item.hpp>

#include <atomic>
#include <coroutine>
#include <optional>
#include <stop_token>

namespace conflux::detail {

/// One coroutine suspended until an event that the event loop delivers on its own thread
/// (a timer, fd readiness, a child's exit), cancellable through a `std::stop_token` from any
/// thread. Exactly one of "the event" and "the cancellation" resumes the coroutine, once.
///
/// The stop callback may run on any thread, so it only claims the wait and posts the
/// cancellation to the loop; the loop's thread then withdraws the registration (timer, fd
/// interest) and resumes the coroutine. If the event wins the race, the posted cancellation
/// still runs but resumes with the event's outcome.
class loop_wait {
public:
    /// Withdraws the registration this wait stands for; runs on the loop's thread.
    using withdraw_fn = void (*)(void* context) noexcept;

    loop_wait() noexcept {
        m_cancel_item.owner = this;
        m_cancel_item.invoke = &run_cancel;
    }
    loop_wait(const loop_wait&) = delete;
    loop_wait& operator=(const loop_wait&) = delete;

    /// Called in `await_suspend`, after the registration is in place.
    void arm(std::coroutine_handle<> h, any_executor loop, const std::stop_token& token,
             withdraw_fn withdraw, void* withdraw_context) {
        m_resume.handle = h;
        m_loop = loop;
        m_withdraw = withdraw;
        m_withdraw_context = withdraw_context;
        m_state.store(waiting, std::memory_order_relaxed);
        if (token.stop_possible()) {
            m_callback.emplace(token, on_stop{this});
        }
    }

    /// The event happened (on the loop's thread). Schedules the coroutine's resumption unless
    /// a cancellation already claimed it.
    void complete() noexcept {
        int expected = waiting;
        // acq_rel: orders the outcome written by the completer before the resumption.
        if (m_state.compare_exchange_strong(expected, done, std::memory_order_acq_rel)) {
            m_loop.enqueue(&m_resume);
        } else {
            m_event_arrived = true;
        }
    }

    /// The loop that would deliver the event is being destroyed: claims the wait and resumes
    /// the coroutine at once on the calling thread (`abandoned()` then tells it so). False
    /// when the event or a cancellation has already claimed it.
    bool abandon() noexcept {
        int expected = waiting;
        if (!m_state.compare_exchange_strong(expected, done, std::memory_order_acq_rel)) {
            return false;
        }
        m_abandoned = true;
        m_resume.handle.resume();
        return true;
    }

    /// True when the wait ended because its loop went away (see `abandon`).
    bool abandoned() const noexcept { return m_abandoned; }

    /// Called in `await_resume`: drops the stop callback (waiting for it if it is running on
    /// another thread) and tells whether the wait ended by cancellation.
    bool finish() noexcept {
        m_callback.reset();
        return m_cancelled;
    }

private:
    enum : int { waiting, done, cancelling };

    struct on_stop {
        loop_wait* self;
        void operator()() const noexcept { self->request_cancel(); }
    };

    struct cancel_item : work_item {
        loop_wait* owner = nullptr;
    };

    void request_cancel() noexcept {
        int expected = waiting;
        if (m_state.compare_exchange_strong(expected, cancelling, std::memory_order_acq_rel)) {
            m_loop.enqueue(&m_cancel_item);
        }
    }

    static void run_cancel(work_item* item, work_item::action a) noexcept {
        if (a != work_item::action::run) return;
        loop_wait* self = static_cast<cancel_item*>(item)->owner;
        if (!self->m_event_arrived) {
            self->m_withdraw(self->m_withdraw_context);
            self->m_cancelled = true;
        }
        self->m_resume.handle.resume();
    }

    std::atomic<int> m_state{waiting};
    bool m_event_arrived = false;
    bool m_cancelled = false;
    bool m_abandoned = false;
    withdraw_fn m_withdraw = nullptr;
    void* m_withdraw_context = nullptr;
    any_executor m_loop;
    resume_item m_resume;
    cancel_item m_cancel_item;
    std::optional<std::stop_callback<on_stop>> m_callback;
};

} // namespace conflux::detail
