#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/error.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/awaitable.hpp>
#include <conflux/detail/driver.hpp>
#include <conflux/detail/join.hpp>
#include <conflux/detail/result.hpp>

#include <array>
#include <atomic>
#include <cstddef>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

namespace conflux {

namespace detail {

/// Shared by the drivers of one `when_any`: the first to finish claims the win and asks the
/// others to stop.
struct race {
    static constexpr std::size_t no_winner = static_cast<std::size_t>(-1);

    explicit race(std::size_t drivers) : counter(drivers) {}

    /// Claims the win for entrant `index` (true if it is, or already was, the winner) and
    /// then asks the others to stop.
    bool claim(std::size_t index) noexcept {
        std::size_t expected = no_winner;
        if (winner.compare_exchange_strong(expected, index, std::memory_order_acq_rel)) {
            // Stop callbacks run here, synchronously; conflux's only claim the wait and post
            // the cancellation, so no other coroutine runs inside this call.
            stop.request_stop();
            return true;
        }
        return expected == index;
    }

    join_counter counter;
    std::stop_source stop;
    std::atomic<std::size_t> winner{no_winner};
};

/// The per-driver context: which race, which entrant.
struct race_entrant {
    race* owner;
    std::size_t index;

    static bool claim_for(void* owner, std::size_t index) noexcept {
        return static_cast<race*>(owner)->claim(index);
    }

    static std::coroutine_handle<> finish(void* self, std::coroutine_handle<>) noexcept {
        auto* me = static_cast<race_entrant*>(self);
        me->owner->claim(me->index);
        return me->owner->counter.arrive();
    }
};

/// The winner's value (or exception) out of the tuple of results.
template <class Variant, class Tuple, std::size_t... I>
Variant take_winner(Tuple& results, std::size_t winner, std::index_sequence<I...>) {
    std::optional<Variant> value;
    auto take = [&](auto index) {
        constexpr std::size_t i = decltype(index)::value;
        if (i == winner)
            value.emplace(std::in_place_index<i>, std::get<i>(results).take_non_void());
    };
    (take(std::integral_constant<std::size_t, I>{}), ...);
    return std::move(*value);
}

/// Propagates a stop request from the awaiter's token to the race.
struct forward_stop {
    std::stop_source* target;
    void operator()() const noexcept { target->request_stop(); }
};

/// The task entrant `index` runs: a task as it is (it claims the win when it finishes).
template <class T>
task<T> race_entry(task<T>& t, race*, std::size_t) noexcept {
    return std::move(t);
}

/// Any other awaitable, in a task of its own. No value that arrives for a loser is consumed:
/// an awaiter that consumes through a gate (an IPC receive, a stream read) claims the win
/// just before it consumes, and takes nothing if it cannot; one that can give a result back
/// (a channel receive) claims it as soon as the result is in, and gives it back if another
/// entrant won first.
template <class R, class A>
task<R> race_held(A&& a, race* r, std::size_t index) {
    auto&& w = get_awaiter(static_cast<A&&>(a));
    using W = std::remove_reference_t<decltype(w)>;
    awaiter_ref<W> ref{std::addressof(w)};
    if constexpr (race_gated<W>) {
        w.set_race_gate(race_gate(&race_entrant::claim_for, r, index));
    }
    if constexpr (std::is_void_v<R>) {
        co_await ref;
    } else if constexpr (can_give_back<W, R>) {
        R value = co_await ref;
        if (!r->claim(index)) {
            w.give_back(std::move(value));
            throw operation_cancelled();
        }
        co_return std::move(value);
    } else {
        co_return co_await ref;
    }
}

template <class A>
task<typename held_result<held_awaitable<A>>::type> race_entry(held_awaitable<A>& h, race* r,
                                                               std::size_t index) {
    return race_held<typename held_result<held_awaitable<A>>::type, A>(h.get(), r, index);
}

template <class Results, class... H, std::size_t... I>
std::array<driver, sizeof...(H)> drive_race(Results& results, race* r, std::index_sequence<I...>,
                                            H&... held) {
    return {drive_into(race_entry(held, r, I), std::get<I>(results))...};
}

template <class... H>
task<std::variant<non_void_t<typename held_result<H>::type>...>> when_any_held(H... held) {
    // The held arguments live in this frame until every entrant has finished.
    std::stop_token outer = co_await get_stop_token();
    race contest(sizeof...(H));
    std::optional<std::stop_callback<forward_stop>> link;
    if (outer.stop_possible()) link.emplace(outer, forward_stop{&contest.stop});

    std::tuple<result<typename held_result<H>::type>...> results;
    std::array<race_entrant, sizeof...(H)> entrants;
    auto drivers = drive_race(results, &contest, std::index_sequence_for<H...>{}, held...);
    for (std::size_t i = 0; i < drivers.size(); ++i) {
        entrants[i] = {&contest, i};
        drivers[i].configure(&race_entrant::finish, &entrants[i], contest.stop.get_token());
    }
    co_await contest.counter.start_and_wait(drivers);
    link.reset();

    co_return take_winner<std::variant<non_void_t<typename held_result<H>::type>...>>(
        results, contest.winner.load(std::memory_order_acquire), std::index_sequence_for<H...>{});
}

} // namespace detail

/// Runs the awaitables concurrently; the first to finish (with a value or an exception) wins,
/// and the others are cancelled through the stop token they inherit (their awaits end with
/// `operation_cancelled`). Completes once every one has finished — the losers too — with the
/// winner's value in a `std::variant` whose `index()` says which won (`std::monostate` for
/// one that gives `void`), or rethrows the winner's exception. Node.js's `Promise.race`, with
/// the losers stopped.
///
/// An argument is a `task` or any other awaitable: a channel's or port's `receive()`,
/// `receive_any`, `child_process::wait()`, `atomic_view::wait_async`, `sleep_for`, ... An
/// rvalue is moved in and owned by the returned task; one that cannot move (`wait_async`'s
/// awaiter) is refused at compile time: name it. An lvalue is awaited in place and must
/// outlive the await (and is used up, as by any await).
///
/// No value is lost to the race: a channel or port receive that took a value after another
/// argument had won puts it back (first in line) and ends cancelled; an IPC receive or a
/// stream read claims the win just before it consumes, and consumes nothing if it cannot.
/// The outcome of any other loser that completed before its cancellation took hold is
/// discarded, so its effect stands (a send that lost still sent).
/// A stop request on the awaiter's own token is passed on to every argument. The awaiter
/// resumes on its own executor.
///
/// ```
/// auto r = co_await conflux::when_any(replies.receive(), conflux::sleep_for(1s));
/// if (r.index() == 1) throw timed_out();
/// ```
template <class... A>
requires(detail::awaitable<A>&&...)
    task<std::variant<detail::non_void_t<detail::await_result_t<A>>...>> when_any(
        A&&... awaitables) {
    static_assert(sizeof...(A) > 0, "conflux::when_any needs at least one awaitable");
    return detail::when_any_held(detail::hold_awaitable(static_cast<A&&>(awaitables))...);
}

/// Range form over any other awaitable (a vector of receives, of `child_process::wait()`s,
/// ...): the winner's index and value. Moved in and owned by the returned task; no value is
/// lost to the race, as for the variadic form.
template <class A>
requires(detail::awaitable<A> && !detail::is_task_v<A>)
    task<std::pair<std::size_t, detail::non_void_t<detail::await_result_t<A>>>> when_any(
        std::vector<A> awaitables) {
    using R = detail::await_result_t<A>;
    if (awaitables.empty()) throw std::invalid_argument("conflux::when_any: no awaitables");
    std::stop_token outer = co_await get_stop_token();
    detail::race race(awaitables.size());
    std::optional<std::stop_callback<detail::forward_stop>> link;
    if (outer.stop_possible()) link.emplace(outer, detail::forward_stop{&race.stop});

    std::vector<detail::result<R>> results(awaitables.size());
    std::vector<detail::race_entrant> entrants(awaitables.size());
    std::vector<detail::driver> drivers;
    drivers.reserve(awaitables.size());
    for (std::size_t i = 0; i < awaitables.size(); ++i) {
        entrants[i] = {&race, i};
        drivers.push_back(detail::drive_into(
            detail::race_held<R, A>(std::move(awaitables[i]), &race, i), results[i]));
        drivers.back().configure(&detail::race_entrant::finish, &entrants[i],
                                 race.stop.get_token());
    }
    co_await race.counter.start_and_wait(drivers);
    link.reset();
    const std::size_t winner = race.winner.load(std::memory_order_acquire);
    co_return std::pair<std::size_t, detail::non_void_t<R>>(winner,
                                                            results[winner].take_non_void());
}

/// Range form: the winner's index and value.
template <class T>
task<std::pair<std::size_t, detail::non_void_t<T>>> when_any(std::vector<task<T>> tasks) {
    if (tasks.empty()) throw std::invalid_argument("conflux::when_any: no tasks");
    std::stop_token outer = co_await get_stop_token();
    detail::race race(tasks.size());
    std::optional<std::stop_callback<detail::forward_stop>> link;
    if (outer.stop_possible()) link.emplace(outer, detail::forward_stop{&race.stop});

    std::vector<detail::result<T>> results(tasks.size());
    std::vector<detail::race_entrant> entrants(tasks.size());
    std::vector<detail::driver> drivers;
    drivers.reserve(tasks.size());
    for (std::size_t i = 0; i < tasks.size(); ++i) {
        entrants[i] = {&race, i};
        drivers.push_back(detail::drive_into(std::move(tasks[i]), results[i]));
        drivers.back().configure(&detail::race_entrant::finish, &entrants[i],
                                 race.stop.get_token());
    }
    co_await race.counter.start_and_wait(drivers);
    link.reset();
    const std::size_t winner = race.winner.load(std::memory_order_acquire);
    co_return std::pair<std::size_t, detail::non_void_t<T>>(winner,
                                                            results[winner].take_non_void());
}

} // namespace conflux
