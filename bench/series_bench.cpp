// Small series that show how conflux's figures move with one parameter, each point beside its
// raw baseline measured at the same point:
// - spawn latency (exec_file of /bin/true) with 16 MiB, 256 MiB and 1 GiB of touched heap,
//   against posix_spawn + three pipes + waitpid from the same parent;
// - IPC throughput to a forked child at message sizes 8 B, 4 KiB, 64 KiB and 1 MiB, against a
//   raw socketpair with one write(2) per message of the same size;
// - channel round trips with 1, 2 and 4 producer threads sharing one echo thread, against the
//   same shape built from mutex + condition-variable queues.
// (The cluster's series, 1 and 2 workers, is in cluster_bench.cpp: it needs wrk.)
#include <conflux/conflux.hpp>

#include "baselines.hpp"
#include "bench.hpp"

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

// --- spawn latency against the parent's size ------------------------------------------------

conflux::task<void> conflux_true_seq(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) co_await conflux::exec_file("/bin/true");
}

void spawn_series() {
    std::vector<std::unique_ptr<char[]>> heap;
    std::size_t touched = 0;
    const std::size_t mib = std::size_t(1) << 20;
    for (const std::size_t target : {16 * mib, 256 * mib, 1024 * mib}) {
        const std::size_t more = target - touched;
        heap.emplace_back(new char[more]);
        for (std::size_t i = 0; i < more; i += 4096) heap.back()[i] = static_cast<char>(i);
        touched = target;
        // Interleaved, best of each: the machine's drift lands on both sides alike.
        double ours = 1e300;
        double raw = 1e300;
        for (int round = 0; round < 3; ++round) {
            ours = std::min(ours,
                            bench::seconds_per_op(
                                [](std::size_t k) { conflux::run(conflux_true_seq(k)); }, 100, 1));
            raw = std::min(raw, bench::seconds_per_op(
                                    [](std::size_t k) {
                                        for (std::size_t i = 0; i < k; ++i) bench::raw_true_once();
                                    },
                                    100, 1));
        }
        const std::string name = "series: exec_file(\"/bin/true\") latency, " +
                                 std::to_string(target / mib) + " MiB heap touched";
        bench::row(name, ours, raw, "s", false);
    }
}

// --- IPC throughput against message size ----------------------------------------------------

// Receives strings, counting their bytes; an empty one asks for the count.
conflux::task<void> byte_sink() {
    std::uint64_t bytes = 0;
    while (auto m = co_await conflux::parent().receive<std::string>()) {
        if (m->empty()) {
            co_await conflux::parent().send(bytes);
            bytes = 0;
        } else {
            bytes += m->size();
        }
    }
}

// The raw partner: a forked process reading `total` bytes, then answering with one word.
double raw_one_way(std::size_t size, std::size_t count) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) std::abort();
    const std::uint64_t total = static_cast<std::uint64_t>(size) * count;
    const pid_t pid = ::fork();
    if (pid == 0) {
        ::close(sv[0]);
        std::vector<char> buf(1 << 20);
        std::uint64_t got = 0;
        while (got < total) {
            const ssize_t r = ::read(sv[1], buf.data(), buf.size());
            if (r <= 0) break;
            got += static_cast<std::uint64_t>(r);
        }
        (void)!::write(sv[1], &got, sizeof got);
        ::_exit(0);
    }
    ::close(sv[1]);
    const std::string message(size, 'm');
    const auto start = clock_type::now();
    for (std::size_t i = 0; i < count; ++i) {
        std::size_t done = 0;
        while (done < size) {
            const ssize_t w = ::write(sv[0], message.data() + done, size - done);
            if (w <= 0) std::abort();
            done += static_cast<std::size_t>(w);
        }
    }
    std::uint64_t got = 0;
    if (::read(sv[0], &got, sizeof got) != sizeof got || got != total) std::abort();
    const double seconds = seconds_since(start);
    ::close(sv[0]);
    ::waitpid(pid, nullptr, 0);
    return static_cast<double>(total) / seconds;
}

conflux::task<void> ipc_series() {
    const conflux::spawn_options options;
    const conflux::ipc_options ipc{.max_message_size = std::size_t(2) << 20};
    auto child = co_await conflux::fork("byte_sink", {}, options, ipc);
    const std::string empty;
    for (const std::size_t size :
         {std::size_t(8), std::size_t(4096), std::size_t(65536), std::size_t(1) << 20}) {
        // 8 B: 200 000 messages; larger ones: 64 MiB in all.
        const std::size_t count = size == 8 ? 200000 : (std::size_t(64) << 20) / size;
        const std::string message(size, 'm');
        double ours = 0;
        double raw = 0;
        for (int round = 0; round < 3; ++round) {
            const auto start = clock_type::now();
            for (std::size_t i = 0; i < count; ++i) co_await child.send(message);
            co_await child.send(empty);
            const auto got = co_await child.receive<std::uint64_t>();
            if (!got || *got != static_cast<std::uint64_t>(size) * count) std::abort();
            ours = std::max(ours, static_cast<double>(*got) / seconds_since(start));
            raw = std::max(raw, raw_one_way(size, count));
        }
        const std::string label =
            size >= 1024 ? std::to_string(size / 1024) + " KiB" : std::to_string(size) + " B";
        bench::row("series: IPC one-way to a child, " + label + " messages (bytes/s)", ours, raw,
                   "B/s", true);
    }
    child.disconnect();
    co_await child.wait();
}

// --- channel round trips against the number of producer threads -----------------------------

struct request {
    std::size_t from;
    std::size_t value;
};

double channel_round_trips(std::size_t producers, std::size_t per_producer) {
    conflux::channel<request> requests(64);
    std::vector<std::unique_ptr<conflux::channel<std::size_t>>> replies;
    for (std::size_t p = 0; p < producers; ++p) {
        replies.push_back(std::make_unique<conflux::channel<std::size_t>>(1));
    }
    std::thread echo([&] {
        conflux::run([&]() -> conflux::task<> {
            while (auto r = co_await requests.receive()) {
                co_await replies[r->from]->send(r->value);
            }
        }());
    });
    const auto start = clock_type::now();
    std::vector<std::thread> threads;
    for (std::size_t p = 0; p < producers; ++p) {
        threads.emplace_back([&, p] {
            conflux::run([&]() -> conflux::task<> {
                for (std::size_t i = 0; i < per_producer; ++i) {
                    const request r{p, i};
                    co_await requests.send(r);
                    co_await replies[p]->receive();
                }
            }());
        });
    }
    for (auto& t : threads) t.join();
    const double seconds = seconds_since(start);
    requests.close();
    echo.join();
    return static_cast<double>(producers * per_producer) / seconds;
}

// A blocking queue: mutex + condition variable, what a hand-written thread hand-off uses.
template <class T>
class cv_queue {
public:
    void push(T v) {
        {
            std::lock_guard lock(m_mutex);
            m_items.push_back(std::move(v));
        }
        m_ready.notify_one();
    }
    T pop() {
        std::unique_lock lock(m_mutex);
        m_ready.wait(lock, [&] { return !m_items.empty(); });
        T v = std::move(m_items.front());
        m_items.pop_front();
        return v;
    }

private:
    std::mutex m_mutex;
    std::condition_variable m_ready;
    std::deque<T> m_items;
};

double condvar_round_trips(std::size_t producers, std::size_t per_producer) {
    cv_queue<request> requests;
    std::vector<std::unique_ptr<cv_queue<std::size_t>>> replies;
    for (std::size_t p = 0; p < producers; ++p) {
        replies.push_back(std::make_unique<cv_queue<std::size_t>>());
    }
    constexpr std::size_t stop = ~std::size_t{0};
    std::thread echo([&] {
        for (;;) {
            const request r = requests.pop();
            if (r.from == stop) return;
            replies[r.from]->push(r.value);
        }
    });
    const auto start = clock_type::now();
    std::vector<std::thread> threads;
    for (std::size_t p = 0; p < producers; ++p) {
        threads.emplace_back([&, p] {
            for (std::size_t i = 0; i < per_producer; ++i) {
                requests.push({p, i});
                (void)replies[p]->pop();
            }
        });
    }
    for (auto& t : threads) t.join();
    const double seconds = seconds_since(start);
    requests.push({stop, 0});
    echo.join();
    return static_cast<double>(producers * per_producer) / seconds;
}

void channel_series() {
    for (const std::size_t producers : {std::size_t(1), std::size_t(2), std::size_t(4)}) {
        const std::size_t per_producer = 40000 / producers;
        double ours = 0;
        double raw = 0;
        for (int round = 0; round < 3; ++round) {
            ours = std::max(ours, channel_round_trips(producers, per_producer));
            raw = std::max(raw, condvar_round_trips(producers, per_producer));
        }
        bench::row("series: channel round trips, " + std::to_string(producers) +
                       " producer thread(s), one echo thread (rt/s)",
                   ours, raw, "/s", true);
    }
}

conflux::task<int> amain() {
    bench::header(); // here, not in main: a forked child runs main up to conflux::run
    co_await ipc_series();
    co_return 0;
}

} // namespace

int main() {
    conflux::register_entry("byte_sink", byte_sink);
    const int status = conflux::run(amain());
    channel_series();
    // Last: it leaves this process with 1 GiB touched.
    spawn_series();
    return status;
}
