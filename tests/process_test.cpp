#include <conflux/process.hpp>
#include <conflux/run.hpp>
#include <conflux/shared_buffer.hpp>
#include <conflux/sleep.hpp>
#include <conflux/when_all.hpp>
#include <conflux/when_any.hpp>

#include <doctest/doctest.h>

#if defined(_WIN32)
// Windows: the Linux cases below start /bin/sh and the POSIX helper (helpers/child.cpp) and
// check descriptors, signals, process groups and /proc; these cases cover the same ground
// with helpers/windows/child.cpp and cmd.exe.

#include "support/test_support.hpp"

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <fcntl.h>

using namespace std::chrono_literals;
using conflux::exec_options;
using conflux::spawn_options;
using conflux::stdio_spec;
using conflux::task;

namespace {

// Beside the test program: CONFLUX_TEST_BINARY_DIR is a path of the build machine, which a
// Windows program run under Wine (or copied to Windows) may not see as such.
std::string child() {
    wchar_t self[MAX_PATH];
    const DWORD n = ::GetModuleFileNameW(nullptr, self, MAX_PATH);
    return (std::filesystem::path(std::wstring(self, n)).parent_path() / "conflux_win_child.exe")
        .string();
}

const spawn_options& named(const spawn_options& o) { return o; }

template <class F>
auto run(F f) {
    return conflux::run(f());
}

// A process ends within `limit`: false if it is still running then.
bool gone_within(unsigned long pid, std::chrono::milliseconds limit) {
    HANDLE h = ::OpenProcess(SYNCHRONIZE, FALSE, pid);
    if (h == nullptr) return true; // already gone
    const DWORD r = ::WaitForSingleObject(h, static_cast<DWORD>(limit.count()));
    ::CloseHandle(h);
    return r == WAIT_OBJECT_0;
}

struct temp_dir {
    std::filesystem::path path;
    temp_dir() {
        path = std::filesystem::temp_directory_path() /
               ("conflux_test_" + std::to_string(::GetCurrentProcessId()) + "_" +
                std::to_string(::GetTickCount64()));
        std::filesystem::create_directories(path);
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
};

} // namespace

TEST_CASE("Windows: exec_file captures stdout and the exit status") {
    conflux_test::watchdog dog(10s);
    auto r = run([]() -> task<conflux::exec_result> {
        co_return co_await conflux::exec_file(child(), {"echo", "hello", "world"});
    });
    CHECK(r.out == "hello\nworld\n");
    CHECK(r.err.empty());
    CHECK(r.status.success());
    CHECK(r.status.code() == 0);
}

TEST_CASE("Windows: arguments arrive verbatim: blanks, quotes, backslashes, empty, UTF-8") {
    conflux_test::watchdog dog(10s);
    const std::vector<std::string> args = {
        "echo", "a b", "\"q\"", "x\\", "", "c:\\d\\", "a\\\"b", "tab\there", "\xc3\xa9t\xc3\xa9"};
    auto r = run([&]() -> task<conflux::exec_result> {
        co_return co_await conflux::exec_file(child(), args);
    });
    std::string expected;
    for (std::size_t i = 1; i < args.size(); ++i) expected += args[i] + "\n";
    CHECK(r.out == expected);
}

TEST_CASE("Windows: exit codes are reported exactly, and wait twice gives the same") {
    conflux_test::watchdog dog(20s);
    run([]() -> task<> {
        for (int code : {0, 1, 2, 42, 255, 1000}) {
            auto c = conflux::spawn(child(), {"exit", std::to_string(code)});
            auto [a, b] = co_await conflux::when_all(c.wait(), c.wait());
            CHECK(a.code() == code);
            CHECK(b == a);
            CHECK(a.success() == (code == 0));
            exec_options opts{.check = false};
            auto r = co_await conflux::exec_file(child(), {"exit", std::to_string(code)}, opts);
            CHECK(r.status.code() == code);
        }
    });
}

TEST_CASE("Windows: stdin is a pipe: what is written comes back, and close is end of file") {
    conflux_test::watchdog dog(10s);
    run([]() -> task<> {
        auto c = conflux::spawn(child(), {"cat"});
        const std::string text(200 * 1024, 'z'); // more than one pipe buffer
        auto feed = [&]() -> task<> {
            co_await c.in().write_all(text);
            c.in().close();
        };
        auto [ignored, got] = co_await conflux::when_all(feed(), c.out().read_all());
        CHECK(got == text);
        CHECK((co_await c.wait()).code() == 0);

        // A child reading stdin sees its end at once when the parent closes it unwritten.
        auto d = conflux::spawn(child(), {"cat"});
        d.in().close();
        CHECK((co_await d.out().read_all()).empty());
        CHECK((co_await d.wait()).code() == 0);
    });
}

TEST_CASE("Windows: a missing program or cwd fails with an error naming it") {
    conflux_test::watchdog dog(10s);
    run([]() -> task<> {
        try {
            auto c = conflux::spawn("conflux_no_such_program_xyz");
            FAIL("spawned a program that does not exist");
        } catch (const std::system_error& e) {
            CHECK(std::string(e.what()).find("conflux_no_such_program_xyz") != std::string::npos);
        }
        try {
            auto c = conflux::spawn("C:\\conflux\\no\\such\\dir\\prog.exe");
            FAIL("spawned a path that does not exist");
        } catch (const std::system_error& e) {
            CHECK(std::string(e.what()).find("prog.exe") != std::string::npos);
        }
        try {
            auto c = conflux::spawn(child(), {"cwd"}, named({.cwd = "C:\\conflux\\no\\such\\dir"}));
            FAIL("spawned into a directory that does not exist");
        } catch (const std::system_error& e) {
            const std::string what = e.what();
            CHECK(what.find("chdir") != std::string::npos);
            CHECK(what.find("no\\such\\dir") != std::string::npos);
        }
        // The current directory is never searched for a bare name.
        temp_dir dir;
        std::filesystem::copy_file(child(), dir.path / "conflux_cwd_only.exe");
        CHECK_THROWS_AS(conflux::spawn("conflux_cwd_only", {}, named({.cwd = dir.path})),
                        std::system_error);
        // What Windows lacks is refused, not ignored.
        CHECK_THROWS_AS(conflux::spawn(child(), {"exit", "0"}, named({.uid = 0})),
                        std::invalid_argument);
        CHECK_THROWS_AS(conflux::spawn(child(), {"exit", "0"},
                                       named({.stdio = {stdio_spec::pipe(), stdio_spec::pipe(),
                                                        stdio_spec::pipe(), stdio_spec::pipe()}})),
                        std::invalid_argument);
        co_return;
    });
}

TEST_CASE("Windows: cwd, env, env_set and env_unset (names without regard to case)") {
    conflux_test::watchdog dog(10s);
    temp_dir dir;
    run([&]() -> task<> {
        exec_options in_dir{.cwd = dir.path};
        auto r = co_await conflux::exec_file(child(), {"cwd"}, in_dir);
        CHECK(std::filesystem::equivalent(r.out.substr(0, r.out.size() - 1), dir.path));

        exec_options set{.env_set = {{"CONFLUX_A", "one two"}}};
        CHECK((co_await conflux::exec_file(child(), {"env", "CONFLUX_A"}, set)).out == "one two\n");
        exec_options unset{.env_set = {{"CONFLUX_A", "1"}}, .env_unset = {"conflux_a"}};
        CHECK((co_await conflux::exec_file(child(), {"env", "CONFLUX_A"}, unset)).out ==
              "<unset>\n");
        exec_options replaced{.env = conflux::env_vars{{"ONLY", "this"}}};
        CHECK((co_await conflux::exec_file(child(), {"env", "ONLY"}, replaced)).out == "this\n");
        CHECK((co_await conflux::exec_file(child(), {"env", "PATH"}, replaced)).out == "<unset>\n");
    });
}

TEST_CASE("Windows: stdio ignore, file, inherit and all") {
    conflux_test::watchdog dog(10s);
    temp_dir dir;
    run([&]() -> task<> {
        auto a = conflux::spawn(
            child(), {"echo", "x"},
            named({.stdio = {stdio_spec::ignore(), stdio_spec::ignore(), stdio_spec::ignore()}}));
        CHECK_THROWS_AS(a.out(), std::logic_error);
        CHECK((co_await a.wait()).code() == 0);

        const auto file = dir.path / "out.txt";
        auto b = conflux::spawn(child(), {"echo", "to a file"},
                                named({.stdio = {stdio_spec::ignore(), stdio_spec::file(file)}}));
        CHECK((co_await b.wait()).code() == 0);
        std::ifstream in(file, std::ios::binary);
        std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        CHECK(content == "to a file\n");

        // open(2) flags: O_APPEND adds to the end; O_CREAT | O_EXCL refuses a file that exists,
        // naming it.
        const int append = O_WRONLY | O_CREAT | O_APPEND;
        for (const char* word : {"one", "two"}) {
            auto d = conflux::spawn(
                child(), {"echo", word},
                named({.stdio = {stdio_spec::ignore(), stdio_spec::file(file, append)}}));
            CHECK((co_await d.wait()).code() == 0);
        }
        std::ifstream appended(file, std::ios::binary);
        std::string all((std::istreambuf_iterator<char>(appended)),
                        std::istreambuf_iterator<char>());
        CHECK(all == "to a file\none\ntwo\n");
        bool named_in_error = false;
        try {
            const int exclusive = O_WRONLY | O_CREAT | O_EXCL;
            auto e = conflux::spawn(
                child(), {"echo", "x"},
                named({.stdio = {stdio_spec::ignore(), stdio_spec::file(file, exclusive)}}));
        } catch (const std::system_error& e) {
            named_in_error = std::string(e.what()).find("out.txt") != std::string::npos;
        }
        CHECK(named_in_error);

        auto c = conflux::spawn(child(), {"stderr", "oops"}, named({.all = true}));
        CHECK((co_await c.all().read_all()) == "oops\n");
        CHECK((co_await c.wait()).code() == 1);
    });
}

TEST_CASE("Windows: kill ends the child and reports the signal asked for; 0 probes") {
    conflux_test::watchdog dog(10s);
    run([]() -> task<> {
        auto a = conflux::spawn(child(), {"sleep", "20000"});
        CHECK(a.kill(0));
        CHECK(a.kill()); // SIGTERM
        auto st = co_await a.wait();
        CHECK(st.signal() == SIGTERM);
        CHECK(!st.code());
        CHECK(!a.kill(0));
        CHECK(!a.kill());

        auto b = conflux::spawn(child(), {"sleep", "20000"});
        CHECK_THROWS_AS(b.kill(1), std::system_error); // no SIGHUP on Windows
        CHECK_THROWS_AS(b.kill(-1), std::system_error);
        CHECK(b.kill(9));
        CHECK((co_await b.wait()).signal() == 9);

        // An exit of its own is an exit code, however it looks.
        exec_options no_check{.check = false};
        auto c = co_await conflux::exec_file(child(), {"exit", "1"}, no_check);
        CHECK(c.status.code() == 1);
        CHECK(!c.status.signal());
    });
}

TEST_CASE("Windows: dropping the handle kills the child; detach lets it run") {
    conflux_test::watchdog dog(20s);
    unsigned long dropped = 0;
    unsigned long detached = 0;
    run([&]() -> task<> {
        {
            auto c = conflux::spawn(child(), {"sleep", "20000"});
            dropped = c.pid();
        }
        auto d = conflux::spawn(child(), {"sleep", "300"});
        detached = d.pid();
        d.detach();
        co_await conflux::sleep_for(10ms);
    });
    CHECK(gone_within(dropped, 5s));
    CHECK(gone_within(detached, 5s)); // ended on its own, not killed
}

TEST_CASE("Windows: kill_tree ends the grandchildren too (Job object)") {
    conflux_test::watchdog dog(20s);
    unsigned long grandchild = 0;
    run([&]() -> task<> {
        auto c =
            conflux::spawn(child(), {"grandchild", "20000", "20000"}, named({.kill_tree = true}));
        auto line = co_await c.out().read_line();
        REQUIRE(line);
        grandchild = std::stoul(line->substr(std::string("grandchild ").size()));
        CHECK(c.kill());
        CHECK((co_await c.wait()).signal() == SIGTERM);
    });
    CHECK(gone_within(grandchild, 5s));
}

TEST_CASE("Windows: exec runs cmd.exe; a batch file goes through cmd.exe too") {
    conflux_test::watchdog dog(20s);
    temp_dir dir;
    const auto batch = dir.path / "hello.cmd";
    {
        std::ofstream f(batch, std::ios::binary);
        f << "@echo off\r\necho batch %~1\r\nexit /b 7\r\n";
    }
    run([&]() -> task<> {
        auto r = co_await conflux::exec("echo hello&& echo world");
        CHECK(r.out == "hello\r\nworld\r\n");
        exec_options no_check{.check = false};
        auto e = co_await conflux::exec("exit 3", no_check);
        CHECK(e.status.code() == 3);
        auto b = co_await conflux::exec_file(batch.string(), {"one two"}, no_check);
        CHECK(b.out == "batch one two\r\n");
        CHECK(b.status.code() == 7);
        // Found in PATH by its PATHEXT extension, without one in the name.
        exec_options in_path{.env_set = {{"PATH", dir.path.string()}}, .check = false};
        auto c = co_await conflux::exec_file("hello", {"three"}, in_path);
        CHECK(c.out == "batch three\r\n");
        CHECK(c.status.code() == 7);
        // What cmd.exe would expand even inside quotes is refused in a batch file's
        // arguments (windows_command_line_test.cpp has the whole list).
        bool refused = false;
        try {
            co_await conflux::exec_file(batch.string(), {"100%"}, no_check);
        } catch (const std::invalid_argument&) {
            refused = true;
        }
        CHECK(refused);
        // Another shell would misread cmd.exe's /d /s /c line: refused, not run.
        bool other_shell_refused = false;
        try {
            exec_options other_shell{.check = false, .shell = child()};
            co_await conflux::exec("echo x", other_shell);
        } catch (const std::invalid_argument& e) {
            other_shell_refused = std::string(e.what()).find("cmd.exe") != std::string::npos;
        }
        CHECK(other_shell_refused);
    });
}

TEST_CASE("Windows: no handle but its three standard ones reaches the child") {
    conflux_test::watchdog dog(10s);
    // An inheritable event of this process, set: a child that got it could reset it.
    SECURITY_ATTRIBUTES inherit{sizeof(SECURITY_ATTRIBUTES), nullptr, TRUE};
    HANDLE event = ::CreateEventW(&inherit, TRUE, TRUE, nullptr);
    REQUIRE(event != nullptr);
    const auto value = std::to_string(reinterpret_cast<std::uintptr_t>(event));
    auto r = run([&]() -> task<conflux::exec_result> {
        exec_options no_check{.check = false};
        co_return co_await conflux::exec_file(child(), {"reset-event", value}, no_check);
    });
    // The child ran; its exit code is only a hint. A handle of the child's own (Wine
    // reuses small handle values) can sit at the same value and reset without error.
    CHECK(r.status.code().has_value());
    // The decisive check: an inherited handle has the same value in the child, so a
    // reset there would have cleared this process's event.
    CHECK(::WaitForSingleObject(event, 0) == WAIT_OBJECT_0);
    ::CloseHandle(event);
}

TEST_CASE("Windows: spawning leaks no handle") {
    conflux_test::watchdog dog(60s);
    auto round = []() -> task<> {
        for (int i = 0; i < 20; ++i) {
            auto r = co_await conflux::exec_file(child(), {"echo", "x"});
            CHECK(r.out == "x\n");
            auto c = conflux::spawn(child(), {"sleep", "20000"});
            c.kill();
            co_await c.wait();
            try {
                auto missing = conflux::spawn("conflux_no_such_program_xyz");
            } catch (const std::system_error&) {
            }
        }
    };
    run(round); // the first spawns open what stays open (the thread pool's wait threads)
    // The pool's threads come and go with their own handles: let them settle.
    std::this_thread::sleep_for(500ms);
    const std::size_t before = conflux_test::open_handle_count();
    run(round);
    std::this_thread::sleep_for(500ms);
    const std::size_t after = conflux_test::open_handle_count();
    // 20 rounds leaking even one handle each would be 20 more.
    CHECK(after <= before + 4);
    CHECK(before > 0); // the probe counts something
}

#else
#include "support/scratch.hpp"
#include "support/test_support.hpp"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

using namespace std::chrono_literals;
using conflux::exec_options;
using conflux::spawn_options;
using conflux::stdio_spec;
using conflux::task;

using conflux_test::alive;
using conflux_test::background_sleeper;
using conflux_test::gone_within;
using conflux_test::no_leaks;
using conflux_test::temp_dir;

namespace {

std::string child() { return (conflux_test::helper_dir() / "conflux_child").string(); }

// Options written in a spawn call that is not inside a co_await expression are sound on any
// compiler, but GCC 12's overloads cannot tell and refuse them: this passes them as an lvalue.
const spawn_options& named(const spawn_options& o) { return o; }

std::vector<std::string> lines_of(const std::string& s) {
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start < s.size()) {
        auto nl = s.find('\n', start);
        if (nl == std::string::npos) nl = s.size();
        out.push_back(s.substr(start, nl - start));
        start = nl + 1;
    }
    return out;
}

template <class F>
auto run(F f) {
    return conflux::run(f());
}

} // namespace

TEST_CASE("exec_file captures stdout and the exit status") {
    conflux_test::watchdog dog(5s);
    no_leaks probe;
    auto r = run([]() -> task<conflux::exec_result> {
        co_return co_await conflux::exec_file(child(), {"args", "hello", "world"});
    });
    CHECK(r.out == child() + "\nhello\nworld\n");
    CHECK(r.err.empty());
    CHECK(r.status.success());
    CHECK(r.status.code() == 0);
    CHECK(!r.status.signal());
}

TEST_CASE("exit codes 0 1 2 42 255 are reported exactly, and wait twice gives the same") {
    conflux_test::watchdog dog(10s);
    no_leaks probe;
    run([]() -> task<> {
        for (int code : {0, 1, 2, 42, 255}) {
            auto c = conflux::spawn(child(), {"exit", std::to_string(code)});
            auto [a, b] = co_await conflux::when_all(c.wait(), c.wait());
            CHECK(a.code() == code);
            CHECK(b == a);
            CHECK((co_await c.wait()) == a);
            CHECK(a.success() == (code == 0));
            exec_options opts1{.check = false};
            auto r = co_await conflux::exec_file(child(), {"exit", std::to_string(code)}, opts1);
            CHECK(r.status.code() == code);
        }
    });
}

TEST_CASE("signals: SIGTERM, SIGKILL and a self-SIGSEGV versus exit 143") {
    conflux_test::watchdog dog(10s);
    no_leaks probe;
    run([]() -> task<> {
        auto a = conflux::spawn(child(), {"sleep", "10000"});
        CHECK(a.kill(0)); // a probe does not kill
        CHECK(a.kill());
        auto st = co_await a.wait();
        CHECK(st.signal() == SIGTERM);
        CHECK(!st.code());
        CHECK(!st.success());
        CHECK(!a.kill()); // already reaped: never signals a recycled pid

        auto b = conflux::spawn(child(), {"sleep", "10000"});
        b.kill(SIGKILL);
        CHECK((co_await b.wait()).signal() == SIGKILL);

        auto c = conflux::spawn(child(), {"segv"}, named({.rlimits = {{RLIMIT_CORE, 0}}}));
        CHECK((co_await c.wait()).signal() == SIGSEGV);

        exec_options opts2{.check = false};
        auto d = co_await conflux::exec("exit 143", opts2);
        CHECK(d.status.code() == 143);
        CHECK(!d.status.signal());

        auto e = conflux::spawn(child(), {"sleep", "10000"});
        CHECK_THROWS_AS(e.kill(-1), std::system_error);
        CHECK_THROWS_AS(e.kill(NSIG), std::system_error);
        e.kill(SIGKILL);
        co_await e.wait();
    });
}

TEST_CASE("spawn errors are system_errors naming the program, never exit 127") {
    conflux_test::watchdog dog(10s);
    no_leaks probe;
    temp_dir dir;
    const auto plain = dir.path / "plain.txt";
    std::ofstream(plain) << "not a program";
    std::filesystem::permissions(plain, std::filesystem::perms::owner_read |
                                            std::filesystem::perms::owner_write);
    const auto garbage = dir.path / "garbage";
    std::ofstream(garbage) << "\x7f\x01\x02\x03 random bytes, no shebang";
    std::filesystem::permissions(garbage, std::filesystem::perms::owner_all);
    const auto marker = dir.path / "marker";

    run([&]() -> task<> {
        auto expect = [](auto f, int err, std::string_view needle) {
            try {
                f();
                FAIL("no throw");
            } catch (const std::system_error& e) {
                CHECK(e.code().value() == err);
                CHECK(std::string(e.what()).find(needle) != std::string::npos);
            }
        };
        expect([] { conflux::spawn("no-such-prog-xyz"); }, ENOENT, "no-such-prog-xyz");
        expect([&] { conflux::spawn(plain.string()); }, EACCES, "plain.txt");
        expect([&] { conflux::spawn(dir.path.string()); }, EACCES, "spawn");
        expect([&] { conflux::spawn(garbage.string()); }, ENOEXEC, "garbage");
        expect([&] { conflux::spawn(child(), {"cwd"}, named({.cwd = dir.path / "missing"})); },
               ENOENT, "chdir");
        expect([&] { conflux::spawn(child(), {"cwd"}, named({.cwd = plain})); }, ENOTDIR, "chdir");
        expect([&] { conflux::spawn("/" + std::string(5000, 'x')); }, ENAMETOOLONG, "spawn");
        std::vector<std::string> huge(64, std::string(100 * 1024, 'a'));
        expect([&] { conflux::spawn(child(), huge); }, E2BIG, "spawn");
        // exec_file reports the same errors from its await.
        try {
            co_await conflux::exec_file("no-such-prog-xyz");
            FAIL("no throw");
        } catch (const std::system_error& e) {
            CHECK(e.code().value() == ENOENT);
        }
    });
    CHECK(!std::filesystem::exists(marker));
}

TEST_CASE("1000 failed spawns leak nothing") {
    conflux_test::watchdog dog(20s);
    no_leaks probe;
    run([]() -> task<> {
        const int n = std::max(50, static_cast<int>(1000 * conflux_test::stress_scale()));
        for (int i = 0; i < n; ++i) {
            CHECK_THROWS_AS(conflux::spawn("no-such-prog-xyz"), std::system_error);
        }
        co_return;
    });
}

TEST_CASE("NUL bytes and bad environment names are rejected before anything starts") {
    no_leaks probe;
    run([]() -> task<> {
        using namespace std::string_literals;
        CHECK_THROWS_AS(conflux::spawn("a\0b"s), std::invalid_argument);
        CHECK_THROWS_AS(conflux::spawn(child(), {"x\0y"s}), std::invalid_argument);
        CHECK_THROWS_AS(conflux::spawn(child(), {}, named({.cwd = "/tmp\0x"s})),
                        std::invalid_argument);
        CHECK_THROWS_AS(conflux::spawn(child(), {}, named({.argv0 = "a\0"s})),
                        std::invalid_argument);
        CHECK_THROWS_AS(
            conflux::spawn(child(), {}, named({.env = conflux::env_vars{{"A\0"s, "1"}}})),
            std::invalid_argument);
        CHECK_THROWS_AS(
            conflux::spawn(child(), {}, named({.env = conflux::env_vars{{"A", "1\0"s}}})),
            std::invalid_argument);
        CHECK_THROWS_AS(
            conflux::spawn(child(), {}, named({.env = conflux::env_vars{{"A=B", "1"}}})),
            std::invalid_argument);
        CHECK_THROWS_AS(conflux::spawn(child(), {}, named({.env = conflux::env_vars{{"", "1"}}})),
                        std::invalid_argument);
        co_return;
    });
}

TEST_CASE("arguments arrive verbatim: no shell unless exec is asked") {
    conflux_test::watchdog dog(5s);
    no_leaks probe;
    temp_dir dir;
    const std::string marker = (dir.path / "P").string();
    const std::vector<std::string> args = {
        "args", "a; touch " + marker, "$(id)", "`id`", "*", "\n", "", "caf\xc3\xa9 \xe2\x82\xac"};
    auto r = run([&]() -> task<conflux::exec_result> {
        exec_options opts3{.argv0 = "custom-zero"};
        co_return co_await conflux::exec_file(child(), args, opts3);
    });
    CHECK(lines_of(r.out) == std::vector<std::string>{"custom-zero", "a; touch " + marker, "$(id)",
                                                      "`id`", "*", "\\x0a", "",
                                                      "caf\\xc3\\xa9 \\xe2\\x82\\xac"});
    CHECK(!std::filesystem::exists(marker));
}

TEST_CASE("environment: inherit, replace, add and remove, last duplicate wins") {
    conflux_test::watchdog dog(5s);
    no_leaks probe;
    ::setenv("CONFLUX_TEST_INHERITED", "yes", 1);
    run([]() -> task<> {
        auto env_of = [](exec_options o) -> task<std::set<std::string>> {
            auto r = co_await conflux::exec_file(child(), {"env"}, o);
            auto l = lines_of(r.out);
            co_return std::set<std::string>(l.begin(), l.end());
        };
        exec_options none;
        auto inherited = co_await env_of(none);
        CHECK(inherited.count("CONFLUX_TEST_INHERITED=yes") == 1);

        // (GCC 12 cannot keep a braced list's array alive across a co_await in the same
        // expression: options holding lists are built first.)
        exec_options dup{.env = conflux::env_vars{{"A", "1"}, {"A", "2"}}};
        auto replaced = co_await env_of(std::move(dup));
        CHECK(replaced == std::set<std::string>{"A=2"});

        exec_options cleared{.env = conflux::env_vars{}};
        auto empty = co_await env_of(cleared);
        CHECK(empty.empty());

        exec_options layer{.env_set = {{"CONFLUX_ADDED", "v"}},
                           .env_unset = {"CONFLUX_TEST_INHERITED"}};
        auto layered = co_await env_of(std::move(layer));
        CHECK(layered.count("CONFLUX_ADDED=v") == 1);
        CHECK(layered.count("CONFLUX_TEST_INHERITED=yes") == 0);
        CHECK(layered.size() == inherited.size());
    });
    ::unsetenv("CONFLUX_TEST_INHERITED");
}

TEST_CASE("cwd and PATH lookup: the child's PATH, never the current directory") {
    conflux_test::watchdog dog(5s);
    no_leaks probe;
    temp_dir dir;
    const auto bin = dir.path / "bin";
    std::filesystem::create_directory(bin);
    std::filesystem::copy_file(child(), bin / "helper-in-path");
    std::filesystem::copy_file(child(), dir.path / "helper-in-cwd");
    run([&]() -> task<> {
        exec_options opts4{.cwd = dir.path};
        auto r = co_await conflux::exec_file(child(), {"cwd"}, opts4);
        CHECK(r.out == std::filesystem::canonical(dir.path).string() + "\n");

        exec_options with_path{.env = conflux::env_vars{{"PATH", bin.string()}}};
        auto found = co_await conflux::exec_file("helper-in-path", {"exe"}, with_path);
        CHECK(found.out == (bin / "helper-in-path").string() + "\n");

        // "./prog" is resolved in the child's cwd.
        exec_options opts5{.cwd = dir.path};
        auto rel = co_await conflux::exec_file("./helper-in-cwd", {"exe"}, opts5);
        CHECK(rel.out == (dir.path / "helper-in-cwd").string() + "\n");

        // "", "." and relative entries never find a program in the current directory.
        for (const char* path : {"", ".", ":", "bin"}) {
            CHECK_THROWS_AS(
                conflux::spawn("helper-in-cwd", {},
                               named({.cwd = dir.path, .env = conflux::env_vars{{"PATH", path}}})),
                std::system_error);
        }
    });
}

TEST_CASE("stdio: extra pipe at fd 3, ignore, inherit, 2>&1, swapped, closed; nothing else") {
    conflux_test::watchdog dog(10s);
    no_leaks probe;
    temp_dir dir;
    run([&]() -> task<> {
        // Only 0-2 reach the child by default, whatever this process holds open.
        int leak = ::open("/dev/null", O_RDONLY); // deliberately without O_CLOEXEC
        auto r = co_await conflux::exec_file(child(), {"fds"});
        ::close(leak);
        auto fds = lines_of(r.out);
        REQUIRE(fds.size() == 3);
        CHECK(fds[0].rfind("0 -> pipe:", 0) == 0);
        CHECK(fds[1].rfind("1 -> pipe:", 0) == 0);
        CHECK(fds[2].rfind("2 -> pipe:", 0) == 0);

        exec_options wiring{.stdio = {stdio_spec::ignore(), stdio_spec::pipe(),
                                      stdio_spec::same_as(1), stdio_spec::pipe()}};
        auto ignored = co_await conflux::exec_file(child(), {"fds"}, wiring);
        auto l = lines_of(ignored.out);
        REQUIRE(l.size() == 4);
        CHECK(l[0] == "0 -> /dev/null");
        CHECK(l[2].substr(5) == l[1].substr(5)); // the same pipe
        CHECK(l[3].rfind("3 -> pipe:", 0) == 0);

        // fd 3 as an extra pipe the child writes to.
        auto c = conflux::spawn(child(), {"write-fd", "3", "via fd 3"},
                                named({.stdio = {stdio_spec::ignore(), stdio_spec::ignore(),
                                                 stdio_spec::ignore(), stdio_spec::pipe()}}));
        CHECK(co_await c.readable(3).read_all() == "via fd 3");
        CHECK((co_await c.wait()).success());

        // fd 3 as a pipe the parent writes to.
        auto d =
            conflux::spawn(child(), {"read-fd", "3"},
                           named({.stdio = {stdio_spec::ignore(), stdio_spec::pipe(),
                                            stdio_spec::inherit(), stdio_spec::pipe_to_child()}}));
        co_await d.writable(3).write_all("to fd 3");
        d.writable(3).close();
        CHECK(co_await d.out().read_all() == "to fd 3");
        CHECK((co_await d.wait()).success());

        // Swapping: the child's 1 is our stderr pipe's writer and vice versa, through files.
        const auto f1 = dir.path / "one", f2 = dir.path / "two";
        int a = ::open(f1.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        int b = ::open(f2.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        REQUIRE(::dup3(a, 41, O_CLOEXEC) == 41);
        REQUIRE(::dup3(b, 42, O_CLOEXEC) == 42);
        ::close(a);
        ::close(b);
        auto e = conflux::spawn(child(), {"fds"},
                                named({.stdio = {stdio_spec::ignore(), stdio_spec::from_fd(42),
                                                 stdio_spec::from_fd(41)}}));
        co_await e.wait();
        ::close(41);
        ::close(42);
        std::ifstream in(f2);
        std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        CHECK(all.find("1 -> " + f2.string()) != std::string::npos);
        CHECK(all.find("2 -> " + f1.string()) != std::string::npos);

        // A file for stdout, a closed stdin.
        const auto f3 = dir.path / "three";
        auto g = conflux::spawn(
            child(), {"fds"},
            named({.stdio = {stdio_spec::closed(), stdio_spec::file(f3), stdio_spec::ignore()}}));
        co_await g.wait();
        std::ifstream in3(f3);
        std::string first;
        std::getline(in3, first);
        CHECK(first.rfind("1 -> ", 0) == 0); // fd 0 is absent
    });
}

// Whether this system lets an unprivileged process have a 1 MiB pipe at all
// (/proc/sys/fs/pipe-max-size and the per-user budget): the widening is best effort.
bool can_widen_to_1_mib() {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    const bool ok = ::fcntl(p[0], F_SETPIPE_SZ, 1024 * 1024) >= 1024 * 1024;
    ::close(p[0]);
    ::close(p[1]);
    return ok;
}

TEST_CASE("a child's pipes are widened for bulk transfers, not for small ones; bytes exact") {
    conflux_test::watchdog dog(20s);
    no_leaks probe;
    run([]() -> task<> {
        std::string data(3 * 1024 * 1024 + 5, '\0');
        for (std::size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 17 % 253);
        const bool widens = can_widen_to_1_mib();
        {
            // Small: both pipes keep the size they were made with.
            auto c = conflux::spawn("/bin/cat");
            const int in_size = ::fcntl(c.in().native_handle(), F_GETPIPE_SZ);
            const int out_size = ::fcntl(c.out().native_handle(), F_GETPIPE_SZ);
            auto feed = [&]() -> task<> {
                co_await c.in().write_all(std::string_view(data).substr(0, 1000));
                c.in().close();
            };
            std::string out;
            auto drain = [&]() -> task<> { co_await c.out().read_into(out, 0, nullptr); };
            co_await conflux::when_all(feed(), drain());
            CHECK(out == std::string_view(data).substr(0, 1000));
            CHECK(::fcntl(c.out().native_handle(), F_GETPIPE_SZ) == out_size);
            CHECK(in_size > 0);
            CHECK((co_await c.wait()).code() == 0);
        }
        {
            // 3 MiB: write_all widens stdin at once, the capture widens stdout at 1 MiB.
            auto c = conflux::spawn("/bin/cat");
            int in_size = 0;
            auto feed = [&]() -> task<> {
                co_await c.in().write_all(data);
                in_size = ::fcntl(c.in().native_handle(), F_GETPIPE_SZ);
                c.in().close();
            };
            std::string out;
            auto drain = [&]() -> task<> { co_await c.out().read_into(out, 0, nullptr); };
            co_await conflux::when_all(feed(), drain());
            CHECK(out == data);
            if (widens) {
                CHECK(in_size >= 1024 * 1024);
                CHECK(::fcntl(c.out().native_handle(), F_GETPIPE_SZ) >= 1024 * 1024);
            }
            CHECK((co_await c.wait()).code() == 0);
        }
    });
}

TEST_CASE("timeout kills, and escalates to SIGKILL for a child ignoring SIGTERM") {
    conflux_test::watchdog dog(20s);
    no_leaks probe;
    run([]() -> task<> {
        auto start = std::chrono::steady_clock::now();
        try {
            exec_options opts10{.timeout = 100ms};
            co_await conflux::exec_file(child(), {"sleep", "10000"}, opts10);
            FAIL("no throw");
        } catch (const conflux::process_error& e) {
            CHECK(e.timed_out());
            CHECK(e.status().signal() == SIGTERM);
        }
        CHECK(std::chrono::steady_clock::now() - start < 5s);

        try {
            exec_options opts11{.timeout = 100ms, .kill_grace = 200ms};
            co_await conflux::exec_file(child(), {"ignore-term"}, opts11);
            FAIL("no throw");
        } catch (const conflux::process_error& e) {
            CHECK(e.timed_out());
            CHECK(e.status().signal() == SIGKILL);
            CHECK(e.result().out == "ready\n");
        }

        auto c = conflux::spawn(child(), {"sleep", "10000"},
                                named({.timeout = 50ms, .kill_signal = SIGKILL}));
        CHECK((co_await c.wait()).signal() == SIGKILL);
        CHECK(c.timed_out());
    });
}

TEST_CASE("cancelling wait leaves the child running; cancelling exec kills it") {
    conflux_test::watchdog dog(20s);
    no_leaks probe;
    run([]() -> task<> {
        auto c = conflux::spawn(child(), {"sleep", "10000"});
        std::stop_source stop;
        auto canceller = [&]() -> task<> {
            co_await conflux::sleep_for(50ms);
            stop.request_stop();
        };
        auto waiter = [&]() -> task<> {
            CHECK_THROWS_AS(co_await c.wait(stop.get_token()), conflux::operation_cancelled);
        };
        co_await conflux::when_all(waiter(), canceller());
        CHECK(alive(c.pid()));
        CHECK(!c.status());
        c.kill();
        CHECK((co_await c.wait()).signal() == SIGTERM);

        std::stop_source stop2;
        auto canceller2 = [&]() -> task<> {
            co_await conflux::sleep_for(50ms);
            stop2.request_stop();
        };
        auto execer = [&]() -> task<> {
            exec_options opts12{.stop_token = stop2.get_token()};
            CHECK_THROWS_AS(co_await conflux::exec_file(child(), {"sleep", "10000"}, opts12),
                            conflux::operation_cancelled);
        };
        co_await conflux::when_all(execer(), canceller2());

        // A spawn_options stop token kills the child.
        std::stop_source stop3;
        auto d =
            conflux::spawn(child(), {"sleep", "10000"}, named({.stop_token = stop3.get_token()}));
        stop3.request_stop();
        CHECK((co_await d.wait()).signal() == SIGTERM);
    });
}

TEST_CASE("a stopped child is not reported until it really exits") {
    conflux_test::watchdog dog(10s);
    no_leaks probe;
    run([]() -> task<> {
        auto c = conflux::spawn(child(), {"sleep", "300"});
        c.kill(SIGSTOP);
        auto resumer = [&]() -> task<> {
            co_await conflux::sleep_for(200ms);
            CHECK(!c.status());
            c.kill(SIGCONT);
        };
        auto [st, unused] = co_await conflux::when_all(c.wait(), resumer());
        CHECK(st.code() == 0);
    });
}

TEST_CASE("kill_tree kills every descendant in the group; a plain kill only the child") {
    conflux_test::watchdog dog(20s);
    no_leaks probe;
    run([]() -> task<> {
        for (bool tree : {true, false}) {
            auto c = conflux::spawn(child(), {"grandchildren", "2", "30000"},
                                    named({.kill_tree = tree}));
            std::vector<pid_t> kids;
            for (int i = 0; i < 2; ++i) {
                auto line = co_await c.out().read_line();
                REQUIRE(line);
                kids.push_back(std::stoi(*line));
            }
            auto pg = co_await conflux::exec_file(child(), {"pgid"});
            c.kill(SIGKILL);
            CHECK((co_await c.wait()).signal() == SIGKILL);
            // Grandchildren are reparented to init (or a subreaper); give the kernel a moment.
            for (int i = 0; i < 100; ++i) {
                bool any = false;
                for (pid_t k : kids) any = any || alive(k);
                if (!any || !tree) break;
                co_await conflux::sleep_for(20ms);
            }
            for (pid_t k : kids) {
                if (tree) {
                    CHECK(!alive(k));
                } else {
                    CHECK(alive(k));
                    ::kill(k, SIGKILL);
                }
            }
        }
    });
}

TEST_CASE("detached: new session and process group") {
    conflux_test::watchdog dog(5s);
    no_leaks probe;
    auto r = run([]() -> task<conflux::exec_result> {
        exec_options opts13{.detached = true};
        co_return co_await conflux::exec_file(child(), {"pgid"}, opts13);
    });
    auto parts = lines_of(r.out);
    REQUIRE(parts.size() == 1);
    int pid = 0, pgid = 0, sid = 0;
    REQUIRE(std::sscanf(parts[0].c_str(), "%d %d %d", &pid, &pgid, &sid) == 3);
    CHECK(pgid == pid);
    CHECK(sid == pid);
}

TEST_CASE("signal mask and dispositions are reset in the child") {
    conflux_test::watchdog dog(5s);
    no_leaks probe;
    auto old_usr1 = std::signal(SIGUSR1, SIG_IGN);
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &block, &old);
    auto r = run([]() -> task<conflux::exec_result> {
        co_return co_await conflux::exec_file(child(), {"signals"});
    });
    pthread_sigmask(SIG_SETMASK, &old, nullptr);
    std::signal(SIGUSR1, old_usr1);
    CHECK(r.out.find("SigBlk:\t0000000000000000") != std::string::npos);
    CHECK(r.out.find("SigIgn:\t0000000000000000") != std::string::npos);
}

TEST_CASE("rlimits and uid/gid are applied in the child") {
    conflux_test::watchdog dog(5s);
    no_leaks probe;
    run([]() -> task<> {
        exec_options limited{.rlimits = {{RLIMIT_NOFILE, 32, 64}}};
        auto r = co_await conflux::exec_file(child(), {"nofile"}, limited);
        CHECK(r.out == "32 64\n");
        if (::getuid() == 0) {
            exec_options opts14{.uid = 65534, .gid = 65534};
            auto ids = co_await conflux::exec_file(child(), {"ids"}, opts14);
            CHECK(ids.out == "65534 65534\n");
        } else {
            try {
                conflux::spawn(child(), {"ids"}, named({.uid = 0}));
                FAIL("no throw");
            } catch (const std::system_error& e) {
                CHECK(e.code().value() == EPERM);
            }
        }
    });
}

TEST_CASE("stdin: close makes cat exit; EPIPE from a child that does not read, no SIGPIPE") {
    conflux_test::watchdog dog(20s);
    no_leaks probe;
    const bool pipe_default = std::signal(SIGPIPE, SIG_DFL) != SIG_ERR;
    REQUIRE(pipe_default); // we must survive with the default
    run([]() -> task<> {
        auto c = conflux::spawn(child(), {"cat"});
        co_await c.in().write_all("hello\n");
        c.in().close();
        CHECK(co_await c.out().read_all() == "hello\n");
        CHECK((co_await c.wait()).success());

        auto t = conflux::spawn(child(), {"exit", "0"});
        co_await t.wait();
        std::string big(10 * 1024 * 1024, 'x');
        try {
            co_await t.in().write_all(big);
            FAIL("no throw");
        } catch (const std::system_error& e) {
            CHECK(e.code() == std::errc::broken_pipe);
        }
        // exec with input for a child that never reads it still succeeds.
        exec_options opts15{.input = big};
        auto r = co_await conflux::exec_file(child(), {"exit", "0"}, opts15);
        CHECK(r.status.success());
    });
}

TEST_CASE("100 lines from a child that exits at once all arrive") {
    conflux_test::watchdog dog(5s);
    no_leaks probe;
    run([]() -> task<> {
        auto c = conflux::spawn(child(), {"lines", "100"});
        int n = 0;
        while (auto line = co_await c.out().read_line()) {
            CHECK(*line == "line " + std::to_string(n));
            ++n;
        }
        CHECK(n == 100);
        CHECK((co_await c.wait()).success());
    });
}

TEST_CASE("64 MiB through cat arrive byte-exact") {
    conflux_test::watchdog dog(30s);
    no_leaks probe;
    const std::size_t n = 64 * 1024 * 1024;
    std::string data(n, '\0');
    for (std::size_t i = 0; i < n; ++i) data[i] = static_cast<char>((i * 131 + i / 977) & 0xff);
    auto r = run([&]() -> task<conflux::exec_result> {
        exec_options opts16{.input = data, .max_buffer = 0};
        co_return co_await conflux::exec_file(child(), {"cat"}, opts16);
    });
    CHECK(r.out.size() == n);
    CHECK(r.out == data);
}

TEST_CASE("pipeline: cat | cat wired child to child, the parent never reads the middle") {
    conflux_test::watchdog dog(10s);
    no_leaks probe;
    run([]() -> task<> {
        int p[2];
        REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
        auto a =
            conflux::spawn(child(), {"out", "1048576"},
                           named({.stdio = {stdio_spec::ignore(), stdio_spec::from_fd(p[1])}}));
        auto b = conflux::spawn(child(), {"cat"}, named({.stdio = {stdio_spec::from_fd(p[0])}}));
        ::close(p[0]);
        ::close(p[1]);
        auto out = co_await b.out().read_all();
        CHECK(out.size() == 1048576);
        CHECK((co_await a.wait()).success());
        CHECK((co_await b.wait()).success());
    });
}

TEST_CASE("dropping a child_process: killed and reaped by default, detach lets it finish") {
    conflux_test::watchdog dog(10s);
    no_leaks probe;
    pid_t dropped = 0, detached = 0;
    run([&]() -> task<> {
        {
            auto c = conflux::spawn(child(), {"sleep", "10000"});
            dropped = c.pid();
        }
        {
            auto d = conflux::spawn(child(), {"sleep", "100"});
            detached = d.pid();
            d.detach();
            CHECK(!d);
        }
        { auto e = conflux::spawn(child(), {"sleep", "100"}, named({.kill_on_drop = false})); }
        co_await conflux::sleep_for(400ms);
        CHECK(!alive(dropped));
        CHECK(!alive(detached));
    });
}

TEST_CASE("a killed child dropped as the loop ends is reaped by the loop's destruction") {
    conflux_test::watchdog dog(10s);
    no_leaks probe;
    run([]() -> task<> {
        auto c = conflux::spawn(child(), {"sleep", "10000"});
        co_return;
    });
}

TEST_CASE("a detached child that outlives its loop is reaped by a later spawn, not left a zombie") {
    conflux_test::watchdog dog(10s);
    no_leaks probe;
    pid_t orphan = 0;
    run([&]() -> task<> {
        auto c = conflux::spawn(child(), {"sleep", "150"});
        orphan = c.pid();
        c.detach();
        co_return; // the loop, and its watch on the child, end here
    });
    CHECK(alive(orphan));
    // The child exits with nobody watching: it is a zombie until something reaps it.
    const auto deadline = std::chrono::steady_clock::now() + 5s;
    while (conflux_test::zombie_children() != std::vector<int>{orphan} &&
           std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(10ms);
    }
    REQUIRE(conflux_test::zombie_children() == std::vector<int>{orphan});
    // Any later spawn, on any loop, reaps the orphans that have exited.
    run([]() -> task<> { (void)co_await conflux::exec_file(child(), {"exit", "0"}); });
    CHECK(conflux_test::zombie_children().empty());
}

TEST_CASE("wait from another loop's thread") {
    conflux_test::watchdog dog(10s);
    no_leaks probe;
    conflux::event_loop other;
    std::thread t([&] { other.run(); });
    run([&]() -> task<> {
        auto c = conflux::spawn(child(), {"exit", "7"});
        auto on_other = [&]() -> task<int> {
            co_await other.schedule();
            auto st = co_await c.wait();
            CHECK(conflux::event_loop::current() == &other);
            co_return *st.code();
        };
        CHECK(co_await on_other() == 7);
    });
    other.stop();
    t.join();
}

TEST_CASE("EMFILE under a low RLIMIT_NOFILE is a clear error, and later spawns work") {
    conflux_test::watchdog dog(10s);
    conflux_test::meet_error_types_before_emfile();
    no_leaks probe;
    rlimit old{};
    ::getrlimit(RLIMIT_NOFILE, &old);
    run([&]() -> task<> {
        std::vector<int> held;
        rlimit low = old;
        low.rlim_cur = 64;
        ::setrlimit(RLIMIT_NOFILE, &low);
        for (;;) {
            int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (fd < 0) break;
            held.push_back(fd);
        }
        std::exception_ptr failure;
        try {
            conflux::spawn(child(), {"exit", "0"});
        } catch (...) {
            failure = std::current_exception();
        }
        // Inspect the error only once descriptors are free again: UBSan's vptr check needs a
        // pipe of its own to probe memory, and reports a false "invalid vptr" under EMFILE.
        for (int fd : held) ::close(fd);
        ::setrlimit(RLIMIT_NOFILE, &old);
        REQUIRE(failure);
        try {
            std::rethrow_exception(failure);
        } catch (const std::system_error& e) {
            CHECK(e.code().value() == EMFILE);
            CHECK(std::string(e.what()).find("spawn") != std::string::npos);
        }
        auto r = co_await conflux::exec_file(child(), {"exit", "0"});
        CHECK(r.status.success());
    });
}

TEST_CASE("a shared_buffer handed to a spawned child as an extra fd: both count into it") {
    // Issue 5: the same memory reaches a child as an extra descriptor of `spawn`. The child
    // (the shm_child helper) maps fd 3 with shared_buffer::from_fd and adds n to the counters
    // while this process adds n too.
    conflux_test::watchdog dog(30s);
    no_leaks probe;
    run([]() -> task<void> {
        conflux::shared_buffer memory(64);
        const auto c32 = memory.view<std::uint32_t>(8, 1);
        const auto c64 = memory.view<std::uint64_t>(16, 1);
        const std::uint64_t n = 200'000;
        const std::string helper = (conflux_test::helper_dir() / "conflux_shm_child").string();
        const spawn_options opts{.stdio = {stdio_spec::ignore(), stdio_spec::inherit(),
                                           stdio_spec::inherit(),
                                           stdio_spec::from_fd(memory.fd())}};
        auto c = conflux::spawn(
            helper, {"count", "3", std::to_string(memory.size()), std::to_string(n)}, opts);
        for (std::uint64_t k = 0; k < n; ++k) {
            c32.add(0, 1);
            c64.add(0, 1);
        }
        CHECK((co_await c.wait()).code() == 0);
        CHECK(c32.load(0) == 2 * n);
        CHECK(c64.load(0) == 2 * n);
    });
}

// ---- Deadlines, wait_delay, tree kills after the leader's exit, loop destruction ----

using clock_type = std::chrono::steady_clock;

TEST_CASE("kill_tree: kill(), the timeout and the drop reach the group after the leader exited") {
    conflux_test::watchdog dog(20s);
    no_leaks probe;
    const std::vector<std::string> sh_args{"-c", background_sleeper};
    run([&]() -> task<> {
        // kill() after the leader's exit signals what is left of its group.
        {
            auto c = conflux::spawn("/bin/sh", sh_args, named({.kill_tree = true}));
            const pid_t sleeper = std::stoi(*co_await c.out().read_line());
            CHECK((co_await c.wait()).code() == 0);
            // The exited leader is kept as a zombie: its pid, the group id, stays reserved.
            CHECK(conflux_test::zombie_children() == std::vector<int>{c.pid()});
            CHECK(c.kill(SIGKILL));
            CHECK(gone_within(sleeper, 2s));
        }
        // The zombie went with the handle.
        CHECK(conflux_test::zombie_children().empty());

        // Without kill_tree there is no group to reach: kill() after the exit says false.
        {
            auto c = conflux::spawn("/bin/sh", sh_args);
            const pid_t sleeper = std::stoi(*co_await c.out().read_line());
            CHECK((co_await c.wait()).code() == 0);
            CHECK(conflux_test::zombie_children().empty());
            CHECK(!c.kill(SIGKILL));
            CHECK(alive(sleeper));
            ::kill(sleeper, SIGKILL);
        }

        // The drop (kill_on_drop) ends the group too.
        pid_t dropped_sleeper = 0;
        {
            auto c = conflux::spawn("/bin/sh", sh_args, named({.kill_tree = true}));
            dropped_sleeper = std::stoi(*co_await c.out().read_line());
            co_await c.wait();
        }
        CHECK(gone_within(dropped_sleeper, 2s));

        // A timeout that runs out after the leader's exit ends the group, with kill_signal.
        {
            auto c =
                conflux::spawn("/bin/sh", sh_args, named({.timeout = 300ms, .kill_tree = true}));
            const pid_t sleeper = std::stoi(*co_await c.out().read_line());
            CHECK((co_await c.wait()).code() == 0);
            co_await conflux::sleep_for(150ms);
            CHECK(alive(sleeper));
            co_await conflux::sleep_for(400ms);
            CHECK(gone_within(sleeper, 2s));
            CHECK(!c.timed_out()); // the leader itself was not killed by the timeout
        }
    });
}

TEST_CASE("a loop destroyed with detached tasks awaiting killed children reaps them all") {
    conflux_test::watchdog dog(20s);
    no_leaks probe;
    std::vector<pid_t> pids;
    {
        conflux::event_loop loop;
        // Capture-less: a detached coroutine must not reach through a closure that is gone.
        auto waiter = [](std::vector<pid_t>& started, int n) -> task<> {
            auto c = conflux::spawn(child(), {"ignore-term", "60000"});
            started.push_back(c.pid());
            CHECK(co_await c.out().read_line() == "ready");
            if (n % 2 == 0) c.kill(SIGTERM); // ignored: still running
            if (n == 3) c.kill(SIGSTOP);     // stopped: still not exited
            co_await c.wait();
            FAIL("the child cannot have exited");
        };
        auto body = [&]() -> task<> {
            for (int i = 0; i < 4; ++i) conflux::detach(waiter(pids, i));
            co_await conflux::sleep_for(100ms);
        };
        loop.run_until_complete(body());
    } // the waiting frames are destroyed here, their handles kill, the loop reaps
    CHECK(pids.size() == 4);
    for (pid_t p : pids) CHECK(!alive(p));
}

TEST_CASE("a child_process kept beyond its loop: kill, status and drop still work") {
    conflux_test::watchdog dog(20s);
    no_leaks probe;
    auto kept = run([]() -> task<conflux::child_process> {
        co_return conflux::spawn(child(), {"sleep", "60000"});
    });
    REQUIRE(kept);
    CHECK(alive(kept.pid()));
    CHECK(!kept.status());
    CHECK(!kept.out().is_open()); // its pipes went with the loop
    CHECK_THROWS_AS(conflux::run(kept.wait()), std::logic_error);
    CHECK(kept.kill(SIGKILL));
    const pid_t pid = kept.pid();
    kept = conflux::child_process(); // the drop reaps the killed child
    CHECK(!alive(pid));

    // kill_on_drop = false: the child runs on and joins the orphan list.
    auto free_running = run([]() -> task<conflux::child_process> {
        co_return conflux::spawn(child(), {"sleep", "100"}, named({.kill_on_drop = false}));
    });
    const pid_t orphan = free_running.pid();
    free_running = conflux::child_process();
    CHECK(alive(orphan));
    const auto deadline = clock_type::now() + 5s;
    while (conflux_test::zombie_children() != std::vector<int>{orphan} &&
           clock_type::now() < deadline) {
        std::this_thread::sleep_for(10ms);
    }
    run([]() -> task<> { (void)co_await conflux::exec_file(child(), {"exit", "0"}); });
    CHECK(conflux_test::zombie_children().empty());
}

TEST_CASE("a wait from another loop ends, once, when the child's loop is destroyed first") {
    conflux_test::watchdog dog(20s);
    no_leaks probe;
    for (bool keep_handle : {false, true}) {
        CAPTURE(keep_handle);
        conflux::event_loop other;
        std::thread other_thread([&] { other.run(); });
        std::atomic<int> outcomes{0};
        std::atomic<bool> threw_logic_error{false};
        conflux::child_process kept;
        {
            conflux::event_loop owner;
            auto body = [&]() -> task<> {
                auto c = conflux::spawn(child(), {"sleep", "60000"});
                auto waiter = [](conflux::child_process& ch, std::atomic<int>& n,
                                 std::atomic<bool>& logic) -> task<> {
                    auto w = ch.wait(); // started on this loop, it hops to the child's
                    try {
                        co_await std::move(w);
                    } catch (const std::logic_error&) {
                        logic = true;
                    }
                    ++n;
                };
                auto started = waiter(c, outcomes, threw_logic_error);
                other.post([&other, t = std::make_shared<task<>>(std::move(started))]() mutable {
                    other.detach(std::move(*t));
                });
                co_await conflux::sleep_for(100ms); // the wait is now pending on this loop
                if (keep_handle) kept = std::move(c);
            };
            owner.run_until_complete(body());
        } // `owner` goes: the pending wait is resumed from here
        const auto deadline = clock_type::now() + 5s;
        while (outcomes.load() == 0 && clock_type::now() < deadline) {
            std::this_thread::sleep_for(5ms);
        }
        CHECK(outcomes.load() == 1);
        // Without the handle the child was killed on drop; with it, it still runs (until the
        // handle goes below) and the wait could not know its end.
        if (keep_handle) CHECK(threw_logic_error.load());
        kept = conflux::child_process();
        other.stop();
        other_thread.join();
        CHECK(outcomes.load() == 1);
    }
}

namespace {

// Runs the helper that starts a sleeping child (from its main thread or from a thread that
// then exits) and SIGKILLs itself; returns the child's pid and whether it outlived the thread.
// Polls until `pid` has exited (gone, or a zombie nobody reaps yet) or `limit` passed.
bool ended_within(pid_t pid, std::chrono::milliseconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    for (;;) {
        if (gone_within(pid, 0ms)) return true;
        if (std::chrono::steady_clock::now() >= deadline) return false;
        std::this_thread::sleep_for(5ms);
    }
}

std::pair<pid_t, bool> orphaned_child(const char* from, bool cleanup) {
    return run([&]() -> task<std::pair<pid_t, bool>> {
        const std::string parent = (conflux_test::helper_dir() / "conflux_cleanup_parent").string();
        conflux::exec_options o;
        o.check = false;
        auto r = co_await conflux::exec_file(parent, {child(), from, cleanup ? "1" : "0"}, o);
        CHECK(r.status.signal() == SIGKILL);
        const auto nl = r.out.find('\n');
        REQUIRE(nl != std::string::npos);
        co_return std::pair<pid_t, bool>{static_cast<pid_t>(std::stol(r.out.substr(0, nl))),
                                         r.out.substr(nl + 1) == "alive\n"};
    });
}

} // namespace

TEST_CASE("cleanup: a child dies with a parent killed by SIGKILL, even when a thread started it") {
    for (const char* from : {"main", "thread"}) {
        CAPTURE(from);
        const auto [pid, survived_thread] = orphaned_child(from, true);
        REQUIRE(pid > 0);
        CHECK(survived_thread); // the starting thread's exit did not take it along
        CHECK(ended_within(pid, 2s));
        if (!ended_within(pid, 0ms)) ::kill(pid, SIGKILL);
    }
}

TEST_CASE("cleanup = false: the child outlives its parent") {
    const auto [pid, survived_thread] = orphaned_child("thread", false);
    REQUIRE(pid > 0);
    CHECK(survived_thread);
    std::this_thread::sleep_for(100ms);
    CHECK(!ended_within(pid, 0ms));
    ::kill(pid, SIGKILL);
}

TEST_CASE("spawn_options::all: stdout and stderr share one pipe, read in the order written") {
    conflux_test::watchdog dog(10s);
    no_leaks probe;
    run([]() -> task<> {
        spawn_options o{.all = true};
        // The order the shell's writes reached the pipe, every time (two pipes read side by
        // side could give "a c b").
        for (int i = 0; i < 20; ++i) {
            auto c = conflux::spawn("sh", {"-c", "echo a; echo b >&2; echo c"}, named(o));
            CHECK(&c.all() == &c.out());
            CHECK_THROWS_AS(c.err(), std::logic_error);
            c.in().close();
            std::string all = co_await c.all().read_all();
            CHECK(all == "a\nb\nc\n");
            auto st = co_await c.wait();
            CHECK(st.success());
        }
        // 4 KiB writes to each descriptor, alternating: every byte arrives, once.
        auto big = conflux::spawn(child(), {"both", "1048576"}, named(o));
        big.in().close();
        std::string both = co_await big.all().read_all();
        CHECK(both.size() == 2 * 1048576);
        CHECK((co_await big.wait()).success());
        // A reading limit applies to everything the pipe carries.
        auto capped = conflux::spawn(child(), {"both", "100000"}, named(o));
        capped.in().close();
        std::string kept;
        bool over = false;
        co_await capped.all().read_into(kept, 1000, &over);
        CHECK(over);
        CHECK(kept.size() == 1000);
        capped.kill(SIGKILL);
        co_await capped.wait();
    });
}

TEST_CASE("spawn_options::all: refused with other stdout or stderr specs; all() needs it") {
    no_leaks probe;
    run([]() -> task<> {
        spawn_options ignore_out{.stdio = {stdio_spec::pipe(), stdio_spec::ignore()}, .all = true};
        CHECK_THROWS_AS(conflux::spawn(child(), {"exit", "0"}, named(ignore_out)),
                        std::invalid_argument);
        spawn_options same{
            .stdio = {stdio_spec::pipe(), stdio_spec::pipe(), stdio_spec::same_as(1)}, .all = true};
        CHECK_THROWS_AS(conflux::spawn(child(), {"exit", "0"}, named(same)), std::invalid_argument);
        spawn_options missing{.all = true};
        CHECK_THROWS_AS(conflux::spawn("conflux-no-such-program", {}, named(missing)),
                        std::system_error);
        // Without it: two pipes, and no all().
        auto c = conflux::spawn(child(), {"exit", "0"});
        CHECK_THROWS_AS(c.all(), std::logic_error);
        co_await c.wait();
        co_return;
    });
}

#endif
