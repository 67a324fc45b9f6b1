// Threads and messages: channel ping-pong between two loops against a raw mutex+condvar
// ping-pong, one-way channel throughput against a mutex+condvar queue, worker start+join
// against std::thread, and a 64 MiB buffer transfer against a 64 MiB memcpy. Each beside
// the Node.js counterpart (worker postMessage, new Worker, transfer list).
#include "baselines.hpp"
#include "bench.hpp"

#include <conflux/conflux.hpp>
#include <conflux/spawn_thread.hpp>
#include <conflux/worker.hpp>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

namespace {

// --- ping-pong ------------------------------------------------------------------------------

void condvar_ping_pong(std::size_t n) {
    std::mutex m;
    std::condition_variable cv;
    std::size_t turn = 0; // even: ping's move, odd: pong's
    std::thread echo([&] {
        for (std::size_t i = 0; i < n; ++i) {
            std::unique_lock lock(m);
            cv.wait(lock, [&] { return turn % 2 == 1; });
            ++turn;
            cv.notify_one();
        }
    });
    for (std::size_t i = 0; i < n; ++i) {
        std::unique_lock lock(m);
        ++turn;
        cv.notify_one();
        cv.wait(lock, [&] { return turn % 2 == 0; });
    }
    echo.join();
}

// --- one-way throughput ---------------------------------------------------------------------

void channel_one_way(std::size_t n) {
    conflux::channel<std::size_t> ch(1024);
    std::thread consumer([&] {
        conflux::run([&]() -> conflux::task<> {
            while (co_await ch.receive()) {
            }
        }());
    });
    conflux::run([&]() -> conflux::task<> {
        for (std::size_t i = 0; i < n; ++i) co_await ch.send(i);
        ch.close();
    }());
    consumer.join();
}

void condvar_one_way(std::size_t n) {
    std::mutex m;
    std::condition_variable not_empty;
    std::condition_variable not_full;
    std::deque<std::size_t> q;
    bool done = false;
    std::thread consumer([&] {
        for (;;) {
            std::unique_lock lock(m);
            not_empty.wait(lock, [&] { return !q.empty() || done; });
            if (q.empty()) return;
            q.pop_front();
            not_full.notify_one();
        }
    });
    for (std::size_t i = 0; i < n; ++i) {
        std::unique_lock lock(m);
        not_full.wait(lock, [&] { return q.size() < 1024; });
        q.push_back(i);
        not_empty.notify_one();
    }
    {
        std::lock_guard lock(m);
        done = true;
    }
    not_empty.notify_one();
    consumer.join();
}

// --- worker start + join ----------------------------------------------------------------

void worker_start_join(std::size_t n) {
    conflux::run([&]() -> conflux::task<> {
        for (std::size_t i = 0; i < n; ++i) {
            conflux::worker<int> w([](auto&) -> conflux::task<> { co_return; });
            co_await w.join();
        }
    }());
}

void thread_start_join(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) std::thread([] {}).join();
}

// --- 64 MiB transfer --------------------------------------------------------------------

constexpr std::size_t big = std::size_t{64} << 20;

void buffer_transfer(std::size_t n) {
    conflux::channel<conflux::buffer> there(1);
    conflux::channel<conflux::buffer> back(1);
    std::thread peer([&] {
        while (auto b = there.blocking_receive()) back.blocking_send(std::move(*b));
        back.close();
    });
    conflux::buffer b(big);
    for (std::size_t i = 0; i < n; ++i) {
        there.blocking_send(std::move(b));
        b = std::move(*back.blocking_receive());
    }
    there.close();
    peer.join();
}

void memcpy_transfer(std::size_t n) {
    std::vector<char> a(big, 1);
    std::vector<char> b(big);
    for (std::size_t i = 0; i < n; ++i) {
        std::memcpy(b.data(), a.data(), big);
        std::swap(a, b);
    }
}

} // namespace

int main() {
    bench::header();
    bench::row("channel ping-pong, two loops (round trips/s)",
               bench::ops_per_second(bench::channel_ping_pong, 100000),
               bench::ops_per_second(condvar_ping_pong, 100000), "/s", true,
               bench::node_figure("threads_pingpong.js"));
    bench::row("channel one-way, capacity 1024 (messages/s)",
               bench::ops_per_second(channel_one_way, 1000000),
               bench::ops_per_second(condvar_one_way, 1000000), "/s", true,
               bench::node_figure("threads_oneway.js"));
    bench::row("worker start + join (s)", bench::seconds_per_op(worker_start_join, 500),
               bench::seconds_per_op(thread_start_join, 500), "s", false,
               bench::node_figure("threads_worker_start.js"));
    bench::row("64 MiB buffer to a thread and back (s)",
               bench::seconds_per_op(buffer_transfer, 200),
               bench::seconds_per_op(memcpy_transfer, 4, 3), "s", false,
               bench::node_figure("threads_transfer.js"));
    return 0;
}
