#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/spawn_thread.hpp>
#include <conflux/stream.hpp>
#include <conflux/thread_pool.hpp>
#include <conflux/when_all.hpp>
#include <conflux/when_any.hpp>

#include <doctest/doctest.h>

#include "support/test_support.hpp"

#include <array>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>

#if defined(_WIN32)
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <atomic>
#else
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

using namespace std::chrono_literals;
using conflux::task;

namespace {

struct pipe_pair {
    conflux::readable_stream reader;
    conflux::writable_stream writer;
};

#if defined(_WIN32)
// Both ends overlapped, as the parent's end of a child's pipe is: a named pipe of 64 KiB,
// unique per call.
pipe_pair make_pipe() {
    static std::atomic<int> counter{0};
    const std::wstring name = L"\\\\.\\pipe\\conflux-stream-test-" +
                              std::to_wstring(::GetCurrentProcessId()) + L"-" +
                              std::to_wstring(counter.fetch_add(1));
    HANDLE read_end = ::CreateNamedPipeW(
        name.c_str(), PIPE_ACCESS_INBOUND | FILE_FLAG_OVERLAPPED | FILE_FLAG_FIRST_PIPE_INSTANCE,
        PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT, 1, 65536, 65536, 0, nullptr);
    REQUIRE(read_end != INVALID_HANDLE_VALUE);
    HANDLE write_end = ::CreateFileW(name.c_str(), GENERIC_WRITE | FILE_READ_ATTRIBUTES, 0, nullptr,
                                     OPEN_EXISTING, FILE_FLAG_OVERLAPPED, nullptr);
    REQUIRE(write_end != INVALID_HANDLE_VALUE);
    auto& loop = *conflux::event_loop::current();
    return {conflux::readable_stream(read_end, loop, "test reader"),
            conflux::writable_stream(write_end, loop, "test writer")};
}
#else
pipe_pair make_pipe() {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    auto& loop = *conflux::event_loop::current();
    return {conflux::readable_stream(p[0], loop, "test reader"),
            conflux::writable_stream(p[1], loop, "test writer")};
}
#endif

} // namespace

TEST_CASE("read_line splits lines, strips CRLF and returns a last line without newline") {
    conflux_test::watchdog dog(5s);
    const auto fds = conflux_test::open_fds();
    conflux::run([]() -> task<> {
        auto p = make_pipe();
        co_await p.writer.write_all("one\ntwo\r\n\nlast");
        p.writer.close();
        CHECK(*co_await p.reader.read_line() == "one");
        CHECK(*co_await p.reader.read_line() == "two");
        CHECK(*co_await p.reader.read_line() == "");
        CHECK(*co_await p.reader.read_line() == "last");
        CHECK(!co_await p.reader.read_line());
    }());
    CHECK(conflux_test::open_fds() == fds);
}

TEST_CASE("a line longer than max_line_length throws line_too_long and loses nothing") {
    conflux_test::watchdog dog(5s);
    conflux::run([]() -> task<> {
        auto p = make_pipe();
        CHECK(p.reader.max_line_length() == 1024 * 1024);
        p.reader.set_max_line_length(8);
        co_await p.writer.write_all("12345678\n123456789\nok\n");
        CHECK(*co_await p.reader.read_line() == "12345678"); // exactly the maximum
        bool too_long = false;
        try {
            auto line = co_await p.reader.read_line();
        } catch (const conflux::line_too_long& e) {
            too_long = std::string(e.what()).find("test reader") != std::string::npos;
        }
        CHECK(too_long);
        CHECK_THROWS_AS(co_await p.reader.read_line(), conflux::line_too_long); // still there
        char buf[10];
        CHECK(co_await p.reader.read_some(std::span<char>(buf)) == 10); // "123456789\n"
        CHECK(*co_await p.reader.read_line() == "ok");

        // No newline at all: it throws once max_line_length bytes are buffered, without
        // waiting for the end of the stream or buffering the rest.
        co_await p.writer.write_all(std::string(100, 'x'));
        bool endless = false;
        try {
            auto line = co_await p.reader.read_line();
        } catch (const conflux::line_too_long&) {
            endless = true;
        }
        CHECK(endless);
        p.writer.close();
        CHECK(co_await p.reader.read_all() == std::string(100, 'x'));
    }());
}

TEST_CASE("buffered_writer queues up to the high-water mark, flushes, and closes with a flush") {
    conflux_test::watchdog dog(5s);
    const auto fds = conflux_test::open_fds();
    conflux::run([]() -> task<> {
        auto p = make_pipe();
        conflux::buffered_writer w(p.writer, 10);
        CHECK(w.write("hello "));   // 6 queued
        CHECK(!w.write("world\n")); // 12: above the mark, stop writing
        CHECK(w.buffered() == 12);
        co_await w.drain();
        CHECK(w.buffered() == 0);
        char buf[32];
        const std::size_t n = co_await p.reader.read_some(std::span<char>(buf));
        CHECK(std::string_view(buf, n) == "hello world\n");
        // More than a pipe holds: the flush waits while the reader catches up.
        const std::string big(300 * 1024, 'b');
        w.write(big);
        auto reader = [&]() -> task<std::string> { co_return co_await p.reader.read_all(); };
        auto closer = [&]() -> task<> { co_await w.close(); };
        auto [got, closed] = co_await conflux::when_all(reader(), closer());
        (void)closed;
        CHECK(got == big);
        CHECK(!p.writer.is_open());
        CHECK_THROWS_AS(w.write("late"), std::logic_error);
    }());
    CHECK(conflux_test::open_fds() == fds);
}

TEST_CASE("buffered_writer to a reader that went away: EPIPE, no SIGPIPE, the bytes stay queued") {
    conflux_test::watchdog dog(5s);
    conflux::run([]() -> task<> {
        auto p = make_pipe();
        p.reader.close();
        conflux::buffered_writer w(p.writer);
        CHECK(w.write("nobody reads this"));
        bool epipe = false;
        try {
            co_await w.flush();
        } catch (const std::system_error& e) {
            epipe = e.code() == std::errc::broken_pipe;
        }
        CHECK(epipe);
        CHECK(w.buffered() == 17);
        bool close_failed = false;
        try {
            co_await w.close();
        } catch (const std::system_error& e) {
            close_failed = e.code() == std::errc::broken_pipe;
        }
        CHECK(close_failed);
        CHECK(!p.writer.is_open()); // closed all the same
    }());
}

TEST_CASE("read_some after read_line returns the buffered bytes first") {
    conflux_test::watchdog dog(5s);
    conflux::run([]() -> task<> {
        auto p = make_pipe();
        co_await p.writer.write_all("head\nrest of it");
        p.writer.close();
        CHECK(*co_await p.reader.read_line() == "head");
        CHECK(co_await p.reader.read_all() == "rest of it");
        char buf[8];
        CHECK(co_await p.reader.read_some(std::span<char>(buf)) == 0);
    }());
}

TEST_CASE("back-pressure: a writer waits while the pipe is full, a reader drains it") {
    conflux_test::watchdog dog(10s);
    conflux::run([]() -> task<> {
        auto p = make_pipe();
        const std::string big(8 * 1024 * 1024, 'z');
        auto writer = [&]() -> task<> {
            co_await p.writer.write_all(big);
            p.writer.close();
        };
        auto reader = [&]() -> task<std::string> { co_return co_await p.reader.read_all(); };
        auto [w, got] = co_await conflux::when_all(writer(), reader());
        CHECK(got == big);
    }());
}

TEST_CASE("read_into with a limit reports overflow and keeps the prefix") {
    conflux_test::watchdog dog(5s);
    conflux::run([]() -> task<> {
        auto p = make_pipe();
        co_await p.writer.write_all("0123456789");
        p.writer.close();
        std::string out;
        bool overflow = false;
        co_await p.reader.read_into(out, 4, &overflow);
        CHECK(out == "0123");
        CHECK(overflow);
    }());
}

TEST_CASE("read_into appends after what the string held, through full and spare capacity") {
    conflux_test::watchdog dog(10s);
    conflux::run([]() -> task<> {
        auto p = make_pipe();
        std::string data(3 * 1024 * 1024 + 17, '\0');
        for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 31 % 251);
        auto writer = [&]() -> task<> {
            co_await p.writer.write_all(data);
            p.writer.close();
        };
        // Full (size == capacity) and with spare room: both end with the same bytes.
        std::string out = "head";
        out.shrink_to_fit();
        auto reader = [&]() -> task<> { co_await p.reader.read_into(out, 0, nullptr); };
        co_await conflux::when_all(writer(), reader());
        CHECK(out.size() == 4 + data.size());
        CHECK(out.compare(0, 4, "head") == 0);
        CHECK(out.compare(4, std::string::npos, data) == 0);
        // At end of stream on a full string: nothing read, nothing grown.
        std::string again = "x";
        again.shrink_to_fit();
        co_await p.reader.read_into(again, 0, nullptr);
        CHECK(again == "x");
    }());
}

TEST_CASE("read_into fills a string reserved ahead in place, and grows one past a huge page") {
    conflux_test::watchdog dog(20s);
    conflux::run([]() -> task<> {
        std::string data(9 * 1024 * 1024 + 4099, '\0');
        for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 13 % 241);
        {
            // Reserved for all of it: the bytes land where the string already is.
            auto p = make_pipe();
            auto writer = [&]() -> task<> {
                co_await p.writer.write_all(data);
                p.writer.close();
            };
            std::string out = "ab";
            out.reserve(2 + data.size());
            const char* const where = out.data();
            const std::size_t capacity = out.capacity();
            auto reader = [&]() -> task<> { co_await p.reader.read_into(out, 0, nullptr); };
            co_await conflux::when_all(writer(), reader());
            CHECK(out.data() == where);
            CHECK(out.capacity() == capacity);
            CHECK(out.size() == 2 + data.size());
            CHECK(out.compare(2, std::string::npos, data) == 0);
        }
        {
            // Grown from empty through 1 MiB, 4 MiB and 16 MiB of capacity, with a limit
            // between two growth steps: exactly the limit is kept.
            auto p = make_pipe();
            auto writer = [&]() -> task<> {
                try {
                    co_await p.writer.write_all(data);
                } catch (const std::system_error&) { // the reader closed after the overflow
                }
                p.writer.close();
            };
            const std::size_t limit = 5 * 1024 * 1024 + 3;
            std::string out;
            bool overflow = false;
            auto reader = [&]() -> task<> {
                co_await p.reader.read_into(out, limit, &overflow);
                p.reader.close();
            };
            co_await conflux::when_all(writer(), reader());
            CHECK(overflow);
            CHECK(out.size() == limit);
            CHECK(out.compare(0, limit, data, 0, limit) == 0);
        }
    }());
}

#if defined(__linux__)
namespace {

// The size the kernel gives a pipe, or -1 for a descriptor that is not one.
int pipe_size(int fd) { return ::fcntl(fd, F_GETPIPE_SZ); }

} // namespace

TEST_CASE("a pipe the user handed in keeps its size through bulk transfers; a socket reads as "
          "before") {
    conflux_test::watchdog dog(20s);
    conflux::run([]() -> task<> {
        std::string data(3 * 1024 * 1024 + 5, '\0');
        for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 17 % 253);
        {
            // Only the pipes the library makes for a child are widened (process_test.cpp):
            // a user's pipe may be shared with other processes, and its size is theirs.
            auto p = make_pipe();
            const int made = pipe_size(p.reader.native_handle());
            auto writer = [&]() -> task<> {
                co_await p.writer.write_all(data);
                p.writer.close();
            };
            std::string out;
            auto reader = [&]() -> task<> { co_await p.reader.read_into(out, 0, nullptr); };
            co_await conflux::when_all(writer(), reader());
            CHECK(out == data);
            CHECK(pipe_size(p.reader.native_handle()) == made);
        }
        {
            // A socket is no pipe: a capture reserved past 1 MiB reads as from a pipe.
            int sv[2];
            REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
            auto& loop = *conflux::event_loop::current();
            conflux::readable_stream r(sv[0], loop, "test socket reader");
            conflux::writable_stream w(sv[1], loop, "test socket writer");
            CHECK(pipe_size(sv[0]) < 0);
            auto writer = [&]() -> task<> {
                co_await w.write_all(data);
                w.close();
            };
            std::string out;
            out.reserve(2 * 1024 * 1024);
            auto reader = [&]() -> task<> { co_await r.read_into(out, 0, nullptr); };
            co_await conflux::when_all(writer(), reader());
            CHECK(out == data);
        }
    }());
}
#endif

#if !defined(_WIN32)
// SIGPIPE and the signal mask are POSIX's; on Windows a reader that went away is EPIPE alone,
// which the buffered_writer case above checks.
TEST_CASE("a reader that went away: EPIPE from the write, no SIGPIPE") {
    conflux_test::watchdog dog(5s);
    const bool dfl = std::signal(SIGPIPE, SIG_DFL) != SIG_ERR;
    REQUIRE(dfl);
    conflux::run([]() -> task<> {
        auto p = make_pipe();
        p.reader.close();
        try {
            co_await p.writer.write_all("x");
            FAIL("no throw");
        } catch (const std::system_error& e) {
            CHECK(e.code() == std::errc::broken_pipe);
            CHECK(std::string(e.what()).find("test writer") != std::string::npos);
        }
    }());
    sigset_t pending;
    sigpending(&pending);
    CHECK(!sigismember(&pending, SIGPIPE));
}

namespace {

bool sigpipe_blocked_here() {
    sigset_t mask;
    ::pthread_sigmask(SIG_BLOCK, nullptr, &mask);
    return sigismember(&mask, SIGPIPE) == 1;
}

bool sigpipe_pending_here() {
    sigset_t pending;
    ::sigpending(&pending);
    return sigismember(&pending, SIGPIPE) == 1;
}

} // namespace

TEST_CASE("SIGPIPE is blocked once per run(), not per write, and the mask is restored after") {
    conflux_test::watchdog dog(5s);
    const bool dfl = std::signal(SIGPIPE, SIG_DFL) != SIG_ERR;
    REQUIRE(dfl);
    REQUIRE(!sigpipe_blocked_here());
    bool blocked_inside = false;
    bool blocked_in_new_thread = true;
    bool blocked_in_pool = true;
    conflux::run([&]() -> task<> {
        auto p = make_pipe();
        // Nothing written yet: the mask is the program's.
        CHECK(!sigpipe_blocked_here());
        co_await p.writer.write_all("first");
        // From the first write on, SIGPIPE stays blocked on the loop's thread: later writes
        // cost the write(2) alone.
        blocked_inside = sigpipe_blocked_here();
        for (int i = 0; i < 100; ++i) co_await p.writer.write_all("x");
        // Threads started from here do not inherit the mask.
        blocked_in_new_thread =
            co_await conflux::spawn_thread([] { return sigpipe_blocked_here(); });
        {
            auto& loop = *conflux::event_loop::current();
            conflux::thread_pool pool(1);
            co_await pool.schedule();
            blocked_in_pool = sigpipe_blocked_here();
            co_await loop.schedule(); // the pool is joined from the loop, not its own thread
        }
        // A broken pipe: EPIPE, and the signal it raised does not stay pending.
        p.reader.close();
        CHECK_THROWS_AS(co_await p.writer.write_all("y"), std::system_error);
        CHECK(!sigpipe_pending_here());
        // A write of the program's own on this thread raises one too; it is taken off before
        // the mask is restored, so it cannot kill the process after the fact.
        int raw[2];
        REQUIRE(::pipe(raw) == 0);
        ::close(raw[0]);
        CHECK(::write(raw[1], "z", 1) < 0);
        ::close(raw[1]);
    }());
    CHECK(blocked_inside);
    CHECK(!blocked_in_new_thread);
    CHECK(!blocked_in_pool);
    CHECK(!sigpipe_blocked_here());
    CHECK(!sigpipe_pending_here());

    // A program that blocks SIGPIPE itself keeps it blocked.
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
    conflux::run([]() -> task<> {
        auto p = make_pipe();
        co_await p.writer.write_all("x");
    }());
    CHECK(sigpipe_blocked_here());
    ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

#endif

TEST_CASE("a pending read is cancelled by its stop token; no data is lost") {
    conflux_test::watchdog dog(5s);
    conflux::run([]() -> task<> {
        auto p = make_pipe();
        std::stop_source stop;
        auto reader = [&]() -> task<> {
            char buf[16];
            CHECK_THROWS_AS(co_await p.reader.read_some(std::span<char>(buf), stop.get_token()),
                            conflux::operation_cancelled);
        };
        auto canceller = [&]() -> task<> {
            co_await conflux::sleep_for(20ms);
            stop.request_stop();
        };
        co_await conflux::when_all(reader(), canceller());
        co_await p.writer.write_all("after");
        p.writer.close();
        CHECK(co_await p.reader.read_all() == "after");
    }());
}

TEST_CASE("misuse: closing during an operation or operating on a closed stream is a logic_error") {
    conflux_test::watchdog dog(5s);
    conflux::run([]() -> task<> {
        auto p = make_pipe();
        auto reader = [&]() -> task<> { co_await p.reader.read_line(); };
        auto closer = [&]() -> task<> {
            co_await conflux::sleep_for(10ms);
            CHECK_THROWS_AS(p.reader.close(), std::logic_error);
            co_await p.writer.write_all("x\n");
        };
        co_await conflux::when_all(reader(), closer());
        p.reader.close();
        p.reader.close(); // idempotent
        CHECK_THROWS_AS(co_await p.reader.read_all(), std::logic_error);
    }());
}

namespace {

conflux::task<int> wins_at_once() { co_return 7; }

} // namespace

TEST_CASE("a read that loses a when_any consumes nothing, in every read and both paths") {
    conflux_test::watchdog dog(10s);
    conflux::run([]() -> task<> {
        auto [reader, writer] = make_pipe();
        co_await writer.write_all("first line\nsecond");
        std::array<std::byte, 64> bytes{};

        // The winner completes before the read starts: the read finds bytes (in the pipe,
        // then in the stream's buffer) and must leave them.
        auto some = co_await conflux::when_any(wins_at_once(), reader.read_some(bytes));
        CHECK(some.index() == 0);
        auto line = co_await conflux::when_any(wins_at_once(), reader.read_line());
        CHECK(line.index() == 0);
        CHECK(co_await reader.read_line() == std::optional<std::string>("first line"));
        auto some_buffered = co_await conflux::when_any(wins_at_once(), reader.read_some(bytes));
        CHECK(some_buffered.index() == 0);

        // A last line without a newline, and read_all cancelled at the end of the stream.
        writer.close();
        auto last = co_await conflux::when_any(wins_at_once(), reader.read_line());
        CHECK(last.index() == 0);
        auto all = co_await conflux::when_any(wins_at_once(), reader.read_all());
        CHECK(all.index() == 0);
        CHECK(co_await reader.read_all() == "second");
        CHECK(co_await reader.read_line() == std::nullopt);
    }());
}

TEST_CASE("read_all cancelled half-way keeps what it had read for the next read") {
    conflux_test::watchdog dog(10s);
    conflux::run([]() -> task<> {
        auto [reader, writer] = make_pipe();
        co_await writer.write_all("kept ");
        auto r = co_await conflux::when_any(reader.read_all(), conflux::sleep_for(20ms));
        CHECK(r.index() == 1);
        co_await writer.write_all("and the rest");
        writer.close();
        CHECK(co_await reader.read_all() == "kept and the rest");
    }());
}

#if !defined(_WIN32)
// The producer writes a duplicated descriptor with write(2) from its thread; on Windows an
// overlapped handle would need an OVERLAPPED per write there (the when_any races of a read
// are covered by the case above).
TEST_CASE("lines raced against a timer from a writer on another thread: every line, in order") {
    conflux_test::watchdog dog(30s);
    static constexpr int lines = 300;
    conflux::run([]() -> task<> {
        auto [reader, writer] = make_pipe();
        const int fd = ::dup(writer.native_handle());
        REQUIRE(fd >= 0);
        writer.close();
        std::thread producer([fd] {
            for (int i = 0; i < lines; ++i) {
                const std::string line = std::to_string(i) + "\n";
                if (::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size())) {
                    std::abort();
                }
                if (i % 7 == 0) std::this_thread::sleep_for(std::chrono::microseconds(300));
            }
            ::close(fd);
        });
        int expected = 0;
        int timeouts = 0;
        for (;;) {
            auto r = co_await conflux::when_any(reader.read_line(), conflux::sleep_for(100us));
            if (r.index() == 1) {
                ++timeouts;
                continue;
            }
            const std::optional<std::string>& line = std::get<0>(r);
            if (!line) break;
            CHECK(*line == std::to_string(expected));
            ++expected;
        }
        producer.join();
        CHECK(expected == lines);
        MESSAGE("races lost to the timer: " << timeouts);
    }());
}

#endif

TEST_CASE("a second write while one waits on a full pipe is a logic_error; the first completes") {
    conflux_test::watchdog dog(10s);
    const auto fds = conflux_test::open_fds();
    conflux::run([]() -> task<> {
        auto p = make_pipe();
        // Larger than the pipe, even once write_all has widened it to 1 MiB.
        const std::string big(4 << 20, 'b');
        std::string refused;
        auto first = [&]() -> task<> {
            co_await p.writer.write_all(big);
            p.writer.close();
        };
        auto second = [&]() -> task<std::string> {
            co_await conflux::sleep_for(20ms); // the first write now waits for room
            try {
                co_await p.writer.write("x");
            } catch (const std::logic_error& e) {
                refused = e.what();
            }
            CHECK_THROWS_AS(co_await p.writer.write_all("x"), std::logic_error);
            CHECK_THROWS_AS(p.writer.close(), std::logic_error);
            co_return co_await p.reader.read_all();
        };
        auto [done, got] = co_await conflux::when_all(first(), second());
        CHECK(refused.find("two writes at once on stream \"test writer\"") != std::string::npos);
        CHECK(got == big);
    }());
    CHECK(conflux_test::open_fds() == fds);
}

TEST_CASE("write_all of a large buffer cancelled half-way: a prefix was written, writes go on") {
    conflux_test::watchdog dog(10s);
    conflux::run([]() -> task<> {
        auto p = make_pipe();
        std::string big(4 << 20, '\0');
        for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 23);
        std::stop_source stop;
        auto writer = [&]() -> task<> {
            CHECK_THROWS_AS(co_await p.writer.write_all(big, stop.get_token()),
                            conflux::operation_cancelled);
            co_await p.writer.write_all("END"); // the write slot was given back
            p.writer.close();
        };
        auto reader = [&]() -> task<std::string> {
            co_await conflux::sleep_for(20ms);
            stop.request_stop();
            co_return co_await p.reader.read_all();
        };
        auto [done, got] = co_await conflux::when_all(writer(), reader());
        REQUIRE(got.size() > 3);
        const std::size_t prefix = got.size() - 3;
        CHECK(got.substr(prefix) == "END");
        CHECK(prefix < big.size());
        CHECK(got.compare(0, prefix, big, 0, prefix) == 0);
    }());
}
