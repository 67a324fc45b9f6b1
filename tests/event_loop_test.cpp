#include <conflux/event_loop.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#if !defined(_WIN32)
#include <conflux/detail/io_watch.hpp>
#endif

#include "support/test_support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdlib>
#include <exception>
#include <functional>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#if defined(_WIN32)
#include <windows.h>
#else
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>
#endif

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

namespace {

#if defined(_WIN32)
double cpu_seconds() {
    FILETIME created, exited, kernel, user;
    ::GetProcessTimes(::GetCurrentProcess(), &created, &exited, &kernel, &user);
    auto seconds = [](const FILETIME& t) {
        return static_cast<double>((static_cast<unsigned long long>(t.dwHighDateTime) << 32) |
                                   t.dwLowDateTime) /
               1e7; // 100 ns units
    };
    return seconds(kernel) + seconds(user);
}
#else
double cpu_seconds() {
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    return static_cast<double>(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) +
           static_cast<double>(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

// io_watch (readiness on a descriptor) is the POSIX backend's; Windows I/O will complete on
// the loop's port instead.
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
#endif

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

#if !defined(_WIN32) // io_watch and pipes: the POSIX backend's readiness wait
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

#endif

TEST_CASE("the loop releases its descriptors and threads") {
    auto threads = conflux_test::thread_baseline();
    auto fds = conflux_test::open_fds();
    for (int i = 0; i < 100; ++i) {
        conflux::run([]() -> conflux::task<> { co_await conflux::sleep_for(0ms); }());
    }
    CHECK(conflux_test::open_fds() == fds);
    CHECK(conflux_test::settled_thread_count(threads) == threads);
}

TEST_CASE("a loop that only runs ready work opens no descriptor") {
    // A short-lived worker's loop never sleeps nor watches an fd: its reactor is never made.
    const auto before = conflux_test::open_fds();
    std::vector<std::string> during;
    {
        conflux::event_loop loop;
        // Enough work queued by work to fill many batches, so the loop's periodic look at
        // I/O between batches is made too.
        int left = 20000;
        struct step {
            conflux::event_loop* loop;
            int* left;
            std::vector<std::string>* during;
            void operator()() const {
                if (--*left > 0) {
                    loop->post(step{loop, left, during});
                } else {
                    *during = conflux_test::open_fds();
                    loop->stop();
                }
            }
        };
        loop.post(step{&loop, &left, &during});
        loop.run();
        CHECK(left == 0);
    }
    CHECK(during == before);
    std::vector<std::string> in_task;
    conflux::run([](std::vector<std::string>& out) -> conflux::task<> {
        co_await conflux::event_loop::current()->schedule();
        out = conflux_test::open_fds();
    }(in_task));
    CHECK(in_task == before);
}

TEST_CASE("a post or stop from another thread wakes a loop asleep for the first time") {
    conflux_test::watchdog dog(5s);
    // A loop that watches no fd sleeps on its word, without opening a descriptor: a post or a
    // stop made once it sleeps must reach it there (the watchdog ends the test otherwise).
    const auto fds = conflux_test::open_fds();
    for (const bool by_stop : {false, true}) {
        CAPTURE(by_stop);
        conflux::event_loop loop;
        std::atomic<bool> idle{false};
        std::atomic<bool> ran{false};
        loop.post([&] { idle = true; });
        std::thread runner([&] { loop.run(); });
        while (!idle) std::this_thread::yield();
        std::this_thread::sleep_for(20ms); // asleep by now
        CHECK(conflux_test::open_fds() == fds);
        const auto start = clock_type::now();
        if (by_stop) {
            loop.stop();
        } else {
            loop.post([&] {
                ran = true;
                loop.stop();
            });
        }
        runner.join();
        CHECK(clock_type::now() - start < 2s);
        CHECK(ran == !by_stop);
    }
}

TEST_CASE("posts and stops racing a fresh loop's first sleep are never lost") {
    conflux_test::watchdog dog(10s);
    const int rounds = std::max(8, static_cast<int>(400 * conflux_test::stress_scale()));
    for (int i = 0; i < rounds; ++i) {
        conflux::event_loop loop;
        std::atomic<bool> ran{false};
        std::thread runner([&] { loop.run(); });
        // Now, soon, or once it is likely asleep: the request meets the loop before, during
        // and after it creates its reactor.
        if (i % 3 == 1) std::this_thread::sleep_for(std::chrono::microseconds(50));
        if (i % 3 == 2) std::this_thread::sleep_for(1ms);
        if (i % 2 == 0) {
            loop.post([&] {
                ran = true;
                loop.stop();
            });
        } else {
            loop.stop();
        }
        runner.join();
        if (i % 2 == 0) REQUIRE(ran);
    }
}

// RLIMIT_NOFILE and epoll_create1's EMFILE are Linux's; on Windows the port's handle has
// no such per-process limit to hit.
#if !defined(_WIN32)
TEST_CASE("a loop that cannot open its reactor fails where it needs it, and recovers") {
    conflux_test::watchdog dog(10s);
    conflux_test::meet_error_types_before_emfile();
    const auto fds = conflux_test::open_fds();
    {
        pipe_pair p;
        conflux::event_loop loop;
        bool ran_ready = false;
        bool slept_on_timer = false;
        std::exception_ptr ready_error;
        std::exception_ptr sleep_error;
        std::exception_ptr watch_error;
        {
            // Fill the descriptor table (this test runs on one thread, nothing else opens
            // any meanwhile).
            rlimit old{};
            REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
            int highest = 0;
            for (const auto& entry : conflux_test::open_fds()) {
                highest = std::max(highest, std::atoi(entry.c_str()));
            }
            rlimit low = old;
            low.rlim_cur = static_cast<rlim_t>(highest + 3);
            REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
            std::vector<int> fillers;
            for (;;) {
                const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
                if (fd < 0) break;
                fillers.push_back(fd);
            }
            // Ready work needs no descriptor.
            loop.post([&] {
                ran_ready = true;
                loop.stop();
            });
            try {
                loop.run();
            } catch (...) {
                ready_error = std::current_exception();
            }
            // Nor does sleeping until a timer, with no fd watched.
            try {
                slept_on_timer = loop.run_until_complete([]() -> conflux::task<bool> {
                    co_await conflux::sleep_for(1ms);
                    co_return true;
                }());
            } catch (...) {
                sleep_error = std::current_exception();
            }
            // Watching an fd does.
            try {
                conflux::detail::io_watch watch(loop, p.read_end);
            } catch (...) {
                watch_error = std::current_exception();
            }
            // Errors are looked at only once descriptors are free again: UBSan's vptr check
            // needs a pipe of its own, and doctest opens files to report.
            for (int fd : fillers) ::close(fd);
            ::setrlimit(RLIMIT_NOFILE, &old);
        }
        CHECK(ran_ready);
        CHECK_FALSE(ready_error);
        CHECK(slept_on_timer);
        CHECK_FALSE(sleep_error);
        REQUIRE(watch_error);
        try {
            std::rethrow_exception(watch_error);
        } catch (const std::system_error& e) {
            CHECK_MESSAGE(e.code().value() == EMFILE, e.what());
            CHECK_MESSAGE(std::string(e.what()).find("epoll_create1") != std::string::npos,
                          e.what());
        }
        // The same loop watches once descriptors are there.
        auto slept = loop.run_until_complete([](int fd) -> conflux::task<bool> {
            conflux::detail::io_watch watch(*conflux::event_loop::current(), fd);
            co_await conflux::sleep_for(1ms);
            co_return true;
        }(p.read_end));
        CHECK(slept);
    }
    CHECK(conflux_test::open_fds() == fds);
}

#endif

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

namespace {

// Suspends the awaiting coroutine and has another thread resume it through the loop after
// `delay`, so that meanwhile the loop sleeps with nothing to run; `while_asleep` runs on that
// thread before the resumption is posted.
struct resumed_from_another_thread {
    explicit resumed_from_another_thread(std::chrono::milliseconds after,
                                         std::function<void()> meanwhile = {})
        : delay(after), while_asleep(std::move(meanwhile)) {}

    std::chrono::milliseconds delay;
    std::function<void()> while_asleep;
    std::thread thread;

    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) {
        conflux::event_loop* loop = conflux::event_loop::current();
        thread = std::thread([this, loop, h] {
            std::this_thread::sleep_for(delay);
            if (while_asleep) while_asleep();
            loop->post([h] { h.resume(); });
        });
    }
    void await_resume() { thread.join(); }
};

} // namespace

TEST_CASE("wake-ups racing the loop's sleep are never lost") {
    // Each post meets the loop on its way to sleep, asleep, or just woken. A lost wake-up
    // leaves the poster waiting for good: the watchdog fails the test.
    conflux_test::watchdog dog(20s);
    const int rounds = std::max(500, static_cast<int>(10000 * conflux_test::stress_scale()));
    enum class mode { word, word_with_timer, reactor };
    for (const mode m : {mode::word, mode::word_with_timer, mode::reactor}) {
        const int mode_index = static_cast<int>(m);
        CAPTURE(mode_index);
#if defined(_WIN32)
        if (m == mode::reactor) continue; // no fd to watch: the port is not slept in yet
#else
        pipe_pair p; // outlives the loop, whose destruction ends the watch on it
#endif
        conflux::event_loop loop;
        std::stop_source keep_waiting;
        if (m == mode::word_with_timer) {
            // A far timer: every sleep has a deadline.
            loop.detach([](std::stop_token token) -> conflux::task<> {
                try {
                    co_await conflux::sleep_for(1h, token);
                } catch (const conflux::operation_cancelled&) {
                }
            }(keep_waiting.get_token()));
        }
#if !defined(_WIN32)
        if (m == mode::reactor) {
            // A watched fd: every sleep is the reactor's.
            loop.detach([](int fd, std::stop_token token) -> conflux::task<> {
                conflux::detail::io_watch watch(*conflux::event_loop::current(), fd);
                try {
                    co_await watch.readable(token);
                } catch (const conflux::operation_cancelled&) {
                }
            }(p.read_end, keep_waiting.get_token()));
        }
#endif
        std::atomic<int> seen{0};
        std::thread runner([&] { loop.run(); });
        for (int i = 1; i <= rounds; ++i) {
            loop.post([&seen] { seen.fetch_add(1, std::memory_order_release); });
            while (seen.load(std::memory_order_acquire) != i) std::this_thread::yield();
            // Now and then long enough for the loop to be asleep for certain.
            if (i % 256 == 0) std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
        keep_waiting.request_stop();
        loop.stop();
        runner.join();
        CHECK(seen == rounds);

        // A stop racing the sleep of a loop that ran before (so none of it is fresh).
        for (int i = 0; i < rounds / 20; ++i) {
            std::thread again([&] { loop.run(); });
            if (i % 3 == 1) std::this_thread::sleep_for(std::chrono::microseconds(50));
            if (i % 3 == 2) std::this_thread::sleep_for(std::chrono::microseconds(500));
            loop.stop();
            again.join();
        }
    }
}

TEST_CASE("a loop asleep with no fd wakes for its timers and opens no descriptor") {
    conflux_test::watchdog dog(10s);
    const auto fds = conflux_test::open_fds();
    std::vector<std::string> while_asleep;
    const auto elapsed = conflux::run([&]() -> conflux::task<clock_type::duration> {
        // Woken from another thread, the loop then sets a timer, which its next sleep (on its
        // word) must end at.
        resumed_from_another_thread hop(20ms, [&] { while_asleep = conflux_test::open_fds(); });
        co_await hop;
        const auto start = clock_type::now();
        co_await conflux::sleep_for(30ms);
        co_return clock_type::now() - start;
    }());
    CHECK(elapsed >= 30ms);
    CHECK(elapsed < 5s);
    CHECK(while_asleep == fds);
    CHECK(conflux_test::open_fds() == fds);
}

#if !defined(_WIN32)
TEST_CASE("a loop asleep on its word sleeps in its reactor once a coroutine watches an fd") {
    conflux_test::watchdog dog(10s);
    pipe_pair p;
    auto body = [&]() -> conflux::task<bool> {
        // Asleep on its word first: woken from another thread.
        resumed_from_another_thread first(20ms);
        co_await first;
        {
            // Now an fd: the next sleeps are in the reactor, which must wake for the pipe (a
            // sleep on the word would not: the watchdog ends the test) and for a post.
            conflux::detail::io_watch watch(*conflux::event_loop::current(), p.read_end);
            std::thread writer([&] {
                std::this_thread::sleep_for(20ms);
                REQUIRE(::write(p.write_end, "x", 1) == 1);
            });
            co_await watch.readable();
            writer.join();
            char c = 0;
            CHECK(::read(p.read_end, &c, 1) == 1);
            resumed_from_another_thread in_reactor(20ms);
            co_await in_reactor;
            const auto start = clock_type::now();
            co_await conflux::sleep_for(20ms);
            CHECK(clock_type::now() - start >= 20ms);
        }
        // The fd is gone: back on the word, woken by a post and by a timer.
        resumed_from_another_thread again(20ms);
        co_await again;
        const auto start = clock_type::now();
        co_await conflux::sleep_for(20ms);
        co_return clock_type::now() - start >= 20ms;
    };
    CHECK(conflux::run(body()));
}
#endif
