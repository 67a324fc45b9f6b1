#include <conflux/channel.hpp>
#include <conflux/run.hpp>
#include <conflux/when_all.hpp>
#include <conflux/worker.hpp>

#include <doctest/doctest.h>

#include "support/test_support.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

std::size_t scaled(std::size_t n) {
    return std::max<std::size_t>(
        1, static_cast<std::size_t>(static_cast<double>(n) * conflux_test::stress_scale()));
}

} // namespace

TEST_CASE("channel: 4 producers x 4 consumers x 1M messages, no loss, no duplicates") {
    conflux_test::watchdog dog(120s);
    const std::size_t total = scaled(4000000); // 1M per producer
    const std::size_t per_producer = total / 4;
    conflux::channel<std::uint32_t> ch(64);
    auto seen = std::make_unique<std::atomic<std::uint8_t>[]>(per_producer * 4);
    std::atomic<std::size_t> received{0};
    std::atomic<int> producers_left{4};
    auto producer_done = [&] {
        if (--producers_left == 0) ch.close();
    };
    auto record = [&](std::uint32_t v) {
        seen[v].fetch_add(1, std::memory_order_relaxed);
        received.fetch_add(1, std::memory_order_relaxed);
    };
    std::vector<std::jthread> threads;
    // Two producers are coroutines on loops of their own, two are plain threads.
    for (std::uint32_t p = 0; p < 4; ++p) {
        const auto base = static_cast<std::uint32_t>(p * per_producer);
        if (p % 2 == 0) {
            threads.emplace_back([&, base] {
                conflux::run([&]() -> conflux::task<> {
                    for (std::uint32_t i = 0; i < per_producer; ++i) co_await ch.send(base + i);
                }());
                producer_done();
            });
        } else {
            threads.emplace_back([&, base] {
                for (std::uint32_t i = 0; i < per_producer; ++i) ch.blocking_send(base + i);
                producer_done();
            });
        }
    }
    for (int c = 0; c < 4; ++c) {
        if (c % 2 == 0) {
            threads.emplace_back([&] {
                conflux::run([&]() -> conflux::task<> {
                    while (auto v = co_await ch.receive()) record(*v);
                }());
            });
        } else {
            threads.emplace_back([&] {
                while (auto v = ch.blocking_receive()) record(*v);
            });
        }
    }
    threads.clear();
    CHECK(received == per_producer * 4);
    std::size_t bad = 0;
    for (std::size_t i = 0; i < per_producer * 4; ++i) bad += seen[i].load() != 1 ? 1 : 0;
    CHECK(bad == 0);
}

TEST_CASE("worker: 10,000 started and joined, the thread count back to baseline") {
    conflux_test::watchdog dog(300s);
    const std::size_t workers = scaled(10000);
    const auto baseline = conflux_test::thread_baseline();
    auto body = [&]() -> conflux::task<std::size_t> {
        std::size_t sum = 0;
        for (std::size_t i = 0; i < workers; i += 8) {
            std::vector<conflux::worker<int>> batch;
            for (std::size_t k = i; k < std::min(workers, i + 8); ++k) {
                batch.emplace_back(
                    [](auto& parent, int v) -> conflux::task<> {
                        parent.post(v);
                        co_return;
                    },
                    static_cast<int>(k));
            }
            for (auto& w : batch) {
                auto v = co_await w.receive();
                sum += static_cast<std::size_t>(v.value_or(0));
                co_await w.join();
            }
        }
        co_return sum;
    };
    CHECK(conflux::run(body()) == workers * (workers - 1) / 2);
    CHECK(conflux_test::thread_count() == baseline);
}
