#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/thread_pool.hpp>
#include <conflux/when_all.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <vector>

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

TEST_CASE("sleep_for waits at least its duration") {
    auto body = []() -> conflux::task<clock_type::duration> {
        auto start = clock_type::now();
        co_await conflux::sleep_for(30ms);
        co_return clock_type::now() - start;
    };
    auto waited = conflux::run(body());
    CHECK(waited >= 30ms);
    CHECK(waited < 5s);
}

TEST_CASE("sleep_until a past deadline completes at once") {
    auto body = []() -> conflux::task<> {
        co_await conflux::sleep_until(clock_type::now() - 1s);
        co_await conflux::sleep_for(-5ms);
    };
    conflux::run(body());
}

TEST_CASE("timers fire in deadline order, many at once") {
    auto body = []() -> conflux::task<bool> {
        std::vector<int> order;
        std::vector<conflux::task<>> sleepers;
        constexpr int n = 2000;
        auto base = clock_type::now() + 20ms;
        for (int i = n - 1; i >= 0; --i) {
            sleepers.push_back(
                [](int index, clock_type::time_point at, std::vector<int>& out) -> conflux::task<> {
                    co_await conflux::sleep_until(at);
                    out.push_back(index);
                }(i, base + std::chrono::microseconds(i * 10), order));
        }
        co_await conflux::when_all(std::move(sleepers));
        bool sorted = order.size() == n;
        for (std::size_t i = 1; sorted && i < order.size(); ++i) sorted = order[i - 1] < order[i];
        co_return sorted;
    };
    CHECK(conflux::run(body()));
}

TEST_CASE("a sleep is cancelled by its stop token, from this thread or another") {
    auto body = []() -> conflux::task<int> {
        int cancelled = 0;
        std::stop_source already;
        already.request_stop();
        try {
            co_await conflux::sleep_for(1h, already.get_token());
        } catch (const conflux::operation_cancelled&) {
            ++cancelled;
        }
        std::stop_source later;
        std::thread canceller([&] {
            std::this_thread::sleep_for(20ms);
            later.request_stop();
        });
        auto start = clock_type::now();
        try {
            co_await conflux::sleep_for(1h, later.get_token());
        } catch (const conflux::operation_cancelled&) {
            if (clock_type::now() - start < 10s) ++cancelled;
        }
        canceller.join();
        // The cancelled timer is gone: a short sleep now completes normally.
        co_await conflux::sleep_for(1ms);
        co_return cancelled;
    };
    CHECK(conflux::run(body()) == 2);
}

TEST_CASE("a stop that races the timer's expiry resumes exactly once") {
    auto body = []() -> conflux::task<int> {
        int completed = 0;
        for (int i = 0; i < 300; ++i) {
            std::stop_source source;
            std::thread canceller([&] { source.request_stop(); });
            try {
                co_await conflux::sleep_for(std::chrono::microseconds(i % 50), source.get_token());
            } catch (const conflux::operation_cancelled&) {
            }
            canceller.join();
            ++completed;
        }
        co_return completed;
    };
    CHECK(conflux::run(body()) == 300);
}

TEST_CASE("sleep_for off an event loop is a clear error") {
    conflux::thread_pool pool(1);
    auto body = [&]() -> conflux::task<> {
        co_await pool.schedule();
        co_await conflux::sleep_for(1ms);
    };
    CHECK_THROWS_WITH_AS(conflux::run(body()),
                         "conflux: conflux::sleep_for must be awaited on an event_loop thread",
                         std::logic_error);
}
