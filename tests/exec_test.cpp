// exec and exec_file: capture, limits, deadlines and cancellation (spawn is in process_test).
#include <conflux/exec.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/when_all.hpp>
#include <conflux/when_any.hpp>

#include <doctest/doctest.h>

#if defined(_WIN32)
// Windows: the Linux cases below use /bin/sh, the POSIX helper and process groups; these
// cover the same failure paths with helpers/windows/child.cpp and Job objects.

#include "support/test_support.hpp"

#include <chrono>
#include <filesystem>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>

#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

using namespace std::chrono_literals;
using conflux::exec_options;
using conflux::task;

namespace {

std::string child() {
    wchar_t self[MAX_PATH];
    const DWORD n = ::GetModuleFileNameW(nullptr, self, MAX_PATH);
    return (std::filesystem::path(std::wstring(self, n)).parent_path() / "conflux_win_child.exe")
        .string();
}

template <class F>
auto run(F f) {
    return conflux::run(f());
}

using clock_type = std::chrono::steady_clock;

bool gone_within(unsigned long pid, std::chrono::milliseconds limit) {
    HANDLE h = ::OpenProcess(SYNCHRONIZE, FALSE, pid);
    if (h == nullptr) return true;
    const DWORD r = ::WaitForSingleObject(h, static_cast<DWORD>(limit.count()));
    ::CloseHandle(h);
    return r == WAIT_OBJECT_0;
}

void end_process(unsigned long pid) {
    HANDLE h = ::OpenProcess(PROCESS_TERMINATE, FALSE, pid);
    if (h == nullptr) return;
    ::TerminateProcess(h, 1);
    ::CloseHandle(h);
}

unsigned long grandchild_pid(const std::string& out) {
    const std::string tag = "grandchild ";
    if (out.compare(0, tag.size(), tag) != 0) return 0;
    return std::stoul(out.substr(tag.size()));
}

} // namespace

TEST_CASE("Windows: a failing exit throws process_error carrying the result") {
    conflux_test::watchdog dog(10s);
    run([]() -> task<> {
        try {
            co_await conflux::exec_file(child(), {"stderr", "it broke"});
            FAIL("no throw");
        } catch (const conflux::process_error& e) {
            CHECK(e.status().code() == 1);
            CHECK(e.result().err == "it broke\n");
            CHECK(std::string(e.what()).find("it broke") != std::string::npos);
        }
    });
}

TEST_CASE("Windows: input goes to stdin, then end of file") {
    conflux_test::watchdog dog(10s);
    run([]() -> task<> {
        exec_options o{.input = std::string(300 * 1024, 'i')};
        auto r = co_await conflux::exec_file(child(), {"cat"}, o);
        CHECK(r.out == o.input);
        exec_options none;
        CHECK((co_await conflux::exec_file(child(), {"cat"}, none)).out.empty());
    });
}

TEST_CASE("Windows: max_buffer: N fits, N+1 kills the child and keeps the first N bytes") {
    conflux_test::watchdog dog(10s);
    run([]() -> task<> {
        exec_options fits{.max_buffer = 1000};
        CHECK((co_await conflux::exec_file(child(), {"spew", "1000"}, fits)).out.size() == 1000);
        try {
            exec_options over{.max_buffer = 1000};
            co_await conflux::exec_file(child(), {"spew", "100000000"}, over);
            FAIL("no throw");
        } catch (const conflux::process_error& e) {
            CHECK(e.buffer_overflow());
            CHECK(e.result().out == std::string(1000, 'x'));
        }
    });
}

TEST_CASE("Windows: a timeout bounds exec when a grandchild holds the pipes, with and without "
          "kill_tree") {
    conflux_test::watchdog dog(30s);
    for (bool tree : {false, true}) {
        CAPTURE(tree);
        const auto start = clock_type::now();
        std::string out;
        run([&]() -> task<> {
            try {
                // Long enough for the child to start its grandchild and say so on a loaded
                // machine (a process starts slowly under Wine), far below the 20 s they sleep.
                exec_options o{.timeout = 3s, .kill_tree = tree};
                co_await conflux::exec_file(child(), {"grandchild", "20000", "20000"}, o);
                FAIL("no throw");
            } catch (const conflux::process_error& e) {
                CHECK(e.timed_out());
                CHECK(e.status().signal() == SIGTERM);
                out = e.result().out;
            }
        });
        CHECK(clock_type::now() - start < 15s);
        const unsigned long grandchild = grandchild_pid(out);
        REQUIRE(grandchild != 0);
        if (tree) {
            CHECK(gone_within(grandchild, 5s));
        } else {
            // Not in the tree that was ended: still there (the test ends it).
            CHECK(!gone_within(grandchild, 0ms));
            end_process(grandchild);
        }
    }
}

TEST_CASE("Windows: cancellation ends exec while the child runs and after its exit") {
    conflux_test::watchdog dog(20s);
    run([]() -> task<> {
        std::stop_source stop;
        exec_options o{.stop_token = stop.get_token()};
        auto cancel = [&]() -> task<> {
            co_await conflux::sleep_for(200ms);
            stop.request_stop();
        };
        const auto start = clock_type::now();
        bool cancelled = false;
        auto call = [&]() -> task<> {
            try {
                co_await conflux::exec_file(child(), {"sleep", "20000"}, o);
            } catch (const conflux::operation_cancelled&) {
                cancelled = true;
            }
        };
        co_await conflux::when_all(call(), cancel());
        CHECK(cancelled);
        CHECK(clock_type::now() - start < 10s);

        // After the child's exit, a grandchild holding the pipes: the call still ends.
        std::stop_source stop2;
        exec_options o2{.kill_tree = true, .stop_token = stop2.get_token()};
        auto cancel2 = [&]() -> task<> {
            co_await conflux::sleep_for(300ms);
            stop2.request_stop();
        };
        bool cancelled2 = false;
        auto call2 = [&]() -> task<> {
            try {
                co_await conflux::exec_file(child(), {"grandchild", "20000", "0"}, o2);
            } catch (const conflux::operation_cancelled&) {
                cancelled2 = true;
            }
        };
        co_await conflux::when_all(call2(), cancel2());
        CHECK(cancelled2);
    });
}

TEST_CASE("Windows: wait_delay: pipes held after the exit end the call with output_incomplete") {
    conflux_test::watchdog dog(20s);
    std::string out;
    run([&]() -> task<> {
        try {
            exec_options o{.kill_tree = true, .wait_delay = 300ms};
            co_await conflux::exec_file(child(), {"grandchild", "20000", "0"}, o);
            FAIL("no throw");
        } catch (const conflux::process_error& e) {
            CHECK(e.output_incomplete());
            CHECK(e.status().code() == 0);
            out = e.result().out;
        }
    });
    const unsigned long grandchild = grandchild_pid(out);
    REQUIRE(grandchild != 0);
    CHECK(gone_within(grandchild, 5s)); // kill_tree: ended with the call
}

TEST_CASE("Windows: conflux::run returning with detached tasks mid-exec and mid-read leaves no "
          "child") {
    conflux_test::watchdog dog(20s);
    unsigned long leader = 0;
    unsigned long grandchild = 0;
    run([&]() -> task<> {
        // An exec in progress, and a spawned tree with a read in flight on its stdout: both
        // are still pending when run() returns and the loop goes away.
        auto calling = [&]() -> task<> {
            exec_options o{.kill_tree = true};
            co_await conflux::exec_file(child(), {"sleep", "20000"}, o);
        };
        conflux::detach(calling());
        conflux::spawn_options so{.kill_tree = true};
        auto c = conflux::spawn(child(), {"grandchild", "20000", "20000"}, so);
        leader = c.pid();
        auto line = co_await c.out().read_line();
        REQUIRE(line);
        grandchild = grandchild_pid(*line);
        auto reading = [](conflux::child_process held) -> task<> {
            co_await held.out().read_all();
        };
        conflux::detach(reading(std::move(c)));
        co_await conflux::sleep_for(300ms);
    });
    REQUIRE(grandchild != 0);
    CHECK(gone_within(leader, 5s));
    CHECK(gone_within(grandchild, 5s));
}

#else
#include "support/scratch.hpp"
#include "support/test_support.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

#include <signal.h>
#include <unistd.h>

using namespace std::chrono_literals;
using conflux::exec_options;
using conflux::task;

using conflux_test::alive;
using conflux_test::background_sleeper;
using conflux_test::gone_within;
using conflux_test::no_leaks;
using conflux_test::temp_dir;

namespace {

std::string child() { return (conflux_test::helper_dir() / "conflux_child").string(); }

template <class F>
auto run(F f) {
    return conflux::run(f());
}

pid_t first_pid(const std::string& out) { return static_cast<pid_t>(std::stol(out)); }

using clock_type = std::chrono::steady_clock;

// With kill_tree the grandchild went with the group; without, nothing could reach it (it is
// not in a group of its own) and the test ends it.
void expect_group_ended(pid_t sleeper, bool tree) {
    REQUIRE(sleeper > 0);
    if (tree) {
        CHECK(gone_within(sleeper, 2s));
    } else {
        CHECK(alive(sleeper));
        ::kill(sleeper, SIGKILL);
    }
}

} // namespace

TEST_CASE("a failing exit throws process_error carrying the result") {
    conflux_test::watchdog dog(5s);
    no_leaks probe;
    run([]() -> task<> {
        try {
            co_await conflux::exec("echo out; echo oops >&2; exit 3");
            FAIL("no throw");
        } catch (const conflux::process_error& e) {
            CHECK(e.status().code() == 3);
            CHECK(e.result().out == "out\n");
            CHECK(e.result().err == "oops\n");
            CHECK(std::string(e.what()).find("exited with code 3") != std::string::npos);
            CHECK(std::string(e.what()).find("oops") != std::string::npos);
        }
    });
}

TEST_CASE("exec reads stdout and stderr concurrently: 10 MiB on both never deadlocks") {
    conflux_test::watchdog dog(20s);
    no_leaks probe;
    const std::size_t n = 10 * 1024 * 1024;
    auto r = run([&]() -> task<conflux::exec_result> {
        exec_options opts6{.max_buffer = 0};
        co_return co_await conflux::exec_file(child(), {"both", std::to_string(n)}, opts6);
    });
    CHECK(r.out.size() == n);
    CHECK(r.err.size() == n);
}

// The helper's `out` pattern, byte for byte.
bool is_pattern(const std::string& s) {
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] != static_cast<char>('a' + (i * 7 + i / 4096) % 26)) return false;
    }
    return true;
}

TEST_CASE("large captures are byte-exact across the string's growth, with and without a limit") {
    conflux_test::watchdog dog(30s);
    no_leaks probe;
    run([]() -> task<> {
        // Sizes at and around the points where the capture grows (1 MiB, then fourfold).
        const std::size_t mib = 1024 * 1024;
        const std::array<std::size_t, 11> sizes{
            0,       64 * 1024 - 1,   64 * 1024 + 1, mib - 1,      mib,     mib + 1,
            4 * mib, 4 * mib + 65539, 16 * mib,      16 * mib + 1, 24 * mib};
        for (std::size_t n : sizes) {
            exec_options unlimited{.max_buffer = 0};
            auto r = co_await conflux::exec_file(child(), {"out", std::to_string(n)}, unlimited);
            CHECK(r.out.size() == n);
            CHECK(is_pattern(r.out));
        }
        // A limit above 1 MiB: N fits exactly, N+1 overflows with the first N bytes kept.
        const std::size_t limit = 3 * mib + 5;
        exec_options fits{.max_buffer = limit};
        auto ok = co_await conflux::exec_file(child(), {"out", std::to_string(limit)}, fits);
        CHECK(ok.out.size() == limit);
        CHECK(is_pattern(ok.out));
        exec_options over{.kill_signal = SIGKILL, .max_buffer = limit};
        bool overflowed = false;
        try {
            co_await conflux::exec_file(child(), {"out", std::to_string(limit + 1)}, over);
        } catch (const conflux::process_error& e) {
            overflowed = e.buffer_overflow();
            CHECK(e.result().out.size() == limit);
            CHECK(is_pattern(e.result().out));
        }
        CHECK(overflowed);
    });
}

TEST_CASE("max_buffer holds exactly at a limit past the fourfold growth, on stdout and stderr") {
    conflux_test::watchdog dog(30s);
    no_leaks probe;
    run([]() -> task<> {
        // 17 MiB + 1: the capture grows 4 -> 16 MiB and is then capped at limit + 1.
        const std::size_t limit = 17 * 1024 * 1024 + 1;
        for (const char* which : {"out", "err"}) {
            exec_options fits{.max_buffer = limit};
            auto ok = co_await conflux::exec_file(child(), {which, std::to_string(limit)}, fits);
            const std::string& kept = std::string(which) == "out" ? ok.out : ok.err;
            CHECK(kept.size() == limit);
            CHECK(is_pattern(kept));
            exec_options over{.kill_signal = SIGKILL, .max_buffer = limit};
            bool overflowed = false;
            try {
                co_await conflux::exec_file(child(), {which, std::to_string(limit + 1)}, over);
            } catch (const conflux::process_error& e) {
                overflowed = e.buffer_overflow();
                const std::string& got =
                    std::string(which) == "out" ? e.result().out : e.result().err;
                CHECK(got.size() == limit);
                CHECK(is_pattern(got));
            }
            CHECK(overflowed);
        }
    });
}

TEST_CASE("reserve_output: capacity before the first read, bounded by max_buffer, checked") {
    conflux_test::watchdog dog(30s);
    no_leaks probe;
    run([]() -> task<> {
        const std::size_t mib = 1024 * 1024;
        // Reserved for all of it, and reserved short of it: byte-exact either way.
        for (std::size_t n : {std::size_t(0), 6 * mib, 6 * mib + 1}) {
            exec_options o{.max_buffer = 0, .reserve_output = 6 * mib};
            auto r = co_await conflux::exec_file(child(), {"out", std::to_string(n)}, o);
            CHECK(r.out.size() == n);
            CHECK(r.out.capacity() >= 6 * mib);
            CHECK(is_pattern(r.out));
        }
        // Never more than max_buffer plus the byte that tells an overflow: the limit still holds.
        exec_options bounded{
            .kill_signal = SIGKILL, .max_buffer = 1000, .reserve_output = 64 * mib};
        bool overflowed = false;
        try {
            co_await conflux::exec_file(child(), {"out", "5000"}, bounded);
        } catch (const conflux::process_error& e) {
            overflowed = e.buffer_overflow();
            CHECK(e.result().out.size() == 1000);
            CHECK(e.result().out.capacity() < 64 * mib);
        }
        CHECK(overflowed);
        // A size no string can hold is refused before anything starts.
        exec_options absurd{.max_buffer = 0, .reserve_output = ~std::size_t(0)};
        bool refused = false;
        try {
            co_await conflux::exec_file(child(), {"out", "1"}, absurd);
        } catch (const std::invalid_argument& e) {
            refused = std::string(e.what()).find("reserve_output") != std::string::npos;
        }
        CHECK(refused);
    });
}

TEST_CASE("input_view: the caller's bytes go to stdin uncopied, byte-exact, empty or large") {
    conflux_test::watchdog dog(30s);
    no_leaks probe;
    run([]() -> task<> {
        const std::size_t mib = 1024 * 1024;
        std::string data(9 * mib + 4099, '\0');
        for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 29 % 251);
        // Empty, below the size that widens the input's pipe, at it and well past it.
        for (std::size_t n : {std::size_t(0), std::size_t(70000), mib, data.size()}) {
            const std::string_view view(data.data(), n);
            exec_options o{.input_view = view, .max_buffer = 0};
            auto r = co_await conflux::exec_file(child(), {"cat"}, o);
            CHECK(r.out.size() == n);
            CHECK(r.out == view);
        }
        // A view of bytes that are not text: NULs pass through like anything else.
        const std::string zeros(3 * mib, '\0');
        exec_options z{.input_view = zeros, .max_buffer = 0};
        CHECK((co_await conflux::exec_file(child(), {"cat"}, z)).out == zeros);
    });
}

TEST_CASE("input_view: both input and input_view are refused before anything starts") {
    conflux_test::watchdog dog(5s);
    no_leaks probe;
    run([]() -> task<> {
        const std::string bytes = "abc";
        exec_options both{.input = "x", .input_view = bytes};
        bool refused = false;
        try {
            co_await conflux::exec_file(child(), {"cat"}, both);
        } catch (const std::invalid_argument& e) {
            refused = std::string(e.what()).find("input_view") != std::string::npos;
        }
        CHECK(refused);
        // Either alone is fine.
        exec_options one{.input_view = bytes};
        CHECK((co_await conflux::exec_file(child(), {"cat"}, one)).out == "abc");
    });
}

TEST_CASE("input_view: a child that does not read it, a timeout and max_buffer mid-transfer") {
    conflux_test::watchdog dog(30s);
    no_leaks probe;
    run([]() -> task<> {
        const std::string big(16 * 1024 * 1024, 'v');
        // Exits without reading: EPIPE on the (widened) pipe is not an error.
        exec_options unread{.input_view = big};
        auto r = co_await conflux::exec_file(child(), {"exit", "0"}, unread);
        CHECK(r.status.success());
        // Never reads: the write waits on a full pipe until the deadline ends the call.
        const auto start = clock_type::now();
        exec_options stalled{.timeout = 300ms, .kill_signal = SIGKILL, .input_view = big};
        bool timed_out = false;
        try {
            co_await conflux::exec_file(child(), {"sleep", "10000"}, stalled);
        } catch (const conflux::process_error& e) {
            timed_out = e.timed_out();
        }
        CHECK(timed_out);
        CHECK(clock_type::now() - start < 2s);
        // Echoes more than max_buffer with more reserved than the limit: the child is killed
        // while the input is still being written, and exactly the limit is kept.
        const std::size_t limit = 2 * 1024 * 1024 + 7;
        exec_options over{.kill_signal = SIGKILL,
                          .input_view = big,
                          .max_buffer = limit,
                          .reserve_output = 8 * 1024 * 1024};
        bool overflowed = false;
        try {
            co_await conflux::exec_file(child(), {"cat"}, over);
        } catch (const conflux::process_error& e) {
            overflowed = e.buffer_overflow();
            CHECK(e.result().out == std::string_view(big).substr(0, limit));
            CHECK(e.status().signal() == SIGKILL);
        }
        CHECK(overflowed);
    });
}

TEST_CASE("large stdout and stderr at once, separate and merged with all") {
    conflux_test::watchdog dog(30s);
    no_leaks probe;
    run([]() -> task<> {
        const std::size_t n = 20 * 1024 * 1024 + 3;
        exec_options both{.max_buffer = 0};
        auto r = co_await conflux::exec_file(child(), {"both", std::to_string(n)}, both);
        CHECK(r.out.size() == n);
        CHECK(r.err.size() == n);
        CHECK(r.out.find_first_not_of('x') == std::string::npos);
        CHECK(r.all.empty());
        exec_options merged{.max_buffer = 0, .all = true};
        auto m = co_await conflux::exec_file(child(), {"both", std::to_string(n)}, merged);
        CHECK(m.out.size() == n);
        CHECK(m.err.size() == n);
        CHECK(m.all.size() == 2 * n);
    });
}

TEST_CASE("all: stdout and stderr together in arrival order, beside the separate ones") {
    no_leaks probe;
    run([]() -> task<> {
        exec_options o;
        o.all = true;
        auto r = co_await conflux::exec("echo o1; sleep 0.1; echo e1 >&2; sleep 0.1; echo o2", o);
        CHECK(r.out == "o1\no2\n");
        CHECK(r.err == "e1\n");
        CHECK(r.all == "o1\ne1\no2\n");
        // Without it nothing is copied.
        auto plain = co_await conflux::exec("echo o1; echo e1 >&2");
        CHECK(plain.all.empty());
        // max_buffer bounds each stream as before; `all` holds what was kept.
        exec_options small;
        small.all = true;
        small.max_buffer = 1000;
        bool overflowed = false;
        try {
            auto big = co_await conflux::exec_file(child(), {"out", "100000"}, small);
        } catch (const conflux::process_error& e) {
            overflowed = e.buffer_overflow();
            CHECK(e.result().out.size() == 1000);
            CHECK(e.result().all.size() == 1000);
        }
        CHECK(overflowed);
    });
}

TEST_CASE("max_buffer: N fits, N+1 kills the child and keeps the first N bytes") {
    conflux_test::watchdog dog(20s);
    no_leaks probe;
    run([]() -> task<> {
        const std::size_t n = 100000;
        exec_options opts7{.max_buffer = n};
        auto ok = co_await conflux::exec_file(child(), {"out", std::to_string(n)}, opts7);
        CHECK(ok.out.size() == n);
        exec_options opts8{.max_buffer = n};
        auto zero = co_await conflux::exec_file(child(), {"out", "0"}, opts8);
        CHECK(zero.out.empty());
        for (const char* which : {"out", "err"}) {
            try {
                exec_options opts9{.kill_signal = SIGKILL, .max_buffer = n};
                co_await conflux::exec_file(child(), {which, std::to_string(n * 10)}, opts9);
                FAIL("no throw");
            } catch (const conflux::process_error& e) {
                CHECK(e.buffer_overflow());
                const std::string& got =
                    std::string(which) == "out" ? e.result().out : e.result().err;
                CHECK(got.size() == n);
                CHECK(e.status().signal() == SIGKILL);
            }
        }
    });
}

TEST_CASE("a timeout bounds exec when a grandchild holds the pipes, with and without kill_tree") {
    conflux_test::watchdog dog(20s);
    no_leaks probe;
    for (bool tree : {false, true}) {
        CAPTURE(tree);
        pid_t sleeper = 0;
        run([&]() -> task<> {
            const auto start = clock_type::now();
            try {
                exec_options opts{.timeout = 300ms, .kill_tree = tree};
                co_await conflux::exec(background_sleeper, opts);
                FAIL("no throw");
            } catch (const conflux::process_error& e) {
                const auto took = clock_type::now() - start;
                CHECK(e.timed_out());
                CHECK(took >= 300ms);
                CHECK(took < 1300ms);
                // What was captured is kept, and so is the shell's own exit status.
                sleeper = first_pid(e.result().out);
                CHECK(e.status().code() == 0);
            }
        });
        expect_group_ended(sleeper, tree);
    }
}

TEST_CASE("cancellation bounds exec after the child exited: when_any and a stop token") {
    conflux_test::watchdog dog(20s);
    no_leaks probe;
    run([&]() -> task<> {
        // Stopped before the call: nothing is started at all.
        std::stop_source early;
        early.request_stop();
        exec_options stopped{.stop_token = early.get_token()};
        const auto fds_before = conflux_test::open_fds();
        CHECK_THROWS_AS(co_await conflux::exec_file(child(), {"sleep", "10000"}, stopped),
                        conflux::operation_cancelled);
        CHECK(conflux_test::open_fds() == fds_before);
        CHECK(conflux_test::no_children_left());

        // The race: the timer wins, and the exec it cancels ends promptly although the shell
        // has exited and only its grandchild holds the pipes.
        const auto start = clock_type::now();
        exec_options opts{.kill_tree = true};
        auto raced = co_await conflux::when_any(conflux::exec(background_sleeper, opts),
                                                conflux::sleep_for(300ms));
        const auto took = clock_type::now() - start;
        CHECK(raced.index() == 1);
        CHECK(took < 1300ms);

        // An explicit stop token, stopped after the shell's exit.
        std::stop_source stop;
        exec_options stoppable{.kill_tree = true, .stop_token = stop.get_token()};
        auto stopper = [&]() -> task<> {
            co_await conflux::sleep_for(300ms);
            stop.request_stop();
        };
        auto execer = [&]() -> task<> {
            CHECK_THROWS_AS(co_await conflux::exec("sleep 5 & echo $! >&2; exec 2>&-", stoppable),
                            conflux::operation_cancelled);
        };
        const auto again = clock_type::now();
        co_await conflux::when_all(execer(), stopper());
        CHECK(clock_type::now() - again < 1300ms);
    });
}

TEST_CASE("wait_delay: pipes held after the exit end the call with output_incomplete") {
    conflux_test::watchdog dog(20s);
    no_leaks probe;
    for (bool tree : {false, true}) {
        CAPTURE(tree);
        pid_t sleeper = 0;
        run([&]() -> task<> {
            const auto start = clock_type::now();
            try {
                exec_options opts{.kill_tree = tree, .wait_delay = 200ms};
                co_await conflux::exec(background_sleeper, opts);
                FAIL("no throw");
            } catch (const conflux::process_error& e) {
                const auto took = clock_type::now() - start;
                CHECK(e.output_incomplete());
                CHECK(!e.timed_out());
                CHECK(e.reason() == conflux::process_error::cause::output_incomplete);
                CHECK(std::string(e.what()).find("output incomplete") != std::string::npos);
                CHECK(e.status().code() == 0); // the shell's status is kept
                CHECK(took >= 200ms);
                CHECK(took < 1200ms);
                sleeper = first_pid(e.result().out);
            }
        });
        expect_group_ended(sleeper, tree);
    }
    run([]() -> task<> {
        // Descendants that finish within the delay: nothing is lost, no error.
        exec_options opts{.wait_delay = 3s};
        auto r = co_await conflux::exec("(sleep 0.2; echo late) & echo early", opts);
        CHECK(r.out == "early\nlate\n");
        // The default waits for as long as the pipes stay open, like Node and Go.
        auto d = co_await conflux::exec("(sleep 0.2; echo late) & echo early");
        CHECK(d.out == "early\nlate\n");
        // A negative delay is refused before anything starts.
        exec_options negative{.wait_delay = -1ms};
        CHECK_THROWS_AS(co_await conflux::exec("true", negative), std::invalid_argument);
    });
}

TEST_CASE("conflux::run returning with detached tasks mid-exec leaves no child and no leak") {
    conflux_test::watchdog dog(20s);
    no_leaks probe;
    temp_dir dir;
    const std::string running_pids = (dir.path / "running").string();
    const std::string draining_pids = (dir.path / "draining").string();
    run([&]() -> task<> {
        // A tree whose leader still runs, and one whose leader has exited while its grandchild
        // holds the pipes: both calls are in progress when run() returns. Each shell writes
        // its own pid and its background child's to a file.
        auto running = [&]() -> task<> {
            exec_options opts{.kill_tree = true};
            co_await conflux::exec("echo $$ > " + running_pids + "; sleep 60 & echo $! >> " +
                                       running_pids + "; wait",
                                   opts);
        };
        auto draining = [&]() -> task<> {
            exec_options opts{.kill_tree = true};
            co_await conflux::exec(
                "echo $$ > " + draining_pids + "; sleep 60 & echo $! >> " + draining_pids, opts);
        };
        conflux::detach(running());
        conflux::detach(draining());
        // A plain spawn too, whose reaper the frame's destruction starts.
        auto held = []() -> task<> {
            auto c = conflux::spawn(child(), {"sleep", "60000"});
            co_await c.wait();
        };
        conflux::detach(held());
        co_await conflux::sleep_for(300ms);
    });
    for (const auto& file : {running_pids, draining_pids}) {
        std::ifstream in(file);
        pid_t pid = 0;
        int count = 0;
        while (in >> pid) {
            ++count;
            CHECK(gone_within(pid, 2s));
        }
        CHECK(count == 2);
    }
}

#endif
