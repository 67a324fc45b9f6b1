#include <conflux/process_pool.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/when_all.hpp>
#include <conflux/when_any.hpp>

#include "support/scratch.hpp"
#include "support/test_support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <memory>
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

/// Waits (a bounded while) for `done()`, on the loop; true if it came.
template <class Done>
conflux::task<bool> eventually(Done done, std::chrono::milliseconds limit = 10s) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!done()) {
        if (std::chrono::steady_clock::now() > deadline) co_return false;
        co_await conflux::sleep_for(5ms);
    }
    co_return true;
}

std::size_t children_now() { return conflux_test::all_children().size(); }

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

TEST_CASE("a process pool starts its minimum, grows under load and shrinks after idle_timeout") {
    conflux_test::watchdog dog(10s);
    conflux_test::no_leaks probe;
    conflux::run([&]() -> conflux::task<> {
        conflux::process_pool pool({.minimum = 1, .maximum = 3, .idle_timeout = 200ms}, child_args);
        // Started with the pool, before any task.
        auto one = [&] { return pool.stats().threads == 1 && pool.stats().idle == 1; };
        CHECK(co_await eventually(one));
        CHECK(children_now() == 1);
        const auto fds_with_one = conflux_test::open_fds();

        // Three tasks at once: two more children, never more than the maximum.
        std::size_t peak_threads = 0;
        std::size_t peak_children = 0;
        auto watch = [&]() -> conflux::task<int> {
            auto all_running = [&] {
                peak_threads = std::max(peak_threads, pool.stats().threads);
                peak_children = std::max(peak_children, children_now());
                return pool.stats().running == 3;
            };
            co_return (co_await eventually(all_running)) ? 1 : 0;
        };
        auto [a, b, c, seen] = co_await conflux::when_all(pool.run(slow, 300), pool.run(slow, 300),
                                                          pool.run(slow, 300), watch());
        CHECK(a + b + c == 900);
        CHECK(seen == 1);
        CHECK(peak_threads == 3);
        CHECK(peak_children == 3);

        // Idle for idle_timeout: back to the minimum, the others reaped (no zombie) and their
        // descriptors closed.
        CHECK(co_await eventually([&] { return pool.stats().threads == 1; }));
        CHECK(children_now() == 1);
        CHECK(conflux_test::zombie_children().empty());
        // The child kept may be another than the first (its pidfd and socket then have other
        // numbers): as many descriptors as with one child.
        CHECK(conflux_test::open_fds().size() == fds_with_one.size());
        // And it stays there: the last child is not ended, however long it idles.
        co_await conflux::sleep_for(600ms);
        CHECK(pool.stats().threads == 1);
        CHECK(children_now() == 1);
        int r = co_await pool.run(square, 7);
        CHECK(r == 49);
        co_await pool.close();
        CHECK(pool.stats().threads == 0);
    }());
}

TEST_CASE("idle timeouts that end together never take a process pool below its minimum") {
    conflux_test::watchdog dog(10s);
    conflux_test::no_leaks probe;
    conflux::run([&]() -> conflux::task<> {
        conflux::process_pool pool({.minimum = 2, .maximum = 6, .idle_timeout = 20ms}, child_args);
        for (int round = 0; round < 2; ++round) {
            std::vector<conflux::task<int>> tasks;
            for (int i = 0; i < 6; ++i) tasks.push_back(pool.run(slow, 100));
            auto done = co_await conflux::when_all(std::move(tasks));
            CHECK(done.size() == 6);
            CHECK(co_await eventually([&] { return pool.stats().threads == 2; }));
            co_await conflux::sleep_for(200ms); // ten idle timeouts more
            CHECK(pool.stats().threads == 2);
            CHECK(pool.stats().idle == 2);
            CHECK(children_now() == 2);
            CHECK(conflux_test::zombie_children().empty());
        }
        co_await pool.close();
    }());
}

TEST_CASE("close() waits for the children being started and reaps them") {
    conflux_test::watchdog dog(10s);
    conflux_test::no_leaks probe;
    conflux::run([&]() -> conflux::task<> {
        {
            // The minimum is being forked when close() comes.
            conflux::process_pool pool({.minimum = 3, .maximum = 3}, child_args);
            co_await pool.close();
            CHECK(pool.stats().threads == 0);
            CHECK(children_now() == 0);
        }
        {
            // A task's own child is being forked: the task runs, then close() ends it.
            conflux::process_pool pool({.minimum = 0, .maximum = 2}, child_args);
            auto [r, closed] = co_await conflux::when_all(
                pool.run(square, 3), [](conflux::process_pool& p) -> conflux::task<int> {
                    co_await p.close();
                    co_return 1;
                }(pool));
            CHECK(r == 9);
            CHECK(closed == 1);
            CHECK(pool.stats().threads == 0);
            CHECK(children_now() == 0);
        }
        {
            // Children ending by their idle timeout while close() runs.
            conflux::process_pool pool({.minimum = 0, .maximum = 3, .idle_timeout = 1ms},
                                       child_args);
            std::vector<conflux::task<int>> tasks;
            for (int i = 0; i < 3; ++i) tasks.push_back(pool.run(slow, 20));
            auto done = co_await conflux::when_all(std::move(tasks));
            CHECK(done.size() == 3);
            co_await pool.close();
            CHECK(pool.stats().threads == 0);
            CHECK(children_now() == 0);
        }
    }());
}

TEST_CASE("destroying a growing, shrinking process pool leaves no child behind") {
    conflux_test::watchdog dog(10s);
    conflux_test::no_leaks probe;
    conflux::run([&]() -> conflux::task<> {
        // Destroyed while its minimum is being forked.
        { conflux::process_pool pool({.minimum = 2, .maximum = 2}, child_args); }
        // Destroyed with tasks running and queued, children starting and idle timers armed.
        auto pool = std::make_unique<conflux::process_pool>(
            conflux::worker_pool_options{.minimum = 1, .maximum = 4, .idle_timeout = 5ms},
            child_args);
        int failed = 0;
        int succeeded = 0;
        auto one = [&](int ms) -> conflux::task<void> {
            try {
                co_await pool->run(slow, ms);
                ++succeeded;
            } catch (const conflux::pool_error&) {
                ++failed;
            }
        };
        auto destroyer = [&]() -> conflux::task<void> {
            CHECK(co_await eventually([&] { return pool->stats().queued >= 4; }));
            pool.reset();
        };
        std::vector<conflux::task<void>> work;
        for (int i = 0; i < 4; ++i) work.push_back(one(1));
        for (int i = 0; i < 8; ++i) work.push_back(one(5'000));
        work.push_back(destroyer());
        co_await conflux::when_all(std::move(work));
        CHECK(failed >= 8);
        CHECK(failed + succeeded == 12);
        // The dropped children are killed and reaped by the loop.
        CHECK(co_await eventually([] { return children_now() == 0; }));
    }());
}

TEST_CASE("a process pool created off any loop binds to the loop it first runs on") {
    conflux_test::watchdog dog(10s);
    auto pool = std::make_unique<conflux::process_pool>(
        conflux::worker_pool_options{.minimum = 2, .maximum = 2, .idle_timeout = 50ms}, child_args);
    CHECK(pool->stats().threads == 0); // nothing started without a loop
    conflux::run([&]() -> conflux::task<> {
        int r = co_await pool->run(square, 5);
        CHECK(r == 25);
        CHECK(co_await eventually([&] { return pool->stats().threads == 2; }));
        co_await pool->close();
        CHECK(children_now() == 0);
    }());
    // Closed: refused on any loop, with a clear error.
    std::string message;
    conflux::run([&]() -> conflux::task<> {
        try {
            co_await pool->run(square, 1);
        } catch (const std::exception& e) {
            message = e.what();
        }
    }());
    CHECK(message == "conflux::process_pool \"conflux-pool\": run() after close()");
    pool.reset(); // after its loop is gone: nothing left to end
    CHECK(conflux_test::zombie_children().empty());
}

TEST_CASE("an idle_timeout of zero or milliseconds::max() never ends a child") {
    conflux_test::watchdog dog(10s);
    conflux_test::no_leaks probe;
    conflux::run([&]() -> conflux::task<> {
        for (auto timeout : {std::chrono::milliseconds(0), std::chrono::milliseconds::max()}) {
            conflux::process_pool pool({.minimum = 0, .maximum = 2, .idle_timeout = timeout},
                                       child_args);
            auto [a, b] = co_await conflux::when_all(pool.run(slow, 50), pool.run(slow, 50));
            CHECK(a + b == 100);
            co_await conflux::sleep_for(100ms);
            CHECK(pool.stats().threads == 2);
            CHECK(children_now() == 2);
            co_await pool.close();
        }
    }());
}
