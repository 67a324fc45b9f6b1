#include <conflux/conflux.hpp>

#include "support/shm_child.hpp"
#include "support/test_support.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

using namespace std::chrono_literals;
using conflux::wait_result;

namespace {

std::size_t scaled(std::size_t n) {
    auto s = static_cast<std::size_t>(static_cast<double>(n) * conflux_test::stress_scale());
    return s == 0 ? 1 : s;
}

} // namespace

TEST_CASE("R55: two processes add 1e7 each to u32 and u64 counters, exactly") {
    conflux_test::watchdog dog(60s);
    conflux::shared_buffer memory(64);
    const auto c32 = memory.view<std::uint32_t>(8, 1);
    const auto c64 = memory.view<std::uint64_t>(16, 1);
    const std::size_t n = scaled(10'000'000);
    const pid_t child = conflux_test::start_shm_child(memory, "count", n);
    for (std::size_t k = 0; k < n; ++k) {
        c32.add(0, 1);
        c64.add(0, 1);
    }
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(c32.load(0) == static_cast<std::uint32_t>(2 * n));
    CHECK(c64.load(0) == 2 * n);
}

TEST_CASE("a baton passed round eight threads on bytes that share futex words") {
    conflux_test::watchdog dog(60s);
    conflux::shared_buffer memory(64);
    const auto seats = memory.view<std::uint8_t>(0, 8); // two futex words, four lanes each
    constexpr std::size_t threads = 8;
    const std::size_t laps = scaled(3'000);
    std::vector<std::thread> pool;
    for (std::size_t t = 0; t < threads; ++t) {
        pool.emplace_back([=] {
            for (std::size_t lap = 0; lap < laps; ++lap) {
                // Seat t holds the baton when its byte is 1; lap counts don't fit a byte.
                while (seats.load(t) == 0) seats.wait(t, 0);
                seats.store(t, 0);
                const std::size_t next = (t + 1) % threads;
                seats.store(next, 1);
                seats.notify(next, 1);
            }
        });
    }
    seats.store(0, 1);
    seats.notify(0);
    for (auto& t : pool) t.join();
    // Seat 0 gets the baton back after the last lap of seat 7.
    CHECK(seats.load(0) == 1);
    for (std::size_t t = 1; t < threads; ++t) CHECK(seats.load(t) == 0);
}

TEST_CASE(
    "wait_async on four loops: every waiter resolves exactly once under notify and timeouts") {
    conflux_test::watchdog dog(60s);
    conflux::shared_buffer memory(64);
    const auto cell = memory.view<std::int32_t>(0, 1);
    constexpr std::size_t loops_count = 4;
    const std::size_t per_loop = scaled(2'000);
    std::atomic<std::size_t> ok{0}, timed_out{0}, other{0};
    std::atomic<std::size_t> notified{0};
    std::atomic<bool> done_waiting{false};

    auto waiter = [&](std::size_t k) -> conflux::task<> {
        // A mix of short timeouts and long ones, so timers race notifies.
        const auto timeout = k % 3 == 0 ? std::chrono::milliseconds(1 + k % 7) : 10s;
        switch (co_await cell.wait_async(0, 0, timeout)) {
        case wait_result::ok:
            ok.fetch_add(1);
            break;
        case wait_result::timed_out:
            timed_out.fetch_add(1);
            break;
        default:
            other.fetch_add(1);
            break;
        }
    };
    auto loop_body = [&](std::size_t base) -> conflux::task<> {
        std::vector<conflux::task<>> tasks;
        for (std::size_t k = 0; k < per_loop; ++k) tasks.push_back(waiter(base + k));
        co_await conflux::when_all(std::move(tasks));
    };
    std::thread notifier([&] {
        std::size_t batch = 1;
        while (!done_waiting.load()) {
            notified.fetch_add(cell.notify(0, batch));
            batch = batch % 13 + 1;
            std::this_thread::yield();
        }
    });
    std::vector<std::thread> threads;
    for (std::size_t i = 0; i < loops_count; ++i) {
        threads.emplace_back([&, i] { conflux::run(loop_body(i * per_loop)); });
    }
    for (auto& t : threads) t.join();
    done_waiting.store(true);
    notifier.join();
    CHECK(other.load() == 0);
    CHECK(ok.load() + timed_out.load() == loops_count * per_loop);
    CHECK(ok.load() == notified.load()); // every counted wake reached exactly one waiter
    CHECK(cell.notify(0) == 0);
}

TEST_CASE("sync and async waiters on one element share notify's count") {
    conflux_test::watchdog dog(60s);
    conflux::shared_buffer memory(64);
    const auto cell = memory.view<std::uint16_t>(2, 1);
    const std::size_t rounds = scaled(200);
    for (std::size_t r = 0; r < rounds; ++r) {
        std::atomic<std::size_t> woken{0};
        std::thread sync_waiter([&] {
            if (cell.wait(0, 0, 10s) == wait_result::ok) woken.fetch_add(1);
        });
        auto body = [&]() -> conflux::task<> {
            std::thread notifier([&] {
                std::size_t total = 0;
                while (total < 2) total += cell.notify(0, 1);
            });
            if (co_await cell.wait_async(0, 0, 10s) == wait_result::ok) woken.fetch_add(1);
            notifier.join();
        };
        conflux::run(body());
        sync_waiter.join();
        REQUIRE(woken.load() == 2);
    }
}

TEST_CASE("wait_async across processes: notifies racing registrations on four lanes, two loops") {
    // Each round the child's store and notify land around the moment the coroutine checks
    // the value and registers; a wake lost in that window shows up as a wait running into
    // its 2 s bound.
    conflux_test::watchdog dog(300s);
    constexpr std::size_t lanes_count = 4;
    conflux::shared_buffer memory(64 + 4 * lanes_count);
    const auto lanes = memory.view<std::int32_t>(64, lanes_count);
    const std::size_t rounds = scaled(5'000);
    const pid_t child = conflux_test::start_shm_child(memory, "lanes", rounds);
    std::atomic<std::size_t> late{0};

    auto lane = [&](std::size_t j) -> conflux::task<> {
        for (std::int32_t k = 0; k < static_cast<std::int32_t>(rounds); ++k) {
            lanes.store(j, 2 * k + 1);
            lanes.notify(j);
            while (lanes.load(j) != 2 * k + 2) {
                const wait_result r = co_await lanes.wait_async(j, 2 * k + 1, 2s);
                if (r == wait_result::timed_out) late.fetch_add(1);
            }
        }
    };
    auto loop_body = [&](std::size_t first) -> conflux::task<> {
        auto a = lane(first);
        auto b = lane(first + 1);
        co_await conflux::when_all(std::move(a), std::move(b));
    };
    std::vector<std::thread> loops;
    for (std::size_t i = 0; i < lanes_count; i += 2) {
        loops.emplace_back([&, i] { conflux::run(loop_body(i)); });
    }
    for (auto& t : loops) t.join();
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(late.load() == 0);
    for (std::size_t j = 0; j < lanes_count; ++j) {
        CHECK(lanes.load(j) == static_cast<std::int32_t>(2 * rounds));
    }
    CHECK(conflux::detail::async_wait_registry::instance().waiting() == 0);
}
