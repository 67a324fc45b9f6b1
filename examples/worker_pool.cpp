// A CPU pool: count the primes below two million in slices on a worker_pool while the
// loop stays free, cancel a slice that is not needed any more, and print the pool's numbers
// (Piscina's queueSize, completed, waitTime and runTime).
#include <conflux/conflux.hpp>

#include <cstdint>
#include <cstdio>
#include <stop_token>
#include <vector>

namespace {

bool is_prime(std::uint64_t n) {
    if (n < 2) return false;
    for (std::uint64_t d = 2; d * d <= n; ++d) {
        if (n % d == 0) return false;
    }
    return true;
}

// A plain function: it runs on a pool thread and holds it until it returns. It takes the
// task's stop token first, so that a cancelled slice stops early.
std::uint64_t count_primes(std::stop_token token, std::uint64_t from, std::uint64_t to) {
    std::uint64_t count = 0;
    for (std::uint64_t n = from; n < to; ++n) {
        if ((n & 0xfff) == 0 && token.stop_requested()) throw conflux::operation_cancelled();
        count += is_prime(n) ? 1 : 0;
    }
    return count;
}

conflux::task<int> amain() {
    conflux::worker_pool pool({.minimum = 1, .maximum = 4, .max_queue = 64});
    constexpr std::uint64_t limit = 2'000'000;
    constexpr std::uint64_t slices = 16;
    std::vector<conflux::task<std::uint64_t>> work;
    for (std::uint64_t i = 0; i < slices; ++i) {
        work.push_back(pool.run(count_primes, limit * i / slices, limit * (i + 1) / slices));
    }
    std::uint64_t total = 0;
    for (std::uint64_t c : co_await conflux::when_all(std::move(work))) total += c;

    // A slice raced against a deadline it cannot meet: it is cancelled through its token.
    auto outcome = co_await conflux::when_any(pool.run(count_primes, 0, std::uint64_t{1} << 40),
                                              conflux::sleep_for(std::chrono::milliseconds(20)));
    const bool cancelled = outcome.index() == 1;

    const conflux::worker_pool_stats s = pool.stats();
    std::printf("%llu primes below %llu; %zu threads, %llu tasks completed\n",
                static_cast<unsigned long long>(total), static_cast<unsigned long long>(limit),
                s.threads, static_cast<unsigned long long>(s.completed));
    std::printf("wait time p50 %.3f ms, run time p50 %.3f ms, p99 %.3f ms\n",
                static_cast<double>(s.wait_time.percentile(50).count()) / 1e6,
                static_cast<double>(s.run_time.percentile(50).count()) / 1e6,
                static_cast<double>(s.run_time.percentile(99).count()) / 1e6);
    co_await pool.close();
    co_return total == 148'933 && cancelled ? 0 : 1;
}

} // namespace

int main() { return conflux::run(amain()); }
