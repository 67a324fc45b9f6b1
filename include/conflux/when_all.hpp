#pragma once

#include <conflux/task.hpp>
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

} // namespace detail

/// Runs the tasks concurrently and completes when all of them have, with their values in a
/// tuple (`std::monostate` for `task<void>`).
///
/// The tasks start in order on the calling coroutine's thread and run until they first
/// suspend; the awaiter resumes on its own executor once the last one finishes. If any task
/// throws, the first exception (in completion order) is rethrown after all have finished.
/// The tasks inherit the awaiter's stop token.
///
/// ```
/// auto [a, b] = co_await conflux::when_all(fetch(1), fetch(2));
/// ```
template <class... T>
task<std::tuple<detail::non_void_t<T>...>> when_all(task<T>... tasks) {
    std::stop_token token = co_await get_stop_token();
    std::tuple<detail::result<T>...> results;
    detail::join_counter counter(sizeof...(T));
    detail::first_failure failure;
    auto drivers = detail::drive_each_into(results, &failure, tasks...);
    for (auto& d : drivers) d.configure(&detail::when_all_arrive, &counter, token);
    co_await counter.start_and_wait(drivers);
    if (failure.get()) std::rethrow_exception(failure.get());
    co_return std::apply(
        [](auto&... r) { return std::tuple<detail::non_void_t<T>...>(r.take_non_void()...); },
        results);
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
