#include <conflux/channel.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/when_any.hpp>

#include <doctest/doctest.h>

#include <chrono>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <variant>
#include <vector>

using namespace std::chrono_literals;

namespace {

conflux::task<int> after(int value, std::chrono::milliseconds delay, int* cancelled = nullptr) {
    try {
        co_await conflux::sleep_for(delay);
    } catch (const conflux::operation_cancelled&) {
        if (cancelled) ++*cancelled;
        throw;
    }
    co_return value;
}

} // namespace

TEST_CASE("when_any gives the first to finish and cancels the others") {
    int cancelled = 0;
    auto body = [&]() -> conflux::task<> {
        auto start = std::chrono::steady_clock::now();
        auto r = co_await conflux::when_any(after(1, 1h, &cancelled), after(2, 10ms, &cancelled),
                                            after(3, 1h, &cancelled));
        CHECK(r.index() == 1);
        CHECK(std::get<1>(r) == 2);
        CHECK(std::chrono::steady_clock::now() - start < 30s);
    };
    conflux::run(body());
    CHECK(cancelled == 2);
}

TEST_CASE("when_any rethrows the winner's exception") {
    auto failing = []() -> conflux::task<int> {
        co_await conflux::sleep_for(1ms);
        throw std::runtime_error("winner failed");
    };
    auto body = [&]() -> conflux::task<> { co_await conflux::when_any(failing(), after(2, 1h)); };
    CHECK_THROWS_WITH_AS(conflux::run(body()), "winner failed", std::runtime_error);
}

TEST_CASE("when_any with a task that completes at once still cancels the rest") {
    int cancelled = 0;
    auto body = [&]() -> conflux::task<std::size_t> {
        auto r = co_await conflux::when_any([]() -> conflux::task<> { co_return; }(),
                                            after(2, 1h, &cancelled));
        co_return r.index();
    };
    CHECK(conflux::run(body()) == 0);
    CHECK(cancelled == 1);
}

TEST_CASE("a stop request on the awaiter reaches every task of when_any") {
    int cancelled = 0;
    std::stop_source source;
    auto race = [&]() -> conflux::task<> {
        co_await conflux::when_any(after(1, 1h, &cancelled), after(2, 1h, &cancelled));
    };
    auto body = [&]() -> conflux::task<bool> {
        std::thread canceller([&] {
            std::this_thread::sleep_for(20ms);
            source.request_stop();
        });
        bool threw = false;
        try {
            // when_any inside when_any: the outer one's token is the stop source here.
            co_await conflux::when_any(race(), [&]() -> conflux::task<> {
                co_await conflux::sleep_for(1h, source.get_token());
            }());
        } catch (const conflux::operation_cancelled&) {
            threw = true;
        }
        canceller.join();
        co_return threw;
    };
    CHECK(conflux::run(body()));
    CHECK(cancelled == 2);
}

TEST_CASE("when_any over a vector gives the winner's index") {
    auto body = []() -> conflux::task<> {
        std::vector<conflux::task<int>> tasks;
        tasks.push_back(after(10, 1h));
        tasks.push_back(after(11, 1h));
        tasks.push_back(after(12, 5ms));
        auto [index, value] = co_await conflux::when_any(std::move(tasks));
        CHECK(index == 2);
        CHECK(value == 12);
    };
    conflux::run(body());
    auto empty = []() -> conflux::task<> {
        co_await conflux::when_any(std::vector<conflux::task<int>>{});
    };
    CHECK_THROWS_AS(conflux::run(empty()), std::invalid_argument);
}

TEST_CASE("when_any races a channel receive against a timer, both ways") {
    conflux::channel<int> ch(4);
    auto body = [&]() -> conflux::task<> {
        // Nothing to receive: the timer wins, and the receive takes nothing.
        auto r = co_await conflux::when_any(ch.receive(), conflux::sleep_for(5ms));
        CHECK(r.index() == 1);
        CHECK(ch.try_send(7));
        CHECK(ch.size() == 1);

        // A value waiting: the receive wins at once and the timer is cancelled.
        const auto start = std::chrono::steady_clock::now();
        auto s = co_await conflux::when_any(ch.receive(), conflux::sleep_for(1h));
        REQUIRE(s.index() == 0);
        CHECK(std::get<0>(s) == std::optional<int>(7));
        CHECK(std::chrono::steady_clock::now() - start < 30s);

        // A value sent while the receive waits.
        std::jthread sender([&] {
            std::this_thread::sleep_for(5ms);
            ch.try_send(8);
        });
        auto t = co_await conflux::when_any(conflux::sleep_for(1h), ch.receive());
        REQUIRE(t.index() == 1);
        CHECK(std::get<1>(t) == std::optional<int>(8));
    };
    conflux::run(body());
    CHECK(ch.size() == 0);
}

TEST_CASE("a receive handed a value after another argument won gives it back") {
    // The second argument hands a value to the waiting receive (claiming its wait) and then
    // wins before the receive resumes: the value goes back to the channel, not to the void.
    conflux::channel<int> ch(0);
    auto body = [&]() -> conflux::task<> {
        auto winner = [&]() -> conflux::task<int> {
            CHECK(ch.try_send(42)); // the receive waits: a rendezvous hand-off
            co_return 1;
        };
        auto r = co_await conflux::when_any(ch.receive(), winner());
        CHECK(r.index() == 1);
        CHECK(ch.try_receive() == std::optional<int>(42));
        CHECK(ch.try_receive() == std::nullopt);

        // The same through receive_any, and through a named (lvalue) receive.
        auto rx = ch.receive();
        auto r2 = co_await conflux::when_any(rx, winner());
        CHECK(r2.index() == 1);
        CHECK(ch.try_receive() == std::optional<int>(42));
        auto r3 = co_await conflux::when_any(conflux::receive_any(ch), winner());
        CHECK(r3.index() == 1);
        CHECK(ch.try_receive() == std::optional<int>(42));
        CHECK(ch.try_receive() == std::nullopt);
    };
    conflux::run(body());
}

TEST_CASE("when_any takes named awaitables in place") {
    conflux::channel<std::string> ch(1);
    auto body = [&]() -> conflux::task<> {
        auto rx = ch.receive();
        auto timer = conflux::sleep_for(5ms);
        auto r = co_await conflux::when_any(rx, timer);
        CHECK(r.index() == 1);
        CHECK(timer.done());

        CHECK(ch.try_send("hello"));
        auto rx2 = ch.receive();
        auto slow = conflux::sleep_for(1h);
        auto s = co_await conflux::when_any(rx2, slow);
        REQUIRE(s.index() == 0);
        CHECK(std::get<0>(s) == std::optional<std::string>("hello"));
    };
    conflux::run(body());
}

TEST_CASE("when_any: a send that loses still sent its value, once") {
    conflux::channel<int> ch(1);
    auto body = [&]() -> conflux::task<> {
        CHECK(ch.try_send(1)); // full
        auto r = co_await conflux::when_any(ch.send(2), conflux::sleep_for(5ms));
        CHECK(r.index() == 1);
        CHECK(ch.try_receive() == std::optional<int>(1));
        CHECK(ch.try_receive() == std::nullopt); // the cancelled send sent nothing
    };
    conflux::run(body());
}

TEST_CASE("when_any over a vector of receives: the winner's index, the others lose nothing") {
    conflux::channel<int> first(1);
    conflux::channel<int> second(1);
    conflux::channel<int> third(1);
    auto body = [&]() -> conflux::task<> {
        CHECK(second.try_send(2));
        std::vector<decltype(first.receive())> receives;
        receives.push_back(first.receive());
        receives.push_back(second.receive());
        receives.push_back(third.receive());
        auto [index, value] = co_await conflux::when_any(std::move(receives));
        CHECK(index == 1);
        CHECK(value == std::optional<int>(2));

        // The winner done before the others start: a value already queued stays queued.
        CHECK(first.try_send(1));
        std::vector<decltype(first.receive())> again;
        again.push_back(third.receive());
        again.push_back(first.receive());
        CHECK(third.try_send(3));
        auto [index2, value2] = co_await conflux::when_any(std::move(again));
        CHECK(index2 == 0);
        CHECK(value2 == std::optional<int>(3));
        CHECK(first.try_receive() == std::optional<int>(1));

        std::vector<decltype(first.receive())> none;
        bool refused = false;
        try {
            co_await conflux::when_any(std::move(none));
        } catch (const std::invalid_argument&) {
            refused = true;
        }
        CHECK(refused);
    };
    conflux::run(body());
}
