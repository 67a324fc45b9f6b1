#pragma once

// A child's exit, read through its pidfd (waitid with P_PIDFD, Linux 5.4), and signals to its
// process group: what the process layer asks of the platform once the child runs.

#include <cerrno>

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>

namespace conflux::detail {

/// What a look at a child's exit found.
struct child_exit_report {
    enum class state {
        running, ///< not exited yet
        exited,  ///< `value` is the exit code
        killed,  ///< `value` is the signal; `core_dumped` says whether it left a core
        lost     ///< already reaped by the kernel (SIGCHLD set to SIG_IGN): no status
    };
    state what = state::running;
    int value = 0;
    bool core_dumped = false;
};

/// Reads the exit of the child behind `pidfd` without blocking. With `keep_zombie` the child
/// is left a zombie (it keeps its pid, and so its process group id, reserved) and can be
/// reaped later by `reap_child`.
inline child_exit_report poll_child_exit(int pidfd, bool keep_zombie) noexcept {
    siginfo_t info{};
    const int flags = WEXITED | WNOHANG | (keep_zombie ? WNOWAIT : 0);
    int r;
    do {
        r = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, flags);
    } while (r < 0 && errno == EINTR);
    child_exit_report report;
    if (r < 0) {
        report.what = child_exit_report::state::lost; // ECHILD
    } else if (info.si_pid == 0) {
        report.what = child_exit_report::state::running;
    } else if (info.si_code == CLD_EXITED) {
        report.what = child_exit_report::state::exited;
        report.value = info.si_status;
    } else {
        report.what = child_exit_report::state::killed;
        report.value = info.si_status;
        report.core_dumped = info.si_code == CLD_DUMPED;
    }
    return report;
}

/// Reaps the child behind `pidfd`, waiting for its exit: for a child known to have exited or
/// to be dying (SIGKILLed), so the wait is short.
inline void reap_child(int pidfd) noexcept {
    siginfo_t info{};
    while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED) < 0 &&
           errno == EINTR) {
    }
}

/// Sends `sig` to every process of the group whose id is `group`. Returns 0 or the errno
/// (ESRCH: the group is empty; EPERM: none of it may be signalled).
inline int signal_process_group(int group, int sig) noexcept {
    return ::kill(-group, sig) == 0 ? 0 : errno;
}

} // namespace conflux::detail
