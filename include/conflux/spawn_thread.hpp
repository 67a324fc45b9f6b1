#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/event_loop.hpp>
#include <conflux/executor.hpp>
#include <conflux/task.hpp>
#include <conflux/thread_pool.hpp>
#include <conflux/detail/driver.hpp>
#include <conflux/detail/gcc12_temporaries.hpp>
#include <conflux/detail/join.hpp>
#include <conflux/detail/native_thread.hpp>
#include <conflux/detail/result.hpp>
#include <conflux/detail/waiter_list.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdlib>
#include <functional>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <type_traits>
#include <utility>

namespace conflux {

namespace detail {

template <class T>
struct unwrap_task {
    using type = T;
    static constexpr bool is_task = false;
};
template <class T>
struct unwrap_task<task<T>> {
    using type = T;
    static constexpr bool is_task = true;
};

/// `f(token, args...)` when `f` takes a stop token first, else `f(args...)`.
template <class F, class... Args>
decltype(auto) invoke_with_token(F& f, std::stop_token token, Args&... args) {
    if constexpr (std::is_invocable_v<F&, std::stop_token, Args&&...>) {
        return std::invoke(f, std::move(token), std::move(args)...);
    } else {
        return std::invoke(f, std::move(args)...);
    }
}

template <class F, class... Args>
using call_result_t =
    typename std::conditional_t<std::is_invocable_v<F&, std::stop_token, Args&&...>,
                                std::invoke_result<F&, std::stop_token, Args&&...>,
                                std::invoke_result<F&, Args&&...>>::type;

/// Runs `t` with `token` as the stop token it (and everything it awaits) inherits.
template <class T>
task<T> with_stop_token(task<T> t, std::stop_token token) {
    result<T> out;
    std::array<driver, 1> drivers{drive_into(std::move(t), out)};
    join_counter counter(1);
    drivers[0].configure(
        [](void* context, std::coroutine_handle<>) noexcept -> std::coroutine_handle<> {
            return static_cast<join_counter*>(context)->arrive();
        },
        &counter, std::move(token));
    co_await counter.start_and_wait(drivers);
    co_return out.take();
}

/// Runs `t` to completion on a fresh event loop on the calling thread, with `token` as its
/// inherited stop token.
template <class T>
T run_with_stop_token(task<T> t, std::stop_token token) {
    event_loop loop;
    return loop.run_until_complete(with_stop_token(std::move(t), std::move(token)));
}

/// How long a join yields to a thread that has announced its end (its function returned)
/// before blocking in the system's join. The exit after that (C runtime clean-up, stack
/// release, the exit system call) took 11-16 us on a loaded 2-core machine, within one yield
/// 99.8 % of the time; the budget leaves room for a busier one.
inline constexpr std::chrono::microseconds thread_exit_budget{50};

/// Awaiter that runs `fn` on a new thread and resumes its coroutine, on the executor it was
/// running on, with the outcome. The thread is joined in `await_resume` (or, if the frame
/// is destroyed while waiting, in the destructor).
template <class R, class Fn>
class thread_awaiter {
public:
    thread_awaiter(Fn fn, thread_options options)
        : m_fn(std::move(fn)), m_options(std::move(options)) {}
    thread_awaiter(const thread_awaiter&) = delete;
    thread_awaiter& operator=(const thread_awaiter&) = delete;
    ~thread_awaiter() {
        // Destroyed while the thread runs (the frame is torn down with its loop): tell the
        // thread not to resume us, then wait for it.
        if (m_thread.joinable()) {
            m_done.exchange(abandoned, std::memory_order_acq_rel);
            m_thread.join();
        }
    }

    bool await_ready() const noexcept { return false; }

    bool await_suspend(std::coroutine_handle<> h) {
        m_park.prepare(h, require_resume_executor());
        m_thread = native_thread(
            [this]() noexcept {
                try {
                    if constexpr (std::is_void_v<R>) {
                        m_fn();
                        m_out.set_value();
                    } else {
                        m_out.set_value(m_fn());
                    }
                } catch (...) {
                    m_out.set_exception(std::current_exception());
                }
                if (m_done.exchange(finished, std::memory_order_acq_rel) != abandoned) {
                    m_park.wake();
                }
            },
            m_options);
        return m_park.finish_suspend(false);
    }

    R await_resume() {
        // Woken by the thread just before it returns: spare a second sleep for its exit.
        m_thread.join_exiting(thread_exit_budget);
        return m_out.take();
    }

private:
    static any_executor require_resume_executor() {
        any_executor e = current_executor();
        if (!e) {
            throw std::logic_error(
                "conflux::spawn_thread must be awaited on an event_loop or thread_pool thread");
        }
        return e;
    }

    enum : int { running, finished, abandoned };
    Fn m_fn;
    thread_options m_options;
    result<R> m_out;
    parking m_park;
    std::atomic<int> m_done{running};
    native_thread m_thread;
};

/// The pool behind `offload`: `CONFLUX_THREADPOOL_SIZE` threads (like libuv's
/// UV_THREADPOOL_SIZE), 4 by default; started on first use, joined at exit.
inline thread_pool& default_pool() {
    static thread_pool pool([] {
        const char* text = std::getenv("CONFLUX_THREADPOOL_SIZE");
        const long n = text != nullptr ? std::strtol(text, nullptr, 10) : 0;
        return n > 0 && n <= 1024 ? static_cast<std::size_t>(n) : std::size_t{4};
    }());
    return pool;
}

} // namespace detail

/// The value `spawn_thread(f, args...)` produces: `f`'s result, or for a coroutine `f` the
/// value of the task it returns.
template <class F, class... Args>
using spawn_thread_result_t = typename detail::unwrap_task<
    detail::call_result_t<std::decay_t<F>, std::decay_t<Args>...>>::type;

/// Runs `f(args...)` on a new thread and resumes the caller with its result or exception
/// (Node.js: a one-shot `Worker`). The arguments are moved to the thread. If `f` returns a
/// `task`, the thread runs it on an `event_loop` of its own until it completes. If `f` takes
/// a `std::stop_token` first, it gets the awaiter's stop token (the thread is then asked,
/// never forced, to stop: the await still waits for it to end).
///
/// Resumes on the executor the caller was running on (an `event_loop` or `thread_pool`;
/// `std::logic_error` otherwise). Throws what `f` throws, and `std::system_error`
/// ("pthread_create") when no thread can be started. The thread is joined before the await
/// completes.
///
/// ```
/// auto digest = co_await conflux::spawn_thread(sha256, std::move(data));
/// co_await conflux::spawn_thread([]() -> conflux::task<> { co_await serve(); });
/// ```
///
/// With GCC 12, a lambda with captures (or an aggregate) written in the call inside a
/// `co_await` expression would be destroyed twice, so rvalues of those types do not compile
/// there (a static_assert says what to write): name the lambda first, or pass what it would
/// capture as arguments (`spawn_thread([](std::vector<int> v) {...}, v)`).
#if CONFLUX_DETAIL_GCC12_TEMPORARIES
namespace detail {
#endif
template <class F, class... Args>
task<spawn_thread_result_t<F, Args...>> spawn_thread(F f, Args... args) {
    using call_t = detail::call_result_t<F, Args...>;
    using R = spawn_thread_result_t<F, Args...>;
    std::stop_token token = co_await get_stop_token();
    auto body = [f = std::move(f), token, ... args = std::move(args)]() mutable -> R {
        if constexpr (detail::unwrap_task<call_t>::is_task) {
            return detail::run_with_stop_token(detail::invoke_with_token(f, token, args...), token);
        } else {
            return detail::invoke_with_token(f, token, args...);
        }
    };
    // A named awaiter: GCC 12 mishandles non-trivial temporaries inside a co_await
    // expression's operand.
    detail::thread_awaiter<R, decltype(body)> awaiter(std::move(body), detail::thread_options{});
    co_return co_await awaiter;
}
#if CONFLUX_DETAIL_GCC12_TEMPORARIES
} // namespace detail

// The check needs the arguments' value categories, which only forwarding references keep;
// it then hands them to the coroutine above.
template <class F, class... Args>
task<spawn_thread_result_t<F, Args...>> spawn_thread(F&& f, Args&&... args) {
    static_assert(!detail::gcc12_unsafe_rvalue<F> && !(detail::gcc12_unsafe_rvalue<Args> || ...),
                  "GCC 12 destroys a lambda with captures, or an aggregate, written inside a "
                  "co_await expression twice: name it first (`auto fn = [v] {...}; co_await "
                  "conflux::spawn_thread(fn);`) or pass what it captures as arguments "
                  "(`spawn_thread([](T v) {...}, v)`) (GCC >= 13 and Clang accept it)");
    return detail::spawn_thread<std::decay_t<F>, std::decay_t<Args>...>(
        std::forward<F>(f), std::forward<Args>(args)...);
}
#endif

/// Runs the short CPU-bound `f(args...)` on a shared pool of threads (libuv's thread pool:
/// `CONFLUX_THREADPOOL_SIZE` threads, 4 by default) and resumes the caller, on its own
/// executor, with the result or exception. If `f` takes a `std::stop_token` first it gets
/// the caller's. Do not block in `f` for long: the pool is shared.
///
/// ```
/// std::uint64_t n = co_await conflux::offload([] { return count_primes(1'000'000); });
/// ```
///
/// With GCC 12, refuses the same temporaries as `spawn_thread`, for the same reason.
#if CONFLUX_DETAIL_GCC12_TEMPORARIES
namespace detail {
#endif
template <class F, class... Args>
task<detail::call_result_t<F, Args...>> offload(F f, Args... args) {
    std::stop_token token = co_await get_stop_token();
    co_await detail::default_pool().schedule();
    co_return detail::invoke_with_token(f, std::move(token), args...);
}
#if CONFLUX_DETAIL_GCC12_TEMPORARIES
} // namespace detail

template <class F, class... Args>
task<detail::call_result_t<std::decay_t<F>, std::decay_t<Args>...>> offload(F&& f, Args&&... args) {
    static_assert(!detail::gcc12_unsafe_rvalue<F> && !(detail::gcc12_unsafe_rvalue<Args> || ...),
                  "GCC 12 destroys a lambda with captures, or an aggregate, written inside a "
                  "co_await expression twice: name it first (`auto fn = [v] {...}; co_await "
                  "conflux::offload(fn);`) or pass what it captures as arguments "
                  "(`offload([](T v) {...}, v)`) (GCC >= 13 and Clang accept it)");
    return detail::offload<std::decay_t<F>, std::decay_t<Args>...>(std::forward<F>(f),
                                                                   std::forward<Args>(args)...);
}
#endif

} // namespace conflux
