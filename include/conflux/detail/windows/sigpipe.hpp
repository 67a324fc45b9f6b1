#pragma once

// Windows has no SIGPIPE: a write to a pipe whose reader has gone fails with
// ERROR_NO_DATA (or ERROR_BROKEN_PIPE) and nothing else happens. What the POSIX backend does
// around a loop's run() (detail/posix/sigpipe.hpp) is nothing here.

namespace conflux::detail {

/// Held by `event_loop::run()` for its duration; nothing to undo on Windows.
class sigpipe_run_scope {
public:
    // User-provided, as the POSIX one is: a scope variable of it is not "unused".
    sigpipe_run_scope() noexcept {}
    sigpipe_run_scope(const sigpipe_run_scope&) = delete;
    sigpipe_run_scope& operator=(const sigpipe_run_scope&) = delete;
};

/// Never: there is no signal mask to inherit.
inline bool sigpipe_blocked_by_conflux() noexcept { return false; }

inline void unblock_inherited_sigpipe() noexcept {}

} // namespace conflux::detail
