#pragma once

// Spinning before sleeping, the same on every platform: a pause instruction, a bounded spin,
// and the governor that stops spinning where it does not pay. The sleeping itself is the
// backend's (spin_wait.hpp selects it).

#include <algorithm>
#include <atomic>
#include <chrono>

namespace conflux::detail {

/// Tells the CPU that this is a spin loop (saves power, yields to a sibling hyper-thread).
inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield" ::: "memory");
#else
    std::atomic_signal_fence(std::memory_order_seq_cst);
#endif
}

/// Calls `done()` in a relaxed spin until it returns true or `budget` has passed; returns its
/// last answer. The clock is read only every 64 turns.
template <class Done>
bool spin_until(Done&& done, std::chrono::nanoseconds budget) noexcept {
    if (budget <= std::chrono::nanoseconds::zero()) return done();
    const auto deadline = std::chrono::steady_clock::now() + budget;
    for (unsigned turn = 1;; ++turn) {
        if (done()) return true;
        cpu_relax();
        if (turn % 64 == 0 && std::chrono::steady_clock::now() >= deadline) return done();
    }
}

/// Decides whether a waiter spins before sleeping, backing off after spins that failed.
///
/// Spinning pays when the peer runs on another core and answers within the budget; on a busy
/// machine the peer is often not scheduled at all, and every spin then burns its whole
/// budget for nothing. After a failed spin the next 1, 3, 7 ... (at most 255) waits go
/// straight to sleep; one spin that succeeds restores spinning at once.
class spin_governor {
public:
    /// Whether this wait should spin. Call once per wait.
    bool should_spin() noexcept {
        // relaxed: a hint shared by the channel's waiters; a stale value costs one spin.
        const unsigned skip = m_skip.load(std::memory_order_relaxed);
        if (skip == 0) return true;
        m_skip.store(skip - 1, std::memory_order_relaxed);
        return false;
    }

    /// What came of a wait that spun: `succeeded` when the spin saw the wake-up.
    void record(bool succeeded) noexcept {
        if (succeeded) {
            m_backoff.store(0, std::memory_order_relaxed);
            return;
        }
        const unsigned next = std::min(m_backoff.load(std::memory_order_relaxed) * 2 + 1, 255u);
        m_backoff.store(next, std::memory_order_relaxed);
        m_skip.store(next, std::memory_order_relaxed);
    }

private:
    std::atomic<unsigned> m_backoff{0};
    std::atomic<unsigned> m_skip{0};
};

} // namespace conflux::detail
