// pipeline and spawn_pipeline: children joined child to child, statuses, pipefail, limits.
#include <conflux/pipeline.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/when_all.hpp>

#include <doctest/doctest.h>

#include "support/scratch.hpp"
#include "support/test_support.hpp"

#include <chrono>
#include <csignal>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <vector>

using namespace std::chrono_literals;
using conflux::command;
using conflux::pipeline_options;
using conflux::task;

using conflux_test::no_leaks;

namespace {

std::string child() { return (conflux_test::helper_dir() / "conflux_child").string(); }

command helper(conflux::arguments args) { return command(child(), std::move(args)); }

template <class F>
auto run(F f) {
    return conflux::run(f());
}

using clock_type = std::chrono::steady_clock;

} // namespace

TEST_CASE("a three-stage pipeline runs child to child and keeps every status") {
    no_leaks probe;
    run([]() -> task<> {
        auto spec = helper({"lines", "3"}) | command("sort", {"-r"}) | helper({"cat"});
        CHECK(spec.size() == 3);
        auto r = co_await conflux::pipeline(spec);
        CHECK(r.out == "line 2\nline 1\nline 0\n");
        REQUIRE(r.stages.size() == 3);
        CHECK(r.stages[1].program == "sort");
        for (const auto& s : r.stages) CHECK(s.status.success());
    });
}

TEST_CASE("input goes to the first stage, stderr is kept per stage") {
    no_leaks probe;
    run([]() -> task<> {
        pipeline_options o;
        o.input = "b\na\nc\n";
        auto spec = command("sort") | helper({"cat"});
        auto r = co_await conflux::pipeline(spec, o);
        CHECK(r.out == "a\nb\nc\n");
        auto noisy = helper({"err", "5"}) | helper({"cat"});
        auto r2 = co_await conflux::pipeline(noisy);
        CHECK(r2.stages[0].err.size() == 5);
        CHECK(r2.stages[1].err.empty());
    });
}

TEST_CASE("spawn_pipeline streams the last stage and the middle stages have no parent pipe") {
    no_leaks probe;
    run([]() -> task<> {
        auto p = conflux::spawn_pipeline(helper({"cat"}) | helper({"cat"}) | helper({"cat"}));
        CHECK(p.size() == 3);
        // Stage 1's stdout goes to stage 2, never to this process.
        CHECK_THROWS_AS(p.stage(0).out(), std::logic_error);
        CHECK_THROWS_AS(p.stage(1).in(), std::logic_error);
        co_await p.in().write_all(std::string("one\ntwo\n"));
        p.in().close();
        std::vector<std::string> lines;
        while (auto line = co_await p.out().read_line()) lines.push_back(*line);
        CHECK(lines == std::vector<std::string>{"one", "two"});
        std::vector<conflux::exit_status> st = co_await p.wait();
        CHECK(st.size() == 3);
    });
}

TEST_CASE("a stage that cannot start names the stage; the others are killed and reaped") {
    no_leaks probe;
    run([]() -> task<> {
        auto spec =
            helper({"sleep", "10000"}) | command("conflux-no-such-program") | helper({"cat"});
        const auto t0 = clock_type::now();
        bool threw = false;
        try {
            auto p = conflux::spawn_pipeline(spec);
        } catch (const std::system_error& e) {
            threw = true;
            CHECK(e.code() == std::errc::no_such_file_or_directory);
            const std::string what = e.what();
            CHECK(what.find("stage 2 of 3") != std::string::npos);
            CHECK(what.find("conflux-no-such-program") != std::string::npos);
        }
        CHECK(threw);
        co_await conflux::sleep_for(50ms); // the killed first stage is reaped in the background
        CHECK(clock_type::now() - t0 < 2s);
        CHECK_THROWS_AS(conflux::spawn_pipeline(conflux::pipeline_spec()), std::invalid_argument);
        pipeline_options bad;
        bad.stdout_spec = conflux::stdio_spec::same_as(2);
        CHECK_THROWS_AS(conflux::spawn_pipeline(helper({"cat"}) | helper({"cat"}), bad),
                        std::invalid_argument);
    });
}

TEST_CASE("pipefail names the first failing stage; a SIGPIPE before it is not a failure") {
    no_leaks probe;
    run([]() -> task<> {
        // Stage 1 writes more than a pipe holds to a stage that exits without reading.
        auto spec = helper({"out", "1000000"}) | helper({"exit", "3"}) | helper({"cat"});
        bool threw = false;
        try {
            auto r = co_await conflux::pipeline(spec);
        } catch (const conflux::pipeline_error& e) {
            threw = true;
            REQUIRE(e.stage().has_value());
            CHECK(*e.stage() == 1);
            CHECK(e.reason() == conflux::pipeline_error::cause::status);
            const std::string what = e.what();
            CHECK(what.find("stage 2 of 3") != std::string::npos);
            CHECK(what.find("exited with code 3") != std::string::npos);
            REQUIRE(e.result().stages.size() == 3);
            CHECK(e.result().stages[0].status.signal() == SIGPIPE);
            CHECK(e.result().stages[2].status.success());
        }
        CHECK(threw);

        // Without pipefail only the last stage counts.
        pipeline_options last_only;
        last_only.pipefail = false;
        auto r = co_await conflux::pipeline(spec, last_only);
        CHECK(r.stages[1].status.code() == 3);
        auto last_fails = helper({"cat"}) | helper({"exit", "4"});
        bool threw_last = false;
        try {
            auto r2 = co_await conflux::pipeline(last_fails, last_only);
        } catch (const conflux::pipeline_error& e) {
            threw_last = true;
            CHECK(e.stage() == std::optional<std::size_t>(1));
        }
        CHECK(threw_last);

        // Without check nothing throws; failed_stage still tells.
        pipeline_options unchecked;
        unchecked.check = false;
        auto r3 = co_await conflux::pipeline(spec, unchecked);
        std::vector<conflux::exit_status> st;
        for (const auto& s : r3.stages) st.push_back(s.status);
        CHECK(conflux::failed_stage(st) == std::optional<std::size_t>(1));

        // spawn_pipeline's wait applies the same rule.
        auto p = conflux::spawn_pipeline(helper({"exit", "5"}) | helper({"cat"}));
        bool wait_threw = false;
        try {
            auto statuses = co_await p.wait();
        } catch (const conflux::pipeline_error& e) {
            wait_threw = true;
            CHECK(e.stage() == std::optional<std::size_t>(0));
        }
        CHECK(wait_threw);
    });
}

TEST_CASE("the timeout kills every stage") {
    no_leaks probe;
    run([]() -> task<> {
        pipeline_options o;
        o.timeout = 200ms;
        auto spec = helper({"sleep", "10000"}) | helper({"cat"}) | helper({"sleep", "10000"});
        const auto t0 = clock_type::now();
        bool timed_out = false;
        try {
            auto r = co_await conflux::pipeline(spec, o);
        } catch (const conflux::pipeline_error& e) {
            timed_out = e.timed_out();
            CHECK(std::string(e.what()).find("timed out") != std::string::npos);
            for (const auto& s : e.result().stages) CHECK(!s.status.success());
        }
        CHECK(timed_out);
        CHECK(clock_type::now() - t0 < 2s);
    });
}

TEST_CASE("cancellation kills every stage") {
    no_leaks probe;
    run([]() -> task<> {
        std::stop_source stop;
        pipeline_options o;
        o.stop_token = stop.get_token();
        auto spec = helper({"sleep", "10000"}) | helper({"sleep", "10000"});
        auto canceller = [&]() -> task<> {
            co_await conflux::sleep_for(100ms);
            stop.request_stop();
        };
        auto body = [&]() -> task<> {
            bool cancelled = false;
            try {
                auto r = co_await conflux::pipeline(spec, o);
            } catch (const conflux::operation_cancelled&) {
                cancelled = true;
            }
            CHECK(cancelled);
        };
        const auto t0 = clock_type::now();
        co_await conflux::when_all(body(), canceller());
        CHECK(clock_type::now() - t0 < 2s);
        // Already stopped: nothing starts.
        bool refused = false;
        try {
            auto r = co_await conflux::pipeline(spec, o);
        } catch (const conflux::operation_cancelled&) {
            refused = true;
        }
        CHECK(refused);
    });
}

TEST_CASE("output beyond max_buffer kills the pipeline") {
    no_leaks probe;
    run([]() -> task<> {
        pipeline_options o;
        o.max_buffer = 1000;
        auto spec = helper({"out", "100000"}) | helper({"cat"});
        bool overflowed = false;
        try {
            auto r = co_await conflux::pipeline(spec, o);
        } catch (const conflux::pipeline_error& e) {
            overflowed = e.buffer_overflow();
            CHECK(e.result().out.size() == 1000);
        }
        CHECK(overflowed);
    });
}

TEST_CASE("a buffered write to a first stage that died: EPIPE, no SIGPIPE") {
    no_leaks probe;
    run([]() -> task<> {
        auto p = conflux::spawn_pipeline(helper({"exit", "0"}) | helper({"cat"}));
        auto first = co_await p.stage(0).wait();
        CHECK(first.success());
        conflux::buffered_writer w(p.in());
        CHECK(w.write(std::string(1000, 'x')));
        bool epipe = false;
        try {
            co_await w.close();
        } catch (const std::system_error& e) {
            epipe = e.code() == std::errc::broken_pipe;
        }
        CHECK(epipe);
        CHECK_THROWS_AS(w.write("more"), std::logic_error);
        auto rest = co_await p.out().read_all();
        CHECK(rest.empty());
        std::vector<conflux::exit_status> st = co_await p.wait();
        CHECK(st[1].success());
    });
}

TEST_CASE("all: the last stage's stdout and stderr together, in the order written") {
    conflux_test::watchdog dog(20s);
    no_leaks probe;
    run([]() -> task<> {
        pipeline_options o;
        o.all = true;
        o.input = "a\n";
        // The first stage's stderr stays its own; the last stage's joins its stdout.
        auto spec = command("sh", {"-c", "cat; echo first >&2"}) |
                    command("sh", {"-c", "cat; echo b >&2; echo c"});
        for (int i = 0; i < 10; ++i) {
            auto r = co_await conflux::pipeline(spec, o);
            CHECK(r.all == "a\nb\nc\n");
            CHECK(r.out.empty());
            REQUIRE(r.stages.size() == 2);
            CHECK(r.stages[0].err == "first\n");
            CHECK(r.stages[1].err.empty());
        }
        // Streamed: spawn_pipeline's all().
        pipeline_options streamed;
        streamed.all = true;
        auto p = conflux::spawn_pipeline(
            helper({"lines", "2"}) | command("sh", {"-c", "cat; echo b >&2; echo c"}), streamed);
        p.in().close();
        std::string all = co_await p.all().read_all();
        CHECK(all == "line 0\nline 1\nb\nc\n");
        auto statuses = co_await p.wait();
        CHECK(statuses.size() == 2);
        // Without it, nothing is copied into all.
        pipeline_options plain;
        plain.input = "a\n";
        auto r = co_await conflux::pipeline(spec, plain);
        CHECK(r.all.empty());
        CHECK(r.out == "a\nc\n");
        CHECK(r.stages[1].err == "b\n");
    });
}

TEST_CASE("all: max_buffer bounds what all keeps, from either descriptor") {
    conflux_test::watchdog dog(20s);
    no_leaks probe;
    run([]() -> task<> {
        for (const char* which : {"out", "err", "both"}) {
            pipeline_options o;
            o.all = true;
            o.max_buffer = 1000;
            auto spec = helper({"cat"}) | helper({which, "100000"});
            bool overflowed = false;
            try {
                auto r = co_await conflux::pipeline(spec, o);
            } catch (const conflux::pipeline_error& e) {
                overflowed = e.buffer_overflow();
                CHECK(e.result().all.size() == 1000);
                CHECK(e.result().out.empty());
            }
            CHECK(overflowed);
        }
        // Exactly max_buffer fits.
        pipeline_options fits;
        fits.all = true;
        fits.max_buffer = 100000;
        auto spec = helper({"cat"}) | helper({"both", "50000"});
        auto r = co_await conflux::pipeline(spec, fits);
        CHECK(r.all.size() == 100000);
    });
}

TEST_CASE("all: a missing stage, a failing stage and refused specs") {
    conflux_test::watchdog dog(20s);
    no_leaks probe;
    run([]() -> task<> {
        pipeline_options o;
        o.all = true;
        // The last stage is missing: named, the others killed and reaped, nothing leaks.
        bool missing = false;
        try {
            auto r = co_await conflux::pipeline(
                helper({"sleep", "10000"}) | command("conflux-no-such-program"), o);
        } catch (const std::system_error& e) {
            missing = std::string(e.what()).find("stage 2 of 2") != std::string::npos;
        }
        CHECK(missing);
        co_await conflux::sleep_for(50ms); // the killed first stage is reaped in the background
        // The last stage fails: pipefail names it, and all keeps what it wrote, in order.
        auto last_fails =
            command("true") | command("sh", {"-c", "echo partial; echo oops >&2; exit 3"});
        std::optional<std::size_t> stage;
        std::string all;
        try {
            auto r = co_await conflux::pipeline(last_fails, o);
        } catch (const conflux::pipeline_error& e) {
            stage = e.stage();
            all = e.result().all;
            CHECK(std::string(e.what()).find("stage 2 of 2 (\"sh\") exited with code 3") !=
                  std::string::npos);
        }
        CHECK(stage == std::optional<std::size_t>(1));
        CHECK(all == "partial\noops\n");
        // An earlier stage fails: its own stderr in the message, the last stage's in all.
        auto first_fails = command("sh", {"-c", "echo e1 >&2; exit 4"}) |
                           command("sh", {"-c", "echo x; echo y >&2"});
        std::string what;
        try {
            auto r = co_await conflux::pipeline(first_fails, o);
        } catch (const conflux::pipeline_error& e) {
            what = e.what();
            all = e.result().all;
        }
        CHECK(what.find("stage 1 of 2 (\"sh\") exited with code 4: e1") != std::string::npos);
        CHECK(all == "x\ny\n");
        // `all` needs both of the last stage's outputs as pipes.
        pipeline_options ignore_out;
        ignore_out.all = true;
        ignore_out.stdout_spec = conflux::stdio_spec::ignore();
        CHECK_THROWS_AS(conflux::spawn_pipeline(helper({"cat"}) | helper({"cat"}), ignore_out),
                        std::invalid_argument);
        pipeline_options inherit_err;
        inherit_err.all = true;
        inherit_err.stderr_spec = conflux::stdio_spec::inherit();
        CHECK_THROWS_AS(conflux::spawn_pipeline(helper({"cat"}) | helper({"cat"}), inherit_err),
                        std::invalid_argument);
    });
}
