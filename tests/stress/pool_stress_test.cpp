#include <conflux/pool.hpp>
#include <conflux/process_pool.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/when_all.hpp>
#include <conflux/when_any.hpp>

#include <doctest/doctest.h>

#include "support/test_support.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <memory>
#include <random>
#include <stop_token>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

std::size_t scaled(std::size_t n) {
    return std::max<std::size_t>(
        1, static_cast<std::size_t>(static_cast<double>(n) * conflux_test::stress_scale()));
}

std::uint64_t twice(std::uint64_t i) { return i * 2; }

// Crashes its child when asked to, else doubles.
const conflux::pool_function<int(int, bool)> double_or_crash("double_or_crash",
                                                             [](int x, bool crash) {
                                                                 if (crash) {
                                                                     std::signal(SIGSEGV, SIG_DFL);
                                                                     std::raise(SIGSEGV);
                                                                 }
                                                                 return 2 * x;
                                                             });

const conflux::arguments child_args{"--test-case=pool stress child entry"};

} // namespace

TEST_CASE("worker_pool: 4 caller threads x 64 in flight, growing and shrinking, no task lost") {
    conflux_test::watchdog dog(120s);
    const auto threads_before = conflux_test::thread_baseline();
    const std::size_t per_client = scaled(2000);
    constexpr std::size_t callers = 4;
    constexpr std::size_t in_flight = 64;
    std::atomic<std::uint64_t> sum{0};
    {
        // A short idle timeout and a small queue: threads come and go, run waits for room.
        conflux::worker_pool pool(
            {.minimum = 1, .maximum = 4, .idle_timeout = 1ms, .max_queue = 16});
        std::vector<std::thread> threads;
        for (std::size_t t = 0; t < callers; ++t) {
            threads.emplace_back([&, t] {
                auto client = [&](std::size_t c) -> conflux::task<void> {
                    for (std::size_t i = 0; i < per_client; ++i) {
                        const std::uint64_t v = t * 1'000'000 + c * 10'000 + i;
                        sum += co_await pool.run(twice, v);
                        if (i % 97 == 0) co_await conflux::sleep_for(1ms); // let threads idle
                    }
                };
                conflux::run([&]() -> conflux::task<> {
                    std::vector<conflux::task<void>> clients;
                    for (std::size_t c = 0; c < in_flight; ++c) clients.push_back(client(c));
                    co_await conflux::when_all(std::move(clients));
                }());
            });
        }
        for (auto& th : threads) th.join();
        std::uint64_t expected = 0;
        for (std::size_t t = 0; t < callers; ++t) {
            for (std::size_t c = 0; c < in_flight; ++c) {
                for (std::size_t i = 0; i < per_client; ++i) {
                    expected += 2 * (t * 1'000'000 + c * 10'000 + i);
                }
            }
        }
        CHECK(sum == expected);
        const auto s = pool.stats();
        CHECK(s.completed == callers * in_flight * per_client);
        CHECK(s.queued == 0);
        CHECK(s.running == 0);
        CHECK(s.threads >= 1);
        CHECK(s.threads <= 4);
    }
    CHECK(conflux_test::settled_thread_count(threads_before) == threads_before);
}

TEST_CASE("worker_pool: random cancellations of queued and running tasks") {
    conflux_test::watchdog dog(120s);
    const std::size_t rounds = scaled(2000);
    std::atomic<std::size_t> ran{0};
    std::atomic<std::size_t> finished{0};
    std::size_t cancelled = 0;
    conflux::worker_pool pool({.minimum = 2, .maximum = 2});
    conflux::run([&]() -> conflux::task<> {
        std::mt19937 rng(7);
        auto work = [&](std::stop_token token, int spins) {
            ++ran;
            for (int i = 0; i < spins && !token.stop_requested(); ++i) {
                std::this_thread::sleep_for(10us);
            }
            ++finished;
            return spins;
        };
        for (std::size_t r = 0; r < rounds; r += 8) {
            std::vector<conflux::task<int>> batch;
            for (int k = 0; k < 8; ++k) {
                const int spins = static_cast<int>(rng() % 20);
                const auto deadline = std::chrono::microseconds(rng() % 300);
                auto raced = [&pool, &work, spins, deadline]() -> conflux::task<int> {
                    auto outcome = co_await conflux::when_any(pool.run(work, spins),
                                                              conflux::sleep_for(deadline));
                    co_return outcome.index() == 0 ? 0 : 1;
                };
                batch.push_back(raced());
            }
            for (int lost : co_await conflux::when_all(std::move(batch))) {
                cancelled += static_cast<std::size_t>(lost);
            }
        }
    }());
    CHECK(ran == finished);
    CHECK(ran <= rounds);
    CHECK(pool.stats().queued == 0);
    CHECK(pool.stats().running == 0);
    MESSAGE("cancelled " << cancelled << " of " << rounds << "; " << ran.load() << " ran");
}

TEST_CASE("worker_pool: destroyed over and over with tasks queued and running") {
    conflux_test::watchdog dog(120s);
    const auto threads_before = conflux_test::thread_baseline();
    const auto fds_before = conflux_test::open_fds();
    const std::size_t rounds = scaled(200);
    std::size_t failed = 0;
    std::size_t succeeded = 0;
    for (std::size_t r = 0; r < rounds; ++r) {
        conflux::run([&]() -> conflux::task<> {
            auto pool = std::make_unique<conflux::worker_pool>(
                conflux::worker_pool_options{.minimum = 0, .maximum = 3, .idle_timeout = 1ms});
            auto work = [](std::stop_token token) {
                while (!token.stop_requested()) std::this_thread::sleep_for(20us);
                return 1;
            };
            auto caller = [&]() -> conflux::task<int> {
                try {
                    co_return co_await pool->run(work);
                } catch (const conflux::pool_error&) {
                    co_return -1;
                }
            };
            auto destroyer = [&]() -> conflux::task<int> {
                co_await conflux::sleep_for(std::chrono::microseconds(r % 7 * 100));
                pool.reset();
                co_return 0;
            };
            std::vector<conflux::task<int>> all;
            for (int i = 0; i < 6; ++i) all.push_back(caller());
            all.push_back(destroyer());
            for (int v : co_await conflux::when_all(std::move(all))) {
                if (v == -1) ++failed;
                if (v == 1) ++succeeded;
            }
        }());
    }
    CHECK(failed + succeeded == rounds * 6);
    CHECK(failed >= rounds * 3); // three threads at most: the others were queued
    CHECK(conflux_test::settled_thread_count(threads_before) == threads_before);
    CHECK(conflux_test::open_fds() == fds_before);
}

TEST_CASE("pool stress child entry") {
    CHECK(conflux::run([]() -> conflux::task<int> { co_return 5; }()) == 5);
}

TEST_CASE("process_pool: one task in ten crashes its child; every task is accounted for") {
    conflux_test::watchdog dog(120s);
    const std::size_t total = scaled(300);
    std::size_t crashed = 0;
    std::size_t doubled = 0;
    conflux::run([&]() -> conflux::task<> {
        conflux::process_pool pool({.minimum = 1, .maximum = 2, .max_queue = 8}, child_args);
        auto one = [&pool](int i) -> conflux::task<int> {
            try {
                co_return co_await pool.run(double_or_crash, i, i % 10 == 3);
            } catch (const conflux::pool_error&) {
                co_return -1;
            }
        };
        std::vector<conflux::task<int>> all;
        for (std::size_t i = 0; i < total; ++i) all.push_back(one(static_cast<int>(i)));
        const auto results = co_await conflux::when_all(std::move(all));
        for (std::size_t i = 0; i < total; ++i) {
            if (results[i] == -1) {
                CHECK(i % 10 == 3);
                ++crashed;
            } else {
                CHECK(results[i] == static_cast<int>(2 * i));
                ++doubled;
            }
        }
        CHECK(pool.stats().threads <= 2);
        co_await pool.close();
    }());
    CHECK(crashed + doubled == total);
    CHECK(crashed == (total + 6) / 10);
    CHECK(conflux_test::zombie_children().empty());
}

TEST_CASE("process_pool: waves of tasks grow it, pauses shrink it, crashes replace children") {
    conflux_test::watchdog dog(120s);
    const auto fds_before = conflux_test::open_fds();
    const std::size_t waves = std::max<std::size_t>(4, scaled(20));
    std::size_t crashed = 0;
    std::size_t doubled = 0;
    conflux::run([&]() -> conflux::task<> {
        conflux::process_pool pool({.minimum = 1, .maximum = 4, .idle_timeout = 2ms}, child_args);
        auto one = [&pool](int i) -> conflux::task<int> {
            try {
                co_return co_await pool.run(double_or_crash, i, i % 7 == 5);
            } catch (const conflux::pool_error&) {
                co_return -1;
            }
        };
        for (std::size_t w = 0; w < waves; ++w) {
            std::vector<conflux::task<int>> wave;
            const int n = static_cast<int>(1 + (w * 5) % 9); // 1, 6, 2, 7, 3, 8, ...
            for (int i = 0; i < n; ++i) wave.push_back(one(i));
            const auto results = co_await conflux::when_all(std::move(wave));
            for (int i = 0; i < n; ++i) {
                if (results[static_cast<std::size_t>(i)] == -1) {
                    CHECK(i % 7 == 5);
                    ++crashed;
                } else {
                    CHECK(results[static_cast<std::size_t>(i)] == 2 * i);
                    ++doubled;
                }
            }
            CHECK(pool.stats().threads <= 4 + 4); // at most the maximum, plus ones leaving
            // Every other wave, a pause for the idle children to end: down to the minimum,
            // never below.
            if (w % 2 == 1) {
                const auto deadline = std::chrono::steady_clock::now() + 5s;
                while (pool.stats().threads > 1 && std::chrono::steady_clock::now() < deadline) {
                    co_await conflux::sleep_for(2ms);
                }
                CHECK(pool.stats().threads == 1);
                co_await conflux::sleep_for(10ms);
                CHECK(pool.stats().threads == 1);
            }
        }
        co_await pool.close();
        CHECK(pool.stats().threads == 0);
    }());
    CHECK(crashed > 0);
    CHECK(doubled > 0);
    CHECK(conflux_test::zombie_children().empty());
    CHECK(conflux_test::no_children_left());
    CHECK(conflux_test::open_fds() == fds_before);
}
