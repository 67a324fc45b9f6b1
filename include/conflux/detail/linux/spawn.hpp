#pragma once

// Starting a child process without fork(): clone(CLONE_VM | CLONE_VFORK | CLONE_PIDFD) runs a
// small function on its own stack inside the parent's address space until execve, so the
// cost does not grow with the parent's memory (no page tables are copied) and the kernel
// hands back a pidfd with no window in which the pid could be recycled.
//
// Everything the child does is prepared by the parent beforehand (argv, envp, the fd plan,
// rlimits); the child only makes raw system calls, which are async-signal-safe and go around
// sanitizer interceptors. It reports the step that failed and its errno through memory the
// two share (CLONE_VM), and CLONE_VFORK keeps the parent suspended until the child has either
// exec'd or exited, so the report is complete when clone() returns.

#include <conflux/detail/linux/child_exit.hpp>
#include <conflux/detail/posix/unique_fd.hpp>
#include <conflux/detail/system_error.hpp>

#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif

namespace conflux::detail {

/// One descriptor of the child: `target` becomes a copy of the parent's `source`.
struct fd_assignment {
    int target = -1;
    int source = -1;
};

/// The steps the child can fail at, for the error message.
enum class spawn_step : int {
    none = 0,
    fd_setup,
    setsid,
    setpgid,
    setgroups,
    setgid,
    setuid,
    rlimit,
    chdir,
    exec,
};

inline const char* spawn_step_name(spawn_step step) noexcept {
    switch (step) {
    case spawn_step::none:
        return "";
    case spawn_step::fd_setup:
        return "dup2";
    case spawn_step::setsid:
        return "setsid";
    case spawn_step::setpgid:
        return "setpgid";
    case spawn_step::setgroups:
        return "setgroups";
    case spawn_step::setgid:
        return "setgid";
    case spawn_step::setuid:
        return "setuid";
    case spawn_step::rlimit:
        return "setrlimit";
    case spawn_step::chdir:
        return "chdir";
    case spawn_step::exec:
        return "execve";
    }
    return "";
}

struct rlimit_assignment {
    int resource = 0;
    ::rlimit limit{};
};

/// Everything the child needs, prepared by the parent. Pointers stay valid during
/// `clone_spawn` (the parent is suspended while the child runs).
struct spawn_plan {
    const char* path = nullptr;  // absolute or relative to `cwd`; never searched
    char* const* argv = nullptr; // null-terminated
    char* const* envp = nullptr; // null-terminated
    const char* cwd = nullptr;   // null = inherit
    const fd_assignment* fds = nullptr;
    std::size_t fd_count = 0; // targets are 0 .. fd_count-1 in order, source -1 = closed
    const rlimit_assignment* rlimits = nullptr;
    std::size_t rlimit_count = 0;
    int keep_fd = -1;         // above the targets; survives until exec (sanitizer builds)
    bool new_session = false; // setsid(): new session and process group
    bool new_group = false;   // setpgid(0, 0)
    bool set_uid = false;
    bool set_gid = false;
    uid_t uid = 0;
    gid_t gid = 0;
};

/// Written by the child, read by the parent after clone() returns.
struct spawn_report {
    volatile int step = 0;
    volatile int error = 0;
};

struct spawn_child_args {
    const spawn_plan* plan;
    spawn_report* report;
};

// A raw system call returning -errno: no libc wrapper with its own state, no sanitizer
// interceptor. (syscall() still stores errno, in the TLS of the parent thread that is
// suspended meanwhile; the parent reads it only from the report.)
[[gnu::always_inline]] inline long child_syscall(long n, long a = 0, long b = 0, long c = 0,
                                                 long d = 0) noexcept {
    long r = ::syscall(n, a, b, c, d);
    return r < 0 ? -errno : r;
}

#if defined(__clang__)
#define CONFLUX_DETAIL_NO_SANITIZE                                                                 \
    __attribute__((no_sanitize("address", "thread", "undefined", "memory")))
#else
#define CONFLUX_DETAIL_NO_SANITIZE __attribute__((no_sanitize("address", "thread", "undefined")))
#endif

[[noreturn]] CONFLUX_DETAIL_NO_SANITIZE inline void
child_fail(spawn_report* report, spawn_step step, long neg_errno) noexcept {
    report->error = static_cast<int>(-neg_errno);
    report->step = static_cast<int>(step);
    ::syscall(SYS_exit_group, 127);
    __builtin_unreachable();
}

/// The child's side, from clone() to execve(). Async-signal-safe throughout.
CONFLUX_DETAIL_NO_SANITIZE inline int spawn_child_main(void* raw) noexcept {
    auto* args = static_cast<spawn_child_args*>(raw);
    const spawn_plan& plan = *args->plan;
    spawn_report* report = args->report;

    // Dispositions: a handler of the parent must never run in the child (it would run in
    // the parent's memory), and ignored signals are not inherited by the program either.
    // A zeroed kernel sigaction is SIG_DFL with no flags whatever the architecture's layout.
    struct {
        unsigned long words[8];
    } dfl{};
    for (int sig = 1; sig < 65; ++sig) {
        if (sig == SIGKILL || sig == SIGSTOP) continue;
        child_syscall(SYS_rt_sigaction, sig, reinterpret_cast<long>(&dfl), 0, 8);
    }

    if (plan.new_session) {
        if (long r = child_syscall(SYS_setsid); r < 0) child_fail(report, spawn_step::setsid, r);
    } else if (plan.new_group) {
        if (long r = child_syscall(SYS_setpgid, 0, 0); r < 0) {
            child_fail(report, spawn_step::setpgid, r);
        }
    }

    // Move every source that sits inside the target range above it first, so assigning
    // target i never clobbers a source still needed for a later target (swapping 1 and 2).
    const int n = static_cast<int>(plan.fd_count);
    int moved[64];
    for (int i = 0; i < n && i < 64; ++i) {
        int source = plan.fds[i].source;
        if (source >= 0 && source < n && source != i) {
            long r = child_syscall(SYS_fcntl, source, F_DUPFD_CLOEXEC, n);
            if (r < 0) child_fail(report, spawn_step::fd_setup, r);
            source = static_cast<int>(r);
        }
        moved[i] = source;
    }
    for (int i = 0; i < n && i < 64; ++i) {
        const int source = moved[i];
        if (source < 0) {
            child_syscall(SYS_close, i);
        } else if (source == i) {
            // Inherited as is: only the close-on-exec flag must go.
            // EBADF: the parent has no such descriptor, so neither has the child.
            if (long r = child_syscall(SYS_fcntl, i, F_SETFD, 0); r < 0 && r != -EBADF) {
                child_fail(report, spawn_step::fd_setup, r);
            }
        } else if (long r = child_syscall(SYS_dup3, source, i, 0); r < 0) {
            child_fail(report, spawn_step::fd_setup, r);
        }
    }
    // Only what was asked for survives the exec, whatever the parent left without O_CLOEXEC.
#ifdef SYS_close_range
    if (plan.keep_fd > n) {
        child_syscall(SYS_close_range, n, plan.keep_fd - 1, 0);
        child_syscall(SYS_close_range, plan.keep_fd + 1, ~0U, 0);
    } else {
        child_syscall(SYS_close_range, n, ~0U, 0);
    }
#endif

    if (plan.set_uid || plan.set_gid) {
        // Supplementary groups of the parent must not leak into a child of another identity.
        // EPERM here means we are not privileged; setgid/setuid will then report the error.
        long r = child_syscall(SYS_setgroups, 0, 0);
        if (r < 0 && r != -EPERM) child_fail(report, spawn_step::setgroups, r);
    }
    if (plan.set_gid) {
        if (long r = child_syscall(SYS_setgid, plan.gid); r < 0) {
            child_fail(report, spawn_step::setgid, r);
        }
    }
    if (plan.set_uid) {
        if (long r = child_syscall(SYS_setuid, plan.uid); r < 0) {
            child_fail(report, spawn_step::setuid, r);
        }
    }
    for (std::size_t i = 0; i < plan.rlimit_count; ++i) {
        long r = child_syscall(SYS_prlimit64, 0, plan.rlimits[i].resource,
                               reinterpret_cast<long>(&plan.rlimits[i].limit), 0);
        if (r < 0) child_fail(report, spawn_step::rlimit, r);
    }
    if (plan.cwd != nullptr) {
        if (long r = child_syscall(SYS_chdir, reinterpret_cast<long>(plan.cwd)); r < 0) {
            child_fail(report, spawn_step::chdir, r);
        }
    }

    // The parent blocked every signal around clone(); the program starts with none blocked.
    std::uint64_t empty_mask = 0;
    child_syscall(SYS_rt_sigprocmask, SIG_SETMASK, reinterpret_cast<long>(&empty_mask), 0, 8);

    long r = child_syscall(SYS_execve, reinterpret_cast<long>(plan.path),
                           reinterpret_cast<long>(plan.argv), reinterpret_cast<long>(plan.envp));
    child_fail(report, spawn_step::exec, r);
}

/// Result of a successful `clone_spawn`.
struct spawned {
    pid_t pid = -1;
    unique_fd pidfd;
};

/// Failure of the child before exec: which step, which errno.
struct spawn_failure {
    spawn_step step = spawn_step::none;
    int error = 0;
};

/// Starts the child described by `plan`. Returns the pid and pidfd, or fills `failure` (the
/// failed child is already reaped) and returns pid -1. Throws `std::system_error` when
/// clone() itself fails.
#if defined(__SANITIZE_THREAD__)
#define CONFLUX_DETAIL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CONFLUX_DETAIL_TSAN 1
#endif
#endif

inline spawned clone_spawn(const spawn_plan& plan, spawn_failure& failure) {
    spawn_report report;
    int pidfd = -1;
    sigset_t all, old;
    ::sigfillset(&all);
#ifndef CONFLUX_DETAIL_TSAN
    // The child's stack: small, and released as soon as the child has exec'd or exited.
    constexpr std::size_t stack_size = 64 * 1024;
    void* stack = ::mmap(nullptr, stack_size, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) throw_errno("spawn", "mmap child stack");
    spawn_child_args args{&plan, &report};

    // Block every signal so no handler of this process runs in the child before it has
    // reset the dispositions; the child unblocks them right before execve.
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    // SIGCHLD as exit signal makes it an ordinary child for waitid(P_PIDFD).
    const int pid = ::clone(&spawn_child_main, static_cast<char*>(stack) + stack_size,
                            CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, &args, &pidfd);
    const int clone_errno = errno;
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    ::munmap(stack, stack_size);
    if (pid < 0) throw_system_error(clone_errno, "spawn", "clone");
#else
    // ThreadSanitizer treats clone() as fork() and cannot survive a CLONE_VM child, so
    // sanitizer builds only take the classic route: fork, the report in a shared page, a
    // close-on-exec pipe that reaches EOF at exec, and pidfd_open (race-free: the child
    // cannot be reaped before we have its pidfd).
    void* page = ::mmap(nullptr, sizeof(spawn_report), PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED) throw_errno("spawn", "mmap");
    auto* shared = new (page) spawn_report();
    int sync[2];
    if (::pipe2(sync, O_CLOEXEC) != 0) {
        ::munmap(page, sizeof(spawn_report));
        throw_errno("spawn", "pipe");
    }
    if (sync[1] <= static_cast<int>(plan.fd_count)) {
        const int high = ::fcntl(sync[1], F_DUPFD_CLOEXEC, static_cast<int>(plan.fd_count) + 1);
        ::close(sync[1]);
        sync[1] = high;
    }
    spawn_plan with_sync = plan;
    with_sync.keep_fd = sync[1];
    spawn_child_args args{&with_sync, shared};
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    const int pid = static_cast<int>(::fork());
    if (pid == 0) {
        ::close(sync[0]);
        spawn_child_main(&args);
    }
    const int clone_errno = errno;
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    ::close(sync[1]);
    if (pid > 0) {
        char byte;
        while (::read(sync[0], &byte, 1) < 0 && errno == EINTR) {
        }
        pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
        if (pidfd >= 0) ::fcntl(pidfd, F_SETFD, FD_CLOEXEC);
    }
    ::close(sync[0]);
    report.step = shared->step;
    report.error = shared->error;
    ::munmap(page, sizeof(spawn_report));
    if (pid < 0) throw_system_error(clone_errno, "spawn", "fork");
#endif

    spawned out;
    out.pid = pid;
    out.pidfd = unique_fd(pidfd);
    if (report.step != 0) {
        failure.step = static_cast<spawn_step>(report.step);
        failure.error = report.error;
        // The child has exited already (exit_group before clone returned): reap it now.
        reap_child(pidfd);
        out.pid = -1;
        out.pidfd.reset();
    }
    return out;
}

/// pidfd_send_signal(2): a signal to exactly the process behind `pidfd`, never a recycled pid.
inline int pidfd_send_signal(int pidfd, int sig) noexcept {
    return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

} // namespace conflux::detail
