#pragma once

#include <conflux/detail/system_error.hpp>

#include <cerrno>
#include <cstddef>
#include <ctime>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

namespace conflux::detail {

/// Sets O_NONBLOCK on `fd` (the parent's end of a pipe; the child's end stays blocking).
inline void set_nonblocking(int fd, const char* what) {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) throw_errno("fcntl", what);
}

/// write(2) that reports a reader that went away as EPIPE and never kills the process with
/// SIGPIPE, without touching the process's signal dispositions.
///
/// Why this way: MSG_NOSIGNAL exists only for sockets, and ignoring SIGPIPE process-wide
/// would change behaviour the user may rely on (a shell-like program dying quietly on a
/// closed pipe). SIGPIPE for a write is directed at the writing thread, so blocking it in
/// this thread for the duration of the write is enough; if the write failed with EPIPE the
/// signal is now pending on this thread and is consumed with a zero-timeout sigtimedwait
/// before the old mask comes back, unless one was pending before we started (that one
/// belongs to someone else and is left alone). Costs three or four cheap syscalls per write,
/// which is noise next to moving up to a pipe's worth of data.
inline ssize_t write_no_sigpipe(int fd, const void* data, std::size_t size) noexcept {
    sigset_t pipe_only;
    ::sigemptyset(&pipe_only);
    ::sigaddset(&pipe_only, SIGPIPE);
    sigset_t pending;
    ::sigemptyset(&pending);
    ::sigpending(&pending);
    const bool was_pending = ::sigismember(&pending, SIGPIPE) == 1;
    sigset_t old;
    ::pthread_sigmask(SIG_BLOCK, &pipe_only, &old);
    ssize_t n;
    do {
        n = ::write(fd, data, size);
    } while (n < 0 && errno == EINTR);
    const int saved = errno;
    if (n < 0 && saved == EPIPE && !was_pending) {
        const timespec zero{};
        while (::sigtimedwait(&pipe_only, nullptr, &zero) < 0 && errno == EINTR) {
        }
    }
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    errno = saved;
    return n;
}

} // namespace conflux::detail
