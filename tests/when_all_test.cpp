#include <conflux/channel.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/thread_pool.hpp>
#include <conflux/when_all.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <tuple>
#include <variant>
#include <vector>

using namespace std::chrono_literals;

namespace {

conflux::task<int> after(int value, std::chrono::milliseconds delay) {
    co_await conflux::sleep_for(delay);
    co_return value;
}

conflux::task<> fail_after(std::chrono::milliseconds delay, const char* what) {
    co_await conflux::sleep_for(delay);
    throw std::runtime_error(what);
}

} // namespace

TEST_CASE("when_all gives every value, in argument order") {
    auto body = []() -> conflux::task<> {
        auto [a, b, c] = co_await conflux::when_all(after(1, 20ms), after(2, 1ms),
                                                    []() -> conflux::task<> { co_return; }());
        CHECK(a == 1);
        CHECK(b == 2);
        CHECK(std::is_same_v<decltype(c), std::monostate>);
    };
    conflux::run(body());
}

TEST_CASE("when_all runs its tasks concurrently") {
    auto body = []() -> conflux::task<std::chrono::steady_clock::duration> {
        auto start = std::chrono::steady_clock::now();
        co_await conflux::when_all(after(1, 100ms), after(2, 100ms), after(3, 100ms));
        co_return std::chrono::steady_clock::now() - start;
    };
    CHECK(conflux::run(body()) < 290ms);
}

TEST_CASE("when_all rethrows the first exception after all tasks finished") {
    bool slow_finished = false;
    auto slow = [&]() -> conflux::task<> {
        co_await conflux::sleep_for(50ms);
        slow_finished = true;
    };
    auto body = [&]() -> conflux::task<> {
        co_await conflux::when_all(fail_after(20ms, "second"), fail_after(1ms, "first"), slow());
    };
    CHECK_THROWS_WITH_AS(conflux::run(body()), "first", std::runtime_error);
    CHECK(slow_finished);
}

TEST_CASE("when_all over a vector, including an empty one and tasks on a pool") {
    conflux::thread_pool pool(2);
    auto square_on_pool = [&](int x) -> conflux::task<int> {
        co_await pool.schedule();
        co_return (x * x);
    };
    auto body = [&]() -> conflux::task<> {
        std::vector<conflux::task<int>> tasks;
        for (int i = 0; i < 100; ++i) tasks.push_back(square_on_pool(i));
        auto squares = co_await conflux::when_all(std::move(tasks));
        REQUIRE(squares.size() == 100);
        for (int i = 0; i < 100; ++i) CHECK(squares[i] == i * i);
        CHECK(conflux::event_loop::current() != nullptr);

        auto none = co_await conflux::when_all(std::vector<conflux::task<int>>{});
        CHECK(none.empty());
    };
    conflux::run(body());
}

TEST_CASE("when_all over mixed awaitables: receives, sends, timers, tasks") {
    conflux::channel<int> in(4);
    conflux::channel<std::string> out(0);
    auto body = [&]() -> conflux::task<> {
        CHECK(in.try_send(5));
        auto reader = [&]() -> conflux::task<std::string> {
            auto v = co_await out.receive();
            co_return v.value_or("");
        };
        auto [a, b, c, d, e] = co_await conflux::when_all(in.receive(), conflux::sleep_for(2ms),
                                                          after(3, 1ms), out.send("x"), reader());
        CHECK(a == std::optional<int>(5));
        CHECK(std::is_same_v<decltype(b), std::monostate>);
        CHECK(c == 3);
        CHECK(std::is_same_v<decltype(d), std::monostate>);
        CHECK(e == "x");

        // Named awaitables are used in place.
        auto rx = in.receive();
        auto tick = conflux::sleep_for(1ms);
        std::jthread sender([&] {
            std::this_thread::sleep_for(2ms);
            in.try_send(6);
        });
        auto [f, g] = co_await conflux::when_all(rx, tick);
        CHECK(f == std::optional<int>(6));
        (void)g;
        CHECK(tick.done());
    };
    conflux::run(body());
}

TEST_CASE("a receive stopped after a value was handed to it gives the value back") {
    conflux::channel<int> ch(0);
    std::stop_source source;
    auto body = [&]() -> conflux::task<> {
        auto rx = [&]() -> conflux::task<std::optional<int>> {
            co_return co_await ch.receive(source.get_token());
        };
        auto stopper = [&]() -> conflux::task<> {
            // Hands a value to the waiting receive, then stops it before it resumes.
            CHECK(ch.try_send(9));
            source.request_stop();
            co_return;
        };
        bool cancelled = false;
        try {
            co_await conflux::when_all(rx(), stopper());
        } catch (const conflux::operation_cancelled&) {
            cancelled = true;
        }
        CHECK(cancelled);
        CHECK(ch.try_receive() == std::optional<int>(9));
    };
    conflux::run(body());
}

TEST_CASE("when_all over a vector of receives gives every value in order") {
    std::vector<std::unique_ptr<conflux::channel<int>>> channels;
    for (int i = 0; i < 4; ++i) channels.push_back(std::make_unique<conflux::channel<int>>(1));
    auto body = [&]() -> conflux::task<> {
        std::vector<decltype(channels[0]->receive())> receives;
        for (auto& ch : channels) receives.push_back(ch->receive());
        auto send_all = [&]() -> conflux::task<> {
            for (int i = 3; i >= 0; --i) co_await channels[static_cast<std::size_t>(i)]->send(i);
        };
        auto [values, sent] =
            co_await conflux::when_all(conflux::when_all(std::move(receives)), send_all());
        REQUIRE(values.size() == 4);
        for (int i = 0; i < 4; ++i)
            CHECK(values[static_cast<std::size_t>(i)] == std::optional<int>(i));

        // None: an empty vector at once, nothing awaited.
        std::vector<decltype(channels[0]->receive())> none;
        auto empty = co_await conflux::when_all(std::move(none));
        CHECK(empty.empty());
    };
    conflux::run(body());
}
