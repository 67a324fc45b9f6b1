#pragma once

#include <conflux/task.hpp>

#include <concepts>
#include <coroutine>
#include <cstddef>
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

/// What a `when_any` entrant that consumes data (an IPC receive, a stream read) claims just
/// before it takes the data: the win. An entrant that cannot claim it (another won first)
/// ends with `operation_cancelled` and leaves the data where it was, for the next reader. A
/// default gate belongs to no race and always opens.
class race_gate {
public:
    using claim_fn = bool (*)(void* race, std::size_t index) noexcept;

    race_gate() noexcept = default;
    race_gate(claim_fn claim, void* race, std::size_t index) noexcept
        : m_claim(claim), m_race(race), m_index(index) {}

    /// True when the caller may consume: there is no race, or the caller won it (now or
    /// before). Called on the thread that consumes, right before it does.
    bool claim() const noexcept { return !m_claim || m_claim(m_race, m_index); }

private:
    claim_fn m_claim = nullptr;
    void* m_race = nullptr;
    std::size_t m_index = 0;
};

/// An awaiter that claims a race's win itself, through a gate, just before it consumes.
template <class W>
concept race_gated = requires(W& w, race_gate g) {
    w.set_race_gate(g);
};

/// The awaitable an operation that consumes data returns (`ipc_channel::receive`, the reads
/// of a stream): awaiting it runs the `task<R>` that `start(gate)` makes, which calls
/// `gate.claim()` before it consumes anything. Awaited alone the gate always opens; in a
/// `when_any` it is the race's, so an operation that lost takes nothing. Converts to the
/// `task<R>` itself (without a gate), for code that stores tasks.
template <class R, class Start>
class [[nodiscard]] gated_operation {
public:
    explicit gated_operation(Start start) noexcept(std::is_nothrow_move_constructible_v<Start>)
        : m_start(std::move(start)) {}

    bool await_ready() const noexcept { return false; }

    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> awaiting) {
        m_task = m_start(m_gate);
        return std::move(m_task).operator co_await().await_suspend(awaiting);
    }

    R await_resume() { return std::move(m_task).operator co_await().await_resume(); }

    void set_race_gate(race_gate gate) noexcept { m_gate = gate; }

    operator task<R>() && { return m_start(race_gate{}); }

private:
    Start m_start;
    race_gate m_gate;
    task<R> m_task;
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
