#pragma once

// Writing to a pipe whose reader has gone raises SIGPIPE, which kills the process by default.
// conflux reports EPIPE instead and never changes the process's SIGPIPE disposition: the
// signal is blocked in the writing thread, and the pending one that a failed write leaves
// behind is consumed. MSG_NOSIGNAL exists only for sockets.
//
// Blocking and unblocking around every write costs three system calls per write, more than the
// write itself for a short line. So a loop's thread blocks SIGPIPE once, at its first pipe
// write inside `event_loop::run()`, and unblocks it when that run() returns: a write then costs
// the write alone. Outside run() a write pays for the mask itself, as before.

#include <conflux/detail/thread_local.hpp>

#include <cerrno>
#include <cstddef>
#include <ctime>

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

namespace conflux::detail {

struct sigpipe_thread_state {
    bool in_run = false;        // inside an event loop's run() on this thread
    bool blocked_by_us = false; // SIGPIPE blocked by conflux until that run() returns
};

// Reached out of line: see opaque_address.
[[gnu::noinline]] inline sigpipe_thread_state& sigpipe_state() noexcept {
    static thread_local sigpipe_thread_state state;
    return *opaque_address(&state);
}

inline sigset_t sigpipe_only() noexcept {
    sigset_t set;
    ::sigemptyset(&set);
    ::sigaddset(&set, SIGPIPE);
    return set;
}

// Takes a pending SIGPIPE off this thread, if there is one: it was raised by a write of this
// thread while the signal was blocked, and that write has already reported EPIPE.
inline void consume_pending_sigpipe() noexcept {
    const sigset_t set = sigpipe_only();
    const timespec zero{};
    while (::sigtimedwait(&set, nullptr, &zero) < 0 && errno == EINTR) {
    }
}

/// Held by `event_loop::run()` for its duration: the outermost one on a thread undoes what the
/// writes inside it did to the thread's signal mask. Costs nothing when no pipe was written.
class sigpipe_run_scope {
public:
    sigpipe_run_scope() noexcept : m_state(sigpipe_state()), m_outermost(!m_state.in_run) {
        m_state.in_run = true;
    }
    sigpipe_run_scope(const sigpipe_run_scope&) = delete;
    sigpipe_run_scope& operator=(const sigpipe_run_scope&) = delete;
    ~sigpipe_run_scope() {
        if (!m_outermost) return;
        m_state.in_run = false;
        if (!m_state.blocked_by_us) return;
        m_state.blocked_by_us = false;
        // A SIGPIPE still pending came from a write on this thread that saw EPIPE: unblocking
        // would deliver it now, long after the fact. Take it off first.
        sigset_t pending;
        ::sigemptyset(&pending);
        if (::sigpending(&pending) == 0 && ::sigismember(&pending, SIGPIPE) == 1) {
            consume_pending_sigpipe();
        }
        const sigset_t set = sigpipe_only();
        ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
    }

private:
    sigpipe_thread_state& m_state;
    bool m_outermost;
};

/// True when conflux keeps SIGPIPE blocked on this thread: a thread started from here inherits
/// the mask and should drop it (native_thread does).
inline bool sigpipe_blocked_by_conflux() noexcept { return sigpipe_state().blocked_by_us; }

/// For a thread started from one where `sigpipe_blocked_by_conflux()`: the mask it inherited.
inline void unblock_inherited_sigpipe() noexcept {
    const sigset_t set = sigpipe_only();
    ::pthread_sigmask(SIG_UNBLOCK, &set, nullptr);
}

/// write(2) that reports a reader that went away as EPIPE and never kills the process with
/// SIGPIPE, without touching the process's signal dispositions. Inside `event_loop::run()` it
/// costs the write alone after the thread's first call; elsewhere it blocks SIGPIPE around the
/// write (three more system calls).
inline ssize_t write_no_sigpipe(int fd, const void* data, std::size_t size) noexcept {
    sigpipe_thread_state& state = sigpipe_state();
    if (state.in_run) {
        if (!state.blocked_by_us) {
            const sigset_t set = sigpipe_only();
            sigset_t old;
            ::pthread_sigmask(SIG_BLOCK, &set, &old);
            // Already blocked by the program itself: its mask, left as it is at the end.
            state.blocked_by_us = ::sigismember(&old, SIGPIPE) != 1;
        }
        ssize_t n;
        do {
            n = ::write(fd, data, size);
        } while (n < 0 && errno == EINTR);
        if (n < 0 && errno == EPIPE) {
            // The signal this write raised is pending on this thread (standard signals do not
            // queue, so an earlier one, from a write that also saw EPIPE, is merged with it).
            const int saved = errno;
            consume_pending_sigpipe();
            errno = saved;
        }
        return n;
    }
    // Outside a loop's run(): block for the write alone. A SIGPIPE pending before we started
    // belongs to someone else and is left alone.
    const sigset_t set = sigpipe_only();
    sigset_t pending;
    ::sigemptyset(&pending);
    ::sigpending(&pending);
    const bool was_pending = ::sigismember(&pending, SIGPIPE) == 1;
    sigset_t old;
    ::pthread_sigmask(SIG_BLOCK, &set, &old);
    ssize_t n;
    do {
        n = ::write(fd, data, size);
    } while (n < 0 && errno == EINTR);
    const int saved = errno;
    if (n < 0 && saved == EPIPE && !was_pending) consume_pending_sigpipe();
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    errno = saved;
    return n;
}

} // namespace conflux::detail
