#pragma once

#include <conflux/detail/cpp20.hpp>

#if !CONFLUX_HAS_PIPELINES
#error "conflux/pipeline.hpp: pipelines are not supported on Windows yet"
#include <conflux/detail/compilation_stopped_by_the_error_above>
#endif

// Child-to-child pipelines: `find . -type f | sort | uniq -c`, the children joined by pipes
// of their own (the data never passes through this process), each stage's exit status kept,
// pipefail-style errors naming the stage that failed.
#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/exit_status.hpp>
#include <conflux/process.hpp>
#include <conflux/process_options.hpp>
#include <conflux/stream.hpp>
#include <conflux/task.hpp>
#include <conflux/when_all.hpp>
#include <conflux/detail/child_state.hpp>
#include <conflux/detail/gcc12_temporaries.hpp>
#include <conflux/detail/launch.hpp>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace conflux {

/// One stage of a pipeline: a program and its arguments (never through a shell), looked up
/// in PATH as `spawn` does. Joined with `|` into a `pipeline_spec`.
///
/// ```
/// auto spec = conflux::command("find", {".", "-type", "f"}) | conflux::command("sort") |
///             conflux::command("uniq", {"-c"});
/// ```
class command {
public:
    command(std::string_view program, arguments args = {}) // NOLINT: implicit from a name
        : m_program(program), m_args(std::move(args)) {}

    const std::string& program() const noexcept { return m_program; }
    const std::vector<std::string>& args() const noexcept { return m_args.list(); }

private:
    std::string m_program;
    arguments m_args;
};

/// The stages of a pipeline, first to last: stage i's stdout is stage i+1's stdin.
class pipeline_spec {
public:
    pipeline_spec() = default;
    explicit pipeline_spec(std::vector<command> stages) : m_stages(std::move(stages)) {}

    /// Appends a stage.
    pipeline_spec& then(command c) {
        m_stages.push_back(std::move(c));
        return *this;
    }
    const std::vector<command>& stages() const noexcept { return m_stages; }
    std::size_t size() const noexcept { return m_stages.size(); }

    /// "find . -type f | sort | uniq -c", for messages.
    std::string to_string() const {
        std::string s;
        for (const auto& c : m_stages) {
            if (!s.empty()) s += " | ";
            s += c.program();
            for (const auto& a : c.args()) {
                s += ' ';
                s += a;
            }
        }
        return s;
    }

private:
    std::vector<command> m_stages;
};

inline pipeline_spec operator|(command a, command b) {
    pipeline_spec p;
    p.then(std::move(a)).then(std::move(b));
    return p;
}
inline pipeline_spec operator|(pipeline_spec p, command c) {
    return std::move(p.then(std::move(c)));
}

/// Options of `spawn_pipeline` and `pipeline`. The fields shared with `spawn_options` have
/// the same names and meaning and apply to every stage.
struct pipeline_options {
    std::filesystem::path cwd{};
    std::optional<env_vars> env{};
    env_vars env_set{};
    std::vector<std::string> env_unset{};
    /// The first stage's stdin: `pipe` (default: `in()`, which `pipeline` fills with `input`
    /// then closes), `inherit`, `ignore`, `from_fd` or `file`.
    stdio_spec stdin_spec = stdio_spec::pipe();
    /// The last stage's stdout: `pipe` (default: `out()`, captured by `pipeline`), or any
    /// of the kinds above.
    stdio_spec stdout_spec = stdio_spec::pipe();
    /// Every stage's stderr: `pipe` (default: `err(i)` for stage i, captured by `pipeline`
    /// per stage), `inherit`, `ignore`, `from_fd` or `file` (opened once per stage: give
    /// O_APPEND in its flags so that the stages do not overwrite each other).
    stdio_spec stderr_spec = stdio_spec::pipe();
    /// Bounds the whole pipeline: when it runs out every stage still running gets
    /// `kill_signal` (its group with `kill_tree`), then SIGKILL after `kill_grace`.
    std::chrono::milliseconds timeout{0};
    int kill_signal = SIGTERM;
    std::chrono::milliseconds kill_grace{2000};
    /// Each stage in a process group of its own, signalled as a whole.
    bool kill_tree = false;
    /// Every stage dies with this process (see `spawn_options::cleanup`).
    bool cleanup = true;
    /// Stopping it kills every stage; `pipeline` then throws `operation_cancelled`. Empty:
    /// `pipeline` uses the stop token of the coroutine awaiting it.
    std::stop_token stop_token{};
    /// Dropping the `pipeline_process` while stages run SIGKILLs them (as for `spawn`).
    bool kill_on_drop = true;

    /// Throw `pipeline_error` when the pipeline failed (`wait` and `pipeline`).
    bool check = true;
    /// Which stage decides failure: with `pipefail` (the default) the first stage that did
    /// not exit with code 0; without, only the last stage (a shell's default). Either way a
    /// stage before the last killed by SIGPIPE is not a failure: the stage it wrote to
    /// stopped reading (`yes | head -1`), which fails on its own if that was an error.
    bool pipefail = true;

    /// `pipeline` only: written to the first stage's stdin, which is then closed.
    std::string input{};
    /// `pipeline` only: most bytes kept of the last stage's stdout (or of `all`) and of each
    /// stage's stderr; 0 = unlimited. Beyond it every stage is killed and `pipeline_error`
    /// reports the overflow.
    std::size_t max_buffer = 1024 * 1024;
    /// The last stage's stdout and stderr write one pipe (execa's `all`, a shell's `2>&1`):
    /// `pipeline_process::all()`, captured by `pipeline` into `pipeline_result::all` in the
    /// order the stage's writes reached the pipe (`out` and that stage's `err` stay empty, so
    /// a `pipeline_error` naming the last stage quotes no stderr line: it is in `all`).
    /// Needs `stdout_spec` and `stderr_spec` to be `pipe`. The other stages' stderr is
    /// unchanged.
    bool all = false;
};

/// How one stage ended, and for `pipeline` what it wrote to stderr.
struct stage_result {
    std::string program;
    exit_status status;
    std::string err;
};

/// What `pipeline` captured: the last stage's stdout and every stage's result, in order.
struct pipeline_result {
    std::string out;
    std::vector<stage_result> stages;
    /// With `pipeline_options::all`: the last stage's stdout and stderr together, in arrival
    /// order.
    std::string all{};
};

/// The stage that makes the pipeline fail under the rule of `pipeline_options::pipefail`,
/// or empty when it succeeded.
inline std::optional<std::size_t> failed_stage(const std::vector<exit_status>& statuses,
                                               bool pipefail = true) {
    const std::size_t n = statuses.size();
    for (std::size_t i = pipefail ? 0 : (n == 0 ? 0 : n - 1); i < n; ++i) {
        const exit_status& s = statuses[i];
        if (s.success()) continue;
        if (i + 1 < n && s.signal() == SIGPIPE) continue;
        return i;
    }
    return std::nullopt;
}

/// Thrown by `pipeline` and `pipeline_process::wait` when the pipeline failed (see
/// `pipeline_options::pipefail`), timed out or overflowed `max_buffer`; carries what was
/// captured and every stage's status. The message names the failing stage:
/// `pipeline "a | b | c": stage 2 of 3 ("b") exited with code 1: <its first stderr line>`.
class pipeline_error : public error {
public:
    enum class cause { status, timeout, max_buffer };

    pipeline_error(const std::string& what, pipeline_result result,
                   std::optional<std::size_t> stage, cause c)
        : error(what), m_result(std::move(result)), m_stage(stage), m_cause(c) {}

    const pipeline_result& result() const noexcept { return m_result; }
    /// The index (from 0) of the stage that failed; empty for a timeout or an overflow.
    std::optional<std::size_t> stage() const noexcept { return m_stage; }
    cause reason() const noexcept { return m_cause; }
    bool timed_out() const noexcept { return m_cause == cause::timeout; }
    bool buffer_overflow() const noexcept { return m_cause == cause::max_buffer; }

private:
    pipeline_result m_result;
    std::optional<std::size_t> m_stage;
    cause m_cause;
};

namespace detail {

inline std::string stage_label(const pipeline_spec& spec, std::size_t i) {
    return "stage " + std::to_string(i + 1) + " of " + std::to_string(spec.size()) + " (\"" +
           spec.stages()[i].program() + "\")";
}

inline void check_pipeline_spec(const stdio_spec& s, const char* which) {
    if (s.how == stdio_spec::kind::same_as || s.how == stdio_spec::kind::pipe_to_child) {
        throw std::invalid_argument(std::string("conflux::spawn_pipeline: ") + which +
                                    " cannot be same_as or pipe_to_child");
    }
}

} // namespace detail

/// A running pipeline started by `spawn_pipeline`: its stages as `child_process`es, the first
/// stage's stdin and the last stage's stdout as streams. Belongs to the loop that started it.
class pipeline_process {
public:
    pipeline_process() = default;
    pipeline_process(pipeline_process&&) noexcept = default;
    pipeline_process& operator=(pipeline_process&&) noexcept = default;

    std::size_t size() const noexcept { return m_children.size(); }
    /// Stage `i` (from 0).
    child_process& stage(std::size_t i) { return m_children.at(i); }
    /// The first stage's stdin (when `stdin_spec` is `pipe`).
    writable_stream& in() { return stage(0).in(); }
    /// The last stage's stdout (when `stdout_spec` is `pipe`).
    readable_stream& out() { return stage(size() - 1).out(); }
    /// Stage `i`'s stderr (when `stderr_spec` is `pipe`).
    readable_stream& err(std::size_t i) { return stage(i).err(); }
    /// With `pipeline_options::all`: the last stage's stdout and stderr, one pipe.
    readable_stream& all() { return stage(size() - 1).all(); }

    /// Sends `signal` to every stage still running; true if any was signalled.
    bool kill(int signal = SIGTERM) {
        bool any = false;
        for (auto& c : m_children) any = c.kill(signal) || any;
        return any;
    }

    /// True if the pipeline's `timeout` ended it.
    bool timed_out() const noexcept { return ended_by(detail::child_state::reason::timeout); }

    /// Waits for every stage and returns their statuses in order. With `check` (the default)
    /// throws `pipeline_error` naming the failing stage (`pipefail` decides which), or with
    /// `timed_out()` when the timeout ended it; throws `operation_cancelled` when the
    /// options' stop token ended it. Cancelled by `token` with `operation_cancelled` (the
    /// stages keep running).
    [[nodiscard]] task<std::vector<exit_status>> wait(std::stop_token token = {}) {
        if (!token.stop_possible()) token = co_await get_stop_token();
        std::vector<exit_status> statuses;
        statuses.reserve(m_children.size());
        for (auto& c : m_children) statuses.push_back(co_await c.wait(token));
        if (ended_by(detail::child_state::reason::cancelled)) throw operation_cancelled();
        if (!m_check && !timed_out()) co_return statuses;
        pipeline_result r;
        for (std::size_t i = 0; i < statuses.size(); ++i) {
            r.stages.push_back({m_spec.stages()[i].program(), statuses[i], {}});
        }
        throw_if_failed(std::move(r), false);
        co_return statuses;
    }

    /// Low-level: the stages started by `spawn_pipeline`.
    pipeline_process(pipeline_spec spec, std::vector<child_process> children,
                     std::vector<std::shared_ptr<detail::child_state>> states,
                     const pipeline_options& o)
        : m_spec(std::move(spec)), m_children(std::move(children)), m_states(std::move(states)),
          m_check(o.check), m_pipefail(o.pipefail), m_timeout(o.timeout) {}

    /// Low-level: throws the `pipeline_error` (or `operation_cancelled`) `r` calls for.
    void throw_if_failed(pipeline_result&& r, bool overflow) const {
        if (ended_by(detail::child_state::reason::cancelled)) throw operation_cancelled();
        std::string what = "pipeline \"" + m_spec.to_string() + "\": ";
        if (timed_out()) {
            what += "timed out after " + std::to_string(m_timeout.count()) + " ms";
            throw pipeline_error(what, std::move(r), std::nullopt, pipeline_error::cause::timeout);
        }
        if (overflow) {
            what += "output exceeded max_buffer";
            throw pipeline_error(what, std::move(r), std::nullopt,
                                 pipeline_error::cause::max_buffer);
        }
        std::vector<exit_status> statuses;
        for (const auto& s : r.stages) statuses.push_back(s.status);
        const auto failed = failed_stage(statuses, m_pipefail);
        if (!failed || !m_check) return;
        const stage_result& s = r.stages[*failed];
        what += detail::stage_label(m_spec, *failed) + " " + s.status.to_string();
        if (!s.err.empty()) {
            std::string_view first(s.err);
            first = first.substr(0, std::min(first.find('\n'), std::size_t(200)));
            what += ": ";
            what += first;
        }
        throw pipeline_error(what, std::move(r), failed, pipeline_error::cause::status);
    }

    /// Low-level: the stages' states.
    const std::vector<std::shared_ptr<detail::child_state>>& states() const noexcept {
        return m_states;
    }
    const pipeline_spec& spec() const noexcept { return m_spec; }

private:
    bool ended_by(detail::child_state::reason why) const noexcept {
        for (const auto& s : m_states) {
            if (s->kill_reason() == why) return true;
        }
        return false;
    }

    pipeline_spec m_spec;
    std::vector<child_process> m_children;
    std::vector<std::shared_ptr<detail::child_state>> m_states;
    bool m_check = true;
    bool m_pipefail = true;
    std::chrono::milliseconds m_timeout{0};
};

/// Starts every stage of `spec`, stage i's stdout joined to stage i+1's stdin by a pipe that
/// only the two children hold, and returns at once. Must be called on an event loop's
/// thread. Throws `std::invalid_argument` for an empty spec or a bad stdio spec, and
/// `std::system_error` naming the stage ("pipeline stage 2 of 3 (\"sortt\"): spawn ...")
/// when one cannot be started; the stages already started are then killed and reaped.
///
/// ```
/// auto p = conflux::spawn_pipeline(conflux::command("ls") | conflux::command("wc", {"-l"}));
/// p.in().close();
/// while (auto line = co_await p.out().read_line()) use(*line);
/// std::vector<conflux::exit_status> st = co_await p.wait(); // throws if a stage failed
/// ```
inline pipeline_process spawn_pipeline(pipeline_spec spec, const pipeline_options& o = {});

namespace detail {
// Defined in detail/pipeline_run.hpp, included at the end of this header, with
// `spawn_pipeline`.
inline task<pipeline_result> run_pipeline(pipeline_spec spec, pipeline_options o);
} // namespace detail

/// Runs the pipeline to completion: writes `.input` to the first stage, captures the last
/// stage's stdout and each stage's stderr, and returns them with every stage's status.
/// Throws `pipeline_error` when it failed (`.check`, `.pipefail`), timed out or overflowed
/// `.max_buffer`; `operation_cancelled` when `.stop_token` (or the awaiting coroutine's
/// inherited token) is stopped. Every stage is killed and reaped on every path.
///
/// ```
/// auto counts = co_await conflux::pipeline(conflux::command("find", {".", "-type", "f"}) |
///                                          conflux::command("sort") |
///                                          conflux::command("uniq", {"-c"}));
/// ```
///
/// As for `exec`: with GCC 12, options are given as a named variable.
[[nodiscard]] inline task<pipeline_result> pipeline(pipeline_spec spec,
                                                    detail::options_arg<pipeline_options> options) {
    return detail::run_pipeline(std::move(spec), std::move(options));
}

/// `pipeline` with default options.
[[nodiscard]] inline task<pipeline_result> pipeline(pipeline_spec spec) {
    return detail::run_pipeline(std::move(spec), pipeline_options());
}

#if CONFLUX_DETAIL_GCC12_TEMPORARIES
/// GCC 12 only: options written in the call would be destroyed twice, so they are refused.
template <class Refused = void>
task<pipeline_result> pipeline(pipeline_spec, pipeline_options&&) {
    static_assert(detail::refused_temporary<Refused>,
                  "GCC 12 destroys options written inside a co_await expression twice: name "
                  "the options first: `conflux::pipeline_options o{...}; co_await "
                  "conflux::pipeline(spec, o);` (GCC >= 13 and Clang accept them in the call)");
    return {};
}
#endif

} // namespace conflux

// The bodies of `spawn_pipeline` and `pipeline(...)`: starting, feeding, capturing and
// reaping every stage.
#include <conflux/detail/pipeline_run.hpp>
