#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/task.hpp>
#include <conflux/detail/awaitable.hpp>
#include <conflux/detail/driver.hpp>
#include <conflux/detail/join.hpp>
#include <conflux/detail/result.hpp>

#include <array>
#include <cstddef>
#include <exception>
#include <stop_token>
#include <tuple>
#include <utility>
#include <vector>

namespace conflux {

namespace detail {

inline std::coroutine_handle<> when_all_arrive(void* counter, std::coroutine_handle<>) noexcept {
    return static_cast<join_counter*>(counter)->arrive();
}

template <class... T>
task<std::tuple<non_void_t<T>...>> when_all_tasks(task<T>... tasks) {
    std::stop_token token = co_await get_stop_token();
    std::tuple<result<T>...> results;
    join_counter counter(sizeof...(T));
    first_failure failure;
    auto drivers = drive_each_into(results, &failure, tasks...);
    for (auto& d : drivers) d.configure(&when_all_arrive, &counter, token);
    co_await counter.start_and_wait(drivers);
    if (failure.get()) std::rethrow_exception(failure.get());
    co_return std::apply(
        [](auto&... r) { return std::tuple<non_void_t<T>...>(r.take_non_void()...); }, results);
}

template <class... H>
task<std::tuple<non_void_t<typename held_result<H>::type>...>> when_all_held(H... held) {
    // The held arguments live in this frame until every entry has finished.
    co_return co_await when_all_tasks(entry_task(held)...);
}

} // namespace detail

/// Runs the awaitables concurrently and completes when all of them have, with their values
/// in a tuple, in argument order (`std::monostate` for one that gives `void`).
///
/// An argument is a `task` or any other awaitable: a channel's `receive()`, a
/// `child_process::wait()`, `atomic_view::wait_async`, `sleep_for`, ... An rvalue is moved
/// in and owned by the returned task (it must be movable); an lvalue is awaited in place and
/// must outlive the await (and is used up, like any awaitable awaited once).
///
/// They start in order on the calling coroutine's thread and run until they first suspend;
/// the awaiter resumes on its own executor once the last one finishes. If any throws, the
/// first exception (in completion order) is rethrown after all have finished. Every
/// argument inherits the awaiter's stop token: a stop request cancels them all.
///
/// ```
/// auto [a, b] = co_await conflux::when_all(fetch(1), jobs.receive());
/// ```
template <class... A>
requires(detail::awaitable<A>&&...)
    task<std::tuple<detail::non_void_t<detail::await_result_t<A>>...>> when_all(A&&... awaitables) {
    if constexpr ((detail::is_task_v<std::remove_cvref_t<A>> && ...) &&
                  (!std::is_lvalue_reference_v<A> && ...)) {
        return detail::when_all_tasks(std::move(awaitables)...);
    } else {
        return detail::when_all_held(detail::hold_awaitable(static_cast<A&&>(awaitables))...);
    }
}

/// Runs every awaitable of `awaitables` (receives, `child_process::wait()`s, ...; moved in and
/// owned by the returned task) concurrently and completes when all have, with their values in
/// order. Exceptions as for the variadic form.
template <class A>
requires(detail::awaitable<A> && !detail::is_task_v<A>)
    task<std::vector<detail::non_void_t<detail::await_result_t<A>>>> when_all(
        std::vector<A> awaitables) {
    using R = detail::await_result_t<A>;
    std::vector<task<R>> tasks;
    tasks.reserve(awaitables.size());
    for (A& a : awaitables) tasks.push_back(detail::await_held<R, A>(std::move(a)));
    // `awaitables` lives in this frame until every task has finished.
    co_return co_await when_all(std::move(tasks));
}

/// Runs every task of `tasks` concurrently and completes when all have, with their values in
/// order. Exceptions as for the variadic form.
template <class T>
task<std::vector<detail::non_void_t<T>>> when_all(std::vector<task<T>> tasks) {
    std::stop_token token = co_await get_stop_token();
    std::vector<detail::result<T>> results(tasks.size());
    detail::join_counter counter(tasks.size());
    detail::first_failure failure;
    std::vector<detail::driver> drivers;
    drivers.reserve(tasks.size());
    for (std::size_t i = 0; i < tasks.size(); ++i) {
        drivers.push_back(detail::drive_into(std::move(tasks[i]), results[i], &failure));
        drivers.back().configure(&detail::when_all_arrive, &counter, token);
    }
    co_await counter.start_and_wait(drivers);
    if (failure.get()) std::rethrow_exception(failure.get());
    std::vector<detail::non_void_t<T>> values;
    values.reserve(results.size());
    for (auto& r : results) values.push_back(r.take_non_void());
    co_return values;
}

} // namespace conflux
