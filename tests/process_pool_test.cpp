#include <conflux/process_pool.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/when_all.hpp>
#include <conflux/when_any.hpp>

#include "support/test_support.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include <unistd.h>

using namespace std::chrono_literals;

namespace {

const conflux::pool_function<int(int)> square("square", [](int x) { return x * x; });

const conflux::pool_function<int()> child_pid("child_pid",
                                              [] { return static_cast<int>(::getpid()); });

const conflux::pool_function<std::string(std::string, int)> repeat("repeat",
                                                                   [](std::string s, int n) {
                                                                       std::string out;
                                                                       for (int i = 0; i < n; ++i)
                                                                           out += s;
                                                                       return out;
                                                                   });

const conflux::pool_function<void(std::string)> fail("fail", [](std::string why) {
    throw std::runtime_error(why);
});

const conflux::pool_function<int(int)> crash("crash", [](int) -> int {
    std::signal(SIGSEGV, SIG_DFL);
    std::raise(SIGSEGV);
    return 0;
});

const conflux::pool_function<int(int)> slow("slow", [](int ms) -> conflux::task<int> {
    co_await conflux::sleep_for(std::chrono::milliseconds(ms));
    co_return ms;
});

const conflux::arguments child_args{"--test-case=process pool child entry"};

} // namespace

TEST_CASE("process pool child entry") {
    // In the test process itself: nothing to serve, run just runs.
    CHECK(conflux::run([]() -> conflux::task<int> { co_return 5; }()) == 5);
}

TEST_CASE("a process pool runs registered functions in child processes") {
    const auto fds_before = conflux_test::open_fds();
    conflux::run([&]() -> conflux::task<> {
        conflux::process_pool pool({.minimum = 1, .maximum = 2}, child_args);
        int r = co_await pool.run(square, 12);
        CHECK(r == 144);
        int pid = co_await pool.run(child_pid);
        CHECK(pid != static_cast<int>(::getpid()));
        std::string text = co_await pool.run(repeat, std::string("ab"), 3);
        CHECK(text == "ababab");
        auto tasks = std::vector<conflux::task<int>>();
        for (int i = 0; i < 6; ++i) tasks.push_back(pool.run(slow, 5));
        auto all = co_await conflux::when_all(std::move(tasks));
        CHECK(all.size() == 6);
        const auto s = pool.stats();
        CHECK(s.threads == 2);
        CHECK(s.completed == 9);
        CHECK(s.run_time.count() == 9);
        co_await pool.close();
        CHECK(pool.stats().threads == 0);
        std::string message;
        try {
            co_await pool.run(square, 1);
        } catch (const conflux::pool_error& e) {
            message = e.what();
        }
        CHECK(message == "conflux::process_pool \"conflux-pool\": run() after close()");
    }());
    CHECK(conflux_test::zombie_children().empty());
    CHECK(conflux_test::open_fds() == fds_before);
}

TEST_CASE("a task's exception comes back as remote_error") {
    conflux::run([&]() -> conflux::task<> {
        conflux::process_pool pool({.minimum = 1, .maximum = 1}, child_args);
        std::string type;
        std::string message;
        try {
            co_await pool.run(fail, std::string("no luck"));
        } catch (const conflux::remote_error& e) {
            type = e.type_name();
            message = e.message();
        }
        CHECK(type == "std::runtime_error");
        CHECK(message == "no luck");
        int r = co_await pool.run(square, 3); // the same child goes on
        CHECK(r == 9);
        co_await pool.close();
    }());
    CHECK(conflux_test::zombie_children().empty());
}

TEST_CASE("a crashing child fails its task clearly; the pool replaces it") {
    conflux::run([&]() -> conflux::task<> {
        conflux::process_pool pool({.minimum = 1, .maximum = 1}, child_args);
        int first_pid = co_await pool.run(child_pid);
        std::string message;
        try {
            co_await pool.run(crash, 0);
        } catch (const conflux::pool_error& e) {
            message = e.what();
        }
        CHECK(message.find("worker process " + std::to_string(first_pid)) != std::string::npos);
        CHECK(message.find("killed by signal 11") != std::string::npos);
        CHECK(message.find("while running \"crash\"") != std::string::npos);
        int second_pid = co_await pool.run(child_pid);
        CHECK(second_pid != first_pid);
        int r = co_await pool.run(square, 4);
        CHECK(r == 16);
        CHECK(pool.stats().threads == 1);
        co_await pool.close();
    }());
    CHECK(conflux_test::zombie_children().empty());
}

TEST_CASE("a full queue: try_run fails, run waits; cancellation of queued and running tasks") {
    conflux::run([&]() -> conflux::task<> {
        conflux::process_pool pool({.minimum = 1, .maximum = 1, .max_queue = 1}, child_args);
        auto first = pool.run(slow, 200); // runs
        auto second = pool.run(slow, 1);  // queued
        auto third = pool.run(square, 5); // waits for room
        auto body = [&]() -> conflux::task<void> {
            while (pool.stats().waiting_for_room < 1) co_await conflux::sleep_for(1ms);
            CHECK(pool.stats().queued == 1);
            bool refused = false;
            try {
                co_await pool.try_run(square, 4);
            } catch (const conflux::pool_error& e) {
                refused = std::string(e.what()).find("queue is full") != std::string::npos;
            }
            CHECK(refused);
        };
        auto [a, b, c, d] = co_await conflux::when_all(std::move(first), std::move(second),
                                                       std::move(third), body());
        CHECK(a == 200);
        CHECK(b == 1);
        CHECK(c == 25);

        // A running task cancelled by a timeout: its child is killed and replaced.
        int before = co_await pool.run(child_pid);
        auto outcome = co_await conflux::when_any(pool.run(slow, 10'000), conflux::sleep_for(20ms));
        CHECK(outcome.index() == 1);
        int after = co_await pool.run(child_pid);
        CHECK(after != before);
        // A queued task cancelled: taken back, never run.
        auto busy = pool.run(slow, 100);
        auto racer = [&]() -> conflux::task<int> {
            auto r = co_await conflux::when_any(pool.run(square, 6), conflux::sleep_for(10ms));
            co_return static_cast<int>(r.index());
        };
        auto [busy_result, raced] = co_await conflux::when_all(std::move(busy), racer());
        CHECK(busy_result == 100);
        CHECK(raced == 1);
        CHECK(pool.stats().queued == 0);
        co_await pool.close();
    }());
    CHECK(conflux_test::zombie_children().empty());
}

TEST_CASE("destroying a process pool fails queued and running tasks and leaves no child") {
    conflux::run([&]() -> conflux::task<> {
        auto pool = std::make_unique<conflux::process_pool>(
            conflux::worker_pool_options{.minimum = 1, .maximum = 1}, child_args);
        auto running = [&]() -> conflux::task<std::string> {
            try {
                co_await pool->run(slow, 10'000);
            } catch (const conflux::pool_error& e) {
                co_return e.what();
            }
            co_return "";
        };
        auto queued = [&]() -> conflux::task<std::string> {
            try {
                co_await pool->run(square, 2);
            } catch (const conflux::pool_error& e) {
                co_return e.what();
            }
            co_return "";
        };
        auto destroyer = [&]() -> conflux::task<void> {
            while (pool->stats().queued < 1) co_await conflux::sleep_for(1ms);
            pool.reset();
        };
        auto [r1, r2, r3] = co_await conflux::when_all(running(), queued(), destroyer());
        CHECK(r1 == "conflux::process_pool \"conflux-pool\": destroyed while \"slow\" ran");
        CHECK(r2 == "conflux::process_pool \"conflux-pool\": destroyed with the task still queued");
        co_await conflux::sleep_for(50ms); // lets the loop reap what was dropped
    }());
    CHECK(conflux_test::zombie_children().empty());
}
