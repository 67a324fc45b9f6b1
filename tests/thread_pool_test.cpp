#include <conflux/run.hpp>
#include <conflux/thread_pool.hpp>

#include "support/test_support.hpp"

#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

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

namespace {

// Counts its live copies; moves leave a moved-from copy that counts too, until destroyed.
struct counted {
    std::atomic<int>* live;
    explicit counted(std::atomic<int>* l) : live(l) { ++*live; }
    counted(const counted& o) : live(o.live) { ++*live; }
    counted(counted&& o) noexcept : live(o.live) { ++*live; }
    counted& operator=(const counted&) = delete;
    ~counted() { --*live; }
};

// Not nothrow movable: a post must not need a nothrow move.
struct throwing_move {
    std::atomic<int>* ran;
    explicit throwing_move(std::atomic<int>* r) : ran(r) {}
    throwing_move(const throwing_move&) = default;
    throwing_move(throwing_move&& o) noexcept(false) : ran(o.ran) {}
    void operator()() const { ++*ran; }
};

} // namespace

TEST_CASE("small, large and throwing-move callables all run once and are destroyed once") {
    std::atomic<int> live{0};
    std::atomic<int> ran{0};
    std::array<char, 256> big{};
    big[255] = 7;
    {
        conflux::thread_pool pool(2);
        for (int i = 0; i < 1'000; ++i) {
            pool.post([c = counted(&live), &ran] { ++ran; });                    // a pool block
            pool.post([c = counted(&live), big, &ran] { ran += big[255] - 6; }); // too big
            pool.post(throwing_move(&ran));
        }
    }
    CHECK(ran == 3'000);
    CHECK(live == 0);
}

TEST_CASE("a burst of posts to a sleeping pool wakes it, and every post runs") {
    conflux::thread_pool pool(3);
    for (int round = 0; round < 200; ++round) {
        // Long enough for every thread to be asleep in its wait.
        std::this_thread::sleep_for(std::chrono::microseconds(round % 7 == 0 ? 2000 : 50));
        std::atomic<int> ran{0};
        const int burst = 1 + round % 40;
        for (int i = 0; i < burst; ++i) pool.post([&ran] { ++ran; });
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (ran.load() != burst && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::yield();
        }
        REQUIRE(ran.load() == burst);
    }
}
