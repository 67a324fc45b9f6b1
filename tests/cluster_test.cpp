#include <conflux/cluster.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/when_all.hpp>
#include <conflux/when_any.hpp>

#include <conflux/detail/cluster_protocol.hpp>

#include <doctest/doctest.h>

#include "support/test_support.hpp"

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <system_error>
#include <variant>
#include <vector>

#include <signal.h>
#include <unistd.h>

using namespace std::chrono_literals;
using conflux::cluster;
using conflux::scheduling;
using conflux::task;
using conflux::worker_event;
using kind = conflux::worker_event::kind;

namespace {

std::string worker_program() {
    return (conflux_test::helper_dir() / "conflux_cluster_worker").string();
}

conflux::cluster_options serving(unsigned workers, scheduling policy, std::uint16_t port = 0) {
    return {.workers = workers,
            .policy = policy,
            .program = worker_program(),
            .args = std::vector<std::string>{"serve", "127.0.0.1", std::to_string(port)},
            .restart = {.initial_delay = 20ms},
            .disconnect_timeout = 5s,
            .handle_signals = false};
}

// The next event, failing the test after a generous timeout instead of hanging.
task<std::optional<worker_event>> next(cluster& c, std::chrono::seconds timeout = 20s) {
    auto r = co_await conflux::when_any(c.next_event(), conflux::sleep_for(timeout));
    if (r.index() == 1) {
        FAIL("no cluster event within the timeout");
        co_return std::nullopt;
    }
    co_return std::move(std::get<0>(r));
}

// Waits for an event matching `pred`, returning it; the events passed over go to `seen`.
task<worker_event> wait_for(cluster& c, std::function<bool(const worker_event&)> pred,
                            std::vector<worker_event>* seen = nullptr) {
    for (;;) {
        auto e = co_await next(c);
        REQUIRE(e);
        if (pred(*e)) co_return std::move(*e);
        if (seen != nullptr) seen->push_back(std::move(*e));
    }
}

std::uint16_t port_of(const std::string& address) {
    return static_cast<std::uint16_t>(std::stoi(address.substr(address.rfind(':') + 1)));
}

// Waits until `n` workers listen; returns the port.
task<std::uint16_t> all_listening(cluster& c, unsigned n) {
    std::uint16_t port = 0;
    for (unsigned i = 0; i < n; ++i) {
        auto e =
            co_await wait_for(c, [](const worker_event& e) { return e.what == kind::listening; });
        port = port_of(e.address);
    }
    co_return port;
}

// One request on a fresh connection: which worker ("<id> <pid>") answered.
task<std::string> ask(std::uint16_t port) {
    auto s = co_await conflux::connect("127.0.0.1", port);
    co_await s.write_all("who\n");
    auto line = co_await s.read_line();
    co_return line.value_or("");
}

// Drains events until the cluster reports it has shut down; returns the exit events.
task<std::vector<worker_event>> drain(cluster& c) {
    std::vector<worker_event> exits;
    while (auto e = co_await next(c)) {
        if (e->what == kind::exit) exits.push_back(std::move(*e));
    }
    co_return exits;
}

} // namespace

// The worker role of this test program itself (a cluster re-running it with no `program`
// runs only this test case); a no-op in the ordinary run.
TEST_CASE("cluster worker role (run by the tests below)") {
    if (!cluster::is_worker()) return;
    conflux::run([]() -> task<void> {
        while (auto m = co_await cluster::receive<std::string>()) {
            co_await cluster::send_to_primary("echo: " + *m);
        }
    }());
}

TEST_CASE("every scheduling mode spreads connections over more than one worker") {
    for (auto policy : {scheduling::round_robin, scheduling::shared, scheduling::reuse_port}) {
        CAPTURE(static_cast<int>(policy));
        conflux_test::watchdog dog(30s);
        conflux::run([policy]() -> task<void> {
            cluster c(serving(3, policy));
            c.start();
            const std::uint16_t port = co_await all_listening(c, 3);
            CHECK(port != 0);
            std::set<std::string> workers;
            auto client = [&]() -> task<void> {
                for (int i = 0; i < 15; ++i) {
                    const std::string who = co_await ask(port);
                    CHECK(!who.empty());
                    workers.insert(who.substr(0, who.find(' ')));
                }
            };
            co_await conflux::when_all(client(), client(), client(), client());
            MESSAGE("workers that answered: " << workers.size());
            CHECK(workers.size() > 1);
            c.shutdown();
            auto exits = co_await drain(c);
            CHECK(exits.size() == 3);
            for (auto& e : exits) CHECK(e.status.code() == std::optional<int>(0));
        }());
    }
    CHECK(conflux_test::zombie_children().empty());
}

TEST_CASE(
    "a port in use: the worker gets an error naming the port; a restart after release works") {
    conflux_test::watchdog dog(30s);
    conflux::run([]() -> task<void> {
        auto taken = conflux::tcp_listener::bind("127.0.0.1", 0);
        const std::uint16_t port = taken.local_endpoint().port();
        cluster c(serving(1, scheduling::round_robin, port));
        c.start();
        auto failure =
            co_await wait_for(c, [](const worker_event& e) { return e.what == kind::message; });
        const std::string what = failure.message<std::string>();
        MESSAGE(what);
        CHECK(what.find("127.0.0.1:" + std::to_string(port)) != std::string::npos);
        CHECK(what.find("Address already in use") != std::string::npos);
        auto exit =
            co_await wait_for(c, [](const worker_event& e) { return e.what == kind::exit; });
        CHECK(exit.status.code() == std::optional<int>(2));
        // Crash loops are visible: a restart event with its delay and count.
        auto restart =
            co_await wait_for(c, [](const worker_event& e) { return e.what == kind::restart; });
        CHECK(restart.failures >= 1);
        // Release the port: a later restart listens.
        taken.close();
        auto listening =
            co_await wait_for(c, [](const worker_event& e) { return e.what == kind::listening; });
        CHECK(port_of(listening.address) == port);
        CHECK(!(co_await ask(port)).empty());
        c.shutdown();
        co_await drain(c);
    }());
}

TEST_CASE(
    "SIGKILL one of 4 workers under load: the others keep serving, it is restarted, no fd leak") {
    conflux_test::watchdog dog(60s);
    conflux::run([]() -> task<void> {
        cluster c(serving(4, scheduling::round_robin));
        c.start();
        const std::uint16_t port = co_await all_listening(c, 4);
        for (int i = 0; i < 8; ++i) (void)co_await ask(port); // warm every path up
        const auto fds_before = conflux_test::open_fds().size();
        const int victim = c.pid(2);
        REQUIRE(victim > 0);

        int ok = 0;
        int failed = 0;
        bool stop = false;
        auto load = [&]() -> task<void> {
            while (!stop) {
                try {
                    if (!(co_await ask(port)).empty())
                        ++ok;
                    else
                        ++failed;
                } catch (const std::system_error&) {
                    ++failed; // a connection handed to the worker as it died
                }
            }
        };
        auto killer = [&]() -> task<void> {
            while (ok < 100) co_await conflux::sleep_for(5ms);
            ::kill(victim, SIGKILL);
            auto exit =
                co_await wait_for(c, [](const worker_event& e) { return e.what == kind::exit; });
            CHECK(exit.worker == 2);
            CHECK(exit.pid == victim);
            CHECK(exit.status.signal() == std::optional<int>(SIGKILL));
            const int at_death = ok;
            auto back = co_await wait_for(
                c, [](const worker_event& e) { return e.what == kind::listening; });
            CHECK(back.worker == 2);
            CHECK(back.pid != victim);
            CHECK(c.pid(2) == back.pid);
            while (ok < at_death + 200) co_await conflux::sleep_for(5ms);
            stop = true;
        };
        co_await conflux::when_all(load(), load(), load(), load(), killer());
        MESSAGE("requests served: " << ok << ", failed around the kill: " << failed);
        CHECK(failed < 20);
        // The restarted worker serves too.
        std::set<std::string> pids;
        for (int i = 0; i < 16; ++i) {
            const std::string who = co_await ask(port);
            pids.insert(who.substr(who.find(' ') + 1));
        }
        CHECK(pids.size() == 4);
        CHECK(conflux_test::open_fds().size() == fds_before);
        c.shutdown();
        co_await drain(c);
    }());
    CHECK(conflux_test::zombie_children().empty());
}

TEST_CASE("disconnect with an open connection: it is finished, then the worker exits; forced after "
          "the deadline") {
    for (auto policy : {scheduling::round_robin, scheduling::shared, scheduling::reuse_port}) {
        CAPTURE(static_cast<int>(policy));
        conflux_test::watchdog dog(60s);
        conflux::run([policy]() -> task<void> {
            auto options = serving(2, policy);
            options.disconnect_timeout = 500ms;
            cluster c(options);
            c.start();
            const std::uint16_t port = co_await all_listening(c, 2);
            auto held = co_await conflux::connect("127.0.0.1", port);
            co_await held.write_all("who\n");
            const std::string who = (co_await held.read_line()).value_or("");
            REQUIRE(!who.empty());
            const unsigned x = static_cast<unsigned>(std::stoul(who));
            const unsigned y = x == 1 ? 2 : 1;
            c.disconnect(x);
            auto d = co_await wait_for(
                c, [](const worker_event& e) { return e.what == kind::disconnect; });
            CHECK(d.worker == x);
            // The open connection is still served by x.
            co_await held.write_all("again\n");
            CHECK((co_await held.read_line()).value_or("") == who);
            if (policy == scheduling::round_robin) {
                // The primary deals the connections, so from the disconnect event on, new ones
                // go to y only. (With shared and reuse_port, x accepts by itself until its
                // disconnect message arrives, a moment the primary does not report.)
                for (int i = 0; i < 6; ++i) {
                    CHECK(std::stoul(co_await ask(port)) == y);
                }
            }
            // Closing it lets x finish and exit cleanly; it is not restarted.
            held.close();
            auto exit =
                co_await wait_for(c, [](const worker_event& e) { return e.what == kind::exit; });
            CHECK(exit.worker == x);
            CHECK(exit.status.code() == std::optional<int>(0));
            CHECK(c.pid(x) == 0);
            // Whatever the policy, with x gone every new connection is y's.
            for (int i = 0; i < 6; ++i) {
                CHECK(std::stoul(co_await ask(port)) == y);
            }

            // y with a connection that never closes is killed after the deadline.
            auto stuck = co_await conflux::connect("127.0.0.1", port);
            co_await stuck.write_all("who\n");
            CHECK(std::stoul((co_await stuck.read_line()).value_or("0")) == y);
            c.disconnect(y);
            auto forced =
                co_await wait_for(c, [](const worker_event& e) { return e.what == kind::exit; });
            CHECK(forced.worker == y);
            CHECK(forced.status.signal() == std::optional<int>(SIGKILL));
            c.shutdown();
            co_await drain(c);
        }());
    }
    CHECK(conflux_test::zombie_children().empty());
}

TEST_CASE("concurrent disconnects: each worker is disconnected once and exits cleanly (R59)") {
    conflux_test::watchdog dog(30s);
    conflux::run([]() -> task<void> {
        cluster c(serving(2, scheduling::round_robin));
        c.start();
        const std::uint16_t port = co_await all_listening(c, 2);
        CHECK(!(co_await ask(port)).empty());
        // Every way of asking at once: twice for one worker, once for the other, then the
        // whole cluster, all before any of them can act.
        c.disconnect(1);
        c.disconnect(2);
        c.disconnect(1);
        c.shutdown();
        c.shutdown();
        std::map<unsigned, int> disconnects;
        std::map<unsigned, int> exits;
        int restarts = 0;
        while (auto e = co_await next(c)) {
            if (e->what == kind::disconnect) ++disconnects[e->worker];
            if (e->what == kind::restart) ++restarts;
            if (e->what == kind::exit) {
                ++exits[e->worker];
                CHECK(e->status.code() == std::optional<int>(0));
            }
        }
        CHECK(disconnects == std::map<unsigned, int>{{1, 1}, {2, 1}});
        CHECK(exits == std::map<unsigned, int>{{1, 1}, {2, 1}});
        CHECK(restarts == 0);
        CHECK(c.pid(1) == 0);
        CHECK(c.pid(2) == 0);
    }());
    CHECK(conflux_test::zombie_children().empty());
}

TEST_CASE("dropping the cluster forces its workers out (R59)") {
    conflux_test::watchdog dog(30s);
    std::vector<int> pids;
    conflux::run([&]() -> task<void> {
        {
            cluster c(serving(2, scheduling::shared));
            c.start();
            (void)co_await all_listening(c, 2);
            pids = {c.pid(1), c.pid(2)};
        } // dropped while both workers serve, without shutdown()
        // Gone (killed and reaped) while this loop still runs: not merely when the loop's
        // destruction drops the child handles.
        auto gone = [&] {
            return std::all_of(pids.begin(), pids.end(), [](int p) { return ::kill(p, 0) == -1; });
        };
        for (int i = 0; i < 500 && !gone(); ++i) co_await conflux::sleep_for(10ms);
        CHECK(gone());
    }());
    REQUIRE(pids.size() == 2);
    CHECK(pids[0] > 0);
    CHECK(pids[1] > 0);
    CHECK(conflux_test::zombie_children().empty());
}

TEST_CASE("a connection handler that throws ends its connection and is an error event") {
    conflux_test::watchdog dog(30s);
    conflux::run([]() -> task<void> {
        auto options = serving(1, scheduling::round_robin);
        options.args = std::vector<std::string>{"fail", "127.0.0.1", "0"};
        cluster c(options);
        c.start();
        const std::uint16_t port = co_await all_listening(c, 1);
        for (int i = 0; i < 2; ++i) {
            auto s = co_await conflux::connect("127.0.0.1", port);
            co_await s.write_all("who\n");
            CHECK(!(co_await s.read_line())); // the handler threw: the connection ends
            auto e =
                co_await wait_for(c, [](const worker_event& e) { return e.what == kind::error; });
            CHECK(e.worker == 1);
            CHECK(e.pid == c.pid(1));
            CHECK(e.address == "connection handler: handler failed on purpose");
        }
        // The worker survived both and still drains cleanly.
        c.shutdown();
        auto exits = co_await drain(c);
        REQUIRE(exits.size() == 1);
        CHECK(exits[0].status.code() == std::optional<int>(0));
    }());
    CHECK(conflux_test::zombie_children().empty());
}

TEST_CASE("serve's drain: the last handler to end resumes the waiter; a cancelled waiter is "
          "left alone") {
    conflux_test::watchdog dog(10s);
    conflux::run([]() -> task<void> {
        conflux::event_loop& loop = *conflux::event_loop::current();
        conflux::detail::cluster_drain drain;
        co_await drain.drained(loop, {}); // nothing running: no suspension
        drain.begin();
        drain.begin();
        bool resumed = false;
        auto waiter = [&]() -> task<void> {
            co_await drain.drained(loop, {});
            resumed = true;
        };
        auto ender = [&]() -> task<void> {
            co_await conflux::sleep_for(10ms);
            drain.end();
            co_await conflux::sleep_for(10ms);
            CHECK(!resumed); // one handler still runs
            drain.end();
        };
        co_await conflux::when_all(waiter(), ender());
        CHECK(resumed);

        // Cancelled while handlers run: operation_cancelled; the later end() finds no waiter.
        drain.begin();
        std::stop_source stop;
        auto cancel = [&]() -> task<void> {
            co_await conflux::sleep_for(10ms);
            stop.request_stop();
        };
        bool cancelled = false;
        auto cancelled_waiter = [&]() -> task<void> {
            try {
                co_await drain.drained(loop, stop.get_token());
            } catch (const conflux::operation_cancelled&) {
                cancelled = true;
            }
        };
        co_await conflux::when_all(cancelled_waiter(), cancel());
        CHECK(cancelled);
        drain.end();
        co_await drain.drained(loop, {});
    }());
}

TEST_CASE("typed messages both ways") {
    conflux_test::watchdog dog(20s);
    conflux::run([]() -> task<void> {
        cluster c({.workers = 2,
                   .program = worker_program(),
                   .args = std::vector<std::string>{"echo"},
                   .handle_signals = false});
        c.start();
        for (int i = 0; i < 2; ++i) {
            (void)co_await wait_for(c,
                                    [](const worker_event& e) { return e.what == kind::online; });
        }
        co_await c.send(2, std::string("hello two"));
        co_await c.send(1, std::string("hello one"));
        std::map<unsigned, std::string> got;
        while (got.size() < 2) {
            auto e =
                co_await wait_for(c, [](const worker_event& e) { return e.what == kind::message; });
            got[e.worker] = e.message<std::string>();
            // Typed: another type is refused by the message's fingerprint, naming both.
            CHECK_THROWS_AS(e.message<int>(), conflux::ipc_type_mismatch);
            auto either = e.message_one_of<int, std::string>();
            CHECK(std::get<std::string>(either) == got[e.worker]);
        }
        CHECK(got[1] == "echo: hello one");
        CHECK(got[2] == "echo: hello two");
        c.shutdown();
        co_await drain(c);
    }());
}

TEST_CASE("a crash loop is visible and bounded: growing delays, then gave_up") {
    conflux_test::watchdog dog(20s);
    conflux::run([]() -> task<void> {
        cluster c({.workers = 1,
                   .program = worker_program(),
                   .args = std::vector<std::string>{"crash", "3"},
                   .restart = {.initial_delay = 10ms, .max_consecutive_failures = 3},
                   .handle_signals = false});
        c.start();
        std::vector<std::chrono::milliseconds> delays;
        int exits = 0;
        for (;;) {
            auto e = co_await next(c);
            REQUIRE(e);
            if (e->what == kind::exit) {
                ++exits;
                CHECK(e->status.code() == std::optional<int>(3));
            }
            if (e->what == kind::restart) delays.push_back(e->delay);
            if (e->what == kind::gave_up) {
                CHECK(e->failures == 4);
                break;
            }
        }
        CHECK(exits == 4);
        CHECK(delays == std::vector<std::chrono::milliseconds>{10ms, 20ms, 40ms});
        c.shutdown();
        co_await drain(c);
    }());
}

TEST_CASE("the restart back-off doubles up to max_delay and stays there") {
    conflux_test::watchdog dog(20s);
    conflux::run([]() -> task<void> {
        cluster c(
            {.workers = 1,
             .program = worker_program(),
             .args = std::vector<std::string>{"crash", "3"},
             .restart = {.initial_delay = 10ms, .max_delay = 35ms, .max_consecutive_failures = 6},
             .handle_signals = false});
        const auto start = std::chrono::steady_clock::now();
        c.start();
        std::vector<std::chrono::milliseconds> delays;
        for (;;) {
            auto e = co_await next(c);
            REQUIRE(e);
            if (e->what == kind::restart) delays.push_back(e->delay);
            if (e->what == kind::gave_up) break;
        }
        const auto took = std::chrono::steady_clock::now() - start;
        // 10, 20, then 40 and on capped to 35 (uncapped: 40, 80, 160, 320).
        CHECK(delays == std::vector<std::chrono::milliseconds>{10ms, 20ms, 35ms, 35ms, 35ms, 35ms});
        // The delays reported are the ones slept: every restart waited its delay out (timers
        // never fire early), so the crash loop cannot have ended sooner than their sum.
        std::chrono::milliseconds total{0};
        for (auto d : delays) total += d;
        CHECK(took >= total);
        c.shutdown();
        co_await drain(c);
    }());
}

TEST_CASE("SIGTERM or SIGINT to the primary drains the workers and ends the cluster") {
    for (const int signal_number : {SIGTERM, SIGINT}) {
        CAPTURE(signal_number);
        conflux_test::watchdog dog(30s);
        conflux::run([signal_number]() -> task<void> {
            auto options = serving(2, scheduling::shared);
            options.handle_signals = true;
            cluster c(options);
            c.start();
            (void)co_await all_listening(c, 2);
            ::kill(::getpid(), signal_number);
            auto s =
                co_await wait_for(c, [](const worker_event& e) { return e.what == kind::signal; });
            CHECK(s.signal_number == signal_number);
            auto exits = co_await drain(c);
            CHECK(exits.size() == 2);
            for (auto& e : exits) CHECK(e.status.code() == std::optional<int>(0));
        }());
        CHECK(conflux_test::zombie_children().empty());
    }
}

namespace {

// The pids and /proc views of `workers` workers, once each has answered a message.
task<void> check_titles(cluster& c, unsigned workers, const std::string& title,
                        const std::vector<std::string>& args, const std::string& comm) {
    for (unsigned id = 1; id <= workers; ++id) {
        (void)co_await wait_for(c, [](const worker_event& e) { return e.what == kind::online; });
    }
    for (unsigned id = 1; id <= workers; ++id) {
        co_await c.send(id, std::string("up?"));
        auto e =
            co_await wait_for(c, [](const worker_event& e) { return e.what == kind::message; });
        CHECK(e.message<std::string>() == "echo: up?");
    }
    for (unsigned id = 1; id <= workers; ++id) {
        CAPTURE(id);
        std::vector<std::string> expected{title + " " + std::to_string(id)};
        expected.insert(expected.end(), args.begin(), args.end());
        CHECK(conflux_test::process_cmdline(c.pid(id)) == expected);
        CHECK(conflux_test::process_comm(c.pid(id)) == comm.substr(0, 15));
    }
}

} // namespace

TEST_CASE("ps shows a worker as the program's name and its id") {
    conflux_test::watchdog dog(30s);
    const std::string self =
        std::filesystem::path(conflux_test::process_cmdline(::getpid()).at(0)).filename().string();
    conflux::run([&]() -> task<void> {
        // This program again, through /proc/self/exe: the kernel alone would call it "exe".
        const std::vector<std::string> args{
            "--test-case=cluster worker role (run by the tests below)"};
        cluster c({.workers = 2, .args = args, .handle_signals = false});
        c.start();
        co_await check_titles(c, 2, self + ": worker", args, self);
        c.shutdown();
        co_await drain(c);

        // Another program: named after it.
        const std::vector<std::string> echo{"echo"};
        const std::string helper = "conflux_cluster_worker";
        cluster other(
            {.workers = 1, .program = worker_program(), .args = echo, .handle_signals = false});
        other.start();
        co_await check_titles(other, 1, helper + ": worker", echo, helper);
        other.shutdown();
        co_await drain(other);

        // A title of one's own; the name stays the program's.
        cluster titled({.workers = 1,
                        .args = args,
                        .handle_signals = false,
                        .title = std::string("my-api: worker")});
        titled.start();
        const std::string title = "my-api: worker";
        co_await check_titles(titled, 1, title, args, self);
        titled.shutdown();
        co_await drain(titled);
    }());
    CHECK(std::getenv("CONFLUX_PROCESS_NAME") == nullptr);
}

TEST_CASE("a worker that breaks the protocol is an error event, and its link is closed") {
    conflux_test::watchdog dog(20s);
    conflux::run([]() -> task<void> {
        cluster c({.workers = 1,
                   .program = worker_program(),
                   .args = std::vector<std::string>{"bogus"},
                   .restart = {.enabled = false},
                   .handle_signals = false});
        c.start();
        auto error =
            co_await wait_for(c, [](const worker_event& e) { return e.what == kind::error; });
        CHECK(error.worker == 1);
        CHECK(error.address.find("protocol error from a worker") != std::string::npos);
        auto exit =
            co_await wait_for(c, [](const worker_event& e) { return e.what == kind::exit; });
        CHECK(exit.status.code() == std::optional<int>(3));
        c.shutdown();
        co_await drain(c);
    }());
}

TEST_CASE("the protocol checks: what each side refuses from the other") {
    using conflux::detail::check_from_primary;
    using conflux::detail::check_from_worker;
    using conflux::detail::cluster_envelope;
    auto envelope = [](std::uint8_t what) {
        cluster_envelope m;
        m.what = what;
        return m;
    };
    auto with_fd = [](cluster_envelope m) {
        m.fd = conflux::file_descriptor::duplicate(0);
        return m;
    };
    // From the primary: a connection or a shared listener without its socket, a descriptor
    // where none belongs, an unknown policy or kind, a kind only workers send.
    CHECK_NOTHROW(check_from_primary(with_fd(envelope(cluster_envelope::connection))));
    CHECK_THROWS_AS(check_from_primary(envelope(cluster_envelope::connection)), conflux::ipc_error);
    auto shared = envelope(cluster_envelope::listen_reply);
    shared.policy = cluster_envelope::policy_shared;
    CHECK_THROWS_AS(check_from_primary(shared), conflux::ipc_error);
    CHECK_NOTHROW(check_from_primary(with_fd(std::move(shared))));
    auto refused = envelope(cluster_envelope::listen_reply);
    refused.policy = cluster_envelope::policy_shared;
    refused.error = 98;
    CHECK_NOTHROW(check_from_primary(refused));
    auto robin = envelope(cluster_envelope::listen_reply);
    CHECK_NOTHROW(check_from_primary(robin));
    CHECK_THROWS_AS(check_from_primary(with_fd(std::move(robin))), conflux::ipc_error);
    auto unknown_policy = envelope(cluster_envelope::listen_reply);
    unknown_policy.policy = 3;
    CHECK_THROWS_AS(check_from_primary(unknown_policy), conflux::ipc_error);
    CHECK_NOTHROW(check_from_primary(envelope(cluster_envelope::user)));
    CHECK_NOTHROW(check_from_primary(envelope(cluster_envelope::disconnect)));
    CHECK_THROWS_AS(check_from_primary(with_fd(envelope(cluster_envelope::disconnect))),
                    conflux::ipc_error);
    for (std::uint8_t what : {0, 1, 2, 4, 8, 9, 255}) {
        CAPTURE(int(what));
        CHECK_THROWS_AS(check_from_primary(envelope(what)), conflux::ipc_error);
    }
    // From a worker: its own kinds only, and never a descriptor.
    for (std::uint8_t what : {1, 2, 4, 6, 8}) {
        CAPTURE(int(what));
        CHECK_NOTHROW(check_from_worker(envelope(what)));
        CHECK_THROWS_AS(check_from_worker(with_fd(envelope(what))), conflux::ipc_error);
    }
    for (std::uint8_t what : {0, 3, 5, 7, 9, 255}) {
        CAPTURE(int(what));
        CHECK_THROWS_AS(check_from_worker(envelope(what)), conflux::ipc_error);
    }
}
