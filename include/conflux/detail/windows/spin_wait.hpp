#pragma once

#include <conflux/detail/spin.hpp>
#include <conflux/detail/windows/win32.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

namespace conflux::detail {

// WaitOnAddress and WakeByAddress* live in the API set api-ms-win-core-synch-l1-2-0
// (Windows 8 and later): link with synchronization.lib (-lsynchronization with MinGW-w64;
// the CMake target conflux::conflux adds it).
#if defined(_MSC_VER)
#pragma comment(lib, "synchronization.lib")
#endif

/// Sleeps while `word == expected` (or until a spurious wake-up). Process-private, as every
/// WaitOnAddress is.
inline void futex_wait_private(std::atomic<std::uint32_t>& word, std::uint32_t expected) noexcept {
    // std::atomic<uint32_t> has the size and representation of a uint32_t, which is what
    // WaitOnAddress compares.
    static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
    ::WaitOnAddress(static_cast<volatile void*>(&word), &expected, sizeof expected, INFINITE);
}

/// Sleeps while `word == expected`, until a wake-up (perhaps spurious) or `deadline` (none: no
/// limit), rounded up to whole milliseconds, WaitOnAddress's unit.
inline void futex_wait_private_until(
    std::atomic<std::uint32_t>& word, std::uint32_t expected,
    const std::optional<std::chrono::steady_clock::time_point>& deadline) noexcept {
    DWORD ms = INFINITE;
    if (deadline) {
        const auto left = std::chrono::ceil<std::chrono::milliseconds>(
                              *deadline - std::chrono::steady_clock::now())
                              .count();
        // INFINITE is 0xFFFFFFFF: cap below it; the caller waits again after a longer one.
        ms = left < 0 ? 0 : (left >= 0x7fffffff ? 0x7fffffff : static_cast<DWORD>(left));
    }
    ::WaitOnAddress(static_cast<volatile void*>(&word), &expected, sizeof expected, ms);
}

/// Wakes up to `count` threads sleeping on `word` (one, or all of them for more than one:
/// WakeByAddress has no count in between). The word may already be gone (its owner saw the
/// change by spinning and returned): WakeByAddress only looks the address up among the
/// sleepers, it never reads it.
inline void futex_wake_private(std::atomic<std::uint32_t>* word, int count) noexcept {
    if (count == 1) {
        ::WakeByAddressSingle(static_cast<void*>(word));
    } else {
        ::WakeByAddressAll(static_cast<void*>(word));
    }
}

} // namespace conflux::detail
