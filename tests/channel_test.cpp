#include <conflux/buffer.hpp>
#include <conflux/channel.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/thread_pool.hpp>
#include <conflux/when_all.hpp>
#include <conflux/when_any.hpp>

#include <doctest/doctest.h>

#include "support/test_support.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <variant>
#include <vector>

using namespace std::chrono_literals;

namespace {

// Runs `body` on an event loop of its own thread; the returned thread joins on destruction.
template <class F>
std::jthread loop_thread(F body) {
    return std::jthread([body = std::move(body)]() mutable { conflux::run(body()); });
}

std::size_t scaled(std::size_t n) {
    return std::max<std::size_t>(
        1, static_cast<std::size_t>(static_cast<double>(n) * conflux_test::stress_scale()));
}

// Aggregates whose destructors free memory: GCC 12 destroys such a temporary written inside
// co_await twice. Strings past the small-string buffer, so that a double free shows.
struct note {
    int id = 0;
    std::string text;
};

struct owned_note {
    int id = 0;
    std::unique_ptr<std::string> text;
};

const std::string long_text = "a text long enough to live outside the small-string buffer";

} // namespace

TEST_CASE("channel: values come out in order; try_send refuses when full") {
    conflux::channel<int> ch(2);
    CHECK(ch.capacity() == 2);
    CHECK(ch.try_send(1));
    CHECK(ch.try_send(2));
    int three = 3;
    CHECK_FALSE(ch.try_send(std::move(three)));
    CHECK(ch.size() == 2);
    CHECK(ch.try_receive() == 1);
    CHECK(ch.try_receive() == 2);
    CHECK_FALSE(ch.try_receive().has_value());
    CHECK_FALSE(ch.closed());
}

TEST_CASE("channel: try_send leaves the value untouched when it fails") {
    conflux::channel<std::string> ch(0);
    std::string s = "keep me";
    CHECK_FALSE(ch.try_send(std::move(s)));
    CHECK(s == "keep me");
}

TEST_CASE("channel: a rendezvous send waits for its receiver") {
    conflux_test::watchdog dog(10s);
    conflux::channel<int> ch(0);
    std::vector<std::string> log;
    auto sender = [&]() -> conflux::task<> {
        log.push_back("send");
        co_await ch.send(7);
        log.push_back("sent");
    };
    auto receiver = [&]() -> conflux::task<> {
        co_await conflux::sleep_for(5ms);
        log.push_back("receive");
        auto v = co_await ch.receive();
        CHECK(v == 7);
    };
    conflux::run(conflux::when_all(sender(), receiver()));
    REQUIRE(log.size() == 3);
    CHECK(log[0] == "send");
    CHECK(log[1] == "receive");
    CHECK(log[2] == "sent");
}

TEST_CASE("channel: close drains queued values, then ends; senders get channel_closed") {
    conflux_test::watchdog dog(10s);
    conflux::channel<int> ch(4);
    auto body = [&]() -> conflux::task<> {
        co_await ch.send(1);
        co_await ch.send(2);
        ch.close();
        ch.close(); // a no-op
        CHECK(ch.closed());
        CHECK(co_await ch.receive() == 1);
        CHECK(co_await ch.receive() == 2);
        CHECK_FALSE((co_await ch.receive()).has_value());
        CHECK_FALSE((co_await ch.receive()).has_value());
        CHECK_THROWS_AS(co_await ch.send(3), conflux::channel_closed);
        CHECK_THROWS_AS(ch.try_send(3), conflux::channel_closed);
        CHECK_THROWS_AS(ch.blocking_send(3), conflux::channel_closed);
    };
    conflux::run(body());
}

TEST_CASE("channel: close wakes every waiting sender and receiver (R50)") {
    conflux_test::watchdog dog(10s);
    constexpr std::size_t capacity = 3;
    conflux::channel<int> full(capacity);
    conflux::channel<int> empty(capacity);
    std::atomic<int> closed_senders{0};
    std::atomic<int> ended_receivers{0};
    auto fast_producer = [&]() -> conflux::task<> {
        try {
            for (int i = 0;; ++i) {
                co_await full.send(i);
                CHECK(full.size() <= capacity);
            }
        } catch (const conflux::channel_closed&) {
            ++closed_senders;
        }
    };
    auto idle_receiver = [&]() -> conflux::task<> {
        auto v = co_await empty.receive();
        CHECK_FALSE(v.has_value());
        ++ended_receivers;
    };
    auto closer = [&]() -> conflux::task<> {
        co_await conflux::sleep_for(20ms);
        CHECK(full.size() == capacity);
        full.close();
        empty.close();
    };
    conflux::run(conflux::when_all(fast_producer(), fast_producer(), idle_receiver(),
                                   idle_receiver(), closer()));
    CHECK(closed_senders == 2);
    CHECK(ended_receivers == 2);
    // The values queued before the close are still there.
    std::size_t drained = 0;
    while (full.try_receive()) ++drained;
    CHECK(drained == capacity);
}

TEST_CASE("channel: ping-pong between two loops on two threads") {
    conflux_test::watchdog dog(30s);
    const std::size_t rounds = scaled(20000);
    conflux::channel<std::size_t> ping(0);
    conflux::channel<std::size_t> pong(0);
    auto echo = loop_thread([&]() -> conflux::task<> {
        while (auto v = co_await ping.receive()) co_await pong.send(*v + 1);
        pong.close();
    });
    auto body = [&]() -> conflux::task<std::size_t> {
        std::size_t sum = 0;
        for (std::size_t i = 0; i < rounds; ++i) {
            co_await ping.send(i);
            auto v = co_await pong.receive();
            REQUIRE(v.has_value());
            sum += *v - i;
        }
        ping.close();
        CHECK_FALSE((co_await pong.receive()).has_value());
        co_return sum;
    };
    CHECK(conflux::run(body()) == rounds);
}

TEST_CASE("channel: each waiter resumes on its own executor, never inside the other party") {
    conflux_test::watchdog dog(10s);
    conflux::thread_pool pool(1);
    conflux::channel<int> to_loop(0);
    conflux::channel<int> to_pool(0);
    std::atomic<bool> pool_sender_home{false};
    std::atomic<bool> pool_receiver_home{false};
    std::atomic<bool> pool_done{false};
    // On the pool: a sender that waits for the loop's receiver, then a receiver that waits for
    // a plain thread's send. Each must come back on the pool's thread.
    auto on_pool = [&]() -> conflux::task<> {
        co_await pool.schedule();
        co_await to_loop.send(1);
        pool_sender_home = pool.running_in_this_thread();
        auto v = co_await to_pool.receive();
        pool_receiver_home = pool.running_in_this_thread() && v == 2;
        pool_done = true;
    };
    auto body = [&]() -> conflux::task<> {
        const auto loop_thread = conflux_test::thread_id();
        conflux::event_loop* loop = conflux::event_loop::current();
        conflux::detach(on_pool());
        co_await conflux::sleep_for(5ms); // the pool's sender is waiting by now, or soon
        auto v = co_await to_loop.receive();
        CHECK(v == 1);
        CHECK(conflux_test::thread_id() == loop_thread);

        // A loop receiver woken by a plain thread's try_send resumes on the loop, not inline in
        // the sender's call on the sender's thread.
        std::jthread plain([&] {
            while (!to_loop.try_send(3)) std::this_thread::yield();
            while (!to_pool.try_send(2)) std::this_thread::yield();
        });
        auto w = co_await to_loop.receive();
        CHECK(w == 3);
        CHECK(conflux_test::thread_id() == loop_thread);
        CHECK(conflux::event_loop::current() == loop);
        plain.join();
        while (!pool_done) co_await conflux::sleep_for(1ms);
    };
    conflux::run(body());
    CHECK(pool_sender_home);
    CHECK(pool_receiver_home);
}

TEST_CASE("channel: plain threads use the blocking forms") {
    conflux_test::watchdog dog(30s);
    const std::size_t n = scaled(50000);
    conflux::channel<std::size_t> ch(8);
    std::jthread producer([&] {
        for (std::size_t i = 0; i < n; ++i) ch.blocking_send(i);
        ch.close();
    });
    std::size_t expected = 0;
    auto body = [&]() -> conflux::task<> {
        while (auto v = co_await ch.receive()) {
            CHECK(*v == expected);
            ++expected;
        }
    };
    conflux::run(body());
    CHECK(expected == n);

    conflux::channel<int> back(0);
    std::jthread consumer([&] {
        CHECK(back.blocking_receive() == 1);
        CHECK_FALSE(back.blocking_receive().has_value());
    });
    back.blocking_send(1);
    back.close();
}

TEST_CASE("channel: a blocking wait ends with operation_cancelled on its stop token") {
    conflux_test::watchdog dog(10s);
    conflux::channel<int> ch(0);
    std::stop_source stop;
    std::jthread t([&] {
        CHECK_THROWS_AS(ch.blocking_receive(stop.get_token()), conflux::operation_cancelled);
    });
    std::this_thread::sleep_for(10ms);
    stop.request_stop();
    t.join();
    CHECK_FALSE(ch.try_send(1)); // nobody waits any more
}

TEST_CASE("channel: receive and send are cancelled through the stop token") {
    conflux_test::watchdog dog(10s);
    conflux::channel<int> ch(0);
    auto body = [&]() -> conflux::task<> {
        auto r = co_await conflux::when_any(
            [&]() -> conflux::task<int> { co_return (co_await ch.receive()).value_or(-1); }(),
            conflux::sleep_for(10ms));
        CHECK(r.index() == 1);
        auto s = co_await conflux::when_any([&]() -> conflux::task<> { co_await ch.send(5); }(),
                                            conflux::sleep_for(10ms));
        CHECK(s.index() == 1);
        // The cancelled send did not leave its value behind, nor a waiter.
        CHECK_FALSE(ch.try_receive().has_value());
        std::stop_source stopped;
        stopped.request_stop();
        CHECK_THROWS_AS(co_await ch.receive(stopped.get_token()), conflux::operation_cancelled);
    };
    conflux::run(body());
}

TEST_CASE("channel: a cancel racing a send never loses nor duplicates a value") {
    conflux_test::watchdog dog(60s);
    const std::size_t iterations = scaled(100000);
    conflux::channel<std::size_t> values(conflux::channel<std::size_t>::unbounded);
    struct job {
        std::size_t value;
        std::stop_source* stop;
    };
    conflux::channel<job> jobs(1);
    conflux::channel<int> done(1);
    std::jthread racer([&] {
        while (auto j = jobs.blocking_receive()) {
            if (j->value % 2 == 0) {
                values.try_send(std::size_t{j->value});
                j->stop->request_stop();
            } else {
                j->stop->request_stop();
                values.try_send(std::size_t{j->value});
            }
            done.blocking_send(1);
        }
    });
    std::size_t received = 0;
    std::size_t cancelled = 0;
    std::size_t drained = 0;
    auto body = [&]() -> conflux::task<> {
        for (std::size_t i = 0; i < iterations; ++i) {
            std::stop_source stop;
            co_await jobs.send(job{i, &stop});
            try {
                auto v = co_await values.receive(stop.get_token());
                REQUIRE(v == i);
                ++received;
            } catch (const conflux::operation_cancelled&) {
                ++cancelled;
            }
            co_await done.receive();
            // Whatever the wait did not take is still in the channel, exactly once.
            while (auto v = values.try_receive()) {
                REQUIRE(*v == i);
                ++drained;
            }
        }
        jobs.close();
    };
    conflux::run(body());
    CHECK(received + drained == iterations);
    CHECK(values.size() == 0);
    MESSAGE("received " << received << ", cancelled " << cancelled);
}

TEST_CASE("channel: a blocking receive cancelled while the stop runs on another thread ends") {
    // Every cancellable wait ends by destroying a std::stop_callback. When another thread's
    // request_stop() is running that callback at the moment, the destructor waits for it on a
    // semaphore; MinGW-w64's libstdc++ could lose that semaphore's wake-up and hang here
    // (detail/windows/toolchain.hpp). The blocking form makes the race as tight as it gets.
    conflux_test::watchdog dog(30s);
    const int rounds = static_cast<int>(scaled(20000));
    conflux::channel<int> ch(0);
    std::stop_source handed;  // the source of the current round, copied by the stopper
    std::atomic<int> turn{0}; // 1: `handed` is ready; 0: copied; -1: no more rounds
    std::jthread stopper([&] {
        for (;;) {
            const int t = turn.load(std::memory_order_acquire);
            if (t < 0) return;
            if (t == 0) {
                std::this_thread::yield();
                continue;
            }
            std::stop_source mine = handed;
            turn.store(0, std::memory_order_release);
            mine.request_stop();
        }
    });
    int cancelled = 0;
    for (int i = 0; i < rounds; ++i) {
        while (turn.load(std::memory_order_acquire) != 0) std::this_thread::yield();
        std::stop_source stop;
        handed = stop;
        turn.store(1, std::memory_order_release);
        try {
            (void)ch.blocking_receive(stop.get_token());
        } catch (const conflux::operation_cancelled&) {
            ++cancelled;
        }
    }
    while (turn.load(std::memory_order_acquire) != 0) std::this_thread::yield();
    turn.store(-1, std::memory_order_release);
    CHECK(cancelled == rounds);
}

TEST_CASE("channel: send A, send B, close across threads: B before the end (R49)") {
    conflux_test::watchdog dog(60s);
    const std::size_t rounds = scaled(10000);
    for (std::size_t i = 0; i < rounds; ++i) {
        conflux::channel<int> ch(i % 3);
        std::jthread sender([&] {
            ch.blocking_send(1);
            ch.blocking_send(2);
            ch.close();
            CHECK_THROWS_AS(ch.blocking_send(3), conflux::channel_closed);
        });
        REQUIRE(ch.blocking_receive() == 1);
        REQUIRE(ch.blocking_receive() == 2);
        REQUIRE_FALSE(ch.blocking_receive().has_value());
    }
}

TEST_CASE("channel: an endless ping-pong on one loop still lets timers fire (R52)") {
    conflux_test::watchdog dog(10s);
    conflux::channel<int> a(1);
    conflux::channel<int> b(1);
    std::atomic<bool> stop{false};
    auto player = [&](conflux::channel<int>& in, conflux::channel<int>& out) -> conflux::task<> {
        while (!stop) {
            auto v = co_await in.receive();
            if (!v) break;
            co_await out.send(*v + 1);
        }
        out.close();
    };
    auto timer = [&]() -> conflux::task<> {
        const auto start = std::chrono::steady_clock::now();
        co_await conflux::sleep_for(10ms);
        CHECK(std::chrono::steady_clock::now() - start < 2s);
        stop = true;
    };
    auto body = [&]() -> conflux::task<> {
        a.try_send(0);
        co_await conflux::when_all(player(a, b), player(b, a), timer());
    };
    conflux::run(body());
}

TEST_CASE("channel: a buffer moves through with its memory; the sender is detached (R53)") {
    conflux_test::watchdog dog(10s);
    conflux::channel<conflux::buffer> ch(1);
    conflux::buffer b(1 << 20);
    b.bytes()[0] = std::byte{42};
    const std::byte* address = b.data();
    std::jthread receiver([&] {
        auto got = ch.blocking_receive();
        REQUIRE(got.has_value());
        CHECK(got->data() == address);
        CHECK(got->size() == std::size_t{1} << 20);
        CHECK(got->bytes()[0] == std::byte{42});
    });
    auto body = [&]() -> conflux::task<> {
        co_await ch.send(std::move(b));
        CHECK(b.detached());
        CHECK(b.size() == 0);
        CHECK(b.data() == nullptr);
        CHECK_THROWS_AS(co_await ch.send(std::move(b)), conflux::error);
        CHECK_THROWS_AS(ch.try_send(conflux::buffer{}), conflux::error);
    };
    conflux::run(body());
    receiver.join();
    ch.close();
    conflux::buffer late(16);
    CHECK_THROWS_AS(ch.blocking_send(std::move(late)), conflux::channel_closed);
}

TEST_CASE("channel: try_ on a closed channel — try_send throws, try_receive drains then ends") {
    // The try_ forms never wait; otherwise they report what the waiting forms report: a
    // closed channel is channel_closed for a sender, the end (std::nullopt) for a receiver.
    conflux::channel<int> ch(4);
    CHECK(ch.try_send(1));
    ch.close();
    CHECK_THROWS_AS(ch.try_send(2), conflux::channel_closed); // even with room left
    const int lvalue = 3;
    CHECK_THROWS_AS(ch.try_send(lvalue), conflux::channel_closed);
    CHECK(ch.try_receive() == std::optional<int>(1));
    CHECK(ch.try_receive() == std::nullopt);
    CHECK(ch.closed()); // tells the end from "nothing yet"
    CHECK(ch.blocking_receive() == std::nullopt);

    conflux::channel<int> rendezvous(0);
    rendezvous.close();
    CHECK_THROWS_AS(rendezvous.try_send(1), conflux::channel_closed);
    CHECK(rendezvous.try_receive() == std::nullopt);
}

TEST_CASE("channel: a value given back by a stopped receive keeps its place, first in line") {
    conflux_test::watchdog dog(10s);
    conflux::channel<int> ch(4);
    auto body = [&]() -> conflux::task<> {
        auto sender = [&]() -> conflux::task<int> {
            CHECK(ch.try_send(1)); // to the waiting receive
            CHECK(ch.try_send(2)); // queued behind it
            co_return 0;
        };
        auto r = co_await conflux::when_any(ch.receive(), sender());
        CHECK(r.index() == 1);
        CHECK(ch.size() == 2);
        CHECK(co_await ch.receive() == 1);
        CHECK(co_await ch.receive() == 2);

        // On a closed channel the value still comes back, before the end.
        auto closer = [&]() -> conflux::task<int> {
            CHECK(ch.try_send(3));
            ch.close();
            co_return 0;
        };
        auto s = co_await conflux::when_any(ch.receive(), closer());
        CHECK(s.index() == 1);
        CHECK(co_await ch.receive() == 3);
        CHECK(co_await ch.receive() == std::nullopt);
    };
    conflux::run(body());
}

TEST_CASE("channel: a returned value on a rendezvous channel does not release a waiting sender") {
    conflux_test::watchdog dog(10s);
    conflux::channel<int> ch(0);
    auto body = [&]() -> conflux::task<> {
        auto sender = [&]() -> conflux::task<int> {
            CHECK(ch.try_send(1));
            co_return 0;
        };
        auto r = co_await conflux::when_any(ch.receive(), sender());
        CHECK(r.index() == 1);
        CHECK(ch.size() == 1); // the returned value
        bool second_sent = false;
        auto second = [&]() -> conflux::task<> {
            co_await ch.send(2);
            second_sent = true;
        };
        auto taker = [&]() -> conflux::task<> {
            CHECK(co_await ch.receive() == 1);
            CHECK_FALSE(second_sent); // still waiting for a receiver of its own
            CHECK(co_await ch.receive() == 2);
        };
        co_await conflux::when_all(second(), taker());
        CHECK(second_sent);
    };
    conflux::run(body());
}

TEST_CASE("channel: aggregate messages, named or moved in co_await, and temporaries in try_send") {
    conflux_test::watchdog dog(10s);
    conflux::channel<note> notes(conflux::channel<note>::unbounded);
    conflux::channel<owned_note> owned(conflux::channel<owned_note>::unbounded);
    auto body = [&]() -> conflux::task<> {
        note first{1, long_text};
        co_await notes.send(first);
        CHECK(first.text == long_text); // sent a copy
        CHECK(notes.try_send(note{2, long_text}));
        CHECK(notes.try_send({3, long_text}));
        CHECK(notes.try_send({.id = 4, .text = long_text}));
        // A move-only aggregate is sent with std::move, sound on every compiler.
        owned_note o{5, std::make_unique<std::string>(long_text)};
        co_await owned.send(std::move(o));
        // Channel awaiters inside when_all and when_any.
        note sixth{6, long_text};
        auto [sent, got] = co_await conflux::when_all(notes.send(sixth), owned.receive());
        (void)sent;
        REQUIRE(got);
        CHECK(got->id == 5);
        CHECK(*got->text == long_text);
        auto raced = co_await conflux::when_any(notes.receive(), conflux::sleep_for(10s));
        REQUIRE(raced.index() == 0);
        CHECK(std::get<0>(raced)->id == 1);
        for (int id : {2, 3, 4, 6}) {
            auto n = notes.try_receive();
            REQUIRE(n);
            CHECK(n->id == id);
            CHECK(n->text == long_text);
        }
    };
    conflux::run(body());
}
