#pragma once

// The bodies of `conflux::spawn_pipeline` and `conflux::pipeline(...)` (pipeline.hpp): starts
// the stages joined by pipes; feeds the first stage, captures the last stage's stdout (or its
// stdout and stderr together, with `all`) and every stage's stderr, reaps each stage.
// pipeline.hpp includes this header at its end; included first, this header includes
// pipeline.hpp, whose own include of it is then skipped.
#include <conflux/pipeline.hpp>

#include <conflux/error.hpp>
#include <conflux/stream.hpp>
#include <conflux/task.hpp>
#include <conflux/when_all.hpp>
#include <conflux/detail/child_state.hpp>
#include <conflux/detail/launch.hpp>

#include <cerrno>
#include <csignal>
#include <cstddef>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace conflux {

inline pipeline_process spawn_pipeline(pipeline_spec spec, const pipeline_options& o) {
    event_loop& loop = detail::require_loop("conflux::spawn_pipeline");
    if (spec.size() == 0) throw std::invalid_argument("conflux::spawn_pipeline: no stages");
    detail::check_pipeline_spec(o.stdin_spec, "stdin_spec");
    detail::check_pipeline_spec(o.stdout_spec, "stdout_spec");
    detail::check_pipeline_spec(o.stderr_spec, "stderr_spec");
    if (o.all && (o.stdout_spec.how != stdio_spec::kind::pipe ||
                  o.stderr_spec.how != stdio_spec::kind::pipe)) {
        throw std::invalid_argument(
            "conflux::spawn_pipeline: `all` needs stdout_spec and stderr_spec to be pipes");
    }
    const std::size_t n = spec.size();
    std::vector<child_process> children;
    std::vector<std::shared_ptr<detail::child_state>> states;
    children.reserve(n);
    states.reserve(n);
    detail::unique_fd upstream; // the read end stage i takes as stdin
    for (std::size_t i = 0; i < n; ++i) {
        const command& c = spec.stages()[i];
        detail::unique_fd next_read;
        detail::unique_fd write_end;
        spawn_options so{.cwd = o.cwd,
                         .env = o.env,
                         .env_set = o.env_set,
                         .env_unset = o.env_unset,
                         .kill_signal = o.kill_signal,
                         .kill_grace = o.kill_grace,
                         .kill_tree = o.kill_tree,
                         .cleanup = o.cleanup,
                         .kill_on_drop = o.kill_on_drop};
        try {
            stdio_spec in = i == 0 ? o.stdin_spec : stdio_spec::from_fd(upstream.get());
            stdio_spec out = o.stdout_spec;
            if (i + 1 < n) {
                auto [r, w] = detail::open_pipe();
                if (!r) throw std::system_error(errno, std::system_category(), "pipe");
                next_read = std::move(r);
                write_end = std::move(w);
                out = stdio_spec::from_fd(write_end.get());
            }
            // With `all` the last stage's stderr joins its stdout pipe: one pipe, one order.
            const bool shared = o.all && i + 1 == n;
            so.stdio = {std::move(in), std::move(out),
                        shared ? stdio_spec::same_as(1) : o.stderr_spec};
            detail::launched l =
                detail::launch(detail::make_launch_request(c.program(), std::span(c.args()), so));
            auto state = std::make_shared<detail::child_state>(loop, std::move(l), c.program());
            children.emplace_back(state, o.kill_on_drop, shared);
            states.push_back(state);
        } catch (const std::system_error& e) {
            for (auto& started : children) started.kill(SIGKILL);
            // The original message, without the error text system_error appends again.
            std::string what = e.what();
            const std::string tail = ": " + e.code().message();
            if (what.size() >= tail.size() &&
                what.compare(what.size() - tail.size(), tail.size(), tail) == 0) {
                what.resize(what.size() - tail.size());
            }
            throw std::system_error(e.code(),
                                    "pipeline " + detail::stage_label(spec, i) + ": " + what);
        } catch (...) {
            for (auto& started : children) started.kill(SIGKILL);
            throw;
        }
        upstream = std::move(next_read); // the parent's copies close: only children hold them
    }
    // Armed once every stage runs, so that the pipeline is bounded as a whole.
    for (auto& s : states) {
        s->configure({.timeout = o.timeout,
                      .kill_signal = o.kill_signal,
                      .kill_grace = o.kill_grace,
                      .tree = o.kill_tree,
                      .stop_token = o.stop_token});
    }
    return pipeline_process(std::move(spec), std::move(children), std::move(states), o);
}

namespace detail {

inline task<pipeline_result> run_pipeline(pipeline_spec spec, pipeline_options o) {
    std::stop_token outer = o.stop_token;
    if (!outer.stop_possible()) outer = co_await get_stop_token();
    if (outer.stop_requested()) throw operation_cancelled();
    o.stop_token = outer;
    pipeline_process p = spawn_pipeline(std::move(spec), o);
    const std::size_t n = p.size();
    pipeline_result res;
    res.stages.resize(n);
    bool overflow = false;
    std::stop_source never;

    auto feed = [&]() -> task<void> {
        writable_stream* in = p.states().front()->writer(0);
        if (in == nullptr) co_return;
        try {
            if (!o.input.empty()) co_await in->write_all(o.input, outer);
        } catch (const std::system_error& e) {
            if (e.code() != std::errc::broken_pipe) throw; // the stage did not read it all
        } catch (const operation_cancelled&) {
        }
        in->close();
    };
    auto drain = [&](detail::child_state& s, int fd, std::string& into) -> task<void> {
        readable_stream* r = s.reader(fd);
        if (r == nullptr) co_return;
        bool over = false;
        try {
            co_await r->read_into(into, o.max_buffer, &over, outer);
        } catch (const operation_cancelled&) {
        }
        if (over) {
            overflow = true;
            for (auto& st : p.states()) st->terminate(detail::child_state::reason::overflow);
        }
        r->close();
    };
    auto reap = [&](std::size_t i) -> task<void> {
        res.stages[i].program = p.spec().stages()[i].program();
        res.stages[i].status = co_await p.stage(i).wait(never.get_token());
    };
    std::vector<task<void>> work;
    work.push_back(feed());
    work.push_back(drain(*p.states().back(), 1, o.all ? res.all : res.out));
    for (std::size_t i = 0; i < n; ++i) {
        work.push_back(drain(*p.states()[i], 2, res.stages[i].err));
        work.push_back(reap(i));
    }
    co_await when_all(std::move(work));
    p.throw_if_failed(std::move(res), overflow);
    co_return res;
}

} // namespace detail

} // namespace conflux
