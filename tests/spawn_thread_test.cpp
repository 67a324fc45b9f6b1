#include <conflux/buffer.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/spawn_thread.hpp>
#include <conflux/when_any.hpp>

#include <doctest/doctest.h>

#include "support/test_support.hpp"

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

TEST_CASE("spawn_thread runs f on another thread and resumes on the caller's loop") {
    conflux_test::watchdog dog(10s);
    auto body = []() -> conflux::task<> {
        const auto caller = std::this_thread::get_id();
        conflux::event_loop* loop = conflux::event_loop::current();
        auto [id, sum] = co_await conflux::spawn_thread(
            [](int a, int b) { return std::pair(std::this_thread::get_id(), a + b); }, 20, 22);
        CHECK(id != caller);
        CHECK(sum == 42);
        CHECK(std::this_thread::get_id() == caller);
        CHECK(conflux::event_loop::current() == loop);
        co_await conflux::spawn_thread([] {}); // void
    };
    conflux::run(body());
}

TEST_CASE("spawn_thread rethrows f's exception") {
    conflux_test::watchdog dog(10s);
    auto body = []() -> conflux::task<> {
        co_await conflux::spawn_thread([]() -> int { throw std::runtime_error("thread failed"); });
    };
    CHECK_THROWS_WITH_AS(conflux::run(body()), "thread failed", std::runtime_error);
}

TEST_CASE("spawn_thread gives a coroutine its own event loop") {
    conflux_test::watchdog dog(10s);
    auto body = []() -> conflux::task<> {
        conflux::event_loop* mine = conflux::event_loop::current();
        auto theirs = co_await conflux::spawn_thread([]() -> conflux::task<conflux::event_loop*> {
            co_await conflux::sleep_for(1ms);
            co_return conflux::event_loop::current();
        });
        CHECK(theirs != nullptr);
        CHECK(theirs != mine);
        CHECK_THROWS_WITH_AS(co_await conflux::spawn_thread([]() -> conflux::task<> {
                                 co_await conflux::sleep_for(1ms);
                                 throw std::runtime_error("coroutine failed");
                             }),
                             "coroutine failed", std::runtime_error);
    };
    conflux::run(body());
}

TEST_CASE("spawn_thread moves its arguments: a buffer arrives with its memory") {
    conflux_test::watchdog dog(10s);
    auto body = []() -> conflux::task<> {
        conflux::buffer b(4096);
        const std::byte* address = b.data();
        auto seen = co_await conflux::spawn_thread(
            [](conflux::buffer mine) { return static_cast<const std::byte*>(mine.data()); },
            std::move(b));
        CHECK(seen == address);
        CHECK(b.detached());
    };
    conflux::run(body());
}

TEST_CASE("spawn_thread passes the awaiter's stop token to f") {
    conflux_test::watchdog dog(10s);
    auto body = []() -> conflux::task<> {
        auto r = co_await conflux::when_any(conflux::spawn_thread([](std::stop_token token) {
                                                while (!token.stop_requested())
                                                    std::this_thread::sleep_for(1ms);
                                                return std::string("stopped");
                                            }),
                                            conflux::sleep_for(10ms));
        CHECK(r.index() == 1);
        // A coroutine on the thread's own loop sees the token through its awaits.
        auto s = co_await conflux::when_any(
            conflux::spawn_thread([]() -> conflux::task<> { co_await conflux::sleep_for(1h); }),
            conflux::sleep_for(10ms));
        CHECK(s.index() == 1);
    };
    conflux::run(body());
}

TEST_CASE("spawn_thread joins every thread it starts") {
    conflux_test::watchdog dog(30s);
    const auto baseline = conflux_test::thread_baseline();
    auto body = []() -> conflux::task<int> {
        int total = 0;
        for (int i = 0; i < 200; ++i) total += co_await conflux::spawn_thread([i] { return i; });
        co_return total;
    };
    CHECK(conflux::run(body()) == 199 * 200 / 2);
    CHECK(conflux_test::settled_thread_count(baseline) == baseline);
}

#if !defined(_WIN32) // see conflux_test::slow_thread_exit
TEST_CASE("spawn_thread waits for a thread that is slow to exit after f returned") {
    conflux_test::watchdog dog(10s);
    auto body = []() -> conflux::task<> {
        co_await conflux::spawn_thread([] {
            thread_local conflux_test::slow_thread_exit on_exit;
            ++on_exit.touched;
        });
        CHECK(conflux_test::slow_thread_exit::ended.load(std::memory_order_acquire));
    };
    conflux::run(body());
}
#endif

TEST_CASE("offload runs on the shared pool and resumes on the caller's loop") {
    conflux_test::watchdog dog(10s);
    auto body = []() -> conflux::task<> {
        const auto caller = std::this_thread::get_id();
        auto id = co_await conflux::offload([] { return std::this_thread::get_id(); });
        CHECK(id != caller);
        CHECK(std::this_thread::get_id() == caller);
        CHECK(co_await conflux::offload([](int a) { return a * 2; }, 21) == 42);
        CHECK_THROWS_WITH_AS(
            co_await conflux::offload([]() -> int { throw std::runtime_error("pool failed"); }),
            "pool failed", std::runtime_error);
    };
    conflux::run(body());
}

// The shapes GCC 12 leaves alone, written the natural way inside co_await: run under ASan
// on GCC 12 in CI, a double destruction would show here.
TEST_CASE("callables and arguments GCC 12 accepts inside co_await are destroyed once") {
    conflux_test::watchdog dog(10s);
    auto body = []() -> conflux::task<> {
        std::vector<std::string> words{"alpha", "beta", "gamma"};
        auto count = [words] { return words.size(); };
        CHECK(co_await conflux::spawn_thread(count) == 3);
        CHECK(co_await conflux::offload(count) == 3);
        auto size_of = [](std::vector<std::string> w) { return w.size(); };
        CHECK(co_await conflux::spawn_thread(size_of, words) == 3);
        CHECK(co_await conflux::spawn_thread(size_of, std::move(words)) == 3);
        CHECK(co_await conflux::offload([](std::string s) { return s.size(); },
                                        std::string("temporary")) == 9);
        auto owned = std::make_unique<int>(7);
        CHECK(co_await conflux::spawn_thread([](std::unique_ptr<int> p) { return *p; },
                                             std::move(owned)) == 7);
        const std::string text = "by reference";
        CHECK(co_await conflux::spawn_thread([&text] { return text.size(); }) == 12);
    };
    conflux::run(body());
}
