#pragma once

#include <conflux/detail/cpp20.hpp>

// `exec` and `exec_file`: run a program to completion and capture its output (Node.js's
// `child_process.exec` / `execFile`). process.hpp includes this header after defining
// `spawn`; included first, this header includes process.hpp, whose own include of it is
// then skipped.
#include <conflux/process.hpp>

#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/exit_status.hpp>
#include <conflux/process_options.hpp>
#include <conflux/stream.hpp>
#include <conflux/task.hpp>
#include <conflux/when_all.hpp>
#include <conflux/detail/capture_string.hpp>
#include <conflux/detail/child_state.hpp>
#include <conflux/detail/gcc12_temporaries.hpp>
#include <conflux/detail/launch.hpp>

#include <algorithm>
#include <concepts>
#include <cstddef>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace conflux {

/// What `exec` and `exec_file` captured.
struct exec_result {
    std::string out;
    std::string err;
    exit_status status;
    /// With `.all`: stdout and stderr together in arrival order (as each read returned them).
    std::string all{};
};

/// Thrown by `exec`/`exec_file` when the child did not exit with code 0 (unless `.check =
/// false`), when `.timeout` ran out, when it wrote more than `.max_buffer`, or when its pipes
/// were still held open by descendants `.wait_delay` after it exited. Carries what was
/// captured up to then, and the exit status once the child has exited.
class process_error : public error {
public:
    enum class cause {
        status,           ///< exited with a non-zero code or by a signal
        timeout,          ///< `.timeout` ran out (before or after the child's exit)
        max_buffer,       ///< stdout or stderr exceeded `.max_buffer`
        output_incomplete ///< the child exited, but `.wait_delay` later its pipes were still
                          ///< open (held by a descendant): what was read is kept
    };

    process_error(const std::string& what, exec_result result, cause c)
        : error(what), m_result(std::move(result)), m_cause(c) {}

    const exec_result& result() const noexcept { return m_result; }
    const exit_status& status() const noexcept { return m_result.status; }
    cause reason() const noexcept { return m_cause; }
    bool timed_out() const noexcept { return m_cause == cause::timeout; }
    bool buffer_overflow() const noexcept { return m_cause == cause::max_buffer; }
    /// The output may be incomplete: `.wait_delay` ran out with the pipes still open.
    bool output_incomplete() const noexcept { return m_cause == cause::output_incomplete; }

private:
    exec_result m_result;
    cause m_cause;
};

namespace detail {

// `shell_command`: on Windows, the command `exec` hands to the shell `program` as it is (its
// command line is cmd.exe's, not one argument quoted for the C runtime).
inline task<exec_result> run_exec(std::string label, std::string program,
                                  std::vector<std::string> args, exec_options o,
                                  std::optional<std::string> shell_command = std::nullopt) {
    std::stop_token outer = o.stop_token;
    if (!outer.stop_possible()) outer = co_await get_stop_token();
    if (outer.stop_requested()) throw operation_cancelled();
    event_loop& loop = require_loop("conflux::exec");

    if (o.wait_delay && o.wait_delay->count() < 0) {
        throw std::invalid_argument(label + ": wait_delay is negative");
    }
    if (!o.input.empty() && !o.input_view.empty()) {
        throw std::invalid_argument(label + ": both input and input_view are set");
    }
    // Points into `o`, which lives in this frame, or into the caller's bytes (input_view).
    const std::string_view input = o.input_view.empty() ? std::string_view(o.input) : o.input_view;
    exec_result res;
    if (o.reserve_output != 0) {
        if (o.reserve_output >= res.out.max_size()) {
            throw std::invalid_argument(label + ": reserve_output of " +
                                        std::to_string(o.reserve_output) + " bytes is too large");
        }
        // One byte past the limit: that is how read_into tells an overflow from an exact fit.
        std::size_t capacity = o.reserve_output;
        if (o.max_buffer != 0 && o.max_buffer < capacity) capacity = o.max_buffer + 1;
        reserve_for_capture(res.out, capacity);
    }
#if CONFLUX_PLATFORM_WINDOWS
    launched l = launch(make_launch_request(program, std::span(args), o),
                        shell_command ? &*shell_command : nullptr);
#else
    launched l = launch(make_launch_request(program, std::span(args), o));
    (void)shell_command; // POSIX shells take the command as an argument
#endif
    auto state = std::make_shared<child_state>(loop, std::move(l), std::string(program));
    // Kill-on-drop: if this coroutine is destroyed half-way, the child (and with kill_tree
    // its group) dies with it.
    child_process child(state, true);
    // The deadline and the cancellation bound the whole call: they stay armed after the
    // child's exit, while descendants may still hold the pipes.
    state->configure({.timeout = o.timeout,
                      .kill_signal = o.kill_signal,
                      .kill_grace = o.kill_grace,
                      .tree = o.kill_tree,
                      .stop_token = outer,
                      .bound_after_exit = true,
                      .wait_delay = o.wait_delay});

    bool out_overflow = false;
    bool err_overflow = false;
    // Stopped by the state once the call is ended by us after the child's exit (timeout,
    // cancellation, wait_delay): the pipes are then no longer read.
    const std::stop_token readers = state->abort_token();
    std::stop_source never; // a token that is never stopped, so nothing is inherited

    auto feed = [&]() -> task<void> {
        writable_stream* in = state->writer(0);
        if (in == nullptr) co_return;
        try {
            if (!input.empty()) co_await in->write_all(input, readers);
        } catch (const std::system_error& e) {
            // A child that exits without reading its input is not an error (EPIPE).
            if (e.code() != std::errc::broken_pipe) throw;
        } catch (const operation_cancelled&) {
        }
        in->close();
    };
    auto drain = [&](int fd, std::string& into, bool& overflow) -> task<void> {
        readable_stream* r = state->reader(fd);
        if (r == nullptr) co_return;
        bool ended_by_us = false;
        if (o.all) {
            // Read by read's result so that both streams land in `all` as they arrive; with a
            // stopped token the reads still take what the pipe holds, then end.
            std::string chunk(64 * 1024, '\0');
            std::size_t after_stop = 0;
            try {
                for (;;) {
                    const std::size_t got = co_await r->read_some(std::span<char>(chunk), readers);
                    if (got == 0) break;
                    std::size_t keep = got;
                    if (o.max_buffer != 0) keep = std::min(got, o.max_buffer - into.size());
                    into.append(chunk.data(), keep);
                    res.all.append(chunk.data(), keep);
                    if (keep < got) {
                        overflow = true;
                        break;
                    }
                    // Ended by us: a descendant that writes without pause must not hold the
                    // call, so what follows the stop is read up to a budget.
                    if (readers.stop_requested() && (after_stop += got) > (std::size_t(1) << 20)) {
                        break;
                    }
                }
            } catch (const operation_cancelled&) {
            }
            if (overflow) state->terminate(child_state::reason::overflow);
            r->close();
            co_return;
        }
        try {
            co_await r->read_into(into, o.max_buffer, &overflow, readers);
        } catch (const operation_cancelled&) {
            ended_by_us = true;
        }
        if (ended_by_us) {
            // What the pipe already holds was written before the end: keep it. read_into with
            // the stopped token reads until the pipe is empty, then throws; the budget keeps a
            // descendant that writes without pause from holding the call.
            constexpr std::size_t budget = std::size_t(1) << 20;
            const bool capped =
                o.max_buffer != 0 && o.max_buffer - std::min(o.max_buffer, into.size()) <= budget;
            bool over = false;
            try {
                co_await r->read_into(into, capped ? o.max_buffer : into.size() + budget, &over,
                                      readers);
            } catch (const operation_cancelled&) {
            } catch (const std::system_error&) {
            }
            overflow = capped && over;
        }
        if (overflow) state->terminate(child_state::reason::overflow);
        r->close();
    };
    auto reap = [&]() -> task<void> { res.status = co_await child.wait(never.get_token()); };
    co_await when_all(feed(), drain(1, res.out, out_overflow), drain(2, res.err, err_overflow),
                      reap());

    const auto why = state->kill_reason();
    if (why == child_state::reason::none) {
        // Ended on its own: descendants that closed their pipes may run on; the group is
        // left alone (the zombie kept for it is reaped with the state).
        child.detach();
    }
    if (why == child_state::reason::cancelled) throw operation_cancelled();
    process_error::cause c = process_error::cause::status;
    std::string what = label + ": " + res.status.to_string();
    if (why == child_state::reason::timeout) {
        c = process_error::cause::timeout;
        what += " (timed out after " + std::to_string(o.timeout.count()) + " ms)";
    } else if (why == child_state::reason::wait_delay) {
        c = process_error::cause::output_incomplete;
        what += " (output incomplete: its pipes were still open " +
                std::to_string(o.wait_delay->count()) +
                " ms after it exited, held by a process it started)";
    } else if (why == child_state::reason::overflow || out_overflow || err_overflow) {
        c = process_error::cause::max_buffer;
        what += std::string(" (") + (out_overflow ? "stdout" : "stderr") +
                " exceeded max_buffer of " + std::to_string(o.max_buffer) + " bytes)";
    } else if (res.status.success() || !o.check) {
        co_return res;
    }
    if (!res.err.empty()) {
        std::string_view first(res.err);
        first = first.substr(0, std::min(first.find('\n'), std::size_t(200)));
        what += ": ";
        what += first;
    }
    throw process_error(what, std::move(res), c);
}

} // namespace detail

/// Runs `program` with `args` (no shell), writes `.input` (or `.input_view`) to its stdin,
/// captures stdout and stderr (read concurrently, so neither can fill up and deadlock the
/// child) and returns them with the exit status once the child has exited and both pipes are
/// closed.
///
/// Throws `process_error` (carrying the `exec_result`) on a non-zero exit or a signal unless
/// `.check = false`, and always on `.timeout`, `.max_buffer` overflow or an expired
/// `.wait_delay` (`output_incomplete()`: a descendant still held the pipes); the child is
/// killed with `.kill_signal`, then SIGKILL, and what was captured is kept. Spawn failures
/// throw `std::system_error` naming the program, bad input `std::invalid_argument`.
///
/// Must be awaited on an event loop's thread; resumes there. `.timeout` and cancellation
/// (`.stop_token` or, when that is empty, the inherited stop token) bound the whole call,
/// reading the pipes after the child's exit included: the child (its group with
/// `.kill_tree`) is killed and reaped, and `timed_out()` / `operation_cancelled` is thrown.
///
/// ```
/// conflux::exec_options opts{.cwd = repo, .timeout = 5s};
/// auto r = co_await conflux::exec_file("git", {"rev-parse", "HEAD"}, opts);
/// ```
///
/// GCC 12 destroys an aggregate temporary written inside a `co_await` expression twice, so
/// there `co_await exec_file(p, {}, {.cwd = d})` does not compile (a static_assert says to
/// name the options first, as above); GCC >= 13 and Clang take options written in the call.
[[nodiscard]] inline task<exec_result> exec_file(std::string_view program, arguments args,
                                                 detail::options_arg<exec_options> options) {
    std::string label = "exec_file \"" + std::string(program) + "\"";
    return detail::run_exec(std::move(label), std::string(program), std::move(args.list()),
                            std::move(options));
}

/// `exec_file` with the program given as a `std::filesystem::path`.
template <std::same_as<std::filesystem::path> Path>
[[nodiscard]] task<exec_result> exec_file(const Path& program, arguments args,
                                          detail::options_arg<exec_options> options) {
    return exec_file(std::string_view(program.native()), std::move(args), std::move(options));
}

/// `exec_file` with the program given as a `std::filesystem::path`, default options.
template <std::same_as<std::filesystem::path> Path>
[[nodiscard]] task<exec_result> exec_file(const Path& program, arguments args = {}) {
    return exec_file(std::string_view(program.native()), std::move(args),
                     detail::options_arg<exec_options>(exec_options()));
}

/// Runs `command` through the shell (`.shell -c command`, default /bin/sh) like `exec_file`.
/// On Windows through cmd.exe: `.shell /d /s /c "command"`, where an empty `.shell` (the
/// default there) is %COMSPEC%.
/// Only for commands the program wrote itself: anything user-supplied belongs in
/// `exec_file`'s arguments, which no shell ever interprets.
///
/// `exec_file` with default options.
[[nodiscard]] inline task<exec_result> exec_file(std::string_view program, arguments args = {}) {
    return exec_file(program, std::move(args), detail::options_arg<exec_options>(exec_options()));
}

/// ```
/// auto r = co_await conflux::exec("ls | wc -l");
/// ```
///
/// As for `exec_file`: with GCC 12, options are given as a named variable.
[[nodiscard]] inline task<exec_result> exec(std::string_view command,
                                            detail::options_arg<exec_options> options) {
    std::string shell = options.shell;
    std::string label = "exec \"" + std::string(command) + "\"";
#if CONFLUX_PLATFORM_WINDOWS
    return detail::run_exec(std::move(label), std::move(shell), {}, std::move(options),
                            std::string(command));
#else
    std::vector<std::string> args{"-c", std::string(command)};
    return detail::run_exec(std::move(label), std::move(shell), std::move(args),
                            std::move(options));
#endif
}

/// `exec` with default options.
[[nodiscard]] inline task<exec_result> exec(std::string_view command) {
    return exec(command, detail::options_arg<exec_options>(exec_options()));
}

#if CONFLUX_DETAIL_GCC12_TEMPORARIES
/// GCC 12 only: options written in the call (`co_await exec(cmd, {.cwd = d})`) would be
/// destroyed twice, so they are refused; the overloads taking `const exec_options&` serve
/// named options.
template <class Refused = void>
task<exec_result> exec(std::string_view, exec_options&&) {
    static_assert(detail::refused_temporary<Refused>,
                  "GCC 12 destroys options written inside a co_await expression twice: name "
                  "the options first: `conflux::exec_options o{...}; co_await "
                  "conflux::exec(cmd, o);` (GCC >= 13 and Clang accept them in the call)");
    return {};
}
template <class Refused = void>
task<exec_result> exec_file(std::string_view, arguments, exec_options&&) {
    static_assert(detail::refused_temporary<Refused>,
                  "GCC 12 destroys options written inside a co_await expression twice: name "
                  "the options first: `conflux::exec_options o{...}; co_await "
                  "conflux::exec_file(p, args, o);` (GCC >= 13 and Clang accept them in the call)");
    return {};
}
template <std::same_as<std::filesystem::path> Path>
task<exec_result> exec_file(const Path&, arguments, exec_options&&) {
    static_assert(detail::refused_temporary<Path>,
                  "GCC 12 destroys options written inside a co_await expression twice: name "
                  "the options first: `conflux::exec_options o{...}; co_await "
                  "conflux::exec_file(p, args, o);` (GCC >= 13 and Clang accept them in the call)");
    return {};
}
#endif

} // namespace conflux
