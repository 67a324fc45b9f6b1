#pragma once

#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstddef>
#include <cstdint>

namespace conflux::detail {

/// Log-linear buckets of nanoseconds: exact below 8 ns, then 8 buckets per power of two (each
/// bucket at most 12.5 % wide), up to about 2^44 ns (4.9 hours); longer durations count in the
/// last bucket.
struct pool_buckets {
    static constexpr std::size_t sub = 8;
    static constexpr std::size_t count = 8 + (44 - 3) * sub;

    static constexpr std::size_t index(std::uint64_t ns) noexcept {
        if (ns < sub) return static_cast<std::size_t>(ns);
        const int e = std::bit_width(ns) - 1; // 3 and above
        const std::size_t i = static_cast<std::size_t>(e - 2) * sub +
                              static_cast<std::size_t>((ns >> (e - 3)) & (sub - 1));
        return i < count ? i : count - 1;
    }

    /// The largest duration that counts in bucket `i`.
    static constexpr std::uint64_t upper(std::size_t i) noexcept {
        if (i < sub) return i;
        const std::size_t e = i / sub + 2;
        const std::uint64_t step = std::uint64_t{1} << (e - 3);
        return (std::uint64_t{1} << e) + (i % sub + 1) * step - 1;
    }
};

/// Durations recorded by one thread and read by any: each counter has a single writer, so a
/// relaxed load and store (no read-modify-write) is enough, and a reader sees each counter
/// whole.
class pool_recorder {
public:
    void record(std::chrono::nanoseconds d) noexcept {
        const auto ns = static_cast<std::uint64_t>(d.count() < 0 ? 0 : d.count());
        bump(m_buckets[pool_buckets::index(ns)], 1);
        bump(m_sum, ns);
        if (ns > m_max.load(std::memory_order_relaxed)) m_max.store(ns, std::memory_order_relaxed);
    }

    /// Adds `other`'s counts to this recorder's (with this recorder's single writer).
    void merge(const pool_recorder& other) noexcept {
        for (std::size_t i = 0; i < pool_buckets::count; ++i) {
            bump(m_buckets[i], other.m_buckets[i].load(std::memory_order_relaxed));
        }
        bump(m_sum, other.m_sum.load(std::memory_order_relaxed));
        const std::uint64_t m = other.m_max.load(std::memory_order_relaxed);
        if (m > m_max.load(std::memory_order_relaxed)) m_max.store(m, std::memory_order_relaxed);
    }

    /// Adds this recorder's counts into `buckets`, `sum` and `max`.
    void add_to(std::array<std::uint64_t, pool_buckets::count>& buckets, std::uint64_t& sum,
                std::uint64_t& max) const noexcept {
        for (std::size_t i = 0; i < pool_buckets::count; ++i) {
            buckets[i] += m_buckets[i].load(std::memory_order_relaxed);
        }
        sum += m_sum.load(std::memory_order_relaxed);
        const std::uint64_t m = m_max.load(std::memory_order_relaxed);
        if (m > max) max = m;
    }

private:
    static void bump(std::atomic<std::uint64_t>& c, std::uint64_t by) noexcept {
        c.store(c.load(std::memory_order_relaxed) + by, std::memory_order_relaxed);
    }

    std::array<std::atomic<std::uint64_t>, pool_buckets::count> m_buckets{};
    std::atomic<std::uint64_t> m_sum{0};
    std::atomic<std::uint64_t> m_max{0};
};

} // namespace conflux::detail
