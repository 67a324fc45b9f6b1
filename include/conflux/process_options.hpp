#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/detail/platform.hpp>
#include <conflux/detail/process_types.hpp>

#include <chrono>
#include <concepts>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <ranges>
#include <stop_token>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace conflux {

/// The arguments of a child process (argv[1] on): written as a braced list of strings,
/// `{"-n", name}`, or converted from a `std::vector<std::string>` or any other range of
/// string-likes (`std::vector<std::string_view>`, `std::array<const char*, N>`...).
///
/// (A braced list of strings converts through the variadic constructor rather than
/// `std::initializer_list`, whose temporary array GCC 12 cannot keep alive across a
/// `co_await` in the same expression: `co_await exec_file("ls", {"-l", dir})` must compile.)
class arguments {
public:
    arguments() = default;
    template <class... S>
    requires(sizeof...(S) > 0 && (std::is_convertible_v<S&&, std::string_view> && ...))
        arguments(S&&... args) { // NOLINT: implicit by design
        m_args.reserve(sizeof...(S));
        (m_args.emplace_back(std::string_view(args)), ...);
    }
    arguments(std::vector<std::string> args) : m_args(std::move(args)) {} // NOLINT
    template <std::ranges::input_range R>
    requires std::is_convertible_v<std::ranges::range_reference_t<R>, std::string_view> &&
        (!std::same_as<std::remove_cvref_t<R>, std::vector<std::string>>)&&(
            !std::same_as<std::remove_cvref_t<R>,
                          arguments>)&&(!std::is_convertible_v<R, std::string_view>)
            arguments(R&& range) { // NOLINT: implicit
        for (auto&& a : range) m_args.emplace_back(std::string_view(a));
    }

    const std::vector<std::string>& list() const noexcept { return m_args; }
    std::vector<std::string>& list() noexcept { return m_args; }

private:
    std::vector<std::string> m_args;
};

/// Environment variables as (name, value) pairs. Where a name appears twice, the last wins.
using env_vars = std::vector<std::pair<std::string, std::string>>;

/// Where one descriptor of a child process comes from (Node's `stdio` array entries).
///
/// ```
/// .stdio = {conflux::stdio_spec::ignore(), conflux::stdio_spec::pipe(),
///           conflux::stdio_spec::same_as(1)}   // 2>&1 into the stdout pipe
/// ```
struct stdio_spec {
    enum class kind {
        pipe,          ///< a pipe to the parent: fd 0 written by the parent, others read by it
        pipe_to_child, ///< a pipe the parent writes and the child reads, for fds beyond 0
        inherit,       ///< the parent's descriptor with the same number
        ignore,        ///< /dev/null
        fd,            ///< a descriptor of the parent (`fd`)
        file,          ///< a file opened for the child (`path`, `flags`)
        same_as,       ///< whatever the child's descriptor `fd` gets (2>&1)
        closed,        ///< no descriptor at all
    };

    kind how = kind::pipe;
    int fd = -1;
    std::filesystem::path path{};
    int flags = -1; ///< for `file`: open(2) flags; -1 = read for fd 0, else write+create+truncate
    mode_t mode = 0666;

    static stdio_spec pipe() { return {}; }
    static stdio_spec pipe_to_child() { return {.how = kind::pipe_to_child}; }
    static stdio_spec inherit() { return {.how = kind::inherit}; }
    static stdio_spec ignore() { return {.how = kind::ignore}; }
    static stdio_spec closed() { return {.how = kind::closed}; }
    /// The parent's `parent_fd`; the parent keeps its own copy open.
    static stdio_spec from_fd(int parent_fd) { return {.how = kind::fd, .fd = parent_fd}; }
    static stdio_spec file(std::filesystem::path p, int open_flags = -1, mode_t m = 0666) {
        return {.how = kind::file, .path = std::move(p), .flags = open_flags, .mode = m};
    }
    static stdio_spec same_as(int child_fd) { return {.how = kind::same_as, .fd = child_fd}; }
};

/// A resource limit set in the child before exec (setrlimit(2)): `{RLIMIT_NOFILE, 64}`.
/// `hard` defaults to `soft`. POSIX only. The values are the system's `rlim_t`, spelled
/// portably (`unlimited` is `RLIM_INFINITY`).
struct resource_limit {
    static constexpr std::uint64_t unlimited = ~std::uint64_t{0};

    int resource = 0;
    std::uint64_t soft = unlimited;
    std::optional<std::uint64_t> hard{};
};

/// Options of `conflux::spawn`. An aggregate for designated initialisers; the fields it
/// shares with `exec_options` have the same names and meaning (docs/process.md has the
/// Node.js mapping for each).
struct spawn_options {
    /// Working directory of the child; empty = the parent's. A relative program path
    /// ("./tool") is resolved against it.
    std::filesystem::path cwd{};
    /// When given, the child's whole environment (Node's `env`); otherwise the parent's.
    std::optional<env_vars> env{};
    /// Variables set on top of `env` (or of the inherited environment).
    env_vars env_set{};
    /// Variables removed from `env` (or from the inherited environment).
    std::vector<std::string> env_unset{};
    /// argv[0] seen by the child; default: the program as given.
    std::optional<std::string> argv0{};
    /// Descriptors 0, 1, 2, ... of the child; missing entries of 0-2 default to `pipe`.
    /// Nothing else is inherited.
    std::vector<stdio_spec> stdio{};
    /// New session and process group (setsid): not in the parent's terminal job.
    bool detached = false;
    /// The user and group ids the child runs as (POSIX only; the system's `uid_t`/`gid_t`).
    std::optional<std::uint32_t> uid{};
    std::optional<std::uint32_t> gid{};
    /// Kill the child with `kill_signal` after this long; 0 = never.
    std::chrono::milliseconds timeout{0};
    /// Signal for timeout, cancellation and `max_buffer`; SIGKILL follows after `kill_grace`
    /// if the child is still alive. Windows: any of SIGTERM, SIGINT, SIGQUIT, 9 ends the
    /// child at once (TerminateProcess), and `kill_grace` is not used.
    int kill_signal = SIGTERM;
    std::chrono::milliseconds kill_grace{2000};
    /// Put the child in its own process group and signal the whole group (all descendants
    /// that stayed in it) on timeout, cancellation, `kill()` and drop. Windows: the child's
    /// Job object is ended, with every descendant (none can leave it).
    bool kill_tree = false;
    /// setrlimit(2) in the child before exec.
    std::vector<resource_limit> rlimits{};
    /// The child is killed (SIGKILL) when this process dies, however it dies, SIGKILL
    /// included (execa's `cleanup`); ignored with `detached`. Linux: PR_SET_PDEATHSIG, which
    /// follows the thread that started the child, so children started off the main thread
    /// are started by a thread the library keeps for that (docs/process.md, "Children that
    /// die with the parent"). Windows: the child's Job object kills it, and its descendants,
    /// when this process ends (JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE).
    bool cleanup = true;
    /// Stopping it kills the child (`kill_signal`, then SIGKILL after `kill_grace`).
    std::stop_token stop_token{};
    /// What dropping a `child_process` whose child still runs does: true = SIGKILL (its
    /// group with `kill_tree`) and reap in the background; false = let it run and reap it
    /// in the background when it exits (as `detach()`).
    bool kill_on_drop = true;
    /// The child's stdout and stderr write one pipe, read as `child_process::all()` (execa's
    /// `all`, a shell's `2>&1`): its output in the order its writes reached the pipe, each
    /// write of at most PIPE_BUF bytes (4096 on Linux) in one piece. stdout and stderr can
    /// then no longer be told apart (`err()` is not a pipe). `.stdio` entries 1 and 2 must be
    /// absent or `pipe` (`std::invalid_argument` otherwise).
    bool all = false;
};

/// Options of `conflux::exec` and `conflux::exec_file`: the fields of `spawn_options`
/// (same names, same meaning) plus `input`, `check`, `max_buffer` and `shell`.
struct exec_options {
    std::filesystem::path cwd{};
    std::optional<env_vars> env{};
    env_vars env_set{};
    std::vector<std::string> env_unset{};
    std::optional<std::string> argv0{};
    /// As for spawn; stdout and stderr are captured only when they are pipes (the default).
    std::vector<stdio_spec> stdio{};
    bool detached = false;
    /// The user and group ids the child runs as (POSIX only; the system's `uid_t`/`gid_t`).
    std::optional<std::uint32_t> uid{};
    std::optional<std::uint32_t> gid{};
    /// Bounds the whole call, reading the pipes after the child's exit included: when it runs
    /// out, the child (or, with `kill_tree`, its group, even after the child's exit) gets
    /// `kill_signal` and `process_error` with `timed_out()` is thrown; 0 = never.
    std::chrono::milliseconds timeout{0};
    int kill_signal = SIGTERM;
    std::chrono::milliseconds kill_grace{2000};
    bool kill_tree = false;
    std::vector<resource_limit> rlimits{};
    /// As for spawn: the child dies with this process.
    bool cleanup = true;
    /// Stopping it ends the call in any phase: the child (or, with `kill_tree`, its group) is
    /// killed and `exec` throws `operation_cancelled`. The stop token the awaiting coroutine
    /// inherited does the same.
    std::stop_token stop_token{};

    /// Written to the child's stdin, which is then closed (EOF). A child that exits without
    /// reading it all is not an error.
    std::string input{};
    /// Written to stdin like `input`, but not copied: the call reads the caller's bytes, which
    /// must stay alive and unchanged until it completes (Node's `input` given a Buffer). Costs
    /// nothing per call where a copy of a large `input` costs its size in fresh pages. Setting
    /// both `input` and `input_view` is refused with `std::invalid_argument`.
    std::string_view input_view{};
    /// Throw `process_error` when the child does not exit with code 0.
    bool check = true;
    /// Most bytes kept of stdout and of stderr each (Node's maxBuffer, default 1 MiB);
    /// 0 = unlimited. Beyond it the child is killed and `process_error` reports the overflow.
    std::size_t max_buffer = 1024 * 1024;
    /// Bytes of capacity given to `exec_result::out` before the first read (at most
    /// `max_buffer` plus one): a caller that knows roughly how much the child prints spares
    /// the capture its growth (each growth copies what was read so far), and from 4 MiB on
    /// the buffer is backed by huge pages from its first byte (Linux, transparent huge pages
    /// in `madvise` mode). Capacity not written costs address space, not memory; 0 = none.
    std::size_t reserve_output = 0;
    /// Also capture stdout and stderr together, in the order the reads returned them, into
    /// `exec_result::all` (execa's `all`), beside the separate ones. Costs a copy of every
    /// byte; `max_buffer` bounds each stream as before.
    bool all = false;
    /// How long, after the child exits, its pipes are still read while a process it started
    /// keeps them open (Go's `Cmd.WaitDelay`); empty = as long as they stay open (Node's and
    /// Go's default). When it runs out the pipes are closed and `process_error` is thrown
    /// with `output_incomplete()` and the child's exit status; with `kill_tree` the group is
    /// ended (`kill_signal`, then SIGKILL). `0ms` stops reading at the exit.
    std::optional<std::chrono::milliseconds> wait_delay{};
#if CONFLUX_PLATFORM_WINDOWS
    /// The shell `exec` runs the command with (`shell /d /s /c "command"`); empty: the
    /// child's %COMSPEC%, else cmd.exe. A program other than cmd.exe is refused with
    /// `std::invalid_argument`: the line is written for cmd.exe's parser.
    std::string shell{};
#else
    /// The shell `exec` runs the command with (`shell -c command`).
    std::string shell = "/bin/sh";
#endif
};

} // namespace conflux
