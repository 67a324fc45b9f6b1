#include <conflux/conflux.hpp>

#include "support/test_support.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <stop_token>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

std::size_t scaled(std::size_t n) {
    auto s = static_cast<std::size_t>(static_cast<double>(n) * conflux_test::stress_scale());
    return s == 0 ? 1 : s;
}

} // namespace

TEST_CASE("coroutines hop between eight loops on eight threads without loss") {
    constexpr std::size_t loops_count = 8;
    const std::size_t hops = scaled(20'000);
    std::vector<std::unique_ptr<conflux::event_loop>> loops;
    for (std::size_t i = 0; i < loops_count; ++i) {
        loops.push_back(std::make_unique<conflux::event_loop>());
    }
    std::vector<std::thread> threads;
    for (std::size_t i = 1; i < loops_count; ++i) {
        threads.emplace_back([&, i] { loops[i]->run(); });
    }
    std::atomic<std::size_t> wrong_thread{0};
    auto hopper = [&](std::size_t seed) -> conflux::task<std::size_t> {
        std::size_t done = 0;
        for (std::size_t h = 0; h < hops; ++h) {
            auto& target = *loops[(seed + h * 7) % loops_count];
            co_await target.schedule();
            if (!target.running_in_this_thread()) ++wrong_thread;
            ++done;
        }
        co_return done;
    };
    auto body = [&]() -> conflux::task<std::size_t> {
        std::vector<conflux::task<std::size_t>> hoppers;
        for (std::size_t i = 0; i < 16; ++i) hoppers.push_back(hopper(i));
        std::size_t total = 0;
        for (auto n : co_await conflux::when_all(std::move(hoppers))) total += n;
        co_return total;
    };
    std::size_t total = loops[0]->run_until_complete(body());
    for (std::size_t i = 1; i < loops_count; ++i) loops[i]->stop();
    for (auto& t : threads) t.join();
    CHECK(total == 16 * hops);
    CHECK(wrong_thread == 0);
}

TEST_CASE("thousands of when_any races cancel their losers exactly once") {
    const std::size_t races = scaled(5'000);
    std::size_t cancelled = 0;
    auto loser = [&]() -> conflux::task<int> {
        try {
            co_await conflux::sleep_for(1h);
        } catch (const conflux::operation_cancelled&) {
            ++cancelled;
            throw;
        }
        co_return 0;
    };
    auto winner = []() -> conflux::task<int> {
        co_await conflux::sleep_for(0ms);
        co_return 1;
    };
    auto body = [&]() -> conflux::task<std::size_t> {
        std::size_t won = 0;
        for (std::size_t i = 0; i < races; ++i) {
            auto r = co_await conflux::when_any(loser(), winner(), loser());
            if (r.index() == 1) ++won;
        }
        co_return won;
    };
    CHECK(conflux::run(body()) == races);
    CHECK(cancelled == 2 * races);
}

TEST_CASE("stop requests from other threads race timer expiries") {
    const std::size_t rounds = scaled(5'000);
    std::atomic<std::size_t> resumed{0};
    auto body = [&]() -> conflux::task<> {
        conflux::thread_pool pool(2);
        for (std::size_t i = 0; i < rounds; ++i) {
            // Shared, so the pool's request_stop never outlives the source it is called on.
            auto source = std::make_shared<std::stop_source>();
            pool.post([source] { source->request_stop(); });
            try {
                co_await conflux::sleep_for(std::chrono::microseconds(i % 20), source->get_token());
            } catch (const conflux::operation_cancelled&) {
            }
            ++resumed;
        }
    };
    conflux::run(body());
    CHECK(resumed == rounds);
}

TEST_CASE("bursts of posts from two threads to a pool that keeps falling asleep all run") {
    // A lost wake-up leaves a burst queued with every pool thread asleep: the round's deadline
    // then fails the test instead of hanging it.
    conflux::thread_pool pool(2);
    const std::size_t rounds = scaled(2'000);
    for (std::size_t round = 0; round < rounds; ++round) {
        std::atomic<std::size_t> ran{0};
        const std::size_t burst = 1 + round % 97;
        auto producer = [&] {
            for (std::size_t i = 0; i < burst; ++i) pool.post([&ran] { ++ran; });
        };
        std::thread other(producer);
        producer();
        other.join();
        const auto deadline = std::chrono::steady_clock::now() + 5s;
        while (ran.load() != 2 * burst && std::chrono::steady_clock::now() < deadline) {
            std::this_thread::yield();
        }
        REQUIRE(ran.load() == 2 * burst);
        // Every few rounds, long enough for the pool's threads to go to sleep.
        if (round % 5 == 0) std::this_thread::sleep_for(200us);
    }
}
