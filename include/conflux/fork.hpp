#pragma once

#include <conflux/detail/cpp20.hpp>

#if !CONFLUX_HAS_FORK_IPC
#error "conflux/fork.hpp: fork and IPC are not supported on Windows yet"
#include <conflux/detail/compilation_stopped_by_the_error_above>
#endif

#include <conflux/event_loop.hpp>
#include <conflux/exit_status.hpp>
#include <conflux/ipc.hpp>
#include <conflux/process.hpp>
#include <conflux/process_options.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/fork_child.hpp>
#include <conflux/detail/gcc12_temporaries.hpp>
#include <conflux/detail/process_name.hpp>
#include <conflux/detail/process_self.hpp>

#include <concepts>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>
#include <utility>

namespace conflux {

/// A child started by `fork`: a `child_process` plus the IPC channel to it (Node's
/// `ChildProcess` from `child_process.fork`). Belongs to the event loop it was forked on.
/// Dropping it closes the channel and, like a dropped `child_process`, kills a child that
/// still runs (unless `spawn_options::kill_on_drop` is false).
class forked_child {
public:
    forked_child() noexcept = default;
    forked_child(child_process process, ipc_channel channel) noexcept
        : m_channel(std::move(channel)), m_process(std::move(process)) {}

    /// Sends a typed message to the child. See `ipc_channel::send` (and what it refuses with
    /// GCC 12).
#if CONFLUX_DETAIL_GCC12_TEMPORARIES
    // Forwarded as it came, so that a named message passes ipc_channel::send's check.
    template <class T>
    [[nodiscard]] task<void> send(T&& message, std::stop_token token = {}) {
        return m_channel.send(std::forward<T>(message), std::move(token));
    }
#else
    template <class T>
    [[nodiscard]] task<void> send(T message, std::stop_token token = {}) {
        return m_channel.send(std::move(message), std::move(token));
    }
#endif

    /// The child's next message; empty once the child closed the channel (it exited, even by
    /// a crash, or called `disconnect`). Throws `remote_error` when the child died of an
    /// uncaught exception, `ipc_error` on malformed input. See `ipc_channel::receive`.
    template <class T>
    [[nodiscard]] auto receive(std::stop_token token = {}) {
        return m_channel.template receive<T>(std::move(token));
    }

    /// The child's next message as whichever of `T...` it is (`std::variant<T...>`, by the
    /// message's type fingerprint). See `ipc_channel::receive_one_of`.
    template <class... T>
    [[nodiscard]] auto receive_one_of(std::stop_token token = {}) {
        return m_channel.template receive_one_of<T...>(std::move(token));
    }

    /// Closes the channel (queued messages are still delivered); a conflux child whose
    /// channel closes while it waits in `parent().receive()` sees end-of-file.
    void disconnect() { m_channel.disconnect(); }

    /// Waits for the child's exit; see `child_process::wait`.
    [[nodiscard]] task<exit_status> wait(std::stop_token token = {}) {
        return m_process.wait(std::move(token));
    }

    bool kill(int signal = SIGTERM) { return m_process.kill(signal); }
    conflux::pid_type pid() const { return m_process.pid(); }

    ipc_channel& channel() noexcept { return m_channel; }
    child_process& process() noexcept { return m_process; }

private:
    ipc_channel m_channel; // declared first: destroyed after the process handle
    child_process m_process;
};

namespace detail {

inline task<forked_child> start_fork(std::string program, std::string entry, arguments args,
                                     spawn_options options, ipc_options ipc) {
    event_loop& loop = require_loop("conflux::fork");
    auto [ours, theirs] = ipc_socketpair();
    if (options.stdio.empty()) {
        // As Node's fork: the child shares the parent's stdin, stdout and stderr.
        options.stdio = {stdio_spec::inherit(), stdio_spec::inherit(), stdio_spec::inherit()};
    }
    while (options.stdio.size() < 3) options.stdio.push_back(stdio_spec::inherit());
    const int child_fd = static_cast<int>(options.stdio.size());
    options.stdio.push_back(stdio_spec::from_fd(theirs.get()));
    const std::string fd_text = std::to_string(child_fd);
    if (ipc.mode == ipc_mode::json) {
        options.env_set.emplace_back("NODE_CHANNEL_FD", fd_text);
        options.env_set.emplace_back("NODE_CHANNEL_SERIALIZATION_MODE", "json");
    }
    options.env_set.emplace_back(fork_fd_env, fd_text);
    options.env_set.emplace_back(fork_mode_env, ipc.mode == ipc_mode::json ? "json" : "binary");
    options.env_set.emplace_back(fork_parent_env, std::to_string(current_process_id()));
    options.env_set.emplace_back(fork_max_env, std::to_string(ipc.max_message_size));
    if (!entry.empty()) {
        // This executable again: named as this program, titled with its entry point.
        const std::string name = own_program_name();
        options.env_set.emplace_back(fork_entry_env, entry);
        options.env_set.emplace_back(process_name_env, name);
        if (!options.argv0) options.argv0 = process_title(name, "fork " + entry);
    }

    ipc_channel channel(loop, file_descriptor(ours.release()), ipc);
    child_process child = spawn(program, args, options);
    theirs.reset(); // the child has its copy: EOF on our end now means the child is gone
    co_return forked_child(std::move(child), std::move(channel));
}

} // namespace detail

/// Registers `fn` as the entry point `name` that `fork(name)` runs in a child. `fn` is a
/// coroutine function `task<int>()` (its result is the exit code) or `task<void>()` (exit
/// 0). Call it before `conflux::run` — at the top of `main`, or in a namespace-scope
/// initialiser (`static bool r = conflux::register_entry(...)`). Returns true.
///
/// ```
/// conflux::task<void> worker() {
///     while (auto job = co_await conflux::parent().receive<int>()) {
///         co_await conflux::parent().send(*job * 2);
///     }
/// }
/// int main() {
///     conflux::register_entry("worker", worker);
///     return conflux::run(amain());
/// }
/// ```
template <class F>
bool register_entry(std::string name, F fn) {
    using result = std::invoke_result_t<F&>;
    if constexpr (std::same_as<result, task<int>>) {
        detail::fork_entries()[std::move(name)] = std::move(fn);
    } else {
        static_assert(std::same_as<result, task<void>>,
                      "conflux::register_entry: the entry point is task<int>() or task<void>()");
        detail::fork_entries()[std::move(name)] = [fn = std::move(fn)]() mutable -> task<int> {
            co_await fn();
            co_return 0;
        };
    }
    return true;
}

/// Starts a child running this same executable (through /proc/self/exe) whose
/// `conflux::run` runs the entry point `entry` (see `register_entry`) instead of its main
/// task, and exits with its result. The child's `main` runs up to `conflux::run` (with
/// `args` as its arguments), so keep what comes before it cheap. `options` are those of
/// `spawn` (env, cwd, stdio — default: inherit 0, 1, 2 like Node —, limits, timeout...).
///
/// `ps` shows the child as "myprog: fork <entry>" followed by `args` (its argv[0] is that
/// title; `options.argv0` replaces it) and, in `ps -o comm` and `top`, as "myprog": the
/// name of this program (the last component of its argv[0]; in a forked child, the name
/// its parent had).
///
/// An uncaught exception in the entry reaches the parent as `remote_error` from `receive`;
/// a crash (SIGSEGV) ends the parent's pending `receive` with empty and shows in `wait()` as
/// exit by signal. When the parent dies, the child exits.
///
/// Resumes on the calling loop (must be awaited on one: `std::logic_error` otherwise).
/// Throws `std::system_error` naming the program when the child cannot be started.
///
/// ```
/// auto child = co_await conflux::fork("worker");
/// co_await child.send(21);
/// int answer = *co_await child.receive<int>();
/// ```
///
/// GCC 12 destroys an aggregate temporary written inside a `co_await` expression twice, so
/// there options written in the call do not compile (a static_assert says what to write):
/// give them a name first (`spawn_options opts{...}; co_await fork("w", {}, opts);`).
/// `ipc_options` is trivially destructible and safe in the call everywhere.
[[nodiscard]] inline task<forked_child> fork(std::string_view entry, arguments args,
                                             const spawn_options& options, const ipc_options& ipc) {
    return detail::start_fork(detail::self_executable(), std::string(entry), std::move(args),
                              options, ipc);
}

/// `fork` with default IPC options.
[[nodiscard]] inline task<forked_child> fork(std::string_view entry, arguments args,
                                             const spawn_options& options) {
    return fork(entry, std::move(args), options, ipc_options());
}

/// `fork` with default options.
[[nodiscard]] inline task<forked_child> fork(std::string_view entry, arguments args = {}) {
    return fork(entry, std::move(args), spawn_options(), ipc_options());
}

/// Starts another program with an IPC channel to it: a conflux program (it calls
/// `conflux::run`, reaches us through `conflux::parent()`), or with `{.mode =
/// ipc_mode::json}` any program speaking Node's IPC — `fork_file("node", {"child.js"},
/// opts, {.mode = conflux::ipc_mode::json})` (`opts` a named `spawn_options`), where
/// `process.send` and `process.on('message')` work as under Node's own `fork`. Resumes,
/// throws and defaults as `fork`.
[[nodiscard]] inline task<forked_child> fork_file(std::string_view program, arguments args,
                                                  const spawn_options& options,
                                                  const ipc_options& ipc) {
    return detail::start_fork(std::string(program), std::string(), std::move(args), options, ipc);
}

/// `fork_file` with default IPC options.
[[nodiscard]] inline task<forked_child> fork_file(std::string_view program, arguments args,
                                                  const spawn_options& options) {
    return fork_file(program, std::move(args), options, ipc_options());
}

/// `fork_file` with default options.
[[nodiscard]] inline task<forked_child> fork_file(std::string_view program, arguments args = {}) {
    return fork_file(program, std::move(args), spawn_options(), ipc_options());
}

#if CONFLUX_DETAIL_GCC12_TEMPORARIES
// GCC 12 only: spawn options written in the call would be destroyed twice; refused.
#define CONFLUX_DETAIL_FORK_REFUSED(T)                                                             \
    static_assert(detail::refused_temporary<T>,                                                    \
                  "GCC 12 destroys options written inside a co_await expression twice: name "      \
                  "the options first: `conflux::spawn_options o{...}; co_await "                   \
                  "conflux::fork(entry, args, o);` (GCC >= 13 and Clang accept them in the call)")
template <class Refused = void>
task<forked_child> fork(std::string_view, arguments, spawn_options&&, const ipc_options&) {
    CONFLUX_DETAIL_FORK_REFUSED(Refused);
    return {};
}
template <class Refused = void>
task<forked_child> fork(std::string_view, arguments, spawn_options&&) {
    CONFLUX_DETAIL_FORK_REFUSED(Refused);
    return {};
}
template <class Refused = void>
task<forked_child> fork_file(std::string_view, arguments, spawn_options&&, const ipc_options&) {
    CONFLUX_DETAIL_FORK_REFUSED(Refused);
    return {};
}
template <class Refused = void>
task<forked_child> fork_file(std::string_view, arguments, spawn_options&&) {
    CONFLUX_DETAIL_FORK_REFUSED(Refused);
    return {};
}
#undef CONFLUX_DETAIL_FORK_REFUSED
#endif

/// True in a process started by `fork`/`fork_file` (or by Node's `fork`), inside
/// `conflux::run`.
inline bool has_parent() noexcept { return detail::parent_slot().channel != nullptr; }

/// The channel to the parent process, in a child started by `fork`, `fork_file` or Node's
/// `child_process.fork` (json mode). Available inside `conflux::run`, on its loop. Throws
/// `std::logic_error` in a process that was not forked.
inline ipc_channel& parent() {
    auto& link = detail::parent_slot();
    if (!link.channel) {
        throw std::logic_error("conflux::parent(): this process was not started by "
                               "conflux::fork (or the channel was already closed)");
    }
    return *link.channel;
}

/// By default a forked child exits (status 0) as soon as its parent process is gone; pass
/// false to keep running instead (then `parent().receive()` returns empty).
inline void exit_when_orphaned(bool yes) noexcept {
    detail::parent_slot().exit_when_orphaned = yes;
}

} // namespace conflux
