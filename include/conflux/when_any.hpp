#pragma once

#include <conflux/task.hpp>
#include <conflux/detail/driver.hpp>
#include <conflux/detail/join.hpp>
#include <conflux/detail/result.hpp>

#include <array>
#include <atomic>
#include <cstddef>
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

    join_counter counter;
    std::stop_source stop;
    std::atomic<std::size_t> winner{no_winner};
};

/// The per-driver context: which race, which entrant.
struct race_entrant {
    race* owner;
    std::size_t index;

    static std::coroutine_handle<> finish(void* self, std::coroutine_handle<>) noexcept {
        auto* me = static_cast<race_entrant*>(self);
        race& r = *me->owner;
        std::size_t expected = race::no_winner;
        if (r.winner.compare_exchange_strong(expected, me->index, std::memory_order_acq_rel)) {
            // Stop callbacks run here, synchronously; conflux's only claim the wait and post
            // the cancellation, so no other coroutine runs inside this call.
            r.stop.request_stop();
        }
        return r.counter.arrive();
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

} // namespace detail

/// Runs the tasks concurrently; the first to finish (with a value or an exception) wins, and
/// the others are cancelled through the stop token they inherit (their awaits end with
/// `operation_cancelled`). Completes once every task has finished, with the winner's value
/// in a `std::variant` whose `index()` says which task won (`std::monostate` for
/// `task<void>`), or rethrows the winner's exception. The losers' outcomes are discarded.
///
/// A stop request on the awaiter's own token is passed on to all the tasks. The awaiter
/// resumes on its own executor.
///
/// ```
/// auto r = co_await conflux::when_any(read_reply(), conflux::sleep_for(1s));
/// if (r.index() == 1) throw timed_out();
/// ```
template <class... T>
task<std::variant<detail::non_void_t<T>...>> when_any(task<T>... tasks) {
    static_assert(sizeof...(T) > 0, "conflux::when_any needs at least one task");
    std::stop_token outer = co_await get_stop_token();
    detail::race race(sizeof...(T));
    std::optional<std::stop_callback<detail::forward_stop>> link;
    if (outer.stop_possible()) link.emplace(outer, detail::forward_stop{&race.stop});

    std::tuple<detail::result<T>...> results;
    std::array<detail::race_entrant, sizeof...(T)> entrants;
    auto drivers = detail::drive_each_into(results, nullptr, tasks...);
    for (std::size_t i = 0; i < drivers.size(); ++i) {
        entrants[i] = {&race, i};
        drivers[i].configure(&detail::race_entrant::finish, &entrants[i], race.stop.get_token());
    }
    co_await race.counter.start_and_wait(drivers);
    link.reset();

    co_return detail::take_winner<std::variant<detail::non_void_t<T>...>>(
        results, race.winner.load(std::memory_order_acquire), std::index_sequence_for<T...>{});
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
