// worker_pool: tasks through the pool, 64 in flight from one event loop, against the same
// tasks hopping onto a plain conflux::thread_pool and back (`co_await pool.schedule()` inside
// a task: the least a pool round trip can cost here), and against Piscina on Node.js. Both
// pools have one thread per core.
#include "bench.hpp"

#include <conflux/pool.hpp>
#include <conflux/run.hpp>
#include <conflux/thread_pool.hpp>
#include <conflux/when_all.hpp>

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <vector>

namespace {

constexpr std::size_t in_flight = 64;

std::uint64_t tiny(std::uint64_t i) { return i * 2; }

std::uint64_t cpu_1ms(std::uint64_t i) {
    const auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(1);
    std::uint64_t x = i;
    while (std::chrono::steady_clock::now() < end) x = (x * 1103515245 + 12345) % 2147483648;
    return x;
}

using work_fn = std::uint64_t (*)(std::uint64_t);

// --- through worker_pool --------------------------------------------------------------------

conflux::task<void> pool_client(conflux::worker_pool& pool, work_fn fn, std::size_t count,
                                std::uint64_t& sink) {
    for (std::size_t i = 0; i < count; ++i) sink += co_await pool.run(fn, std::uint64_t{i});
}

void through_pool(conflux::worker_pool& pool, work_fn fn, std::size_t n) {
    std::vector<std::uint64_t> sinks(in_flight);
    conflux::run([&]() -> conflux::task<> {
        std::vector<conflux::task<void>> clients;
        for (std::size_t c = 0; c < in_flight; ++c) {
            clients.push_back(pool_client(pool, fn, n / in_flight, sinks[c]));
        }
        co_await conflux::when_all(std::move(clients));
    }());
}

// --- the raw thread_pool loop ---------------------------------------------------------------

conflux::task<std::uint64_t> hop(conflux::thread_pool& pool, work_fn fn, std::uint64_t i) {
    co_await pool.schedule();
    co_return fn(i);
}

conflux::task<void> raw_client(conflux::thread_pool& pool, work_fn fn, std::size_t count,
                               std::uint64_t& sink) {
    for (std::size_t i = 0; i < count; ++i) sink += co_await hop(pool, fn, i);
}

void through_thread_pool(conflux::thread_pool& pool, work_fn fn, std::size_t n) {
    std::vector<std::uint64_t> sinks(in_flight);
    conflux::run([&]() -> conflux::task<> {
        std::vector<conflux::task<void>> clients;
        for (std::size_t c = 0; c < in_flight; ++c) {
            clients.push_back(raw_client(pool, fn, n / in_flight, sinks[c]));
        }
        co_await conflux::when_all(std::move(clients));
    }());
}

std::optional<double> piscina(const char* kind, std::size_t n) {
    return bench::node_figure("pool_piscina.js", {kind, std::to_string(n)});
}

} // namespace

int main() {
    const std::size_t threads = conflux::thread_pool::default_thread_count();
    conflux::worker_pool pool({.minimum = threads, .maximum = threads});
    conflux::thread_pool raw(threads);
    const char* missing = "piscina: not installed";
    // Piscina runs fewer tiny tasks (its rate is what is compared): a million would take it
    // over a minute here.
    bench::header();
    {
        constexpr std::size_t n = 1'000'000;
        const double ours =
            bench::ops_per_second([&](std::size_t k) { through_pool(pool, tiny, k); }, n, 3);
        const double base =
            bench::ops_per_second([&](std::size_t k) { through_thread_pool(raw, tiny, k); }, n, 3);
        bench::row("worker_pool, 1 M tiny tasks (tasks/s)", ours, base, "/s", true,
                   piscina("tiny", 100'000), missing);
    }
    {
        constexpr std::size_t n = 10'000;
        const double ours =
            bench::ops_per_second([&](std::size_t k) { through_pool(pool, cpu_1ms, k); }, n, 2);
        const double base = bench::ops_per_second(
            [&](std::size_t k) { through_thread_pool(raw, cpu_1ms, k); }, n, 2);
        bench::row("worker_pool, 10 k 1 ms CPU tasks (tasks/s)", ours, base, "/s", true,
                   piscina("cpu", n), missing);
    }
    return 0;
}
