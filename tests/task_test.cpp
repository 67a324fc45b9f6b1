#include <conflux/event_loop.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/task.hpp>
#include <conflux/thread_pool.hpp>

#include "support/test_support.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>

using namespace std::chrono_literals;

namespace {

conflux::task<int> value(int v) { co_return v; }

conflux::task<> nothing() { co_return; }

conflux::task<int&> reference_to(int& x) { co_return x; }

conflux::task<int> thrower() {
    throw std::runtime_error("boom");
    co_return 0;
}

// The machine stack's depth at the innermost await: a plain function's frame address (a
// coroutine's locals live in its heap frame, which says nothing about the stack).
[[gnu::noinline]] std::uintptr_t stack_address() {
    auto address = reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
    asm volatile("" : : "r"(address) : "memory");
    return address;
}

conflux::task<std::uintptr_t> stack_probe() { co_return stack_address(); }

struct counts_destruction {
    int* count;
    ~counts_destruction() { ++*count; }
};

conflux::task<> holds(std::shared_ptr<int> token) {
    (void)token;
    co_return;
}

conflux::task<> sleeps_forever(int* destroyed) {
    counts_destruction guard{destroyed};
    co_await conflux::sleep_for(24h);
}

} // namespace

TEST_CASE("a task returns its value, void and references") {
    CHECK(conflux::run(value(42)) == 42);
    conflux::run(nothing());
    int x = 1;
    int& r = conflux::run([](int& target) -> conflux::task<int&> {
        int& got = co_await reference_to(target);
        co_return got;
    }(x));
    CHECK(&r == &x);
}

TEST_CASE("a task's exception reaches its awaiter") {
    auto outer = []() -> conflux::task<std::string> {
        try {
            co_await thrower();
        } catch (const std::runtime_error& e) {
            co_return e.what();
        }
        co_return "not thrown";
    };
    CHECK(conflux::run(outer()) == "boom");
    CHECK_THROWS_WITH_AS(conflux::run(thrower()), "boom", std::runtime_error);
}

TEST_CASE("a million synchronously completing awaits keep the stack flat") {
    auto loop = []() -> conflux::task<bool> {
        std::uintptr_t first = co_await stack_probe();
        long sum = 0;
        for (int i = 0; i < 1'000'000; ++i) sum += co_await value(1);
        std::uintptr_t last = co_await stack_probe();
        co_return (sum == 1'000'000 && first == last);
    };
    CHECK(conflux::run(loop()));
}

TEST_CASE("destroying an unstarted task frees its frame") {
    auto token = std::make_shared<int>(0);
    {
        auto t = holds(token);
        CHECK(token.use_count() == 2);
    }
    CHECK(token.use_count() == 1);
}

TEST_CASE("destroying a suspended task frees its frame exactly once") {
    int destroyed = 0;
    {
        conflux::event_loop loop;
        loop.detach(sleeps_forever(&destroyed));
        loop.post([&] { loop.stop(); });
        loop.run();
        CHECK(destroyed == 0);
    }
    CHECK(destroyed == 1);
}

TEST_CASE("awaiting an empty or finished task is a clear error") {
    auto empty = []() -> conflux::task<> {
        conflux::task<int> t = value(1);
        conflux::task<int> moved = std::move(t);
        CHECK_FALSE(t.valid());
        CHECK(moved.valid());
        co_await t;
    };
    CHECK_THROWS_WITH_AS(conflux::run(empty()),
                         "conflux::task: awaiting an empty (moved-from) task", std::logic_error);

    auto twice = []() -> conflux::task<> {
        conflux::task<int> t = value(1);
        co_await t;
        CHECK(t.done());
        co_await t;
    };
    CHECK_THROWS_AS(conflux::run(twice()), std::logic_error);
}

TEST_CASE("an awaiter resumes on its own executor after the task hopped to a pool") {
    conflux::thread_pool pool(2);
    auto hop = [&]() -> conflux::task<std::thread::id> {
        co_await pool.schedule();
        co_return conflux_test::thread_id();
    };
    auto outer = [&]() -> conflux::task<bool> {
        auto loop_thread = conflux_test::thread_id();
        auto pool_thread = co_await hop();
        bool resumed_home = conflux_test::thread_id() == loop_thread;
        co_return (pool_thread != loop_thread && resumed_home &&
                   conflux::event_loop::current() != nullptr);
    };
    for (int i = 0; i < 200; ++i) REQUIRE(conflux::run(outer()));
}

TEST_CASE("a task inherits its awaiter's stop token") {
    auto inner = []() -> conflux::task<bool> {
        std::stop_token token = co_await conflux::get_stop_token();
        co_return token.stop_possible();
    };
    auto outer = [&]() -> conflux::task<bool> {
        std::stop_token own = co_await conflux::get_stop_token();
        bool inherited = co_await inner();
        co_return own.stop_possible() == inherited;
    };
    CHECK(conflux::run(outer()));
}
