#pragma once

#include <conflux/task.hpp>

#include <concepts>
#include <coroutine>
#include <memory>
#include <type_traits>
#include <utility>

namespace conflux::detail {

template <class A>
concept has_member_co_await = requires(A&& a) {
    static_cast<A&&>(a).operator co_await();
};

template <class A>
concept has_free_co_await = requires(A&& a) {
    operator co_await(static_cast<A&&>(a));
};

/// The awaiter `co_await a` uses: what `operator co_await` gives, or `a` itself.
template <class A>
decltype(auto) get_awaiter(A&& a) {
    if constexpr (has_member_co_await<A>) {
        return static_cast<A&&>(a).operator co_await();
    } else if constexpr (has_free_co_await<A>) {
        return operator co_await(static_cast<A&&>(a));
    } else {
        return static_cast<A&&>(a);
    }
}

/// An object with the three awaiter members, awaitable from a `task`.
template <class W>
concept awaiter_object = requires(W& w, std::coroutine_handle<task_promise<void>> h) {
    { w.await_ready() } -> std::convertible_to<bool>;
    w.await_suspend(h);
    w.await_resume();
};

/// Anything a `task` can `co_await`.
template <class A>
concept awaitable =
    awaiter_object<std::remove_reference_t<decltype(get_awaiter(std::declval<A>()))>>;

template <class A>
using awaiter_t = std::remove_reference_t<decltype(get_awaiter(std::declval<A>()))>;

/// What awaiting an `A` gives, as a `task` result: an rvalue reference becomes a value (the
/// awaiter it refers into is gone by the time the result is read).
template <class A>
using await_result_t = std::conditional_t<
    std::is_rvalue_reference_v<decltype(std::declval<awaiter_t<A>&>().await_resume())>,
    std::remove_cvref_t<decltype(std::declval<awaiter_t<A>&>().await_resume())>,
    decltype(std::declval<awaiter_t<A>&>().await_resume())>;

/// Awaits an awaiter held elsewhere, so that `operator co_await` is applied only once.
template <class W>
struct awaiter_ref {
    W* w;
    bool await_ready() { return static_cast<bool>(w->await_ready()); }
    template <class Promise>
    decltype(auto) await_suspend(std::coroutine_handle<Promise> h) {
        return w->await_suspend(h);
    }
    decltype(auto) await_resume() { return w->await_resume(); }
};

/// An awaiter that can take back a result that will not be used (a channel receive that lost
/// a `when_any` after it had taken a value puts the value back).
template <class W, class R>
concept can_give_back = requires(W& w, R&& r) {
    w.give_back(std::move(r));
};

template <class T>
inline constexpr bool is_task_v = false;
template <class T>
inline constexpr bool is_task_v<task<T>> = true;

/// An argument of `when_all`/`when_any` held until the race starts: an rvalue (`A` = `U`) is
/// owned, moved in; an lvalue (`A` = `U&`) is referred to, and the caller keeps it alive.
template <class A>
class held_awaitable {
    using U = std::remove_reference_t<A>;

public:
    explicit held_awaitable(A&& a) : m_value(static_cast<A&&>(a)) {}

    A&& get() noexcept { return static_cast<A&&>(m_value); }

private:
    std::conditional_t<std::is_lvalue_reference_v<A>, U&, U> m_value;
};

template <class H>
struct held_result;
template <class T>
struct held_result<task<T>> {
    using type = T;
};
template <class A>
struct held_result<held_awaitable<A>> {
    using type = await_result_t<A>;
};

/// What `when_all`/`when_any` does with an argument: an rvalue `task` is taken as it is
/// (no extra frame), anything else is held.
template <class A>
auto hold_awaitable(A&& a) {
    static_assert(std::is_lvalue_reference_v<A> || std::move_constructible<std::remove_cvref_t<A>>,
                  "conflux::when_all/when_any: this awaitable cannot be moved; name it and pass "
                  "the lvalue (it is then used in place and must outlive the await)");
    if constexpr (is_task_v<std::remove_cvref_t<A>> && !std::is_lvalue_reference_v<A>) {
        return std::remove_cvref_t<A>(std::move(a));
    } else {
        return held_awaitable<A>(static_cast<A&&>(a));
    }
}

/// Awaits the held awaitable `a` as a task producing `R`.
template <class R, class A>
task<R> await_held(A&& a) {
    auto&& w = get_awaiter(static_cast<A&&>(a));
    awaiter_ref<std::remove_reference_t<decltype(w)>> ref{std::addressof(w)};
    if constexpr (std::is_void_v<R>) {
        co_await ref;
    } else {
        co_return co_await ref;
    }
}

/// The task standing for one held argument.
template <class T>
task<T> entry_task(task<T>& t) noexcept {
    return std::move(t);
}
template <class A>
task<typename held_result<held_awaitable<A>>::type> entry_task(held_awaitable<A>& h) {
    return await_held<typename held_result<held_awaitable<A>>::type, A>(h.get());
}

} // namespace conflux::detail
