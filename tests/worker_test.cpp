#include <conflux/buffer.hpp>
#include <conflux/channel.hpp>
#include <conflux/run.hpp>
#include <conflux/shared_buffer.hpp>
#include <conflux/sleep.hpp>
#include <conflux/when_all.hpp>
#include <conflux/worker.hpp>

#include <doctest/doctest.h>

#include "support/test_support.hpp"

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#if defined(_WIN32)
#include <windows.h>
#else
#include <pthread.h>
#include <sys/resource.h>
#endif

using namespace std::chrono_literals;

namespace {

struct weird_failure {
    int code;
};

// R44 lists "an exception whose what() throws", which C++ cannot express: what() is noexcept,
// so a throw inside it is std::terminate wherever it is called. What the case guards against
// is a worker that needs what() to hand an exception over. This one's what() is unusable (a
// null pointer: building a message from it would throw or crash), so it comes back intact only
// if the worker passes the exception object itself.
struct null_what : std::exception {
    explicit null_what(int c) : code(c) {}
    const char* what() const noexcept override { return nullptr; }
    int code;
};

#if defined(_WIN32)
/// The calling thread's reserved stack size and whether its description (name) is `name`.
/// GetThreadDescription is looked up at run time, as conflux looks up SetThreadDescription.
std::pair<std::size_t, bool> stack_and_name(const wchar_t* name) {
    ULONG_PTR low = 0, high = 0;
    ::GetCurrentThreadStackLimits(&low, &high);
    using get_fn = HRESULT(WINAPI*)(HANDLE, PWSTR*);
    HMODULE kernel = ::GetModuleHandleW(L"kernel32.dll");
    FARPROC p = kernel ? ::GetProcAddress(kernel, "GetThreadDescription") : nullptr;
    bool named = false;
    if (auto get = reinterpret_cast<get_fn>(reinterpret_cast<void*>(p))) {
        PWSTR description = nullptr;
        if (SUCCEEDED(get(::GetCurrentThread(), &description)) && description != nullptr) {
            named = std::wstring(description) == name;
            ::LocalFree(description);
        }
    }
    return {static_cast<std::size_t>(high - low), named};
}
#else
std::string thread_names() {
    std::string all;
    for (const auto& entry : std::filesystem::directory_iterator("/proc/self/task")) {
        std::ifstream comm(entry.path() / "comm");
        std::string name;
        std::getline(comm, name);
        all += name + "\n";
    }
    return all;
}
#endif

// An aggregate whose destructor frees memory: GCC 12 destroys such a temporary written
// inside co_await twice; posting one, or starting a worker, outside co_await is sound.
struct note {
    int id = 0;
    std::string text;
};

const std::string long_text = "a text long enough to live outside the small-string buffer";

} // namespace

TEST_CASE("worker: capturing bodies, aggregate data and aggregate temporaries posted") {
    conflux_test::watchdog dog(10s);
    auto body = []() -> conflux::task<> {
        const std::string suffix = long_text;
        conflux::worker<note> w(
            [suffix](auto& parent, note first) -> conflux::task<> {
                parent.post(note{first.id, first.text + suffix});
                while (auto n = co_await parent.receive()) parent.post({n->id, n->text + suffix});
            },
            note{1, long_text});
        CHECK(w.post(note{2, long_text}));
        CHECK(w.post({.id = 3, .text = long_text}));
        for (int id = 1; id <= 3; ++id) {
            auto m = co_await w.receive();
            REQUIRE(m.has_value());
            CHECK(m->id == id);
            CHECK(m->text == long_text + suffix);
        }
        w.port().close();
        co_await w.join();
    };
    conflux::run(body());
}

TEST_CASE("worker: messages both ways, with worker_data") {
    conflux_test::watchdog dog(10s);
    auto body = []() -> conflux::task<> {
        conflux::worker<int, std::string> w(
            [](auto& parent, std::string prefix) -> conflux::task<> {
                while (auto n = co_await parent.receive()) {
                    parent.post(prefix + std::to_string(*n));
                }
            },
            std::string("n="));
        CHECK(w.running());
        for (int i = 0; i < 100; ++i) CHECK(w.post(i));
        for (int i = 0; i < 100; ++i) {
            auto m = co_await w.receive();
            REQUIRE(m.has_value());
            CHECK(*m == "n=" + std::to_string(i));
        }
        w.port().close(); // the body's receive ends, the body returns
        co_await w.join();
        CHECK_FALSE(w.running());
        CHECK_FALSE(w.post(1));
    };
    conflux::run(body());
}

TEST_CASE("worker: everything it posted arrives before the end, buffers and shared buffers stay "
          "valid (R48)") {
    conflux_test::watchdog dog(10s);
    auto body = []() -> conflux::task<> {
        conflux::worker<int, conflux::buffer> w([](auto& parent) -> conflux::task<> {
            for (int i = 0; i < 50; ++i) {
                conflux::buffer b(1024);
                b.bytes()[0] = std::byte(i);
                parent.post(std::move(b));
            }
            co_return;
        });
        int received = 0;
        while (auto b = co_await w.receive()) { // ends (nullopt) once the worker exited
            CHECK(b->bytes()[0] == std::byte(received));
            ++received;
        }
        CHECK(received == 50);
        co_await w.join();

        // Shared memory it made and wrote stays mapped and readable once the worker is gone.
        conflux::worker<int, conflux::shared_buffer> s([](auto& parent) -> conflux::task<> {
            for (int i = 0; i < 10; ++i) {
                conflux::shared_buffer memory(4096);
                memory.view<std::uint32_t>().store(1023, static_cast<std::uint32_t>(i));
                parent.post(memory);
            }
            co_return;
        });
        co_await s.join();
        int shared = 0;
        while (auto m = co_await s.receive()) {
            CHECK(m->view<std::uint32_t>().load(1023) == static_cast<std::uint32_t>(shared));
            CHECK(m->use_count() == 1); // the worker's copies went with it
            ++shared;
        }
        CHECK(shared == 10);
    };
    conflux::run(body());
}

TEST_CASE("worker: join rethrows the body's exception as itself, or as worker_error when it is "
          "not a std::exception (R44)") {
    conflux_test::watchdog dog(10s);
    auto body = []() -> conflux::task<> {
        conflux::worker<int> a([](auto&) -> conflux::task<> {
            co_await conflux::sleep_for(1ms);
            throw std::runtime_error("worker broke");
        });
        CHECK_THROWS_WITH_AS(co_await a.join(), "worker broke", std::runtime_error);

        conflux::worker<int> b([](auto&) -> conflux::task<> {
            throw weird_failure{7};
            co_return;
        });
        CHECK_THROWS_WITH_AS(co_await b.join(), doctest::Contains("unknown exception"),
                             conflux::worker_error);

        conflux::worker<int> c([](auto&) -> conflux::task<> {
            throw null_what{11};
            co_return;
        });
        int code = 0;
        try {
            co_await c.join();
        } catch (const null_what& e) {
            code = e.code; // the very object thrown, with its own type and state
        }
        CHECK(code == 11);

        conflux::worker<int> d([](auto&) -> conflux::task<> {
            throw 42;
            co_return;
        });
        CHECK_THROWS_AS(co_await d.join(), conflux::worker_error);
    };
    conflux::run(body());
}

#if !defined(_WIN32) // see conflux_test::slow_thread_exit
TEST_CASE("worker: join waits for a thread that is slow to exit after its body ended") {
    conflux_test::watchdog dog(10s);
    auto body = []() -> conflux::task<> {
        for (bool drop : {false, true}) {
            conflux_test::slow_thread_exit::ended.store(false);
            {
                conflux::worker<int> w([](auto&) -> conflux::task<> {
                    thread_local conflux_test::slow_thread_exit on_exit;
                    ++on_exit.touched;
                    co_return;
                });
                if (!drop) {
                    co_await w.join();
                    CHECK(conflux_test::slow_thread_exit::ended.load(std::memory_order_acquire));
                }
            }
            CHECK(conflux_test::slow_thread_exit::ended.load(std::memory_order_acquire));
        }
    };
    conflux::run(body());
}
#endif

TEST_CASE("worker: the parent's receive ends when the worker exits") {
    conflux_test::watchdog dog(10s);
    auto body = []() -> conflux::task<> {
        conflux::worker<int> w([](auto&) -> conflux::task<> { co_await conflux::sleep_for(5ms); });
        auto m = co_await w.receive();
        CHECK_FALSE(m.has_value());
        co_await w.join();
    };
    conflux::run(body());
}

TEST_CASE("worker: terminate ends each kind of pending await (R45)") {
    conflux_test::watchdog dog(30s);
    auto body = []() -> conflux::task<> {
        std::atomic<int> cancelled{0};
        std::vector<std::function<conflux::task<>(conflux::message_port<int>&)>> kinds;
        // A port receive.
        kinds.push_back([&](conflux::message_port<int>& p) -> conflux::task<> {
            try {
                co_await p.receive();
            } catch (const conflux::operation_cancelled&) {
                ++cancelled;
                throw;
            }
        });
        // A timer.
        kinds.push_back([&](conflux::message_port<int>&) -> conflux::task<> {
            try {
                co_await conflux::sleep_for(1h);
            } catch (const conflux::operation_cancelled&) {
                ++cancelled;
                throw;
            }
        });
        // A channel receive.
        kinds.push_back([&](conflux::message_port<int>&) -> conflux::task<> {
            conflux::channel<int> never(0);
            try {
                co_await never.receive();
            } catch (const conflux::operation_cancelled&) {
                ++cancelled;
                throw;
            }
        });
        // A nested worker's join: the inner worker is stopped too.
        kinds.push_back([&](conflux::message_port<int>&) -> conflux::task<> {
            conflux::worker<int> inner([&](auto&) -> conflux::task<> {
                try {
                    co_await conflux::sleep_for(1h);
                } catch (const conflux::operation_cancelled&) {
                    ++cancelled;
                    throw;
                }
            });
            co_await inner.join();
        });
        // A port transfer in flight: waiting for a port that never comes.
        kinds.push_back([&](conflux::message_port<int>&) -> conflux::task<> {
            conflux::channel<conflux::message_port<int>> ports(0);
            try {
                co_await ports.receive();
            } catch (const conflux::operation_cancelled&) {
                ++cancelled;
                throw;
            }
        });
        // One each; the nested kind counts its inner worker's cancelled timer.
        const int expected = static_cast<int>(kinds.size());
        for (auto& kind : kinds) {
            // A deadline far past the bound below, so that a slow stop fails the timing check
            // rather than surfacing as terminate()'s worker_error.
            conflux::worker<int> w([kind](auto& p) { return kind(p); },
                                   conflux::worker_options{.terminate_deadline = 10s});
            co_await conflux::sleep_for(5ms);
            const auto start = std::chrono::steady_clock::now();
            co_await w.terminate();
            // R45 asks for < 100 ms, and unloaded it takes well under 1 ms. 1 s is the bound
            // that holds under ASan/TSan on a loaded 2-core CI machine, where the two threads
            // can each wait a scheduler slice or more for a core; it still catches a stop that
            // waits out any timer or hangs on the nested worker.
            const auto took = std::chrono::steady_clock::now() - start;
            INFO("terminate took ", std::chrono::duration<double, std::milli>(took).count(), " ms");
            CHECK(took < 1s);
            CHECK_FALSE(w.running());
            co_await w.join(); // the cancellation that terminate caused is not an error
        }
        CHECK(cancelled == expected);
    };
    conflux::run(body());
}

TEST_CASE("worker: one that ignores terminate is reported after the deadline (R46)") {
    conflux_test::watchdog dog(30s);
    std::atomic<bool> release{false};
    auto body = [&]() -> conflux::task<> {
        conflux::worker<int> w(
            [&](auto&) -> conflux::task<> {
                while (!release) std::this_thread::sleep_for(1ms); // never looks at its token
                co_return;
            },
            conflux::worker_options{.name = "stubborn", .terminate_deadline = 50ms});
        int ticks = 0;
        auto ticker = [&]() -> conflux::task<> {
            for (int i = 0; i < 5; ++i) {
                co_await conflux::sleep_for(5ms);
                ++ticks;
            }
        };
        auto terminator = [&]() -> conflux::task<> {
            const auto start = std::chrono::steady_clock::now();
            CHECK_THROWS_WITH_AS(co_await w.terminate(), doctest::Contains("stubborn"),
                                 conflux::worker_error);
            const auto took = std::chrono::steady_clock::now() - start;
            INFO("reported after ", std::chrono::duration<double, std::milli>(took).count(), " ms");
            // Never before the deadline: the loop's timers fire only once it has passed.
            CHECK(took >= 50ms);
            // Not much after it either; the margin is for ASan/TSan on a loaded 2-core machine.
            CHECK(took < 50ms + 1s);
        };
        co_await conflux::when_all(ticker(), terminator());
        CHECK(ticks == 5); // the parent's loop kept running
        CHECK(w.running());
        release = true;
        co_await w.join();
    };
    conflux::run(body());
}

TEST_CASE("worker: a dropped worker is stopped and joined") {
    conflux_test::watchdog dog(30s);
    const auto baseline = conflux_test::thread_baseline();
    auto body = []() -> conflux::task<> {
        for (int i = 0; i < 20; ++i) {
            conflux::worker<int> w([](auto& p) -> conflux::task<> {
                while (co_await p.receive()) {
                }
            });
            w.post(1);
        }
        co_return;
    };
    conflux::run(body());
    CHECK(conflux_test::settled_thread_count(baseline) == baseline);
}

TEST_CASE("worker: options name the thread and size its stack") {
    conflux_test::watchdog dog(10s);
    auto body = []() -> conflux::task<> {
        conflux::worker<int, std::size_t> w(
            [](auto& p) -> conflux::task<> {
#if defined(_WIN32)
                const auto [size, named] = stack_and_name(L"cfx-test-worker");
                p.post(size);
                p.post(named ? 1 : 0);
#else
                pthread_attr_t attr;
                std::size_t size = 0;
                if (pthread_getattr_np(pthread_self(), &attr) == 0) {
                    pthread_attr_getstacksize(&attr, &size);
                    pthread_attr_destroy(&attr);
                }
                p.post(size);
#endif
                co_await p.receive();
            },
            conflux::worker_options{.name = "cfx-test-worker", .stack_size = 1 << 20});
        auto size = co_await w.receive();
        REQUIRE(size.has_value());
        CHECK(*size >= (std::size_t{1} << 20));
        CHECK(*size < (std::size_t{8} << 20));
#if defined(_WIN32)
        auto named = co_await w.receive();
        CHECK(named == std::optional<std::size_t>(1));
#else
        CHECK(thread_names().find("cfx-test-worker") != std::string::npos);
#endif
        CHECK(w.name() == "cfx-test-worker");
    };
    conflux::run(body());
}

TEST_CASE("message_port: on a closed link post returns false, try_receive drains then ends") {
    conflux::message_channel<int, int> mc;
    CHECK(mc.port1.post(1));
    mc.port2.close();
    CHECK_FALSE(mc.port1.post(2)); // post never throws for a closed link: Node drops it too
    CHECK(mc.port2.try_receive() == std::optional<int>(1));
    CHECK(mc.port2.try_receive() == std::nullopt);
    CHECK(mc.port1.try_receive() == std::nullopt);
    CHECK(mc.port2.inbox().closed());
    conflux::message_port<int> unlinked;
    CHECK_FALSE(unlinked.post(1));
    CHECK(unlinked.try_receive() == std::nullopt);
}

TEST_CASE("message_channel: two workers talk directly through entangled ports") {
    conflux_test::watchdog dog(10s);
    auto body = []() -> conflux::task<> {
        conflux::message_channel<int> mc;
        using port = conflux::message_port<int>;
        conflux::worker<int, int> pinger(
            [](auto& parent, port peer) -> conflux::task<> {
                int total = 0;
                for (int i = 1; i <= 10; ++i) {
                    peer.post(i);
                    auto v = co_await peer.receive();
                    total += v.value_or(0);
                }
                parent.post(total);
            },
            std::move(mc.port1));
        conflux::worker<port, int> echo([](auto& parent) -> conflux::task<> {
            auto peer = co_await parent.receive(); // a port arrives through the parent
            while (auto v = co_await peer->receive()) peer->post(*v * 10);
        });
        CHECK_FALSE(mc.port1.linked());
        echo.post(std::move(mc.port2));
        auto total = co_await pinger.receive();
        CHECK(total == 550);
        co_await pinger.join(); // its port closes: the echo's receive ends
        co_await echo.join();
    };
    conflux::run(body());
}

// RLIMIT_NOFILE is POSIX's; a Windows loop's port is one handle, with no such limit to hit.
#if !defined(_WIN32)
TEST_CASE("256 workers under a limit of 128 descriptors each run or fail clearly") {
    // R47: a worker whose loop cannot get its descriptors reports it through join(); the
    // parent survives, and every thread and descriptor is given back.
    // The exceptions the workers will throw with the table full: see the helper.
    conflux_test::meet_error_types_before_emfile([] {
        conflux::message_channel<int> closed;
        closed.port2.close();
        CHECK_FALSE(closed.port1.post(1)); // channel_closed, caught inside post
    });
    const auto fds = conflux_test::open_fds();
    const auto threads = conflux_test::thread_baseline();
    rlimit old{};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &old) == 0);
    rlimit low = old;
    low.rlim_cur = 128;
    int ran = 0;
    int messages = 0;
    // Looked at once the limit is lifted: UBSan cannot probe memory with a full table.
    std::vector<std::exception_ptr> errors;
    conflux::run([](int& ok, int& posted, std::vector<std::exception_ptr>& failures,
                    const rlimit& limit) -> conflux::task<> {
        // The parent's loop opens its epoll instance and eventfd when it first sleeps: let it
        // do so before the table fills up, so that what is measured is the workers' failures.
        co_await conflux::sleep_for(std::chrono::milliseconds(1));
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &limit) == 0);
        std::vector<conflux::worker<int, int>> workers;
        for (int i = 0; i < 256; ++i) {
            // Each stays alive, holding its loop's descriptors, until the parent lets it go.
            workers.emplace_back([](conflux::message_port<int, int>& parent) -> conflux::task<> {
                parent.post(1);
                co_await parent.receive();
            });
        }
        for (auto& w : workers) w.post(0);
        for (auto& w : workers) {
            try {
                co_await w.join();
                ++ok;
                while (auto m = w.try_receive()) posted += *m;
            } catch (...) {
                failures.push_back(std::current_exception());
            }
        }
    }(ran, messages, errors, low));
    REQUIRE(::setrlimit(RLIMIT_NOFILE, &old) == 0);
    CHECK(ran + static_cast<int>(errors.size()) == 256);
    CHECK(ran > 0);
    CHECK(messages == ran);
    for (const auto& e : errors) {
        try {
            std::rethrow_exception(e);
        } catch (const std::system_error& s) {
            CHECK_MESSAGE(s.code().value() == EMFILE, s.what());
        } catch (const std::exception& other) {
            FAIL("unexpected error: " << other.what());
        }
    }
    MESSAGE(ran << " workers ran, " << errors.size() << " could not start their loop");
    CHECK(conflux_test::settled_thread_count(threads) == threads);
    CHECK(conflux_test::open_fds() == fds);
}
#endif
