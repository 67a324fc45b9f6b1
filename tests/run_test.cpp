#include <conflux/run.hpp>
#include <conflux/sleep.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

using namespace std::chrono_literals;

TEST_CASE("run returns the task's value on a fresh loop") {
    auto body = []() -> conflux::task<std::string> {
        CHECK(conflux::event_loop::current() != nullptr);
        co_await conflux::sleep_for(1ms);
        co_return "done";
    };
    CHECK(conflux::event_loop::current() == nullptr);
    CHECK(conflux::run(body()) == "done");
    CHECK(conflux::event_loop::current() == nullptr);
}

TEST_CASE("run rethrows the task's exception") {
    auto body = []() -> conflux::task<int> {
        co_await conflux::sleep_for(1ms);
        throw std::out_of_range("index 7");
    };
    CHECK_THROWS_WITH_AS(conflux::run(body()), "index 7", std::out_of_range);
}

TEST_CASE("run on several threads at once, each with its own loop") {
    int results[4] = {};
    std::thread threads[4];
    for (int i = 0; i < 4; ++i) {
        threads[i] = std::thread([&results, i] {
            results[i] = conflux::run([](int v) -> conflux::task<int> {
                co_await conflux::sleep_for(5ms);
                co_return v * 10;
            }(i));
        });
    }
    for (auto& t : threads) t.join();
    for (int i = 0; i < 4; ++i) CHECK(results[i] == i * 10);
}

TEST_CASE("run inside a running loop's coroutine runs a nested loop on the same thread") {
    auto inner = []() -> conflux::task<int> {
        co_await conflux::sleep_for(1ms);
        co_return 7;
    };
    auto outer = [&]() -> conflux::task<int> {
        auto* mine = conflux::event_loop::current();
        int v = conflux::run(inner());
        CHECK(conflux::event_loop::current() == mine);
        co_return v;
    };
    CHECK(conflux::run(outer()) == 7);
}

TEST_CASE("stopping the loop before the task completes is reported") {
    auto body = []() -> conflux::task<> {
        conflux::event_loop::current()->stop();
        co_await conflux::sleep_for(1h);
    };
    CHECK_THROWS_AS(conflux::run(body()), std::logic_error);
}

TEST_CASE("run_until_complete on a loop that is already running is refused") {
    conflux::event_loop loop;
    bool refused = false;
    int posted_ran = 0;
    loop.post([&] {
        try {
            loop.run_until_complete([]() -> conflux::task<> { co_return; }());
        } catch (const std::logic_error&) {
            refused = true;
        }
        // The loop's own queue is intact.
        loop.post([&] {
            ++posted_ran;
            loop.stop();
        });
    });
    loop.run();
    CHECK(refused);
    CHECK(posted_ran == 1);
}
