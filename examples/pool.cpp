// CPU work on a thread_pool, awaited from the event loop: count primes in slices of a range
// on the pool's threads while the loop stays free.
#include <conflux/conflux.hpp>

#include <cstdint>
#include <cstdio>
#include <thread>
#include <vector>

namespace {

bool is_prime(std::uint64_t n) {
    if (n < 2) return false;
    for (std::uint64_t d = 2; d * d <= n; ++d) {
        if (n % d == 0) return false;
    }
    return true;
}

// Hops onto the pool, computes, and returns: the awaiter resumes back on its own loop.
conflux::task<std::uint64_t> count_primes(conflux::thread_pool& pool, std::uint64_t from,
                                          std::uint64_t to) {
    co_await pool.schedule();
    std::uint64_t count = 0;
    for (std::uint64_t n = from; n < to; ++n) count += is_prime(n) ? 1 : 0;
    co_return count;
}

conflux::task<int> amain() {
    conflux::thread_pool pool(conflux::thread_pool::default_thread_count());
    constexpr std::uint64_t limit = 2'000'000;
    constexpr std::uint64_t slices = 16;
    std::vector<conflux::task<std::uint64_t>> work;
    for (std::uint64_t i = 0; i < slices; ++i) {
        work.push_back(count_primes(pool, limit * i / slices, limit * (i + 1) / slices));
    }
    std::uint64_t total = 0;
    for (std::uint64_t c : co_await conflux::when_all(std::move(work))) total += c;
    std::printf("%llu primes below %llu, counted on %zu threads\n",
                static_cast<unsigned long long>(total), static_cast<unsigned long long>(limit),
                pool.size());
    co_return total == 148'933 ? 0 : 1;
}

} // namespace

int main() { return conflux::run(amain()); }
