#pragma once

#include <conflux/detail/posix/unique_fd.hpp>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <mutex>
#include <utility>
#include <vector>

#include <sys/wait.h>

namespace conflux::detail {

/// Children whose event loop was destroyed while they still ran (detached, or dropped with
/// `kill_on_drop = false`): nobody watches their pidfd any more. They are kept here, process
/// wide, and reaped by the next spawn on any thread once they have exited, so a program that
/// makes and destroys loops does not collect zombies. (Until a later spawn, an exited orphan
/// stays a zombie: reaping it sooner would take a thread, or a SIGCHLD handler.)
class orphan_children {
public:
    static orphan_children& instance() noexcept {
        static orphan_children list;
        return list;
    }

    /// Takes over a running child's pidfd.
    void adopt(unique_fd pidfd) noexcept {
        try {
            std::lock_guard lock(m_mutex);
            m_pidfds.push_back(std::move(pidfd));
            m_count.store(m_pidfds.size(), std::memory_order_release);
        } catch (...) {
            // No memory to keep it: the child stays unwatched, as it would have without us.
        }
    }

    /// Reaps every orphan that has exited. Cheap when there are none: one atomic load.
    void reap_exited() noexcept {
        if (m_count.load(std::memory_order_acquire) == 0) return;
        std::lock_guard lock(m_mutex);
        std::erase_if(m_pidfds, [](const unique_fd& pidfd) { return reaped(pidfd.get()); });
        m_count.store(m_pidfds.size(), std::memory_order_release);
    }

    std::size_t size() const noexcept { return m_count.load(std::memory_order_acquire); }

private:
    orphan_children() = default;

    // True when the child is gone: reaped now, or already (ECHILD: SIGCHLD set to SIG_IGN).
    static bool reaped(int pidfd) noexcept {
        siginfo_t info{};
        int r;
        do {
            r = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info,
                         WEXITED | WNOHANG);
        } while (r < 0 && errno == EINTR);
        return r < 0 || info.si_pid != 0;
    }

    std::mutex m_mutex;
    std::vector<unique_fd> m_pidfds;
    std::atomic<std::size_t> m_count{0};
};

} // namespace conflux::detail
