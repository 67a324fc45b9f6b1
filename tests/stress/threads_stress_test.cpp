#include <conflux/channel.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/when_all.hpp>
#include <conflux/when_any.hpp>
#include <conflux/worker.hpp>

#include <doctest/doctest.h>

#include "support/test_support.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
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

namespace {

// A stop source that a canceller thread may stop at any moment while a receive uses it.
class stop_slot {
public:
    std::stop_token arm() {
        std::lock_guard lock(m_mutex);
        m_source.emplace();
        return m_source->get_token();
    }
    void disarm() {
        std::lock_guard lock(m_mutex);
        m_source.reset();
    }
    void fire() {
        std::lock_guard lock(m_mutex);
        if (m_source) m_source->request_stop();
    }

private:
    std::mutex m_mutex;
    std::optional<std::stop_source> m_source;
};

} // namespace

TEST_CASE("channel: receives racing timeouts and cancellations take every value exactly once") {
    conflux_test::watchdog dog(120s);
    for (const std::size_t capacity : {std::size_t{0}, std::size_t{4}}) {
        CAPTURE(capacity);
        constexpr std::uint32_t producers = 3;
        const auto per_producer = static_cast<std::uint32_t>(scaled(20000));
        const std::uint32_t total = producers * per_producer;
        conflux::channel<std::uint32_t> ch(capacity);
        auto seen = std::make_unique<std::atomic<std::uint8_t>[]>(total);
        std::atomic<std::uint64_t> received{0}, sum{0}, timeouts{0}, cancels{0};
        auto record = [&](std::uint32_t v) {
            seen[v].fetch_add(1, std::memory_order_relaxed);
            received.fetch_add(1, std::memory_order_relaxed);
            sum.fetch_add(v, std::memory_order_relaxed);
        };
        std::atomic<int> producers_left{producers};
        std::atomic<bool> consumers_done{false};
        stop_slot loop_slot, thread_slot;

        std::vector<std::jthread> producer_threads;
        for (std::uint32_t p = 0; p < producers; ++p) {
            producer_threads.emplace_back([&, p] {
                for (std::uint32_t i = 0; i < per_producer; ++i) {
                    ch.blocking_send(p * per_producer + i);
                }
                if (--producers_left == 0) ch.close();
            });
        }
        std::jthread canceller([&] {
            std::minstd_rand rng(7);
            while (!consumers_done.load()) {
                loop_slot.fire();
                thread_slot.fire();
                std::this_thread::sleep_for(std::chrono::microseconds(rng() % 40));
            }
        });
        std::vector<std::jthread> consumers;
        // Two loops race each receive against a timer of 0-40 µs.
        for (unsigned c = 0; c < 2; ++c) {
            consumers.emplace_back([&, c] {
                conflux::run([&]() -> conflux::task<> {
                    std::minstd_rand rng(c + 1);
                    for (;;) {
                        const auto timeout = std::chrono::microseconds(rng() % 40);
                        auto r =
                            co_await conflux::when_any(ch.receive(), conflux::sleep_for(timeout));
                        if (r.index() == 1) {
                            ++timeouts;
                            continue;
                        }
                        const auto& v = std::get<0>(r);
                        if (!v) break;
                        record(*v);
                    }
                }());
            });
        }
        // One loop races receive_any against a timer.
        consumers.emplace_back([&] {
            conflux::run([&]() -> conflux::task<> {
                std::minstd_rand rng(11);
                for (;;) {
                    const auto timeout = std::chrono::microseconds(rng() % 40);
                    auto r = co_await conflux::when_any(conflux::receive_any(ch),
                                                        conflux::sleep_for(timeout));
                    if (r.index() == 1) {
                        ++timeouts;
                        continue;
                    }
                    const auto& v = std::get<0>(std::get<0>(r));
                    if (!v) break;
                    record(*v);
                }
            }());
        });
        // One loop and one plain thread have their receives stopped from another thread.
        consumers.emplace_back([&] {
            conflux::run([&]() -> conflux::task<> {
                for (;;) {
                    std::optional<std::uint32_t> v;
                    try {
                        v = co_await ch.receive(loop_slot.arm());
                    } catch (const conflux::operation_cancelled&) {
                        loop_slot.disarm();
                        ++cancels;
                        continue;
                    }
                    loop_slot.disarm();
                    if (!v) break;
                    record(*v);
                }
            }());
        });
        consumers.emplace_back([&] {
            for (;;) {
                std::optional<std::uint32_t> v;
                try {
                    v = ch.blocking_receive(thread_slot.arm());
                } catch (const conflux::operation_cancelled&) {
                    thread_slot.disarm();
                    ++cancels;
                    continue;
                }
                thread_slot.disarm();
                if (!v) break;
                record(*v);
            }
        });
        producer_threads.clear();
        consumers.clear();
        consumers_done = true;
        canceller.join();

        MESSAGE("received " << received.load() << ", timeouts " << timeouts.load()
                            << ", cancellations " << cancels.load());
        CHECK(received.load() == total);
        const std::uint64_t expected_sum = std::uint64_t{total} * (total - 1) / 2;
        CHECK(sum.load() == expected_sum);
        std::size_t bad = 0;
        for (std::uint32_t i = 0; i < total; ++i) bad += seen[i].load() != 1 ? 1 : 0;
        CHECK(bad == 0);
        CHECK(ch.try_receive() == std::nullopt);
    }
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
    CHECK(conflux_test::settled_thread_count(baseline) == baseline);
}
