// shared_buffer + atomic_view: `add` against raw std::atomic_ref on the same memory; `notify`
// with nobody waiting against a raw FUTEX_WAKE; wait/notify ping-pong between threads and
// between processes against a raw futex ping-pong (no spin); wait_async wake-up latency,
// within a process and across processes, against a raw futex round trip; Node.js's Atomics
// beside each.
#include "bench.hpp"

#include <conflux/conflux.hpp>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <thread>

#include <linux/futex.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

// --- add: atomic_view against std::atomic_ref ---------------------------------------------

void view_adds(const conflux::atomic_view<std::uint32_t>& v, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) v.add(0, 1);
}

void raw_adds(std::uint32_t* p, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) std::atomic_ref<std::uint32_t>(*p).fetch_add(1);
}

// --- ping-pong: cell 0 goes 2k+1 (ours) and 2k+2 (partner's) ----------------------------

void view_side(const conflux::atomic_view<std::int32_t>& cell, std::size_t rounds, bool leader,
               std::int32_t base) {
    for (std::size_t k = 0; k < rounds; ++k) {
        const auto odd = static_cast<std::int32_t>(base + 2 * static_cast<std::int32_t>(k) + 1);
        if (leader) {
            cell.store(0, odd);
            cell.notify(0);
            while (cell.load(0) != odd + 1) cell.wait(0, odd);
        } else {
            while (cell.load(0) != odd) cell.wait(0, odd - 1);
            cell.store(0, odd + 1);
            cell.notify(0);
        }
    }
}

long futex(std::uint32_t* word, int op, std::uint32_t value) {
    return ::syscall(SYS_futex, word, op, value, nullptr, nullptr, 0);
}

// The baseline: the textbook shared-futex ping-pong, no spinning.
void raw_side(std::uint32_t* word, std::size_t rounds, bool leader, std::uint32_t base) {
    std::atomic_ref<std::uint32_t> cell(*word);
    for (std::size_t k = 0; k < rounds; ++k) {
        const auto odd = static_cast<std::uint32_t>(base + 2 * k + 1);
        if (leader) {
            cell.store(odd);
            futex(word, FUTEX_WAKE, 1);
            while (cell.load() != odd + 1) futex(word, FUTEX_WAIT, odd);
        } else {
            while (cell.load() != odd) futex(word, FUTEX_WAIT, odd - 1);
            cell.store(odd + 1);
            futex(word, FUTEX_WAKE, 1);
        }
    }
}

// Each run continues the sequence where the last one left it, so runs can repeat.
template <class Side>
double threads_round_trips(Side side, std::size_t rounds) {
    std::size_t base = 0;
    return bench::ops_per_second(
        [&](std::size_t n) {
            std::thread partner([&] { side(n, false, base); });
            side(n, true, base);
            partner.join();
            base += 2 * n;
        },
        rounds, 3);
}

template <class Side>
double processes_round_trips(Side side, std::size_t rounds) {
    std::size_t base = 0;
    return bench::ops_per_second(
        [&](std::size_t n) {
            // fork() without exec is fine here: the child only runs the loop and _exits.
            const pid_t child = ::fork();
            if (child == 0) {
                side(n, false, base);
                std::_Exit(0);
            }
            side(n, true, base);
            int status = 0;
            ::waitpid(child, &status, 0);
            base += 2 * n;
        },
        rounds, 3);
}

// --- wait_async: a loop coroutine against a thread blocked in wait ------------------------

conflux::task<> async_leader(conflux::atomic_view<std::int32_t> cell, std::size_t rounds,
                             std::int32_t base) {
    for (std::size_t k = 0; k < rounds; ++k) {
        const auto odd = static_cast<std::int32_t>(base + 2 * static_cast<std::int32_t>(k) + 1);
        cell.store(0, odd);
        cell.notify(0);
        while (cell.load(0) != odd + 1) co_await cell.wait_async(0, odd);
    }
}

// A coroutine here, a thread blocked in wait in a forked child (the memory inherited).
double wait_async_processes_round_trip(const conflux::atomic_view<std::int32_t>& cell,
                                       std::size_t rounds) {
    std::int32_t base = 0;
    return bench::seconds_per_op(
        [&](std::size_t n) {
            const pid_t child = ::fork();
            if (child == 0) {
                view_side(cell, n, false, base);
                std::_Exit(0);
            }
            conflux::run(async_leader(cell, n, base));
            int status = 0;
            ::waitpid(child, &status, 0);
            base += static_cast<std::int32_t>(2 * n);
        },
        rounds, 3);
}

double wait_async_round_trip(const conflux::atomic_view<std::int32_t>& cell, std::size_t rounds) {
    std::int32_t base = 0;
    return bench::seconds_per_op(
        [&](std::size_t n) {
            std::thread partner([&] { view_side(cell, n, false, base); });
            conflux::run(async_leader(cell, n, base));
            partner.join();
            base += static_cast<std::int32_t>(2 * n);
        },
        rounds, 3);
}

} // namespace

int main() {
    bench::header();
    conflux::shared_buffer memory(4096);

    {
        const auto v = memory.view<std::uint32_t>(0, 1);
        auto* raw = reinterpret_cast<std::uint32_t*>(memory.data() + 64);
        const std::size_t n = 20'000'000;
        const double conflux_rate =
            bench::ops_per_second([&](std::size_t k) { view_adds(v, k); }, n);
        const double raw_rate = bench::ops_per_second([&](std::size_t k) { raw_adds(raw, k); }, n);
        bench::row("atomic_view::add vs std::atomic_ref::fetch_add (1 thread)", conflux_rate,
                   raw_rate, "op/s", true, bench::node_figure("atomics_add.js"));
    }

    {
        // What every notify pays when nobody waits: conflux also checks for async waiters in
        // this process and in others (one shared load) before the same system call.
        const auto v = memory.view<std::int32_t>(512, 1);
        auto* raw = reinterpret_cast<std::uint32_t*>(memory.data() + 576);
        const std::size_t n = 2'000'000;
        const double conflux_rate = bench::ops_per_second(
            [&](std::size_t k) {
                for (std::size_t i = 0; i < k; ++i) v.notify(0);
            },
            n);
        const double raw_rate = bench::ops_per_second(
            [&](std::size_t k) {
                for (std::size_t i = 0; i < k; ++i) futex(raw, FUTEX_WAKE, INT32_MAX);
            },
            n);
        bench::row("atomic_view::notify, nobody waiting (vs raw FUTEX_WAKE)", conflux_rate,
                   raw_rate, "op/s");
    }

    const auto node_pingpong = bench::node_figure("atomics_pingpong.js");
    {
        const auto cell = memory.view<std::int32_t>(128, 1);
        auto* raw = reinterpret_cast<std::uint32_t*>(memory.data() + 192);
        const std::size_t rounds = 100'000;
        const double conflux_rate = threads_round_trips(
            [&](std::size_t n, bool leader, std::size_t base) {
                view_side(cell, n, leader, static_cast<std::int32_t>(base));
            },
            rounds);
        const double raw_rate = threads_round_trips(
            [&](std::size_t n, bool leader, std::size_t base) {
                raw_side(raw, n, leader, static_cast<std::uint32_t>(base));
            },
            rounds);
        bench::row("wait/notify ping-pong, threads (vs raw futex)", conflux_rate, raw_rate, "rt/s",
                   true, node_pingpong);
    }
    {
        const auto cell = memory.view<std::int32_t>(256, 1);
        auto* raw = reinterpret_cast<std::uint32_t*>(memory.data() + 320);
        const std::size_t rounds = 50'000;
        const double conflux_rate = processes_round_trips(
            [&](std::size_t n, bool leader, std::size_t base) {
                view_side(cell, n, leader, static_cast<std::int32_t>(base));
            },
            rounds);
        const double raw_rate = processes_round_trips(
            [&](std::size_t n, bool leader, std::size_t base) {
                raw_side(raw, n, leader, static_cast<std::uint32_t>(base));
            },
            rounds);
        bench::row("wait/notify ping-pong, processes (vs raw futex)", conflux_rate, raw_rate,
                   "rt/s", true, node_pingpong);
    }
    {
        const auto cell = memory.view<std::int32_t>(384, 1);
        auto* raw = reinterpret_cast<std::uint32_t*>(memory.data() + 448);
        const std::size_t rounds = 20'000;
        const double conflux_latency = wait_async_round_trip(cell, rounds);
        const double raw_latency =
            1.0 / threads_round_trips(
                      [&](std::size_t n, bool leader, std::size_t base) {
                          raw_side(raw, n, leader, static_cast<std::uint32_t>(base));
                      },
                      rounds);
        bench::row("wait_async round trip, loop <-> thread (vs raw futex threads)", conflux_latency,
                   raw_latency, "s", false, bench::node_figure("atomics_waitasync.js"));
    }
    {
        const auto cell = memory.view<std::int32_t>(640, 1);
        auto* raw = reinterpret_cast<std::uint32_t*>(memory.data() + 704);
        const std::size_t rounds = 20'000;
        const double conflux_latency = wait_async_processes_round_trip(cell, rounds);
        const double raw_latency =
            1.0 / processes_round_trips(
                      [&](std::size_t n, bool leader, std::size_t base) {
                          raw_side(raw, n, leader, static_cast<std::uint32_t>(base));
                      },
                      rounds);
        bench::row("wait_async round trip across processes, loop <-> thread (vs raw futex "
                   "processes)",
                   conflux_latency, raw_latency, "s", false);
    }
    return 0;
}
