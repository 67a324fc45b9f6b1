#include <conflux/buffer.hpp>
#include <conflux/fork.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>

#include <doctest/doctest.h>

#include "support/scratch.hpp"
#include "support/test_support.hpp"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <variant>
#include <vector>

#include <signal.h>
#include <unistd.h>

using namespace std::chrono_literals;
using conflux::task;

// Children of this test are this very binary: doctest's main runs the first test case below,
// whose `conflux::run` dispatches to the entry point named by the parent and exits.

namespace {

task<void> echo() {
    while (auto m = co_await conflux::parent().receive<std::string>()) {
        co_await conflux::parent().send("echo: " + *m);
    }
}

task<int> exit42() { co_return 42; }

task<void> thrower() {
    co_await conflux::parent().send(std::string("about to throw"));
    throw std::out_of_range("index 9 of 3");
}

task<void> crasher() {
    co_await conflux::parent().send(std::string("about to crash"));
    co_await conflux::parent().flush();
    std::signal(SIGSEGV, SIG_DFL);
    ::raise(SIGSEGV);
}

task<void> fill_buffer() {
    auto b = co_await conflux::parent().receive<conflux::buffer>();
    for (auto& byte : b->bytes()) byte = std::byte{0x5a};
    co_await conflux::parent().send(b->size());
}

// Forks a grandchild, tells the test its pid, then waits to be killed.
task<void> middle() {
    auto grandchild = co_await conflux::fork("sleeper", {"--test-case=fork child entry"});
    const int pid = static_cast<int>(grandchild.pid());
    grandchild.process().detach();
    co_await conflux::parent().send(pid);
    co_await conflux::sleep_for(60s);
}

task<void> sleeper() { co_await conflux::sleep_for(60s); }

struct two_ints {
    int a = 0;
    int b = 0;
};

// Receives a message as the wrong type, reports what it was told, and goes on.
task<void> typed() {
    auto& ch = conflux::parent();
    std::string what;
    try {
        (void)co_await ch.receive<double>();
    } catch (const conflux::ipc_type_mismatch& e) {
        what = e.what();
    }
    co_await ch.send(what);
    auto n = co_await ch.receive<std::int64_t>();
    co_await ch.send(*n + 1);
    two_ints p{1, 2};
    co_await ch.send(p);
    co_await ch.send(std::string("done"));
}

[[maybe_unused]] const bool registered =
    conflux::register_entry("echo", echo) && conflux::register_entry("exit42", exit42) &&
    conflux::register_entry("throw", thrower) && conflux::register_entry("crash", crasher) &&
    conflux::register_entry("fill", fill_buffer) && conflux::register_entry("middle", middle) &&
    conflux::register_entry("sleeper", sleeper) && conflux::register_entry("typed", typed);

const conflux::arguments child_args{"--test-case=fork child entry"};

// This program's name as ps shows it: the last component of its argv[0].
std::string own_name() {
    return std::filesystem::path(conflux_test::process_cmdline(::getpid()).at(0))
        .filename()
        .string();
}

// Whether process `pid`'s name (ps -o comm) becomes `name` within 5 s: a child renames
// itself while it starts, so a grandchild we only learnt the pid of may not have yet.
task<bool> comm_becomes(int pid, std::string name) {
    for (int i = 0; i < 500; ++i) {
        if (conflux_test::process_comm(pid) == name) co_return true;
        co_await conflux::sleep_for(10ms);
    }
    co_return conflux_test::process_comm(pid) == name;
}

// The child is named once it runs: until then (while it is still being started) its
// command line may be its parent's, or empty.
task<bool> argv0_becomes(int pid, std::string name) {
    for (int i = 0; i < 500; ++i) {
        const auto args = conflux_test::process_cmdline(pid);
        if (!args.empty() && args[0] == name) co_return true;
        co_await conflux::sleep_for(10ms);
    }
    co_return false;
}

} // namespace

TEST_CASE("fork child entry") {
    // In the test process itself: nothing to dispatch, run just runs.
    CHECK(conflux::run([]() -> task<int> { co_return 5; }()) == 5);
    CHECK(!conflux::has_parent());
    CHECK_THROWS_AS(conflux::parent(), std::logic_error);
}

TEST_CASE("a forked entry point exchanges typed messages and exits with its code") {
    conflux_test::watchdog dog(20s);
    conflux::run([]() -> task<void> {
        auto child = co_await conflux::fork("echo", child_args);
        co_await child.send(std::string("hello"));
        co_await child.send(std::string("world"));
        CHECK(co_await child.receive<std::string>() == std::string("echo: hello"));
        CHECK(co_await child.receive<std::string>() == std::string("echo: world"));
        child.disconnect();
        auto st = co_await child.wait();
        CHECK(st.success());

        auto other = co_await conflux::fork("exit42", child_args);
        CHECK(!(co_await other.receive<int>()));
        CHECK((co_await other.wait()).code() == 42);
    }());
    CHECK(conflux_test::zombie_children().empty());
}

TEST_CASE("parent and child: a message of another type is refused naming both, and they go on") {
    conflux_test::watchdog dog(20s);
    conflux::run([]() -> task<void> {
        auto child = co_await conflux::fork("typed", child_args);
        co_await child.send(std::int64_t{42}); // received as double
        auto what = co_await child.receive<std::string>();
        REQUIRE(what);
        CHECK(what->find("expected a message of type double (fingerprint 0x") != std::string::npos);
        CHECK(what->find("got a message of another type (fingerprint 0x30f84239a5649d2c)") !=
              std::string::npos);
        co_await child.send(std::int64_t{41});
        CHECK(co_await child.receive<std::int64_t>() == std::int64_t{42});
        // two_ints{1, 2} received as int64: the same 8 bytes, refused by the fingerprint.
        CHECK_THROWS_AS(co_await child.receive<std::int64_t>(), conflux::ipc_type_mismatch);
        auto last = co_await child.receive_one_of<two_ints, std::string>();
        REQUIRE(last);
        CHECK(std::get<std::string>(*last) == "done");
        CHECK((co_await child.wait()).success());
    }());
    CHECK(conflux_test::zombie_children().empty());
}

TEST_CASE("an uncaught exception in the child arrives as remote_error with type and message") {
    conflux_test::watchdog dog(20s);
    conflux::run([]() -> task<void> {
        // The child's stderr is a pipe here, so that we can see what it printed.
        conflux::spawn_options opts{.stdio = {conflux::stdio_spec::inherit(),
                                              conflux::stdio_spec::inherit(),
                                              conflux::stdio_spec::pipe()}};
        auto child = co_await conflux::fork("throw", child_args, opts);
        CHECK(co_await child.receive<std::string>() == std::string("about to throw"));
        try {
            (void)co_await child.receive<std::string>();
            FAIL("no remote_error");
        } catch (const conflux::remote_error& e) {
            CHECK(e.type_name() == "std::out_of_range");
            CHECK(e.message() == "index 9 of 3");
        }
        // Like Node, the child prints the uncaught error itself: its type and message.
        const std::string err = co_await child.process().err().read_all();
        CHECK(err == "conflux: uncaught exception in forked entry point \"throw\": "
                     "std::out_of_range: index 9 of 3\n");
        CHECK((co_await child.wait()).code() == 1);
    }());
}

TEST_CASE("a crashing child: exit by signal, the pending receive ends, the parent runs on") {
    conflux_test::watchdog dog(20s);
    conflux::run([]() -> task<void> {
        auto child = co_await conflux::fork("crash", child_args);
        CHECK(co_await child.receive<std::string>() == std::string("about to crash"));
        CHECK(!(co_await child.receive<std::string>()));
        auto st = co_await child.wait();
        CHECK(st.signal() == SIGSEGV);
    }());
}

TEST_CASE("a shareable buffer goes to the child as memory: its writes are ours") {
    conflux_test::watchdog dog(20s);
    conflux::run([]() -> task<void> {
        auto child = co_await conflux::fork("fill", child_args);
        auto b = conflux::buffer::shareable(1 << 20);
        // Our own way into the same memory once `b` is gone (moved into the message).
        conflux::file_descriptor memfd = conflux::file_descriptor::duplicate(b.memfd());
        co_await child.send(std::move(b));
        CHECK(co_await child.receive<std::size_t>() == std::size_t(1) << 20);
        unsigned char first = 0;
        unsigned char last = 0;
        CHECK(::pread(memfd.get(), &first, 1, 0) == 1);
        CHECK(::pread(memfd.get(), &last, 1, (1 << 20) - 1) == 1);
        CHECK(first == 0x5a);
        CHECK(last == 0x5a);
        CHECK((co_await child.wait()).success());
    }());
}

TEST_CASE("an unknown entry point is reported, not run") {
    conflux_test::watchdog dog(20s);
    conflux::run([]() -> task<void> {
        auto child = co_await conflux::fork("nonesuch", child_args);
        CHECK_THROWS_AS((void)co_await child.receive<int>(), conflux::remote_error);
        CHECK((co_await child.wait()).code() == 127);
    }());
}

TEST_CASE("when the parent is SIGKILLed its forked child exits soon after") {
    conflux_test::watchdog dog(30s);
    conflux::run([]() -> task<void> {
        auto middle = co_await conflux::fork("middle", child_args);
        auto pid = co_await middle.receive<int>();
        REQUIRE(pid);
        CHECK(::kill(*pid, 0) == 0);
        // A child's child is named after the program too, not after its parent's title.
        const std::string self = own_name();
        CHECK(co_await argv0_becomes(*pid, self + ": fork sleeper"));
        CHECK(co_await comm_becomes(*pid, self.substr(0, 15)));
        middle.kill(SIGKILL);
        (void)co_await middle.wait();
        // Gone, or a zombie that init has not reaped yet: on a loaded machine that can lag.
        const bool gone = conflux_test::gone_within(*pid, 10s);
        CHECK(gone);
        if (!gone) ::kill(*pid, SIGKILL);
    }());
}

TEST_CASE("ps shows a forked child as the program's name and its entry point") {
    conflux_test::watchdog dog(20s);
    const std::string self = own_name();
    conflux::run([&]() -> task<void> {
        auto child = co_await conflux::fork("echo", child_args);
        co_await child.send(std::string("up?"));
        // It answers from its entry point: it found the entry, and renamed itself before.
        CHECK(co_await child.receive<std::string>() == std::string("echo: up?"));
        const int pid = child.pid();
        CHECK(conflux_test::process_cmdline(pid) ==
              std::vector<std::string>{self + ": fork echo", "--test-case=fork child entry"});
        CHECK(conflux_test::process_comm(pid) == self.substr(0, 15));
        child.disconnect();
        CHECK((co_await child.wait()).success());

        // A title of one's own replaces argv[0]; ps -o comm still shows the program.
        conflux::spawn_options titled{.argv0 = "resizer for queue 7"};
        auto other = co_await conflux::fork("echo", child_args, titled);
        co_await other.send(std::string("up?"));
        CHECK(co_await other.receive<std::string>() == std::string("echo: up?"));
        CHECK(conflux_test::process_cmdline(other.pid()).at(0) == "resizer for queue 7");
        CHECK(conflux_test::process_comm(other.pid()) == self.substr(0, 15));
        other.disconnect();
        CHECK((co_await other.wait()).success());
    }());
    // The name travels to the child only: this process keeps no trace of it.
    CHECK(std::getenv("CONFLUX_PROCESS_NAME") == nullptr);
}

// Run by the test below, in this program started again through a symlink and a relative
// path; a no-op in the ordinary run.
TEST_CASE("fork through a symlink (inner)") {
    if (std::getenv("CONFLUX_TEST_VIA_SYMLINK") == nullptr) return;
    conflux_test::watchdog dog(20s);
    conflux::run([]() -> task<void> {
        auto child = co_await conflux::fork("echo", child_args);
        co_await child.send(std::string("there?"));
        CHECK(co_await child.receive<std::string>() == std::string("echo: there?"));
        CHECK(conflux_test::process_cmdline(child.pid()).at(0) == "linked prog: fork echo");
        CHECK(conflux_test::process_comm(child.pid()) == "linked prog");
        child.disconnect();
        CHECK((co_await child.wait()).success());
    }());
}

TEST_CASE("a program started through a relative path and a symlink forks under that name") {
    conflux_test::watchdog dog(30s);
    const auto dir = std::filesystem::temp_directory_path() /
                     ("conflux-fork-link-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::filesystem::create_symlink(std::filesystem::read_symlink("/proc/self/exe"),
                                    dir / "linked prog");
    conflux::run([&]() -> task<void> {
        conflux::exec_options opts{
            .cwd = dir, .env_set = {{"CONFLUX_TEST_VIA_SYMLINK", "1"}}, .check = false};
        auto r = co_await conflux::exec_file("./linked prog",
                                             {"--test-case=fork through a symlink (inner)"}, opts);
        CAPTURE(r.out);
        CAPTURE(r.err);
        CHECK(r.status.success());
        CHECK(r.out.find("test cases: 1 | 1 passed") != std::string::npos);
    }());
    std::filesystem::remove_all(dir);
}
