#include <conflux/run.hpp>
#include <conflux/thread_pool.hpp>

#include "support/test_support.hpp"

#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
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
    CHECK(conflux_test::settled_thread_count(threads_before) == threads_before);
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

namespace {

// An intrusive item, as a coroutine's resumption is: queued by address, never copied.
struct recording_item : conflux::detail::work_item {
    std::vector<int>* order = nullptr;
    int value = 0;

    recording_item() noexcept {
        invoke = [](conflux::detail::work_item* self, action a) noexcept {
            auto* me = static_cast<recording_item*>(self);
            if (a == action::run) me->order->push_back(me->value);
        };
    }
};

} // namespace

TEST_CASE("a one-thread pool runs small, large and intrusive work in the order it was queued") {
    // Thousands of items span many of the queue's blocks, and small callables (held in the
    // queue) alternate with large ones and intrusive items (held by address).
    constexpr int items = 3'000;
    std::vector<int> order;
    order.reserve(items);
    std::vector<recording_item> intrusive(items);
    std::array<char, 64> big{};
    std::atomic<bool> hold{true};
    {
        conflux::thread_pool pool(1);
        pool.post([&hold] {
            while (hold.load()) std::this_thread::yield();
        });
        for (int i = 0; i < items; ++i) {
            if (i % 3 == 0) {
                pool.post([&order, i] { order.push_back(i); });
            } else if (i % 3 == 1) {
                pool.post([&order, i, big] { order.push_back(i + big[0]); });
            } else {
                auto& item = intrusive[static_cast<std::size_t>(i)];
                item.order = &order;
                item.value = i;
                pool.enqueue(&item);
            }
        }
        hold = false;
    }
    REQUIRE(order.size() == static_cast<std::size_t>(items));
    for (int i = 0; i < items; ++i) REQUIRE(order[static_cast<std::size_t>(i)] == i);
}

TEST_CASE("a mutable small callable keeps its own state, once per post") {
    std::atomic<int> sum{0};
    {
        conflux::thread_pool pool(2);
        for (int i = 0; i < 1'000; ++i) {
            // Three words: the most a post holds in the queue itself.
            pool.post([&sum, step = 0, add = i]() mutable {
                step += add;
                sum += step;
            });
        }
    }
    CHECK(sum == 999 * 1'000 / 2);
}

TEST_CASE("schedule() on the pool's own thread lets queued work run first, else goes on") {
    conflux::thread_pool pool(1);
    std::vector<int> order;
    auto body = [&]() -> conflux::task<std::thread::id> {
        co_await pool.schedule();
        const auto pool_thread = conflux_test::thread_id();
        // Nothing else queued: the coroutine goes on at once, on the same thread.
        co_await pool.schedule();
        CHECK(conflux_test::thread_id() == pool_thread);
        order.push_back(1);
        // Work queued meanwhile runs before the coroutine goes on.
        pool.post([&order] { order.push_back(2); });
        co_await pool.schedule();
        order.push_back(3);
        CHECK(conflux_test::thread_id() == pool_thread);
        co_return pool_thread;
    };
    const auto pool_thread = conflux::run(body());
    CHECK(pool_thread != conflux_test::thread_id());
    CHECK(order == std::vector<int>{1, 2, 3});
}

TEST_CASE("work whose run destroys the pool may be posted from a thread outside it") {
    // The poster may still be inside post() when the work it queued runs and the pool is
    // destroyed on a third thread: post must not touch the pool after its item is visible.
    // The sanitizer builds see a touch of the destroyed pool.
    int completed = 0;
    for (int round = 0; round < 300; ++round) {
        auto pool = std::make_unique<conflux::thread_pool>(2);
        conflux::thread_pool* raw = pool.get();
        std::atomic<bool> ran{false};
        std::thread poster([raw, &ran] { raw->post([&ran] { ran.store(true); }); });
        while (!ran.load()) std::this_thread::yield();
        pool.reset();
        poster.join();
        ++completed;
    }
    CHECK(completed == 300);
}

TEST_CASE("posts from many threads to a pool that keeps going idle all run") {
    // Pauses around the pool's spin before sleeping: posts land while a thread spins, as it
    // gives up, and after it sleeps. A lost wake-up fails the round's deadline.
    conflux::thread_pool pool(2);
    constexpr int posters = 4;
    for (int round = 0; round < 150; ++round) {
        std::atomic<int> ran{0};
        const int burst = 1 + round % 5;
        std::vector<std::thread> threads;
        for (int p = 0; p < posters; ++p) {
            threads.emplace_back([&, p] {
                std::this_thread::sleep_for(std::chrono::microseconds((round * 7 + p * 13) % 60));
                for (int i = 0; i < burst; ++i) pool.post([&ran] { ++ran; });
            });
        }
        for (auto& t : threads) t.join();
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
        while (ran.load() != posters * burst && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::yield();
        }
        REQUIRE(ran.load() == posters * burst);
    }
}
