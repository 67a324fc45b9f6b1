#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/executor.hpp>
#include <conflux/detail/frame_allocator.hpp>
#include <conflux/detail/result.hpp>
#include <conflux/detail/trampoline.hpp>
#include <conflux/detail/work_item.hpp>

#include <concepts>
#include <coroutine>
#include <exception>
#include <memory>
#include <new>
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

/// Holds the token of a coroutine that has none to inherit, never destroyed: a task may still
/// run on a thread of its own while static objects are destroyed at exit.
struct no_stop_token_holder {
    union {
        std::stop_token token;
    };
    no_stop_token_holder() noexcept : token() {}
    ~no_stop_token_holder() {}
};
inline const no_stop_token_holder no_stop_token;

/// Where the stop token of the coroutine behind `h` lives, for a task it awaits to inherit:
/// in `h`'s promise, which outlives the task (`h` is suspended in its await until the task
/// completes, and destroying `h` destroys the task first). A pointer rather than a copy, so
/// that an await copies no token (two atomic operations when one is live). Every promise of
/// conflux hands its token out by reference; one that copies it out leaves nothing to inherit.
template <class P>
const std::stop_token* stop_token_address_of(std::coroutine_handle<P> h) noexcept {
    if constexpr (requires(const P& p) {
                      { p.get_stop_token() } -> std::same_as<const std::stop_token&>;
                  }) {
        return std::addressof(h.promise().get_stop_token());
    } else {
        return &no_stop_token.token;
    }
}

class task_promise_base {
public:
    // Frames come from a per-thread cache (detail/frame_allocator.hpp): a task that completes
    // at once spends most of its await in malloc and free otherwise.
    static void* operator new(std::size_t n) { return frame_allocate(n); }
    static void operator delete(void* p, std::size_t n) noexcept { frame_deallocate(p, n); }

    std::suspend_always initial_suspend() const noexcept { return {}; }

    struct final_awaiter {
        bool await_ready() const noexcept { return false; }

        template <class Promise>
        void await_suspend(std::coroutine_handle<Promise> self) noexcept {
            task_promise_base& p = self.promise();
            // When this task is the current coroutine of the innermost trampoline loop (it
            // started inside its awaiter's await, or the loop resumed it) and the loop runs
            // on the awaiter's executor, the loop resumes the awaiter as soon as this frame
            // is suspended. A task that completes at once returns this way into its awaiter's
            // await, and a chain of any depth unwinds this way on a flat stack.
            if (!trampoline_hand_over(self, p.m_continuation, p.m_resume_on)) {
                p.resume_awaiter();
            }
        }

        void await_resume() const noexcept {}
    };

    final_awaiter final_suspend() const noexcept { return {}; }

    /// The stop token this task inherited from the coroutine that awaits it.
    const std::stop_token& get_stop_token() const noexcept { return *m_stop_token; }

    /// Records who awaits the task, before it starts: the coroutine to resume when it
    /// completes, the executor to resume it on, and where the stop token the task inherits
    /// lives (see stop_token_address_of).
    void prepare(std::coroutine_handle<> continuation, any_executor resume_on,
                 const std::stop_token* token) noexcept {
        m_continuation = continuation;
        m_resume_on = resume_on;
        m_stop_token = token;
    }

private:
    // The task completes as no loop's current coroutine (an executor or an event resumed it),
    // or on another executor than its awaiter's. Executor affinity: the awaiter resumes on the
    // executor it was running on. When that is this one, in a loop started here, which the
    // tasks above it hand over to in turn as they complete; else through that executor's
    // queue. Once the awaiter runs it may destroy this frame: nothing here touches `this`
    // afterwards.
    [[gnu::noinline]] void resume_awaiter() noexcept {
        if (!m_resume_on || m_resume_on.running_in_this_thread()) {
            trampoline_run(m_continuation);
            return;
        }
        // Made here, not with the frame: most tasks never need it (and a frame initialised
        // in fewer stores is measurably quicker to start).
        auto* item = ::new (static_cast<void*>(m_resume_storage)) resume_item();
        item->handle = m_continuation;
        // After enqueue the awaiter may run on another thread and destroy this frame at
        // once: nothing here may touch `this` afterwards.
        m_resume_on.enqueue(item);
    }

    std::coroutine_handle<> m_continuation;
    any_executor m_resume_on;
    alignas(resume_item) unsigned char m_resume_storage[sizeof(resume_item)]; // see above
    const std::stop_token* m_stop_token = &no_stop_token.token;
};

template <class T>
class task_promise : public task_promise_base {
    // A reference is kept as a pointer.
    using stored_t = std::conditional_t<std::is_reference_v<T>,
                                        std::add_pointer_t<std::remove_reference_t<T>>, T>;

public:
    task_promise() noexcept {}
    task_promise(const task_promise&) = delete;
    task_promise& operator=(const task_promise&) = delete;
    ~task_promise() {
        if (m_has_value) std::destroy_at(std::addressof(m_value));
    }

    task<T> get_return_object() noexcept;

    template <std::convertible_to<T> U>
    void return_value(U&& value) {
        if constexpr (std::is_reference_v<T>) {
            std::construct_at(std::addressof(m_value),
                              std::addressof(static_cast<T>(std::forward<U>(value))));
        } else {
            std::construct_at(std::addressof(m_value), std::forward<U>(value));
        }
        m_has_value = true;
    }

    void unhandled_exception() noexcept { m_exception = std::current_exception(); }

    T take_result() {
        if (m_exception) [[unlikely]] {
            std::rethrow_exception(m_exception);
        }
        if constexpr (std::is_reference_v<T>) {
            return static_cast<T>(*m_value);
        } else {
            return std::move(m_value);
        }
    }

private:
    // Not a detail::result: a task's value is set at most once, into empty storage, and the
    // awaits of tasks that complete at once are worth the few instructions this saves.
    union {
        stored_t m_value;
    };
    bool m_has_value = false;
    std::exception_ptr m_exception;
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
/// without suspending hands its value straight back, and one that suspended resumes its
/// awaiter when it completes. Nesting costs no native stack: tasks run from a per-thread
/// resume loop (see detail/trampoline.hpp), so a chain of awaits of any depth, and any number
/// of awaits in a row, run on a flat stack. Its value is returned and its exception rethrown
/// in the awaiter. The awaiter resumes on the executor it was running on when it awaited, even
/// if the task moved to another executor meanwhile. A task inherits its awaiter's stop token:
/// see `get_stop_token()`.
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
            if (!m_handle || m_handle.done()) [[unlikely]] {
                bad_await(static_cast<bool>(m_handle));
            }
            return false;
        }

        // Starts the task in the innermost trampoline loop (see detail/trampoline.hpp), or a
        // loop of its own: suspends unless the task completed at once. No native stack is kept
        // per level of nesting beyond the loop's bound.
        template <class Promise>
        [[gnu::always_inline]] bool
        await_suspend(std::coroutine_handle<Promise> awaiting) noexcept {
            detail::trampoline& loop = *detail::trampoline_slot();
            promise_type& p = m_handle.promise();
            const std::stop_token* token = detail::stop_token_address_of(awaiting);
            if (detail::trampoline_nests(loop, awaiting)) [[likely]] {
                // The awaiter is the loop's current coroutine: its executor is the loop's.
                p.prepare(awaiting, loop.executor, token);
                return !detail::trampoline_start_nested(loop, m_handle, awaiting);
            }
            p.prepare(awaiting, loop.current == awaiting ? loop.executor : current_executor(),
                      token);
            return !detail::trampoline_start_slow(loop, m_handle, awaiting);
        }

        T await_resume() { return m_handle.promise().take_result(); }

        // Out of line, so that the awaits of every task stay small.
        [[noreturn, gnu::noinline, gnu::cold]] static void bad_await(bool valid) {
            throw std::logic_error(valid ? "conflux::task: awaiting a task that already ran"
                                         : "conflux::task: awaiting an empty (moved-from) task");
        }
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
