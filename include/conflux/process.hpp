#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/exit_status.hpp>
#include <conflux/process_options.hpp>
#include <conflux/sleep.hpp>
#include <conflux/stream.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/child_state.hpp>
#include <conflux/detail/gcc12_temporaries.hpp>
#include <conflux/detail/launch.hpp>

#include <concepts>
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

/// A running (or finished) child process started by `spawn`, with its pipes as async streams.
///
/// Belongs to the event loop of the thread that spawned it: use `in()`, `out()`, `err()`,
/// `kill()` there. `wait()` may be awaited from any loop and any number of times.
///
/// The exit is watched through a pidfd on the loop, and the child is reaped as soon as it
/// exits, whether or not anyone waits: there is no SIGCHLD handler and no `waitpid(-1)`.
///
/// Dropping it: if the child still runs, the default (`spawn_options::kill_on_drop = true`)
/// sends SIGKILL (to its whole group with `kill_tree`, even when the leader has exited) and
/// the loop reaps it in the background; with `kill_on_drop = false`, or after `detach()`, it
/// keeps running and the loop reaps it when it exits. A child killed by the library is
/// always reaped: by the loop, or, when the loop is destroyed first, by the loop's
/// destruction (SIGKILL cannot be ignored, so that wait is short). A child left running that
/// outlives its loop joins a process-wide list of orphans, which the next `spawn` on any
/// thread reaps once they have exited (until then an exited orphan is a zombie: conflux
/// installs no SIGCHLD handler and starts no thread for it).
///
/// A handle kept after its loop is destroyed still answers `pid()`, `status()` and `kill()`;
/// its streams are closed, and `wait()` throws `std::logic_error`.
///
/// On Windows the exit is posted to the loop's completion port by the system's thread pool,
/// each child runs in a Job object of its own (`kill_tree` ends the job), and signals are
/// mapped as libuv maps them (`kill`); docs/install.md, "Child processes on Windows".
///
/// With `kill_tree`, the leader's exit is read without reaping it: its zombie keeps the
/// process group's id reserved, so `kill()` and the drop can still signal the group safely.
/// The zombie is reaped when the handle (and every pending `wait`) is gone.
class child_process {
public:
    child_process() noexcept = default;
    child_process(child_process&& other) noexcept
        : m_state(std::move(other.m_state)), m_kill_on_drop(other.m_kill_on_drop),
          m_all(other.m_all) {}
    child_process& operator=(child_process&& other) noexcept {
        if (this != &other) {
            release();
            m_state = std::move(other.m_state);
            m_kill_on_drop = other.m_kill_on_drop;
            m_all = other.m_all;
        }
        return *this;
    }
    child_process(const child_process&) = delete;
    child_process& operator=(const child_process&) = delete;
    ~child_process() { release(); }

    /// False for a default-constructed, moved-from or detached handle.
    explicit operator bool() const noexcept { return static_cast<bool>(m_state); }

    /// The child's process id (still given after it has exited).
    conflux::pid_type pid() const { return state().pid(); }

    /// The child's stdin; `std::logic_error` unless fd 0 is a pipe.
    writable_stream& in() { return writable(0); }
    /// The child's stdout; `std::logic_error` unless fd 1 is a pipe.
    readable_stream& out() { return readable(1); }
    /// The child's stderr; `std::logic_error` unless fd 2 is a pipe.
    readable_stream& err() { return readable(2); }
    /// With `spawn_options::all`: the one pipe the child's stdout and stderr both write
    /// (execa's `subprocess.all`), in the order the child's writes reached it. The same
    /// stream as `out()`. `std::logic_error` without `all`.
    readable_stream& all() {
        if (!m_all) {
            throw std::logic_error("conflux::child_process: all() needs spawn_options::all");
        }
        return readable(1);
    }

    /// The pipe the child writes at descriptor `fd`.
    readable_stream& readable(int fd) {
        if (auto* s = state().reader(fd)) return *s;
        throw std::logic_error("conflux::child_process: fd " + std::to_string(fd) +
                               " of the child is not a pipe it writes");
    }
    /// The pipe the child reads at descriptor `fd`.
    writable_stream& writable(int fd) {
        if (auto* s = state().writer(fd)) return *s;
        throw std::logic_error("conflux::child_process: fd " + std::to_string(fd) +
                               " of the child is not a pipe it reads");
    }

    /// Waits for the child to exit and returns how it ended; awaited again (or from several
    /// coroutines at once) gives the same status. A stopped (SIGSTOP) child is still running.
    ///
    /// Resumes on the executor it was awaited from (hopping to the child's loop and back when
    /// awaited on another one). Cancelled by `token` (default: the inherited stop token) with
    /// `operation_cancelled`; the child itself keeps running.
    [[nodiscard]] task<exit_status> wait(std::stop_token token = {}) {
        if (!token.stop_possible()) token = co_await get_stop_token();
        std::shared_ptr<detail::child_state> s = m_state;
        if (!s) throw std::logic_error("conflux::child_process::wait on an empty handle");
        event_loop* loop = s->loop();
        if (loop == nullptr) {
            if (auto st = s->status()) co_return *st;
            throw std::logic_error("conflux::child_process::wait: the child's event loop has "
                                   "been destroyed");
        }
        if (!loop->running_in_this_thread()) co_await loop->schedule();
        co_return co_await detail::child_state::wait_awaiter(std::move(s), std::move(token));
    }

    /// The status if the child has exited and been reaped, else empty. Non-blocking.
    std::optional<exit_status> status() const { return state().status(); }

    /// Sends `signal` (0 probes) to the child through its pidfd, so never to a recycled pid;
    /// with `kill_tree`, to its whole process group — also after the leader has exited, since
    /// its zombie keeps the group id reserved (the group may then be empty: true means the
    /// signal was sent, not that a process received it). Returns false when there is nobody
    /// to signal: the child has exited (without `kill_tree`). Throws `std::system_error`
    /// (EINVAL) for an invalid signal. On Windows SIGTERM, 9 (SIGKILL), SIGINT and SIGQUIT
    /// end the child (its job with `kill_tree`) with TerminateProcess, 0 probes, and other
    /// signals throw `std::system_error` (ENOSYS).
    bool kill(int signal = SIGTERM) {
        if (signal < 0 || signal >= NSIG) {
            throw std::system_error(EINVAL, std::system_category(),
                                    "kill \"" + state().program() + "\"");
        }
        return state().send(signal);
    }

    /// Lets the child run on, unwatched by this handle; the loop reaps it when it exits.
    /// The handle becomes empty.
    void detach() {
        m_kill_on_drop = false;
        release();
    }

    /// True if the child was killed because of `.timeout`.
    bool timed_out() const { return state().kill_reason() == detail::child_state::reason::timeout; }

    /// Low-level: wraps a started child (used by `spawn` and `exec_file`); `all`: its stdout
    /// and stderr share the pipe at fd 1.
    child_process(std::shared_ptr<detail::child_state> s, bool kill_on_drop,
                  bool all = false) noexcept
        : m_state(std::move(s)), m_kill_on_drop(kill_on_drop), m_all(all) {}

private:
    detail::child_state& state() const {
        if (!m_state) throw std::logic_error("conflux::child_process: empty handle");
        return *m_state;
    }

    static task<void> reap_in_background(std::shared_ptr<detail::child_state> s) {
        co_await detail::child_state::wait_awaiter(s, std::stop_token());
        // With kill_tree: the group's SIGKILL after the grace period is still to come.
        if (s->kill_pending()) co_await finish_kill(s);
    }

    // Keeps the state (and the zombie that reserves the group id) until the grace period of
    // a kill sequence has run out and its SIGKILL has gone to the group.
    static task<void> finish_kill(std::shared_ptr<detail::child_state> s) {
        // The state's own grace timer sends the SIGKILL at this deadline; whichever of the two
        // timers comes first, the destructor finishes a kill still pending.
        co_await sleep_until(s->grace_deadline());
    }

    void release() noexcept {
        if (!m_state) return;
        std::shared_ptr<detail::child_state> s = std::move(m_state);
        event_loop* loop = s->loop();
        if (s->status()) {
            if (!s->group_id_held()) return;
            // kill_tree, leader gone: what is left of the group goes with the handle, or
            // gets its SIGKILL when the grace period of a kill in progress ends.
            if (m_kill_on_drop && s->kill_pending() && loop != nullptr) {
                detach_or_drop(*loop, finish_kill(std::move(s)));
            } else if (m_kill_on_drop) {
                s->kill_now();
            }
            return;
        }
        if (m_kill_on_drop) s->kill_now();
        if (loop != nullptr) detach_or_drop(*loop, reap_in_background(std::move(s)));
    }

    static void detach_or_drop(event_loop& loop, task<void> t) noexcept {
        try {
            loop.detach(std::move(t));
        } catch (...) {
            // No memory for the reaper: the state goes now, and its destructor reaps a
            // killed child or hands a running one to the orphan list.
        }
    }

    std::shared_ptr<detail::child_state> m_state;
    bool m_kill_on_drop = true;
    bool m_all = false;
};

/// Starts `program` with `args` (never through a shell: every argument arrives verbatim)
/// and returns at once. `program` without a '/' is looked up in the child's PATH (never in
/// the current directory); with one, it is used as is (relative to `.cwd`).
///
/// Must be called on an event loop's thread (`std::logic_error` otherwise); the handle
/// belongs to that loop. Throws `std::invalid_argument` (NUL bytes, bad environment names,
/// bad stdio specs) before anything starts, and `std::system_error` naming the program (and
/// cwd) when the child cannot be started: ENOENT, EACCES, ENOEXEC, a missing cwd, EMFILE...
/// Nothing leaks on any error path.
///
/// ```
/// auto child = conflux::spawn("grep", {"-n", "todo"});
/// co_await child.in().write_all(text);
/// child.in().close();
/// while (auto line = co_await child.out().read_line()) use(*line);
/// conflux::exit_status st = co_await child.wait();
/// ```
inline child_process spawn(std::string_view program, const arguments& args = {},
                           const spawn_options& options = {}) {
    event_loop& loop = detail::require_loop("conflux::spawn");
    detail::launch_request request =
        detail::make_launch_request(program, std::span(args.list()), options);
    std::vector<stdio_spec> shared;
    if (options.all) {
        shared = detail::shared_output_stdio(options.stdio, "conflux::spawn");
        request.stdio = &shared;
    }
    detail::launched l = detail::launch(request);
    auto state = std::make_shared<detail::child_state>(loop, std::move(l), std::string(program));
    child_process child(state, options.kill_on_drop, options.all);
    state->configure({.timeout = options.timeout,
                      .kill_signal = options.kill_signal,
                      .kill_grace = options.kill_grace,
                      .tree = options.kill_tree,
                      .stop_token = options.stop_token});
    return child;
}

/// `spawn` with the program given as a `std::filesystem::path`. (A template, so that a string
/// literal still picks the `std::string_view` overload instead of being ambiguous.)
template <std::same_as<std::filesystem::path> Path>
child_process spawn(const Path& program, const arguments& args = {},
                    const spawn_options& options = {}) {
    return spawn(std::string_view(program.native()), args, options);
}

#if CONFLUX_DETAIL_GCC12_TEMPORARIES
/// GCC 12 only: `spawn(p, args, {...})` inside a `co_await` expression destroys the options
/// twice, and a call cannot tell whether it is inside one, so options written in the call are
/// refused there (the overload taking `const spawn_options&` serves named options).
template <class Refused = void>
child_process spawn(std::string_view, const arguments&, spawn_options&&) {
    static_assert(detail::refused_temporary<Refused>,
                  "GCC 12 destroys options written inside a co_await expression twice: name "
                  "the options first: `conflux::spawn_options o{...}; conflux::spawn(p, args, "
                  "o);` (GCC >= 13 and Clang accept them in the call)");
    return {};
}
template <std::same_as<std::filesystem::path> Path>
child_process spawn(const Path&, const arguments&, spawn_options&&) {
    static_assert(detail::refused_temporary<Path>,
                  "GCC 12 destroys options written inside a co_await expression twice: name "
                  "the options first: `conflux::spawn_options o{...}; conflux::spawn(p, args, "
                  "o);` (GCC >= 13 and Clang accept them in the call)");
    return {};
}
#endif

} // namespace conflux

// exec and exec_file have their own header; it is included here too, after the spawn it
// needs, so that code written against process.hpp alone keeps compiling.
#include <conflux/exec.hpp>
