#pragma once

// SIGTERM and SIGINT as a descriptor: blocked in the calling thread and read from a
// signalfd, so a cluster's primary sees them as readiness on its event loop.

#include <conflux/detail/posix/unique_fd.hpp>
#include <conflux/detail/system_error.hpp>

#include <pthread.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/types.h>
#include <unistd.h>

namespace conflux::detail {

/// SIGTERM and SIGINT, blocked in the thread that calls `open` and readable from `fd()`.
class termination_signal_fd {
public:
    termination_signal_fd() = default;
    termination_signal_fd(const termination_signal_fd&) = delete;
    termination_signal_fd& operator=(const termination_signal_fd&) = delete;
    ~termination_signal_fd() { close(); }

    /// Blocks the two signals in the calling thread (other threads it starts later inherit
    /// the mask) and opens a non-blocking signalfd for them. Throws `std::system_error`.
    void open() {
        sigset_t set;
        ::sigemptyset(&set);
        ::sigaddset(&set, SIGTERM);
        ::sigaddset(&set, SIGINT);
        if (const int err = ::pthread_sigmask(SIG_BLOCK, &set, &m_old_mask); err != 0) {
            throw_system_error(err, "pthread_sigmask", "SIGTERM, SIGINT");
        }
        m_mask_changed = true;
        m_fd = unique_fd(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
        if (!m_fd) throw_errno("signalfd", "SIGTERM, SIGINT");
    }

    /// The descriptor to watch for readability (-1 before `open`).
    int fd() const noexcept { return m_fd.get(); }

    /// The number of a signal that arrived, or 0 when none is pending.
    int take() noexcept {
        signalfd_siginfo info{};
        const ssize_t n = ::read(m_fd.get(), &info, sizeof info);
        return n == static_cast<ssize_t>(sizeof info) ? static_cast<int>(info.ssi_signo) : 0;
    }

    /// Closes the signalfd and puts the thread's old mask back. Idempotent.
    void close() noexcept {
        m_fd.reset();
        if (m_mask_changed) {
            // Fails only for an invalid `how`, which SIG_SETMASK is not.
            ::pthread_sigmask(SIG_SETMASK, &m_old_mask, nullptr);
            m_mask_changed = false;
        }
    }

private:
    unique_fd m_fd;
    sigset_t m_old_mask{};
    bool m_mask_changed = false;
};

} // namespace conflux::detail
