#pragma once

// The body of `conflux::pipeline(...)` (pipeline.hpp): feeds the first stage, captures the last
// stage's stdout and every stage's stderr, reaps each stage. pipeline.hpp includes this header
// at its end; included first, this header includes pipeline.hpp, whose own include of it is
// then skipped.
#include <conflux/pipeline.hpp>

#include <conflux/error.hpp>
#include <conflux/stream.hpp>
#include <conflux/task.hpp>
#include <conflux/when_all.hpp>
#include <conflux/detail/child_state.hpp>

#include <cstddef>
#include <stop_token>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace conflux {

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
    work.push_back(drain(*p.states().back(), 1, res.out));
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
