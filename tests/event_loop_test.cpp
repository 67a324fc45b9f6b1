#include <conflux/event_loop.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/detail/io_watch.hpp>

#include "support/test_support.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

double cpu_seconds() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
           static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

struct pipe_pair {
    int read_end = -1;
    int write_end = -1;
    pipe_pair() {
        int fds[2];
        REQUIRE(::pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0);
        read_end = fds[0];
        write_end = fds[1];
    }
    ~pipe_pair() {
        ::close(read_end);
        ::close(write_end);
    }
};

} // namespace

TEST_CASE("post from many threads runs everything on the loop's thread") {
    conflux::event_loop loop;
    constexpr int threads = 16;
    constexpr int per_thread = 2000;
    std::atomic<int> off_loop{0};
    int ran = 0; // only touched on the loop's thread
    std::vector<std::thread> posters;
    for (int t = 0; t < threads; ++t) {
        posters.emplace_back([&] {
            for (int i = 0; i < per_thread; ++i) {
                loop.post([&] {
                    if (!loop.running_in_this_thread()) ++off_loop;
                    if (++ran == threads * per_thread) loop.stop();
                });
            }
        });
    }
    loop.run();
    for (auto& t : posters) t.join();
    CHECK(ran == threads * per_thread);
    CHECK(off_loop == 0);
}

TEST_CASE("stop() from another thread ends a busy loop promptly") {
    conflux::event_loop loop;
    // An endless stream of ready work: each item posts the next.
    struct spinner {
        conflux::event_loop* loop;
        void operator()() const { loop->post(spinner{loop}); }
    };
    loop.post(spinner{&loop});
    clock_type::time_point stop_called; // written before stop(), read after join()
    std::thread stopper([&] {
        std::this_thread::sleep_for(50ms);
        stop_called = clock_type::now();
        loop.stop();
    });
    loop.run();
    const auto returned = clock_type::now();
    stopper.join();
    const auto took = returned - stop_called;
    INFO("run() returned ", std::chrono::duration<double, std::milli>(took).count(),
         " ms after stop()");
    // Returning before stop() was called would mean run() gave up on ready work by itself.
    CHECK(took >= 0ms);
    // R62 asks for < 100 ms; unloaded it is microseconds (one batch of spinner items). 1 s
    // holds under ASan/TSan on a loaded 2-core CI machine and still catches a loop that
    // never looks at its stop flag while work is ready.
    CHECK(took < 1s);
}

TEST_CASE("a stopped loop keeps posted work for the next run; destruction discards it") {
    auto alive = std::make_shared<int>(0);
    int ran = 0;
    {
        conflux::event_loop loop;
        loop.post([&] { loop.stop(); });
        loop.run();
        loop.post([&ran, keep = alive] { ++ran; });
        CHECK(alive.use_count() == 2);
        loop.post([&] { loop.stop(); });
        loop.run();
        CHECK(ran == 1);
        loop.post([&ran, keep = alive] { ++ran; });
        CHECK(alive.use_count() == 2);
    }
    CHECK(ran == 1);
    CHECK(alive.use_count() == 1);
}

TEST_CASE("schedule() hops onto the loop from another thread, and back by affinity") {
    conflux::event_loop loop;
    std::atomic<bool> on_loop{false};
    std::atomic<bool> back_on_side{false};
    auto body = [&]() -> conflux::task<> {
        co_await loop.schedule();
        on_loop = loop.running_in_this_thread();
        loop.stop();
    };
    std::thread side_thread([&] {
        conflux::event_loop side;
        side.run_until_complete([&]() -> conflux::task<> {
            co_await body();
            back_on_side = side.running_in_this_thread();
        }());
    });
    loop.run();
    side_thread.join();
    CHECK(on_loop);
    CHECK(back_on_side);
}

TEST_CASE("a loop that ran on this thread and now runs on another is woken by this thread") {
    conflux_test::watchdog dog(10s);
    conflux::event_loop loop;
    loop.post([&] { loop.stop(); });
    loop.run(); // first on this thread
    std::atomic<bool> idle{false};
    std::thread::id ran_on;
    std::thread other([&] {
        loop.post([&] { idle = true; });
        loop.run();
    });
    while (!idle) std::this_thread::yield();
    std::this_thread::sleep_for(20ms); // the loop is asleep in epoll by now
    // Taken for the loop's own thread, this post would sit in the local queue unseen and
    // the loop would sleep on (the watchdog ends the test).
    loop.post([&] {
        ran_on = std::this_thread::get_id();
        loop.stop();
    });
    const auto other_id = other.get_id();
    other.join();
    CHECK(ran_on == other_id);
}

TEST_CASE("thread identities are distinct between live threads and stable within one") {
    const auto mine = conflux::detail::thread_identity();
    CHECK(mine != 0);
    CHECK(conflux::detail::thread_identity() == mine);
    std::uintptr_t theirs[2] = {};
    std::thread a([&] { theirs[0] = conflux::detail::thread_identity(); });
    std::thread b([&] {
        theirs[1] = conflux::detail::thread_identity();
        std::this_thread::sleep_for(10ms);
    });
    a.join();
    b.join();
    CHECK(theirs[0] != mine);
    CHECK(theirs[1] != mine);
    CHECK(theirs[0] != 0);
}

TEST_CASE("run() twice at once is refused") {
    conflux::event_loop loop;
    std::atomic<bool> threw{false};
    loop.post([&] {
        std::thread other([&] {
            try {
                loop.run();
            } catch (const std::logic_error&) {
                threw = true;
            }
        });
        other.join();
        loop.stop();
    });
    loop.run();
    CHECK(threw);
}

TEST_CASE("an exception escaping a detached task stops the loop and is rethrown by run()") {
    conflux::event_loop loop;
    loop.detach([]() -> conflux::task<> {
        co_await conflux::sleep_for(1ms);
        throw std::runtime_error("detached failure");
    }());
    CHECK_THROWS_WITH_AS(loop.run(), "detached failure", std::runtime_error);
}

TEST_CASE("conflux::detach needs a loop") {
    CHECK_THROWS_AS(conflux::detach([]() -> conflux::task<> { co_return; }()), std::logic_error);
}

TEST_CASE("an endless ping-pong on one loop still lets timers fire") {
    auto body = []() -> conflux::task<bool> {
        conflux::event_loop& loop = *conflux::event_loop::current();
        std::atomic<bool> done{false};
        auto pinger = [&]() -> conflux::task<> {
            while (!done) co_await loop.schedule();
        };
        loop.detach(pinger());
        loop.detach(pinger());
        auto start = clock_type::now();
        co_await conflux::sleep_for(10ms);
        auto waited = clock_type::now() - start;
        done = true;
        co_await loop.schedule();
        co_return waited < 2s;
    };
    CHECK(conflux::run(body()));
}

TEST_CASE("schedule() on the loop's thread resumes ready coroutines oldest first") {
    std::vector<int> order;
    conflux::run([&]() -> conflux::task<> {
        conflux::event_loop& loop = *conflux::event_loop::current();
        auto yielder = [&](int id) -> conflux::task<> {
            for (int i = 0; i < 3; ++i) {
                order.push_back(id);
                co_await loop.schedule();
            }
        };
        for (int id = 0; id < 3; ++id) loop.detach(yielder(id));
        for (int i = 0; i < 8; ++i) co_await loop.schedule();
    }());
    CHECK(order == std::vector<int>{0, 1, 2, 0, 1, 2, 0, 1, 2});
}

TEST_CASE("coroutines that only yield still let another thread's post in") {
    // schedule() hands the loop's thread straight to the next ready coroutine; the batch
    // budget must still end so that the remote queue is read.
    std::atomic<bool> done{false};
    conflux::event_loop loop;
    std::thread poster([&] {
        std::this_thread::sleep_for(20ms);
        loop.post([&] { done = true; });
    });
    auto spinner = [&]() -> conflux::task<> {
        while (!done) co_await loop.schedule();
    };
    auto start = clock_type::now();
    loop.run_until_complete([&]() -> conflux::task<> {
        loop.detach(spinner());
        co_await spinner();
    }());
    poster.join();
    CHECK(clock_type::now() - start < 5s);
}

TEST_CASE("an idle loop sleeps instead of spinning") {
    auto body = []() -> conflux::task<double> {
        double before = cpu_seconds();
        co_await conflux::sleep_for(300ms);
        co_return cpu_seconds() - before;
    };
    CHECK(conflux::run(body()) < 0.05);
}

TEST_CASE("io_watch wakes a reader when a pipe becomes readable, and can be cancelled") {
    pipe_pair p;
    auto body = [&]() -> conflux::task<bool> {
        conflux::event_loop& loop = *conflux::event_loop::current();
        conflux::detail::io_watch watch(loop, p.read_end);
        char c = 0;
        CHECK(::read(p.read_end, &c, 1) == -1);
        std::thread writer([&] {
            std::this_thread::sleep_for(20ms);
            REQUIRE(::write(p.write_end, "x", 1) == 1);
        });
        co_await watch.readable();
        writer.join();
        CHECK(::read(p.read_end, &c, 1) == 1);
        CHECK(c == 'x');

        std::stop_source source;
        std::thread canceller([&] {
            std::this_thread::sleep_for(20ms);
            source.request_stop();
        });
        bool cancelled = false;
        try {
            co_await watch.readable(source.get_token());
        } catch (const conflux::operation_cancelled&) {
            cancelled = true;
        }
        canceller.join();
        co_return cancelled;
    };
    CHECK(conflux::run(body()));
}

TEST_CASE("the loop releases its descriptors and threads") {
    auto threads = conflux_test::thread_baseline();
    auto fds = conflux_test::open_fds();
    for (int i = 0; i < 100; ++i) {
        conflux::run([]() -> conflux::task<> { co_await conflux::sleep_for(0ms); }());
    }
    CHECK(conflux_test::open_fds() == fds);
    CHECK(conflux_test::thread_count() == threads);
}

TEST_CASE("a stop request racing the loop's destruction touches no freed frame") {
    // A detached task sleeps with a token another thread stops while the loop is destroyed:
    // the cancellation it queues points into a frame the destructor frees (ASan checks).
    for (int i = 0; i < 200; ++i) {
        auto source = std::make_shared<std::stop_source>();
        std::thread stopper;
        {
            conflux::event_loop loop;
            loop.detach([](std::stop_token token) -> conflux::task<> {
                co_await conflux::sleep_for(1h, token);
            }(source->get_token()));
            loop.post([&] { loop.stop(); });
            loop.run();
            stopper = std::thread([source] { source->request_stop(); });
        }
        stopper.join();
    }
}
