#include <conflux/run.hpp>
#include <conflux/thread_pool.hpp>

#include "support/test_support.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

TEST_CASE("posted work runs on the pool's threads and the destructor drains it") {
    auto threads_before = conflux_test::thread_baseline();
    std::atomic<int> ran{0};
    std::atomic<int> off_pool{0};
    std::mutex m;
    std::set<std::thread::id> seen;
    {
        conflux::thread_pool pool(3);
        CHECK(pool.size() == 3);
        CHECK(conflux_test::thread_count() == threads_before + 3);
        for (int i = 0; i < 10'000; ++i) {
            pool.post([&] {
                if (!pool.running_in_this_thread()) ++off_pool;
                {
                    std::lock_guard lock(m);
                    seen.insert(conflux_test::thread_id());
                }
                ++ran;
            });
        }
    }
    CHECK(ran == 10'000);
    CHECK(off_pool == 0);
    CHECK(seen.count(conflux_test::thread_id()) == 0);
    CHECK(conflux_test::thread_count() == threads_before);
}

TEST_CASE("work posted by running work is drained too") {
    std::atomic<int> ran{0};
    {
        conflux::thread_pool pool(2);
        pool.post([&] {
            for (int i = 0; i < 100; ++i) pool.post([&] { ++ran; });
        });
    }
    CHECK(ran == 100);
}

TEST_CASE("a pool needs at least one thread") {
    CHECK_THROWS_AS(conflux::thread_pool(0), std::invalid_argument);
}

TEST_CASE("a coroutine hops onto the pool and back to its loop") {
    conflux::thread_pool pool(2);
    auto body = [&]() -> conflux::task<bool> {
        auto loop = conflux::current_executor();
        auto loop_thread = conflux_test::thread_id();
        co_await pool.schedule();
        bool on_pool = pool.running_in_this_thread() && conflux_test::thread_id() != loop_thread &&
                       conflux::current_executor().context() == &pool;
        co_await loop.schedule();
        co_return (on_pool && conflux_test::thread_id() == loop_thread);
    };
    for (int i = 0; i < 100; ++i) REQUIRE(conflux::run(body()));
}

TEST_CASE("a coroutine posts capturing lambdas to a pool (sound with GCC 12: no co_await)") {
    const std::string text = "a text long enough to live outside the small-string buffer";
    std::atomic<int> matched{0};
    {
        conflux::thread_pool pool(2);
        auto body = [&]() -> conflux::task<> {
            for (int i = 0; i < 100; ++i) {
                pool.post([text, copy = text, &matched] {
                    if (copy == text) ++matched;
                });
            }
            co_return;
        };
        conflux::run(body());
    } // the destructor drains the pool
    CHECK(matched == 100);
}
