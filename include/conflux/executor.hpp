#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/detail/thread_local.hpp>
#include <conflux/detail/work_item.hpp>

#include <concepts>
#include <coroutine>
#include <type_traits>
#include <utility>

namespace conflux {

/// What conflux asks of an executor, as a list of members:
/// - `e.post(f)` runs the callable `f` on the executor; thread-safe.
/// - `e.schedule()` is an awaitable whose `co_await` resumes the awaiting coroutine on the
///   executor.
/// - `e.running_in_this_thread()` tells whether the calling thread is currently executing
///   work for `e`.
/// `event_loop`, `thread_pool` and `any_executor` satisfy it.
template <class E>
concept executor = requires(E& e, void (*fn)()) {
    e.post(fn);
    e.schedule();
    { e.running_in_this_thread() } -> std::same_as<bool>;
};

namespace detail {

/// Executors of conflux's own also accept an intrusive work item, which lets an awaiter
/// resume a coroutine on them without allocating.
template <class E>
concept intrusive_executor = executor<E> && requires(E& e, work_item* item) {
    requires noexcept(e.enqueue(item));
};

} // namespace detail

class any_executor;

namespace detail {

/// What any_executor wraps: every executor but any_executor itself (which copies instead).
template <class E>
concept wrappable_executor = executor<E> && !std::same_as<std::remove_cvref_t<E>, any_executor>;

} // namespace detail

/// A type-erased reference to an executor: two pointers, cheap to copy, no allocation to
/// make one or to resume a coroutine through it. The executor must outlive every copy.
class any_executor {
public:
    /// An empty executor; `operator bool` is false and posting to it is a precondition
    /// violation.
    any_executor() noexcept = default;

    template <detail::wrappable_executor E>
    any_executor(E& e) noexcept : m_context(&e), m_vtable(&vtable_for<E>) {}

    explicit operator bool() const noexcept { return m_vtable != nullptr; }

    /// Runs `f` on the executor. Thread-safe. Allocates once to hold `f`.
    template <std::invocable F>
    void post(F&& f) const {
        using fn_t = std::decay_t<F>;
        enqueue(new detail::posted_function<fn_t>(fn_t(std::forward<F>(f))));
    }

    /// Hands an intrusive work item to the executor (the allocation-free path).
    void enqueue(detail::work_item* item) const noexcept { m_vtable->enqueue(m_context, item); }

    bool running_in_this_thread() const noexcept {
        return m_vtable && m_vtable->running_in_this_thread(m_context);
    }

    /// Awaitable: resumes the awaiting coroutine on this executor.
    [[nodiscard]] detail::schedule_awaiter<const any_executor> schedule() const noexcept {
        return detail::schedule_awaiter<const any_executor>(*this);
    }

    /// The address of the executor object this refers to (identity, for comparisons).
    const void* context() const noexcept { return m_context; }

    friend bool operator==(const any_executor& a, const any_executor& b) noexcept {
        return a.m_context == b.m_context;
    }

private:
    struct vtable {
        void (*enqueue)(void*, detail::work_item*) noexcept;
        bool (*running_in_this_thread)(const void*) noexcept;
    };

    template <class E>
    static constexpr vtable vtable_for{
        [](void* ctx, detail::work_item* item) noexcept {
            auto& e = *static_cast<E*>(ctx);
            if constexpr (detail::intrusive_executor<E>) {
                e.enqueue(item);
            } else {
                // A foreign executor only takes callables; posting it may throw bad_alloc,
                // which we cannot report from here.
                e.post([item] { item->run(); });
            }
        },
        [](const void* ctx) noexcept -> bool {
            return static_cast<const E*>(ctx)->running_in_this_thread();
        },
    };

    void* m_context = nullptr;
    const vtable* m_vtable = nullptr;
};

namespace detail {

/// The executor whose work this thread is running right now (set by event_loop::run and by
/// thread_pool's threads). Awaiters read it to know where to resume their coroutine.
/// Reached out of line: see opaque_address.
[[gnu::noinline]] inline any_executor& current_executor_slot() noexcept {
    static thread_local any_executor slot;
    return *opaque_address(&slot);
}

/// Sets the current executor for a scope and restores the previous one after.
class current_executor_scope {
public:
    explicit current_executor_scope(any_executor e) noexcept
        : m_previous(std::exchange(current_executor_slot(), e)) {}
    current_executor_scope(const current_executor_scope&) = delete;
    current_executor_scope& operator=(const current_executor_scope&) = delete;
    ~current_executor_scope() { current_executor_slot() = m_previous; }

private:
    any_executor m_previous;
};

} // namespace detail

/// The executor running the calling code: the `event_loop` or `thread_pool` whose thread
/// this is, or an empty `any_executor` on a thread that runs neither.
inline any_executor current_executor() noexcept { return detail::current_executor_slot(); }

static_assert(executor<any_executor>);

} // namespace conflux
