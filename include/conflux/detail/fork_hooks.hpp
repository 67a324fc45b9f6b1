#pragma once

// The one place `conflux::run` learns that this process is a forked child. The hooks are
// installed by fork.hpp (a pointer store during static initialisation of that header's inline
// variable); a program that never includes fork.hpp has none, and `run` pays one null check.

#include <exception>

namespace conflux {
class event_loop;
}

namespace conflux::detail {

struct fork_child_hooks {
    /// Called by `run` on its fresh loop before the main task. Returns false unless this
    /// process was started by `fork` (consuming that mark, so it happens once). For a named
    /// entry point it runs the entry and exits the process: it does not return then.
    bool (*start)(event_loop& loop) = nullptr;
    /// The main task completed: flush and close the channel to the parent.
    void (*finish)(event_loop& loop) noexcept = nullptr;
    /// The main task threw: report it to the parent as a remote_error, then flush.
    void (*failed)(event_loop& loop) noexcept = nullptr;
};

inline const fork_child_hooks*& fork_hooks() noexcept {
    static const fork_child_hooks* hooks = nullptr;
    return hooks;
}

} // namespace conflux::detail
