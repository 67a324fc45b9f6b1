#include <conflux/channel.hpp>
#include <conflux/receive_any.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/thread_pool.hpp>
#include <conflux/when_any.hpp>

#include <doctest/doctest.h>

#include "support/test_support.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <variant>
#include <vector>

using namespace std::chrono_literals;

namespace {

std::size_t scaled(std::size_t n) {
    return std::max<std::size_t>(
        1, static_cast<std::size_t>(static_cast<double>(n) * conflux_test::stress_scale()));
}

} // namespace

TEST_CASE("receive_any takes exactly one value from whichever channel has one") {
    conflux_test::watchdog dog(10s);
    conflux::channel<int> numbers(4);
    conflux::channel<std::string> words(4);
    auto body = [&]() -> conflux::task<> {
        co_await words.send("hello");
        auto r = co_await conflux::receive_any(numbers, words);
        REQUIRE(r.index() == 1);
        CHECK(std::get<1>(r) == "hello");
        numbers.close();
        auto r2 = co_await conflux::receive_any(numbers, words);
        REQUIRE(r2.index() == 0);
        CHECK_FALSE(std::get<0>(r2).has_value());
        // Waits, then wakes for a value sent from another thread.
        std::jthread later([&] {
            std::this_thread::sleep_for(5ms);
            words.blocking_send("late");
        });
        conflux::channel<int> idle(0);
        auto r3 = co_await conflux::receive_any(idle, words);
        REQUIRE(r3.index() == 1);
        CHECK(std::get<1>(r3) == "late");
        auto r4 = co_await conflux::when_any(
            [&]() -> conflux::task<> { co_await conflux::receive_any(idle); }(),
            conflux::sleep_for(5ms));
        CHECK(r4.index() == 1);
    };
    conflux::run(body());
}

TEST_CASE("receive_any with cancellations loses nothing across threads") {
    conflux_test::watchdog dog(60s);
    const std::size_t per_producer = scaled(20000);
    conflux::channel<std::size_t> a(2);
    conflux::channel<std::size_t> b(0);
    std::atomic<std::size_t> sent_sum{0};
    auto produce = [&](conflux::channel<std::size_t>& ch, std::size_t base) {
        return std::jthread([&ch, base, per_producer, &sent_sum] {
            for (std::size_t i = 0; i < per_producer; ++i) {
                ch.blocking_send(base + i);
                sent_sum += base + i;
            }
            ch.close();
        });
    };
    auto pa = produce(a, 1);
    auto pb = produce(b, 1000000000);
    std::size_t got_sum = 0;
    std::size_t got = 0;
    std::size_t timeouts = 0;
    auto body = [&]() -> conflux::task<> {
        bool a_open = true;
        bool b_open = true;
        std::size_t turn = 0;
        while (a_open || b_open) {
            std::stop_source stop;
            if (++turn % 7 == 0) stop.request_stop(); // some waits are cancelled at once
            try {
                using both = std::variant<std::optional<std::size_t>, std::optional<std::size_t>>;
                both r;
                if (a_open && b_open) {
                    r = co_await conflux::receive_any(stop.get_token(), a, b);
                } else if (a_open) {
                    r = both(std::in_place_index<0>, co_await a.receive());
                } else {
                    r = both(std::in_place_index<1>, co_await b.receive());
                }
                auto& v = r.index() == 0 ? std::get<0>(r) : std::get<1>(r);
                if (!v) {
                    (r.index() == 0 ? a_open : b_open) = false;
                    continue;
                }
                got_sum += *v;
                ++got;
            } catch (const conflux::operation_cancelled&) {
                ++timeouts;
            }
        }
    };
    conflux::run(body());
    pa.join();
    pb.join();
    CHECK(got == 2 * per_producer);
    CHECK(got_sum == sent_sum.load());
    CHECK(timeouts > 0);
}
