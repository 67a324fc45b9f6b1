#pragma once

#include <conflux/detail/spin.hpp>
#include <conflux/detail/spin_wait.hpp>

#include <atomic>
#include <cstdint>

namespace conflux::detail {

/// A mutex for critical sections of a few dozen instructions that two threads enter at a high
/// rate (a channel's queue between a producer and a consumer on two cores): it spins a short
/// while before it sleeps on a futex word.
///
/// `std::mutex` (glibc's default kind) sleeps at the first contention, and the holder then
/// pays a wake-up system call when it unlocks, although it would have released the lock
/// within tens of nanoseconds; on a channel shared by two busy threads that made half of the
/// messages cost a futex wait and a futex wake. The spin here is bounded by a count, not a
/// clock, and is short, so that a waiter whose holder was preempted (both threads on one core)
/// soon sleeps instead of burning its time slice.
///
/// The word is 0 (free), 1 (held) or 2 (held, and someone may sleep on it): the classic
/// three-state futex mutex. Satisfies Lockable.
class spinning_mutex {
public:
    spinning_mutex() noexcept = default;
    spinning_mutex(const spinning_mutex&) = delete;
    spinning_mutex& operator=(const spinning_mutex&) = delete;

    bool try_lock() noexcept {
        std::uint32_t expected = free;
        // acquire: the critical section sees what the previous holder wrote before unlock().
        return m_word.compare_exchange_strong(expected, held, std::memory_order_acquire,
                                              std::memory_order_relaxed);
    }

    void lock() noexcept {
        if (try_lock()) return;
        lock_contended();
    }

    void unlock() noexcept {
        // release: publishes the critical section to the next holder.
        if (m_word.exchange(free, std::memory_order_release) == held_with_sleepers) {
            futex_wake_private(&m_word, 1);
        }
    }

private:
    enum : std::uint32_t { free, held, held_with_sleepers };

    // Enough turns to outlast a critical section of the channel (tens of nanoseconds) several
    // times over, however long a pause instruction takes on this CPU, and few enough to stay
    // within a few microseconds.
    static constexpr int spin_turns = 128;

    [[gnu::noinline]] void lock_contended() noexcept {
        for (int turn = 0; turn < spin_turns; ++turn) {
            cpu_relax();
            // relaxed: only a hint; the compare-exchange in try_lock orders the acquisition.
            if (m_word.load(std::memory_order_relaxed) == free && try_lock()) return;
        }
        // From here on the word says that someone may sleep, so that the unlock that frees it
        // wakes one sleeper; a thread that takes the lock this way keeps the mark (it cannot
        // know whether others still sleep), which costs at most one wake for nobody.
        // acquire: as in try_lock, when the exchange finds the lock free and takes it.
        while (m_word.exchange(held_with_sleepers, std::memory_order_acquire) != free) {
            futex_wait_private(m_word, held_with_sleepers);
        }
    }

    std::atomic<std::uint32_t> m_word{free};
};

} // namespace conflux::detail
