#pragma once

#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <optional>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

namespace conflux::detail::futex {

// Every operation here is on a *shared* futex (no FUTEX_PRIVATE_FLAG): the kernel keys it by
// the file and offset behind the address, so a waiter in one process is woken by a wake on
// the same memory through another process's mapping. (`std::atomic::wait` in libstdc++ uses
// private futexes, which only match within one process.)

/// How a futex wait ended.
enum class status {
    woken,      ///< a wake reached this waiter (or the kernel woke it spuriously)
    changed,    ///< the word no longer held the expected value when the kernel looked
    timed_out,  ///< the absolute deadline passed
    interrupted ///< a signal handler ran; the caller re-checks and waits again
};

using deadline_t = std::optional<std::chrono::steady_clock::time_point>;

/// `steady_clock` is CLOCK_MONOTONIC on Linux, the clock FUTEX_WAIT_BITSET and futex_waitv
/// measure absolute timeouts against.
inline timespec to_timespec(std::chrono::steady_clock::time_point t) noexcept {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch());
    const auto count = ns.count() < 0 ? 0 : ns.count();
    timespec ts{};
    ts.tv_sec = static_cast<time_t>(count / 1'000'000'000);
    ts.tv_nsec = static_cast<long>(count % 1'000'000'000);
    return ts;
}

inline status status_of_errno(int err) noexcept {
    switch (err) {
    case EAGAIN:
        return status::changed;
    case ETIMEDOUT:
        return status::timed_out;
    default:
        return status::interrupted; // EINTR
    }
}

/// Sleeps while `*word == expected`, until a wake whose bitset shares a bit with `bitset`, or
/// until `deadline` (none: forever).
inline status wait_bitset(const std::uint32_t* word, std::uint32_t expected, std::uint32_t bitset,
                          const deadline_t& deadline) noexcept {
    timespec ts{};
    if (deadline) ts = to_timespec(*deadline);
    const long r = ::syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, deadline ? &ts : nullptr,
                             nullptr, bitset);
    return r == 0 ? status::woken : status_of_errno(errno);
}

/// Wakes up to `count` waiters on `word` whose bitset shares a bit with `bitset`, oldest first
/// among waiters of equal priority; returns how many it woke.
inline std::size_t wake_bitset(const std::uint32_t* word, std::size_t count,
                               std::uint32_t bitset) noexcept {
    if (count == 0) return 0;
    const int n = count > static_cast<std::size_t>(INT_MAX) ? INT_MAX : static_cast<int>(count);
    const long r = ::syscall(SYS_futex, word, FUTEX_WAKE_BITSET, n, nullptr, nullptr, bitset);
    return r > 0 ? static_cast<std::size_t>(r) : 0;
}

#ifdef SYS_futex_waitv
inline constexpr long futex_waitv_number = SYS_futex_waitv;
#else
inline constexpr long futex_waitv_number = 449; // the same on every architecture
#endif

/// The layout of `struct futex_waitv` (Linux 5.16), spelled out for older kernel headers.
struct waitv_entry {
    std::uint64_t value;
    std::uint64_t address;
    std::uint32_t flags;
    std::uint32_t reserved;
};
inline constexpr std::uint32_t waitv_size_u32 = 0x02; // FUTEX2_SIZE_U32, shared (not private)

/// Tests set this to exercise the path for kernels without futex_waitv.
inline std::atomic<bool> pretend_no_waitv{false};

/// Whether the kernel has futex_waitv (Linux >= 5.16); probed once.
inline bool waitv_available() noexcept {
    if (pretend_no_waitv.load(std::memory_order_relaxed)) return false;
    static const bool available = [] {
        // Zero entries is EINVAL on a kernel that has the call, ENOSYS on one that does not.
        const long r = ::syscall(futex_waitv_number, nullptr, 0, 0, nullptr, CLOCK_MONOTONIC);
        return !(r < 0 && errno == ENOSYS);
    }();
    return available;
}

/// Sleeps while `*first == first_expected` and `*second == second_expected`, checked one after
/// the other with the waiter already queued on `first` when `second` is checked, until a wake
/// on either word (any bitset) or `deadline`. Needs `waitv_available()`.
inline status wait_pair(const std::uint32_t* first, std::uint32_t first_expected,
                        const std::uint32_t* second, std::uint32_t second_expected,
                        const deadline_t& deadline) noexcept {
    waitv_entry entries[2] = {
        {first_expected, reinterpret_cast<std::uintptr_t>(first), waitv_size_u32, 0},
        {second_expected, reinterpret_cast<std::uintptr_t>(second), waitv_size_u32, 0},
    };
    timespec ts{};
    if (deadline) ts = to_timespec(*deadline);
    const long r =
        ::syscall(futex_waitv_number, entries, 2, 0, deadline ? &ts : nullptr, CLOCK_MONOTONIC);
    return r >= 0 ? status::woken : status_of_errno(errno);
}

/// One word of `wait_any`: sleep while `*word == expected`. `process_private` for a word that
/// only this process wakes (cheaper for the kernel to key).
struct watch_entry {
    const std::uint32_t* word;
    std::uint32_t expected;
    bool process_private;
};

/// How many words one `wait_any` can watch: futex_waitv's limit (FUTEX_WAITV_MAX), or one
/// word on kernels without it.
inline std::size_t wait_any_capacity() noexcept { return waitv_available() ? 128 : 1; }

/// Sleeps while every `entries[k].word` holds its `expected`, until a wake on any of them
/// (any bitset), with no timeout. `n` is at least 1, and at most 1 unless `waitv_available()`
/// (then at most 128).
inline status wait_any(const watch_entry* entries, std::size_t n) noexcept {
    if (n == 1) {
        const int op = FUTEX_WAIT_BITSET | (entries[0].process_private ? FUTEX_PRIVATE_FLAG : 0);
        const long r = ::syscall(SYS_futex, entries[0].word, op, entries[0].expected, nullptr,
                                 nullptr, FUTEX_BITSET_MATCH_ANY);
        return r == 0 ? status::woken : status_of_errno(errno);
    }
    constexpr std::uint32_t private_flag = 128; // FUTEX2_PRIVATE
    waitv_entry v[128];
    for (std::size_t k = 0; k < n; ++k) {
        v[k] = {entries[k].expected, reinterpret_cast<std::uintptr_t>(entries[k].word),
                waitv_size_u32 | (entries[k].process_private ? private_flag : 0u), 0};
    }
    const long r =
        ::syscall(futex_waitv_number, v, static_cast<unsigned>(n), 0, nullptr, CLOCK_MONOTONIC);
    return r >= 0 ? status::woken : status_of_errno(errno);
}

/// Wakes every waiter on `word`, whatever its bitset; for a process-private word with
/// `process_private`.
inline void wake_all(const std::uint32_t* word, bool process_private) noexcept {
    const int op = FUTEX_WAKE | (process_private ? FUTEX_PRIVATE_FLAG : 0);
    ::syscall(SYS_futex, word, op, INT_MAX, nullptr, nullptr, 0);
}

} // namespace conflux::detail::futex
