// Acceptance test of the public API contract (DESIGN.md, "Public API contract"): every name
// and shape listed there, used as written, through the umbrella header alone, the way an
// outside program would. Each use runs and checks something observable. Deeper behaviour
// lives in the per-header tests; this file fails when a contract name or shape drifts.
//
// GCC 12 destroys an aggregate temporary written inside a co_await expression twice, so
// options below are always named variables.

#include <conflux/conflux.hpp>

#include <doctest/doctest.h>

#include <array>
#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include <signal.h>
#include <unistd.h>

using namespace std::chrono_literals;

namespace {

// Ends a hung test with SIGALRM instead of waiting for the ctest timeout.
struct alarm_guard {
    explicit alarm_guard(unsigned seconds) { ::alarm(seconds); }
    alarm_guard(const alarm_guard&) = delete;
    alarm_guard& operator=(const alarm_guard&) = delete;
    ~alarm_guard() { ::alarm(0); }
};

// The calling thread's id, read afresh after every co_await (clang may otherwise reuse a
// value computed before the coroutine moved to another thread).
[[gnu::noinline]] std::thread::id this_thread_id() {
    std::thread::id id = std::this_thread::get_id();
    asm volatile("" : : "r"(&id) : "memory");
    return id;
}

// A user type with its own codec<T> specialisation (like fmt's formatter<T>).
struct point {
    int x = 0;
    int y = 0;
};

} // namespace

template <>
struct conflux::codec<point> {
    static void encode(conflux::byte_writer& w, const point& p) {
        conflux::encode_value(w, p.x);
        conflux::encode_value(w, p.y);
    }
    static point decode(conflux::byte_reader& r) {
        const int x = conflux::decode_value<int>(r);
        const int y = conflux::decode_value<int>(r);
        return {x, y};
    }
};

namespace {

// The fork entry point: doubles each point it receives, and sends it back.
conflux::task<void> doubler() {
    while (auto p = co_await conflux::parent().receive<point>()) {
        co_await conflux::parent().send(point{p->x * 2, p->y * 2});
    }
}

[[maybe_unused]] const bool registered = conflux::register_entry("contract_doubler", doubler);

} // namespace

// ---- Core ---------------------------------------------------------------------------------

static_assert(std::is_same_v<conflux::task<>, conflux::task<void>>);
static_assert(!std::is_copy_constructible_v<conflux::task<int>>);
static_assert(std::is_move_constructible_v<conflux::task<int>>);
static_assert(conflux::executor<conflux::event_loop>);
static_assert(conflux::executor<conflux::thread_pool>);
static_assert(conflux::executor<conflux::any_executor>);
static_assert(!conflux::executor<int>);

TEST_CASE("contract: task<T> is lazy, run returns its value and rethrows its exception") {
    bool started = false;
    auto answer = [&]() -> conflux::task<int> {
        started = true;
        co_return 42;
    };
    conflux::task<int> t = answer();
    CHECK(!started); // lazy
    CHECK(conflux::run(std::move(t)) == 42);
    CHECK(started);

    auto nested = [&]() -> conflux::task<int> { co_return co_await answer() + 1; };
    CHECK(conflux::run(nested()) == 43);

    auto fails = []() -> conflux::task<> {
        throw std::runtime_error("boom");
        co_return;
    };
    CHECK_THROWS_WITH_AS(conflux::run(fails()), "boom", std::runtime_error);
}

TEST_CASE("contract: event_loop run/stop/post/schedule") {
    alarm_guard dog(10);
    conflux::event_loop loop;
    int ran = 0;
    loop.post([&] { ++ran; });
    loop.post([&] { loop.stop(); });
    loop.run();
    CHECK(ran == 1);

    // post from another thread, and stop() from another thread.
    std::thread poster([&] { loop.post([&] { ++ran; }); });
    poster.join();
    std::thread stopper([&] {
        std::this_thread::sleep_for(20ms);
        loop.stop();
    });
    loop.run();
    stopper.join();
    CHECK(ran == 2);

    // schedule(): a coroutine on a pool thread hops onto the loop's thread.
    conflux::thread_pool pool(1);
    const std::thread::id loop_thread = std::this_thread::get_id();
    std::thread::id seen;
    auto hop = [&]() -> conflux::task<> {
        co_await pool.schedule();
        CHECK(this_thread_id() != loop_thread);
        co_await loop.schedule();
        seen = this_thread_id();
        loop.stop();
    };
    loop.detach(hop());
    loop.run();
    CHECK(seen == loop_thread);
}

TEST_CASE("contract: thread_pool(2), schedule, post; any_executor erases both") {
    alarm_guard dog(10);
    conflux::thread_pool pool(2);
    CHECK(pool.size() == 2);

    std::atomic<int> posted{0};
    pool.post([&] { posted.fetch_add(1); });

    conflux::run([&]() -> conflux::task<> {
        const std::thread::id loop_thread = this_thread_id();
        co_await pool.schedule();
        CHECK(pool.running_in_this_thread());
        CHECK(this_thread_id() != loop_thread);

        // any_executor over the pool and over a loop, used through the concept's members.
        conflux::any_executor on_pool(pool);
        CHECK(on_pool.running_in_this_thread());
        std::atomic<bool> via_erased{false};
        on_pool.post([&] { via_erased = true; });
        while (!via_erased) std::this_thread::yield();
        co_await on_pool.schedule();
        CHECK(pool.running_in_this_thread());
    }());

    conflux::event_loop loop;
    conflux::any_executor on_loop(loop);
    CHECK(static_cast<bool>(on_loop));
    CHECK(!on_loop.running_in_this_thread());
    bool ran = false;
    on_loop.post([&] {
        ran = on_loop.running_in_this_thread();
        loop.stop();
    });
    loop.run();
    CHECK(ran);
    while (posted.load() == 0) std::this_thread::yield();
}

TEST_CASE("contract: sleep_for, when_all, when_any") {
    alarm_guard dog(10);
    conflux::run([]() -> conflux::task<> {
        const auto start = std::chrono::steady_clock::now();
        co_await conflux::sleep_for(20ms);
        CHECK(std::chrono::steady_clock::now() - start >= 20ms);

        auto value = [](int v, std::chrono::milliseconds delay) -> conflux::task<int> {
            co_await conflux::sleep_for(delay);
            co_return v;
        };
        auto [a, b] = co_await conflux::when_all(value(1, 10ms), value(2, 1ms));
        CHECK(a == 1);
        CHECK(b == 2);

        // The quick one wins; the slow one is cancelled through its stop token.
        auto r = co_await conflux::when_any(value(7, 5s), value(8, 1ms));
        CHECK(r.index() == 1);
        CHECK(std::get<1>(r) == 8);
        CHECK(std::chrono::steady_clock::now() - start < 4s);
    }());
}

// ---- Threads ------------------------------------------------------------------------------

TEST_CASE("contract: co_await spawn_thread(f, args...)") {
    alarm_guard dog(10);
    conflux::run([]() -> conflux::task<> {
        const std::thread::id caller = this_thread_id();
        std::thread::id ran_on;
        const int sum = co_await conflux::spawn_thread(
            [&ran_on](int a, int b) {
                ran_on = std::this_thread::get_id();
                return a + b;
            },
            40, 2);
        CHECK(sum == 42);
        CHECK(ran_on != caller);
        CHECK(this_thread_id() == caller); // resumed on its own executor

        // A coroutine f gets its own event_loop on the new thread (sleep_for needs one).
        const std::string s = co_await conflux::spawn_thread(
            [](std::string prefix) -> conflux::task<std::string> {
                co_await conflux::sleep_for(1ms);
                co_return prefix + "!";
            },
            std::string("hi"));
        CHECK(s == "hi!");

        // f's exception reaches the caller.
        bool caught = false;
        try {
            co_await conflux::spawn_thread([] { throw std::logic_error("from thread"); });
        } catch (const std::logic_error& e) {
            caught = std::string(e.what()) == "from thread";
        }
        CHECK(caught);
    }());
}

TEST_CASE("contract: worker with worker_data, typed ports, join() and terminate()") {
    alarm_guard dog(10);
    conflux::run([]() -> conflux::task<> {
        // worker_data: the second constructor argument, moved into the worker's body.
        std::string worker_data = "n=";
        conflux::worker<int, std::string> w(
            [](auto& parent, std::string prefix) -> conflux::task<> {
                while (auto n = co_await parent.receive()) parent.post(prefix + std::to_string(*n));
            },
            std::move(worker_data));
        CHECK(w.post(5));
        auto reply = co_await w.receive();
        REQUIRE(reply);
        CHECK(*reply == "n=5");
        w.port().close(); // the body's receive() ends, the body returns
        co_await w.join();
        CHECK(!w.running());

        // join() rethrows the body's exception.
        conflux::worker<int> failing([](auto&) -> conflux::task<> {
            throw std::runtime_error("worker failed");
            co_return;
        });
        bool rethrown = false;
        try {
            co_await failing.join();
        } catch (const std::runtime_error& e) {
            rethrown = std::string(e.what()) == "worker failed";
        }
        CHECK(rethrown);

        // terminate(): the body's pending await ends with operation_cancelled.
        conflux::worker<int> sleeper(
            [](auto&) -> conflux::task<> { co_await conflux::sleep_for(60s); });
        const auto start = std::chrono::steady_clock::now();
        co_await sleeper.terminate();
        CHECK(std::chrono::steady_clock::now() - start < 5s);
        CHECK(!sleeper.running());
    }());
}

// ---- Channels and buffers -----------------------------------------------------------------

TEST_CASE("contract: channel<T>(capacity) send/receive/try_send/try_receive/close") {
    alarm_guard dog(10);
    conflux::channel<int> ch(2);
    CHECK(ch.try_send(1));
    CHECK(ch.try_send(2));
    CHECK(!ch.try_send(3)); // full
    CHECK(ch.try_receive() == 1);

    conflux::run([&]() -> conflux::task<> {
        co_await ch.send(3);
        std::optional<int> v = co_await ch.receive();
        CHECK(v == 2);

        // Round trip with a thread that uses the channel too (thread-safe).
        conflux::channel<int> reply(0);
        std::thread peer([&] {
            while (auto n = ch.blocking_receive()) reply.blocking_send(*n * 10);
            reply.close();
        });
        co_await ch.send(4);
        std::optional<int> r3 = co_await reply.receive();
        std::optional<int> r4 = co_await reply.receive();
        CHECK(r3 == 30);
        CHECK(r4 == 40);
        ch.close();
        CHECK(!(co_await reply.receive())); // closed and drained: nullopt
        peer.join();

        CHECK(!(co_await ch.receive()));
        CHECK_THROWS_AS(ch.try_send(5), conflux::channel_closed);
        bool closed = false;
        try {
            co_await ch.send(6);
        } catch (const conflux::channel_closed&) {
            closed = true;
        }
        CHECK(closed);
        ch.close(); // double close is a no-op
    }());
}

TEST_CASE("contract: buffer(n) bytes() size() detached(); a moved-from buffer is detached") {
    conflux::buffer b(64);
    CHECK(b.size() == 64);
    CHECK(!b.detached());
    std::span<std::byte> bytes = b.bytes();
    CHECK(bytes.size() == 64);
    bytes[0] = std::byte{0x2a};
    const std::byte* memory = bytes.data();

    conflux::channel<conflux::buffer> ch(1);
    CHECK(ch.try_send(std::move(b)));
    CHECK(b.detached()); // NOLINT(bugprone-use-after-move): the contract under test
    CHECK(b.size() == 0);
    CHECK(b.bytes().empty());

    std::optional<conflux::buffer> got = ch.try_receive();
    REQUIRE(got);
    CHECK(got->size() == 64);
    CHECK(got->bytes().data() == memory); // the same memory, no copy
    CHECK(got->bytes()[0] == std::byte{0x2a});
}

TEST_CASE("contract: shared_buffer(n), bytes(), view<T>() and every atomic_view operation") {
    alarm_guard dog(10);
    conflux::shared_buffer memory(64);
    CHECK(memory.bytes().size() == 64);
    conflux::shared_buffer copy = memory; // copies share the memory
    copy.bytes()[0] = std::byte{1};
    CHECK(memory.bytes()[0] == std::byte{1});

    conflux::atomic_view<std::int32_t> v = memory.view<std::int32_t>();
    CHECK(v.size() == 16);
    CHECK(v.store(1, 5) == 5);
    CHECK(v.load(1) == 5);
    CHECK(v.add(1, 3) == 5);
    CHECK(v.sub(1, 1) == 8);
    CHECK(v.bit_and(1, 0b0110) == 7);
    CHECK(v.bit_or(1, 0b1000) == 0b0110);
    CHECK(v.bit_xor(1, 0b0011) == 0b1110);
    CHECK(v.exchange(1, 100) == 0b1101);
    CHECK(v.compare_exchange(1, 100, 200) == 100); // old value, as Atomics returns
    CHECK(v.compare_exchange(1, 100, 300) == 200); // failed: still the old value
    CHECK(v.load(1) == 200);
    CHECK_THROWS_AS(v.load(16), std::out_of_range);

    CHECK(v.wait(1, 0) == conflux::wait_result::not_equal);
    CHECK(v.wait(1, 200, 1ms) == conflux::wait_result::timed_out);
    CHECK(v.notify(1) == 0); // no waiters

    // wait / notify between two threads.
    std::thread waiter([&] {
        while (v.load(2) == 0) v.wait(2, 0);
    });
    std::this_thread::sleep_for(10ms);
    v.store(2, 1);
    v.notify(2);
    waiter.join();

    // co_await wait_async(i, expected): the loop keeps running while it waits.
    conflux::run([&]() -> conflux::task<> {
        auto notifier = [&]() -> conflux::task<int> {
            co_await conflux::sleep_for(5ms);
            v.store(3, 1);
            co_return static_cast<int>(v.notify(3));
        };
        auto waiting = [&]() -> conflux::task<conflux::wait_result> {
            co_return co_await v.wait_async(3, 0);
        };
        auto [result, woken] = co_await conflux::when_all(waiting(), notifier());
        CHECK(result == conflux::wait_result::ok);
        CHECK(woken == 1);
    }());
}

// ---- Processes ----------------------------------------------------------------------------

TEST_CASE("contract: exec and exec_file, exec_result, process_error, .check = false") {
    alarm_guard dog(20);
    conflux::run([]() -> conflux::task<> {
        conflux::exec_result r = co_await conflux::exec("echo hello; echo oops >&2");
        CHECK(r.out == "hello\n");
        CHECK(r.err == "oops\n");
        CHECK(r.status.success());
        CHECK(r.status.code() == 0);
        CHECK(!r.status.signal());

        conflux::exec_result f = co_await conflux::exec_file("/bin/echo", {"a; b", "$(id)"});
        CHECK(f.out == "a; b $(id)\n"); // no shell: arguments arrive verbatim

        std::vector<std::string> args{"x", "y"};
        conflux::exec_result g = co_await conflux::exec_file("/bin/echo", args);
        CHECK(g.out == "x y\n");

        // Standard vocabulary: a std::filesystem::path program, any range of strings as argv.
        const std::filesystem::path echo = "/bin/echo";
        const std::vector<std::string_view> views{"p", "q"};
        conflux::exec_result h = co_await conflux::exec_file(echo, views);
        CHECK(h.out == "p q\n");
        conflux::exec_options plain;
        CHECK((co_await conflux::exec_file(echo, {"r"}, plain)).out == "r\n");
        conflux::child_process by_path = conflux::spawn(echo, std::array{"s", "t"});
        CHECK(co_await by_path.out().read_all() == "s t\n");
        CHECK((co_await by_path.wait()).success());

        bool thrown = false;
        try {
            co_await conflux::exec("echo partial; exit 3");
        } catch (const conflux::process_error& e) {
            thrown = true;
            CHECK(e.result().out == "partial\n");
            CHECK(e.status().code() == 3);
        }
        CHECK(thrown);

        conflux::exec_options unchecked{.check = false};
        conflux::exec_result u = co_await conflux::exec("exit 3", unchecked);
        CHECK(u.status.code() == 3);
        CHECK(!u.status.success());

        conflux::exec_result built{.out = "o", .err = "e", .status = {}};
        CHECK(built.out == "o");
        CHECK(!built.status.success());
    }());
}

TEST_CASE("contract: exec options .cwd .env .timeout .kill_signal .max_buffer .stdio "
          ".detached .input") {
    alarm_guard dog(20);
    conflux::run([]() -> conflux::task<> {
        conflux::exec_options in_tmp{.cwd = "/tmp"};
        CHECK((co_await conflux::exec("pwd", in_tmp)).out == "/tmp\n");

        conflux::exec_options only_a{.env = conflux::env_vars{{"A", "1"}}};
        CHECK((co_await conflux::exec_file("/usr/bin/env", {}, only_a)).out == "A=1\n");

        conflux::exec_options fed{.input = "fed through stdin"};
        CHECK((co_await conflux::exec_file("/bin/cat", {}, fed)).out == "fed through stdin");

        conflux::exec_options merged{.stdio = {conflux::stdio_spec::ignore(),
                                               conflux::stdio_spec::pipe(),
                                               conflux::stdio_spec::same_as(1)}};
        CHECK((co_await conflux::exec("echo out; echo err >&2", merged)).out == "out\nerr\n");

        // .detached: a session of its own, so the shell's session id is its pid.
        const std::string own_sid = "[ \"$(cut -d' ' -f6 /proc/$$/stat)\" = \"$$\" ]";
        conflux::exec_options own_session{.detached = true, .check = false};
        CHECK((co_await conflux::exec(own_sid, own_session)).status.success());
        conflux::exec_options same_session{.check = false};
        CHECK(!(co_await conflux::exec(own_sid, same_session)).status.success());

        conflux::exec_options limited{.timeout = 100ms, .kill_signal = SIGKILL};
        const auto start = std::chrono::steady_clock::now();
        bool timed_out = false;
        try {
            co_await conflux::exec_file("/bin/sleep", {"10"}, limited);
        } catch (const conflux::process_error& e) {
            timed_out = e.timed_out() && e.status().signal() == SIGKILL;
        }
        CHECK(timed_out);
        CHECK(std::chrono::steady_clock::now() - start < 5s);

        conflux::exec_options small{.max_buffer = 10};
        bool overflow = false;
        try {
            co_await conflux::exec("head -c 1000 /dev/zero", small);
        } catch (const conflux::process_error& e) {
            overflow = e.buffer_overflow() && e.result().out.size() == 10;
        }
        CHECK(overflow);
    }());
}

TEST_CASE("contract: spawn(path, args, options) -> child_process pid in out err wait kill") {
    alarm_guard dog(20);
    conflux::run([]() -> conflux::task<> {
        conflux::child_process cat = conflux::spawn("/bin/cat", {"-"});
        CHECK(cat.pid() > 0);
        co_await cat.in().write_all("ping");
        cat.in().close();
        CHECK(co_await cat.out().read_all() == "ping");
        CHECK(co_await cat.err().read_all() == "");
        conflux::exit_status st = co_await cat.wait();
        CHECK(st.success());
        CHECK(st.code() == 0);

        conflux::child_process sleeper = conflux::spawn("/bin/sleep", {"10"});
        CHECK(sleeper.kill()); // SIGTERM by default
        conflux::exit_status killed = co_await sleeper.wait();
        CHECK(!killed.success());
        CHECK(!killed.code());
        CHECK(killed.signal() == SIGTERM);

        conflux::child_process hard = conflux::spawn("/bin/sleep", {"10"});
        CHECK(hard.kill(SIGKILL));
        CHECK((co_await hard.wait()).signal() == SIGKILL);

        // spawn_options shares the option fields with exec_options.
        conflux::spawn_options opts{.cwd = "/",
                                    .env = conflux::env_vars{{"B", "2"}},
                                    .stdio = {conflux::stdio_spec::ignore(),
                                              conflux::stdio_spec::pipe(),
                                              conflux::stdio_spec::same_as(1)},
                                    .detached = true,
                                    .timeout = 5s,
                                    .kill_signal = SIGKILL};
        conflux::child_process sh =
            conflux::spawn("/bin/sh", {"-c", "pwd; echo \"$B\" >&2; exit 7"}, opts);
        CHECK(::getsid(sh.pid()) == sh.pid());
        CHECK(co_await sh.out().read_all() == "/\n2\n");
        CHECK((co_await sh.wait()).code() == 7);
    }());
}

// ---- Fork and IPC -------------------------------------------------------------------------

// In a child started by the fork test below, `conflux::run` here runs the entry point instead.
TEST_CASE("contract: fork child entry") {
    CHECK(conflux::run([]() -> conflux::task<int> { co_return 1; }()) == 1);
}

TEST_CASE("contract: co_await fork(...), parent() in the child, codec<T> for a user type") {
    alarm_guard dog(20);
    const std::vector<std::byte> encoded = conflux::encode(point{3, 4});
    const point decoded = conflux::decode<point>(encoded);
    CHECK(decoded.x == 3);
    CHECK(decoded.y == 4);

    conflux::run([]() -> conflux::task<> {
        auto child =
            co_await conflux::fork("contract_doubler", {"--test-case=contract: fork child entry"});
        co_await child.send(point{5, -6});
        std::optional<point> back = co_await child.receive<point>();
        REQUIRE(back);
        CHECK(back->x == 10);
        CHECK(back->y == -12);
        child.disconnect();
        CHECK((co_await child.wait()).success());
    }());
}

// ---- Cluster ------------------------------------------------------------------------------

// In a worker of the cluster test below: listen through the cluster and greet each client.
TEST_CASE("contract: cluster worker role") {
    if (!conflux::cluster::is_worker()) return;
    conflux::run([]() -> conflux::task<> {
        conflux::cluster_listener listener = co_await conflux::cluster::listen("127.0.0.1", 0);
        co_await listener.serve([](conflux::tcp_stream s) -> conflux::task<> {
            co_await s.write_all("hello from " + std::to_string(conflux::cluster::worker_id()) +
                                 "\n");
        });
    }());
}

TEST_CASE("contract: cluster forks workers that share a listening socket") {
    alarm_guard dog(30);
    CHECK(conflux::cluster::is_primary());
    conflux::run([]() -> conflux::task<> {
        conflux::cluster_options options{
            .workers = 2,
            .policy = conflux::scheduling::round_robin,
            .args = std::vector<std::string>{"--test-case=contract: cluster worker role"},
            .handle_signals = false};
        conflux::cluster c(options);
        c.start();
        CHECK(c.size() == 2);
        unsigned listening = 0;
        std::string address;
        while (listening < 2) {
            auto e = co_await c.next_event();
            REQUIRE(e);
            if (e->what == conflux::worker_event::kind::listening) {
                ++listening;
                address = e->address;
            }
        }
        const auto port =
            static_cast<std::uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
        conflux::tcp_stream s = co_await conflux::connect("127.0.0.1", port);
        std::optional<std::string> line = co_await s.read_line();
        REQUIRE(line);
        CHECK(line->rfind("hello from ", 0) == 0);

        c.shutdown();
        unsigned exits = 0;
        while (auto e = co_await c.next_event()) {
            if (e->what == conflux::worker_event::kind::exit) ++exits;
        }
        CHECK(exits == 2);
    }());
}
