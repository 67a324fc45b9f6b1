// IPC between processes: ping-pong round trips through a forked child against a raw
// socketpair ping-pong between two processes and Node's process.send; bulk one-way messages;
// a 64 MiB buffer to a child, shareable (memfd) versus copied through the socket.

#include <conflux/buffer.hpp>
#include <conflux/fork.hpp>
#include <conflux/run.hpp>

#include "bench.hpp"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

using clock_type = std::chrono::steady_clock;

double seconds_since(clock_type::time_point start) {
    return std::chrono::duration<double>(clock_type::now() - start).count();
}

conflux::task<void> pong() {
    while (auto m = co_await conflux::parent().receive<std::uint64_t>()) {
        co_await conflux::parent().send(*m);
    }
}

// Counts messages; on 0 reports the count.
conflux::task<void> sink() {
    std::uint64_t count = 0;
    while (auto m = co_await conflux::parent().receive<std::uint64_t>()) {
        if (*m == 0) {
            co_await conflux::parent().send(count);
            count = 0;
        } else {
            ++count;
        }
    }
}

// Receives buffers and acknowledges each with a byte it read from it.
conflux::task<void> buffer_sink() {
    while (auto b = co_await conflux::parent().receive<conflux::buffer>()) {
        co_await conflux::parent().send(std::to_integer<int>(b->data()[b->size() - 1]));
    }
}

// A raw ping-pong partner: a forked process echoing 8-byte words over a socketpair.
struct raw_echo {
    int fd = -1;
    pid_t pid = -1;

    raw_echo() {
        int sv[2];
        if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) return;
        pid = ::fork();
        if (pid == 0) {
            ::close(sv[0]);
            std::uint64_t v;
            while (::read(sv[1], &v, sizeof v) == sizeof v) {
                if (::write(sv[1], &v, sizeof v) != sizeof v) break;
            }
            ::_exit(0);
        }
        ::close(sv[1]);
        fd = sv[0];
    }
    raw_echo(const raw_echo&) = delete;
    raw_echo& operator=(const raw_echo&) = delete;
    ~raw_echo() {
        ::close(fd);
        if (pid > 0) ::waitpid(pid, nullptr, 0);
    }

    /// Seconds for `n` blocking write + read round trips.
    double round_trips(int n) const {
        const auto start = clock_type::now();
        for (std::uint64_t i = 0; i < static_cast<std::uint64_t>(n); ++i) {
            std::uint64_t v = i;
            if (::write(fd, &v, sizeof v) != sizeof v) break;
            if (::read(fd, &v, sizeof v) != sizeof v) break;
        }
        return seconds_since(start);
    }
};

conflux::task<int> amain() {
    bench::header();
    const int n = 20000;

    double raw_best = 1e300; // the raw ping-pong's best, also the bulk row's baseline
    {
        // Round trips depend on how fast a sleeping process is woken, which drifts with the
        // machine's load: the conflux and raw runs alternate, and each keeps its best.
        auto child = co_await conflux::fork("pong");
        const raw_echo raw;
        double best = 1e300;
        for (int rep = 0; rep < 5; ++rep) {
            const auto start = clock_type::now();
            for (std::uint64_t i = 0; i < static_cast<std::uint64_t>(n); ++i) {
                co_await child.send(i);
                (void)co_await child.receive<std::uint64_t>();
            }
            best = std::min(best, seconds_since(start));
            raw_best = std::min(raw_best, raw.round_trips(n));
        }
        child.disconnect();
        co_await child.wait();
        bench::row("IPC ping-pong round trips (vs raw socketpair)", n / best, n / raw_best, "/s",
                   true, bench::node_figure("ipc_pingpong.js", {std::to_string(n)}));
    }
    {
        auto child = co_await conflux::fork("sink");
        const std::uint64_t count = 1000000;
        double best = 1e300;
        for (int rep = 0; rep < 3; ++rep) {
            const auto start = clock_type::now();
            for (std::uint64_t i = 1; i <= count; ++i) co_await child.send(i);
            co_await child.send(std::uint64_t(0));
            auto got = co_await child.receive<std::uint64_t>();
            if (!got || *got != count)
                std::printf("lost messages: %llu\n", static_cast<unsigned long long>(*got));
            best = std::min(best, seconds_since(start));
        }
        child.disconnect();
        co_await child.wait();
        // Baseline: the same count as raw 8-byte round trips would take (one write each).
        bench::row("bulk one-way 8-byte messages (vs raw ping-pong)", count / best, n / raw_best,
                   "/s", true, bench::node_figure("ipc_bulk.js", {"200000"}));
    }
    {
        // Room for a 64 MiB copy plus its framing.
        const conflux::spawn_options options;
        const conflux::ipc_options ipc{.max_message_size = std::size_t(65) << 20};
        auto child = co_await conflux::fork("buffer_sink", {}, options, ipc);
        const std::size_t size = std::size_t(64) << 20;
        auto time_one = [&](bool shareable) -> conflux::task<double> {
            double best = 1e300;
            for (int rep = 0; rep < 3; ++rep) {
                conflux::buffer b =
                    shareable ? conflux::buffer::shareable(size) : conflux::buffer(size);
                b.data()[size - 1] = std::byte{7};
                const auto start = clock_type::now();
                co_await child.send(std::move(b));
                (void)co_await child.receive<int>();
                best = std::min(best, seconds_since(start));
            }
            co_return best;
        };
        const double shared = co_await time_one(true);
        const double copied = co_await time_one(false);
        child.disconnect();
        co_await child.wait();
        bench::row("64 MiB buffer to a child: shareable (vs copy through the socket)", shared,
                   copied, "s", false, bench::node_figure("ipc_buffer.js"));
    }
    co_return 0;
}

} // namespace

int main() {
    conflux::register_entry("pong", pong);
    conflux::register_entry("sink", sink);
    conflux::register_entry("buffer_sink", buffer_sink);
    return conflux::run(amain());
}
