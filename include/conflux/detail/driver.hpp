#pragma once

#include <conflux/detail/result.hpp>
#include <conflux/detail/trampoline.hpp>

#include <array>
#include <atomic>
#include <coroutine>
#include <cstddef>
#include <exception>
#include <stop_token>
#include <tuple>
#include <utility>

namespace conflux::detail {

/// An internal coroutine that awaits a task on behalf of `run`, `detach`, `when_all` and
/// `when_any`. It starts when resumed, and at its end calls `on_finish` with its own frame
/// suspended, which decides where control goes next (handed to the trampoline loop that
/// resumed the driver, if one did, else by symmetric transfer) and may destroy it.
class driver {
public:
    using finish_fn = std::coroutine_handle<> (*)(void* context,
                                                  std::coroutine_handle<> self) noexcept;

    struct promise_type {
        std::stop_token m_stop_token;
        finish_fn m_on_finish = nullptr;
        void* m_context = nullptr;

        driver get_return_object() noexcept {
            return driver{std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_always initial_suspend() const noexcept { return {}; }

        struct final_awaiter {
            bool await_ready() const noexcept { return false; }
            std::coroutine_handle<> await_suspend(std::coroutine_handle<promise_type> h) noexcept {
                promise_type& p = h.promise();
                const std::coroutine_handle<> next =
                    p.m_on_finish ? p.m_on_finish(p.m_context, h) : std::noop_coroutine();
                // `h` may be destroyed by now: only its address is compared. A driver that a
                // trampoline loop resumed hands the next coroutine to the loop, which keeps
                // the stack flat where symmetric transfer would not (GCC at -O0).
                // on_finish hands over only what may run on this thread's executor.
                if (next != std::noop_coroutine() && trampoline_hand_over(h, next, {})) {
                    return std::noop_coroutine();
                }
                return next;
            }
            void await_resume() const noexcept {}
        };
        final_awaiter final_suspend() const noexcept { return {}; }
        void return_void() const noexcept {}
        // Driver bodies catch everything themselves.
        void unhandled_exception() const noexcept { std::terminate(); }
        const std::stop_token& get_stop_token() const noexcept { return m_stop_token; }
    };

    driver() noexcept = default;
    explicit driver(std::coroutine_handle<promise_type> h) noexcept : m_handle(h) {}
    driver(driver&& other) noexcept : m_handle(std::exchange(other.m_handle, {})) {}
    driver& operator=(driver&& other) noexcept {
        if (this != &other) {
            reset();
            m_handle = std::exchange(other.m_handle, {});
        }
        return *this;
    }
    ~driver() { reset(); }

    void configure(finish_fn on_finish, void* context, std::stop_token token = {}) noexcept {
        auto& p = m_handle.promise();
        p.m_on_finish = on_finish;
        p.m_context = context;
        p.m_stop_token = std::move(token);
    }

    std::coroutine_handle<promise_type> handle() const noexcept { return m_handle; }

    /// Gives up ownership: the frame will destroy itself (from its on_finish) or be
    /// destroyed by whoever holds the handle.
    std::coroutine_handle<promise_type> release() noexcept { return std::exchange(m_handle, {}); }

    void reset() noexcept {
        if (m_handle) std::exchange(m_handle, {}).destroy();
    }

private:
    std::coroutine_handle<promise_type> m_handle;
};

/// Keeps the first exception, in completion order, among several drivers (thread-safe).
class first_failure {
public:
    void offer(const std::exception_ptr& e) noexcept {
        // acq_rel: whoever reads the exception later synchronises through the join counter.
        if (!m_claimed.exchange(true, std::memory_order_acq_rel)) m_exception = e;
    }
    const std::exception_ptr& get() const noexcept { return m_exception; }

private:
    std::atomic<bool> m_claimed{false};
    std::exception_ptr m_exception;
};

/// A driver that awaits `t` and stores its value or exception in `out` (and offers the
/// exception to `failure`, when given).
template <class Task, class Result>
driver drive_into(Task t, Result& out, first_failure* failure = nullptr) {
    try {
        if constexpr (std::is_void_v<typename Task::value_type>) {
            co_await std::move(t);
            out.set_value();
        } else {
            out.set_value(co_await std::move(t));
        }
    } catch (...) {
        if (failure) failure->offer(std::current_exception());
        out.set_exception(std::current_exception());
    }
}

template <class Tuple, std::size_t... I, class... Task>
std::array<driver, sizeof...(Task)> drive_each_into(Tuple& results, first_failure* failure,
                                                    std::index_sequence<I...>, Task&... tasks) {
    return {drive_into(std::move(tasks), std::get<I>(results), failure)...};
}

/// One driver per task, the i-th writing into the i-th slot of the tuple `results`.
template <class Tuple, class... Task>
std::array<driver, sizeof...(Task)> drive_each_into(Tuple& results, first_failure* failure,
                                                    Task&... tasks) {
    return drive_each_into(results, failure, std::index_sequence_for<Task...>{}, tasks...);
}

} // namespace conflux::detail
