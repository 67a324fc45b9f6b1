#pragma once

#include <conflux/detail/linux/futex.hpp>
#include <conflux/detail/spin.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace conflux::detail {

/// Sleeps while `*word == expected` (or until a spurious wake-up). Process-private futex.
inline void futex_wait_private(std::atomic<std::uint32_t>& word, std::uint32_t expected) noexcept {
    // std::atomic<uint32_t> has the size and representation of a uint32_t on every platform
    // conflux supports, which is what the futex syscall reads.
    static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected,
              nullptr, nullptr, 0);
}

/// Sleeps while `*word == expected`, until a wake-up (perhaps spurious), a signal, or
/// `deadline` (none: no limit). Process-private futex.
inline void futex_wait_private_until(
    std::atomic<std::uint32_t>& word, std::uint32_t expected,
    const std::optional<std::chrono::steady_clock::time_point>& deadline) noexcept {
    // FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC time, which steady_clock reads
    // (FUTEX_WAIT's timeout is relative, and would be computed from a clock read that a
    // preemption can make stale).
    timespec ts{};
    if (deadline) ts = futex::to_timespec(*deadline);
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_BITSET_PRIVATE,
              expected, deadline ? &ts : nullptr, nullptr, FUTEX_BITSET_MATCH_ANY);
}

/// Wakes up to `count` threads sleeping on `word`. The word may already be gone (its owner
/// saw the change by spinning and returned): the kernel then finds no sleeper, or reports
/// EFAULT for an unmapped page, and both are harmless.
inline void futex_wake_private(std::atomic<std::uint32_t>* word, int count) noexcept {
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(word), FUTEX_WAKE_PRIVATE, count, nullptr,
              nullptr, 0);
}

} // namespace conflux::detail
