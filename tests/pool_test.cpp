#include <conflux/buffer.hpp>
#include <conflux/channel.hpp>
#include <conflux/pool.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/when_all.hpp>
#include <conflux/when_any.hpp>

#include "support/test_support.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <set>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

int square(int x) { return x * x; }

// Spins (not sleeps) until `flag`, so that a thread stays busy without timing assumptions.
void wait_for(const std::atomic<bool>& flag) {
    while (!flag.load()) std::this_thread::sleep_for(100us);
}

// Polls `done` for up to `limit`; for numbers that change on another thread after an await.
template <class F>
bool eventually(F done, std::chrono::milliseconds limit = 5000ms) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

} // namespace

TEST_CASE("run gives a plain function's result, computed on a pool thread") {
    const auto threads_before = conflux_test::thread_baseline();
    const auto fds_before = conflux_test::open_fds();
    {
        conflux::worker_pool pool({.minimum = 2, .maximum = 2});
        CHECK(conflux_test::thread_count() == threads_before + 2);
        conflux::run([&]() -> conflux::task<> {
            const auto caller = conflux_test::thread_id();
            int r = co_await pool.run(square, 7);
            CHECK(r == 49);
            CHECK(conflux_test::thread_id() == caller); // resumed on its own loop
            auto where = [] { return conflux_test::thread_id(); };
            std::thread::id ran_on = co_await pool.run(where);
            CHECK(ran_on != caller);
            co_await pool.run([] {}); // void
        }());
        const auto s = pool.stats();
        CHECK(s.completed == 3);
        CHECK(s.running == 0);
        CHECK(s.queued == 0);
        CHECK(s.wait_time.count() == 3);
        CHECK(s.run_time.count() == 3);
    }
    CHECK(conflux_test::settled_thread_count(threads_before) == threads_before);
    CHECK(conflux_test::open_fds() == fds_before);
}

TEST_CASE("a task's exception is rethrown by run, and the pool goes on") {
    conflux::worker_pool pool({.minimum = 1, .maximum = 1});
    conflux::run([&]() -> conflux::task<> {
        auto boom = []() -> int { throw std::runtime_error("boom"); };
        bool caught = false;
        try {
            co_await pool.run(boom);
        } catch (const std::runtime_error& e) {
            caught = std::string(e.what()) == "boom";
        }
        CHECK(caught);
        int r = co_await pool.run(square, 3);
        CHECK(r == 9);
    }());
    CHECK(pool.stats().completed == 2);
}

TEST_CASE("a coroutine task runs on the worker's own loop and may await there") {
    conflux::worker_pool pool({.minimum = 1, .maximum = 1});
    conflux::run([&]() -> conflux::task<> {
        auto body = [](int x) -> conflux::task<int> {
            CHECK(conflux::event_loop::current() != nullptr);
            co_await conflux::sleep_for(1ms);
            co_return x + 1;
        };
        int r = co_await pool.run(body, 41);
        CHECK(r == 42);
        auto thrower = []() -> conflux::task<void> {
            co_await conflux::sleep_for(1ms);
            throw std::logic_error("late");
        };
        CHECK_THROWS_AS(co_await pool.run(thrower), std::logic_error);
    }());
}

TEST_CASE("a buffer moved into a task and returned is not copied") {
    conflux::worker_pool pool({.minimum = 1, .maximum = 1});
    conflux::run([&]() -> conflux::task<> {
        conflux::buffer b(1 << 20);
        const std::byte* address = b.bytes().data();
        b.bytes()[0] = std::byte{7};
        auto touch = [](conflux::buffer in) {
            in.bytes()[1] = std::byte{9};
            return in;
        };
        conflux::buffer back = co_await pool.run(touch, std::move(b));
        CHECK(b.detached());
        CHECK(back.bytes().data() == address);
        CHECK(back.bytes()[0] == std::byte{7});
        CHECK(back.bytes()[1] == std::byte{9});
    }());
}

TEST_CASE("an idle_timeout of milliseconds::max() never ends a thread") {
    conflux::worker_pool pool(
        {.minimum = 1, .maximum = 2, .idle_timeout = std::chrono::milliseconds::max()});
    std::atomic<bool> release{false};
    std::atomic<int> busy{0};
    conflux::run([&]() -> conflux::task<> {
        auto hold = [&] {
            ++busy;
            wait_for(release);
        };
        auto releaser = [&]() -> conflux::task<void> {
            while (busy.load() < 2) co_await conflux::sleep_for(1ms);
            release = true;
        };
        co_await conflux::when_all(pool.run(hold), pool.run(hold), releaser());
    }());
    std::this_thread::sleep_for(100ms);
    CHECK(pool.stats().threads == 2);
}

TEST_CASE("the pool grows to maximum under load and shrinks after the idle timeout") {
    const auto threads_before = conflux_test::thread_baseline();
    conflux::worker_pool pool({.minimum = 1, .maximum = 3, .idle_timeout = 50ms});
    CHECK(pool.stats().threads == 1);
    std::atomic<bool> release{false};
    std::atomic<int> busy{0};
    conflux::run([&]() -> conflux::task<> {
        auto hold = [&] {
            ++busy;
            wait_for(release);
        };
        std::vector<conflux::task<void>> tasks;
        for (int i = 0; i < 5; ++i) tasks.push_back(pool.run(hold));
        auto releaser = [&]() -> conflux::task<void> {
            while (busy.load() < 3) co_await conflux::sleep_for(1ms);
            const auto s = pool.stats();
            CHECK(s.threads == 3);
            CHECK(s.running == 3);
            CHECK(s.queued == 2);
            release = true;
        };
        co_await conflux::when_all(conflux::when_all(std::move(tasks)), releaser());
    }());
    CHECK(busy == 5);
    CHECK(eventually([&] { return pool.stats().threads == 1; }));
    CHECK(eventually([&] { return conflux_test::thread_count() == threads_before + 1; }));
    // It grows again when needed.
    int r = conflux::run(pool.run(square, 5));
    CHECK(r == 25);
    CHECK(pool.stats().completed == 6);
}

TEST_CASE("a full queue makes try_run fail and run wait for room") {
    conflux::worker_pool pool({.minimum = 1, .maximum = 1, .max_queue = 1});
    std::atomic<bool> release{false};
    std::atomic<bool> started{false};
    conflux::run([&]() -> conflux::task<> {
        auto hold = [&] {
            started = true;
            wait_for(release);
            return 1;
        };
        auto first = pool.run(hold);       // runs
        auto second = pool.run(square, 2); // queued
        auto third = pool.run(square, 3);  // waits for room
        auto body = [&]() -> conflux::task<void> {
            while (!started.load()) co_await conflux::sleep_for(1ms);
            while (pool.stats().waiting_for_room < 1) co_await conflux::sleep_for(1ms);
            CHECK(pool.stats().queued == 1);
            bool refused = false;
            try {
                co_await pool.try_run(square, 4);
            } catch (const conflux::pool_error& e) {
                refused = std::string(e.what()).find("queue is full") != std::string::npos;
            }
            CHECK(refused);
            release = true;
        };
        auto [a, b, c, d] = co_await conflux::when_all(std::move(first), std::move(second),
                                                       std::move(third), body());
        CHECK(a == 1);
        CHECK(b == 4);
        CHECK(c == 9);
    }());
    CHECK(pool.stats().completed == 3);
}

TEST_CASE("cancelling a queued task removes it; cancelling a running one stops its token") {
    conflux::worker_pool pool({.minimum = 1, .maximum = 1});
    std::atomic<bool> running{false};
    std::atomic<bool> saw_stop{false};
    std::atomic<int> queued_ran{0};
    conflux::run([&]() -> conflux::task<> {
        auto obedient = [&](std::stop_token token) {
            running = true;
            while (!token.stop_requested()) std::this_thread::sleep_for(100us);
            saw_stop = true;
            return std::string("stopped");
        };
        auto never = [&] { ++queued_ran; };
        std::stop_source first_stop;
        std::stop_source second_stop;
        auto first = [&]() -> conflux::task<std::string> {
            auto t = pool.run(obedient);
            co_return co_await conflux::detail::with_stop_token(std::move(t),
                                                                first_stop.get_token());
        };
        auto second = [&]() -> conflux::task<bool> {
            auto t = pool.run(never);
            try {
                co_await conflux::detail::with_stop_token(std::move(t), second_stop.get_token());
            } catch (const conflux::operation_cancelled&) {
                co_return true;
            }
            co_return false;
        };
        auto driver = [&]() -> conflux::task<void> {
            while (!running.load()) co_await conflux::sleep_for(1ms);
            CHECK(pool.stats().queued == 1);
            second_stop.request_stop(); // queued: taken back at once
            co_await conflux::sleep_for(5ms);
            CHECK(pool.stats().queued == 0);
            first_stop.request_stop(); // running: sees its token
        };
        auto [r1, r2, r3] = co_await conflux::when_all(first(), second(), driver());
        CHECK(r1 == "stopped");
        CHECK(r2);
    }());
    CHECK(saw_stop);
    CHECK(queued_ran == 0);
}

TEST_CASE("a task already cancelled is refused before it is queued") {
    conflux::worker_pool pool({.minimum = 1, .maximum = 1});
    std::atomic<int> ran{0};
    std::stop_source stop;
    stop.request_stop();
    conflux::run([&]() -> conflux::task<> {
        auto count = [&] { ++ran; };
        auto t = pool.run(count);
        CHECK_THROWS_AS(co_await conflux::detail::with_stop_token(std::move(t), stop.get_token()),
                        conflux::operation_cancelled);
    }());
    CHECK(ran == 0);
}

TEST_CASE("when_any against a timeout cancels a coroutine task through its token") {
    conflux::worker_pool pool({.minimum = 1, .maximum = 1});
    conflux::run([&]() -> conflux::task<> {
        auto forever = []() -> conflux::task<int> {
            co_await conflux::sleep_for(1h); // ends with operation_cancelled when stopped
            co_return 1;
        };
        auto outcome = co_await conflux::when_any(pool.run(forever), conflux::sleep_for(10ms));
        CHECK(outcome.index() == 1);
    }());
    CHECK(eventually([&] { return pool.stats().running == 0; }));
}

TEST_CASE("close drains accepted tasks, then run is refused with a clear error") {
    const auto threads_before = conflux_test::thread_baseline();
    conflux::worker_pool pool({.minimum = 2, .maximum = 2});
    std::atomic<int> ran{0};
    conflux::run([&]() -> conflux::task<> {
        auto work = [&](int i) {
            std::this_thread::sleep_for(1ms);
            ++ran;
            return i;
        };
        std::vector<conflux::task<int>> tasks;
        for (int i = 0; i < 10; ++i) tasks.push_back(pool.run(work, i));
        auto closer = [&]() -> conflux::task<int> {
            co_await conflux::sleep_for(2ms);
            co_await pool.close();
            co_return ran.load();
        };
        auto [results, ran_at_close] =
            co_await conflux::when_all(conflux::when_all(std::move(tasks)), closer());
        CHECK(results.size() == 10);
        CHECK(ran_at_close == 10);
        CHECK(pool.closed());
        std::string message;
        try {
            co_await pool.run(square, 1);
        } catch (const conflux::pool_error& e) {
            message = e.what();
        }
        CHECK(message == "conflux::worker_pool \"conflux-pool\": run() after close()");
        co_await pool.close(); // idempotent
    }());
    CHECK(ran == 10);
    CHECK(conflux_test::settled_thread_count(threads_before) == threads_before);
}

TEST_CASE("destroying the pool fails queued tasks, stops running ones and joins every thread") {
    const auto threads_before = conflux_test::thread_baseline();
    std::atomic<bool> running{false};
    std::atomic<int> queued_ran{0};
    conflux::run([&]() -> conflux::task<> {
        auto pool = std::make_unique<conflux::worker_pool>(
            conflux::worker_pool_options{.minimum = 1, .maximum = 1});
        auto obedient = [&](std::stop_token token) {
            running = true;
            while (!token.stop_requested()) std::this_thread::sleep_for(100us);
            return 1;
        };
        auto never = [&] { ++queued_ran; };
        auto first = [&]() -> conflux::task<int> { co_return co_await pool->run(obedient); };
        auto second = [&]() -> conflux::task<std::string> {
            try {
                co_await pool->run(never);
            } catch (const conflux::pool_error& e) {
                co_return e.what();
            }
            co_return "";
        };
        auto destroyer = [&]() -> conflux::task<void> {
            while (!running.load()) co_await conflux::sleep_for(1ms);
            CHECK(conflux_test::thread_count() == threads_before + 1);
            pool.reset();
        };
        auto [r1, r2, r3] = co_await conflux::when_all(first(), second(), destroyer());
        CHECK(r1 == 1);
        CHECK(r2 == "conflux::worker_pool \"conflux-pool\": destroyed with the task still queued");
    }());
    CHECK(queued_ran == 0);
    CHECK(conflux_test::settled_thread_count(threads_before) == threads_before);
}

TEST_CASE("bad options are refused; a pool with no minimum starts a thread on demand") {
    CHECK_THROWS_AS(conflux::worker_pool({.minimum = 3, .maximum = 2}), std::invalid_argument);
    conflux::worker_pool pool({.minimum = 0, .maximum = 1});
    CHECK(pool.stats().threads == 0);
    CHECK(conflux::run(pool.run(square, 6)) == 36);
    CHECK(pool.stats().threads == 1);
}

TEST_CASE("run from many threads at once, and tasks that run tasks") {
    conflux::worker_pool pool({.minimum = 2, .maximum = 4});
    std::atomic<std::int64_t> total{0};
    std::vector<std::thread> callers;
    for (int t = 0; t < 3; ++t) {
        callers.emplace_back([&] {
            conflux::run([&]() -> conflux::task<> {
                for (int i = 0; i < 500; ++i) total += co_await pool.run(square, i % 10);
            }());
        });
    }
    for (auto& c : callers) c.join();
    CHECK(total == 3 * 50 * (0 + 1 + 4 + 9 + 16 + 25 + 36 + 49 + 64 + 81));
    conflux::run([&]() -> conflux::task<> {
        auto nested = [&](int x) -> conflux::task<int> { co_return co_await pool.run(square, x); };
        int r = co_await pool.run(nested, 12);
        CHECK(r == 144);
    }());
}

TEST_CASE("stats report wait and run time percentiles") {
    conflux::worker_pool pool({.minimum = 1, .maximum = 1});
    conflux::run([&]() -> conflux::task<> {
        auto nap = [] { std::this_thread::sleep_for(2ms); };
        for (int i = 0; i < 5; ++i) co_await pool.run(nap);
    }());
    const auto s = pool.stats();
    CHECK(s.run_time.count() == 5);
    CHECK(s.run_time.percentile(50) >= 2ms);
    CHECK(s.run_time.percentile(50) <= s.run_time.max());
    CHECK(s.run_time.mean() >= 2ms);
    CHECK(s.run_time.max() < 2s);
    CHECK(s.wait_time.percentile(99) <= s.wait_time.max());
    CHECK_THROWS_AS((void)s.run_time.percentile(101), std::invalid_argument);
    conflux::duration_histogram empty;
    CHECK(empty.percentile(50) == 0ns);
}

TEST_CASE("cancelling a task that awaits a nested run reaches the inner task") {
    conflux::worker_pool pool({.minimum = 2, .maximum = 2});
    std::atomic<bool> inner_stopped{false};
    conflux::run([&]() -> conflux::task<> {
        auto inner = [&](std::stop_token token) {
            while (!token.stop_requested()) std::this_thread::sleep_for(100us);
            inner_stopped = true;
            return 1;
        };
        auto outer = [&pool, &inner]() -> conflux::task<int> {
            co_return co_await pool.run(inner);
        };
        auto outcome = co_await conflux::when_any(pool.run(outer), conflux::sleep_for(20ms));
        CHECK(outcome.index() == 1);
    }());
    CHECK(inner_stopped);
    CHECK(eventually([&] { return pool.stats().running == 0; }));
}
