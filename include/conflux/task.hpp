#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/executor.hpp>
#include <conflux/detail/result.hpp>
#include <conflux/detail/work_item.hpp>

#include <atomic>
#include <concepts>
#include <coroutine>
#include <exception>
#include <stdexcept>
#include <stop_token>
#include <type_traits>
#include <utility>

namespace conflux {

template <class T = void>
class task;

namespace detail {

/// Promises that carry a stop token which the tasks they await inherit.
template <class P>
concept stop_token_promise = requires(const P& p) {
    { p.get_stop_token() } -> std::convertible_to<std::stop_token>;
};

/// The stop token of the coroutine behind `h`, or an empty one.
template <class P>
std::stop_token stop_token_of(std::coroutine_handle<P> h) noexcept {
    if constexpr (stop_token_promise<P>) {
        return h.promise().get_stop_token();
    } else {
        return {};
    }
}

class task_promise_base {
public:
    std::suspend_always initial_suspend() const noexcept { return {}; }

    struct final_awaiter {
        bool await_ready() const noexcept { return false; }

        template <class Promise>
        std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> self) noexcept {
            task_promise_base& p = self.promise();
            // The awaiter and this final step race to the flag. If the awaiter has not
            // suspended yet (this task completed inside its await_suspend, or on another
            // thread meanwhile), it sees the flag set and simply carries on: a million tasks
            // that complete synchronously in a row never nest, whether or not the compiler
            // turns symmetric transfer into a tail call (GCC does not at -O0).
            // acq_rel: publishes the result to the awaiter, and sees its continuation.
            if (!p.m_handoff.exchange(true, std::memory_order_acq_rel)) {
                return std::noop_coroutine();
            }
            // Executor affinity: the awaiter resumes on the executor it was running on. When
            // this task finished there too (the common case), symmetric transfer keeps the
            // stack flat however many tasks complete synchronously in a row.
            if (!p.m_resume_on || p.m_resume_on.running_in_this_thread()) {
                return p.m_continuation;
            }
            p.m_resume_item.handle = p.m_continuation;
            // After enqueue the awaiter may run on another thread and destroy this frame at
            // once: nothing here may touch `p` afterwards.
            p.m_resume_on.enqueue(&p.m_resume_item);
            return std::noop_coroutine();
        }

        void await_resume() const noexcept {}
    };

    final_awaiter final_suspend() const noexcept { return {}; }

    /// The stop token this task inherited from the coroutine that awaits it.
    const std::stop_token& get_stop_token() const noexcept { return m_stop_token; }

    /// Starts the task for an awaiter. Returns false when the task already completed, so the
    /// awaiter must not suspend; otherwise the task will resume the awaiter when it completes.
    bool start(std::coroutine_handle<> self, std::coroutine_handle<> continuation,
               any_executor resume_on, std::stop_token token) noexcept {
        m_continuation = continuation;
        m_resume_on = resume_on;
        m_stop_token = std::move(token);
        self.resume();
        return !m_handoff.exchange(true, std::memory_order_acq_rel);
    }

private:
    std::atomic<bool> m_handoff{false};
    std::coroutine_handle<> m_continuation;
    any_executor m_resume_on;
    resume_item m_resume_item;
    std::stop_token m_stop_token;
};

template <class T>
class task_promise : public task_promise_base {
public:
    task<T> get_return_object() noexcept;

    template <std::convertible_to<T> U>
    void return_value(U&& value) {
        if constexpr (std::is_reference_v<T>) {
            m_result.set_value(static_cast<T>(std::forward<U>(value)));
        } else {
            m_result.set_value(std::forward<U>(value));
        }
    }

    void unhandled_exception() noexcept { m_result.set_exception(std::current_exception()); }

    T take_result() { return m_result.take(); }

private:
    result<T> m_result;
};

template <>
class task_promise<void> : public task_promise_base {
public:
    task<void> get_return_object() noexcept;
    void return_void() const noexcept {}
    void unhandled_exception() noexcept { m_exception = std::current_exception(); }

    void take_result() {
        if (m_exception) {
            std::rethrow_exception(std::exchange(m_exception, nullptr));
        }
    }

private:
    std::exception_ptr m_exception;
};

} // namespace detail

/// A lazy, move-only coroutine producing a `T` (or nothing, or a reference).
///
/// Nothing runs until the task is awaited (or handed to `run`, `when_all`, `when_any`,
/// `event_loop::detach`). Awaiting starts it on the awaiter's thread; a task that completes
/// without suspending hands its value straight back (the stack stays flat however many such
/// awaits run in a row), and one that suspended resumes its awaiter by symmetric transfer
/// when it completes. Its value is returned and its exception rethrown in the awaiter. The awaiter
/// resumes on the executor it was running on when it awaited, even if the task moved to another
/// executor meanwhile. A task inherits its awaiter's stop token: see `get_stop_token()`.
///
/// Destroying a task that has not run, or that is suspended, destroys its frame (and, through
/// it, the frames of the tasks it is awaiting). A task can be awaited once.
///
/// ```
/// conflux::task<int> answer() { co_return 42; }
/// conflux::task<> amain() { int x = co_await answer(); }
/// ```
template <class T>
class [[nodiscard]] task {
public:
    using promise_type = detail::task_promise<T>;
    using value_type = T;

    task() noexcept = default;
    explicit task(std::coroutine_handle<promise_type> h) noexcept : m_handle(h) {}
    task(task&& other) noexcept : m_handle(std::exchange(other.m_handle, {})) {}
    task& operator=(task&& other) noexcept {
        if (this != &other) {
            destroy();
            m_handle = std::exchange(other.m_handle, {});
        }
        return *this;
    }
    task(const task&) = delete;
    task& operator=(const task&) = delete;
    ~task() { destroy(); }

    /// False for a default-constructed or moved-from task.
    bool valid() const noexcept { return static_cast<bool>(m_handle); }
    explicit operator bool() const noexcept { return valid(); }

    /// True once the coroutine has run to completion.
    bool done() const noexcept { return m_handle && m_handle.done(); }

    auto operator co_await() && { return awaiter{m_handle}; }
    auto operator co_await() & { return awaiter{m_handle}; }

private:
    struct awaiter {
        std::coroutine_handle<promise_type> m_handle;

        bool await_ready() const {
            if (!m_handle) {
                throw std::logic_error("conflux::task: awaiting an empty (moved-from) task");
            }
            if (m_handle.done()) {
                throw std::logic_error("conflux::task: awaiting a task that already ran");
            }
            return false;
        }

        template <class Promise>
        bool await_suspend(std::coroutine_handle<Promise> awaiting) noexcept {
            return m_handle.promise().start(m_handle, awaiting, current_executor(),
                                            detail::stop_token_of(awaiting));
        }

        T await_resume() { return m_handle.promise().take_result(); }
    };

    void destroy() noexcept {
        if (m_handle) {
            std::exchange(m_handle, {}).destroy();
        }
    }

    std::coroutine_handle<promise_type> m_handle;
};

namespace detail {

template <class T>
task<T> task_promise<T>::get_return_object() noexcept {
    return task<T>{std::coroutine_handle<task_promise<T>>::from_promise(*this)};
}

inline task<void> task_promise<void>::get_return_object() noexcept {
    return task<void>{std::coroutine_handle<task_promise<void>>::from_promise(*this)};
}

} // namespace detail

/// Awaitable giving the current coroutine's stop token: the one it inherited from its
/// awaiter, as `when_any` sets for the tasks it races. Completes at once, without suspending.
///
/// ```
/// std::stop_token token = co_await conflux::get_stop_token();
/// ```
namespace detail {
class stop_token_awaiter {
public:
    bool await_ready() const noexcept { return false; }
    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> h) noexcept {
        m_token = stop_token_of(h);
        return false;
    }
    std::stop_token await_resume() noexcept { return std::move(m_token); }

private:
    std::stop_token m_token;
};
} // namespace detail

[[nodiscard]] inline detail::stop_token_awaiter get_stop_token() noexcept { return {}; }

} // namespace conflux
