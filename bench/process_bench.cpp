// Child process benchmarks, each beside a raw baseline measured in the same run:
// - exec_file("/bin/true") latency vs posix_spawn + three pipes + waitpid, and Node's execFile;
// - 32 in flight vs a raw posix_spawn loop with 32 in flight, and Node;
// - spawn latency from a parent with 1 GiB of touched heap vs the same with a small heap;
// - 64 MiB through `cat` vs a raw 64 KiB read/write loop through the same cat, and captured by
//   exec_file vs the same streamed (discarded, and kept with read_into).
#include <conflux/conflux.hpp>

#include "baselines.hpp"
#include "bench.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace {

using bench::raw_spawn;
using bench::raw_true_once;

void raw_parallel(std::size_t n, std::size_t in_flight) {
    char arg0[] = "/bin/true";
    char* argv[] = {arg0, nullptr};
    std::size_t started = 0, done = 0, running = 0;
    while (done < n) {
        while (running < in_flight && started < n) {
            int out, err, in;
            raw_spawn("/bin/true", argv, out, err, in);
            ::close(in);
            ::close(out);
            ::close(err);
            ++started;
            ++running;
        }
        int st;
        if (::waitpid(-1, &st, 0) > 0) {
            ++done;
            --running;
        }
    }
}

conflux::task<void> conflux_true_seq(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) co_await conflux::exec_file("/bin/true");
}

conflux::task<void> conflux_parallel(std::size_t n, std::size_t in_flight) {
    std::size_t next = 0;
    auto worker = [&]() -> conflux::task<void> {
        while (next < n) {
            ++next;
            co_await conflux::exec_file("/bin/true");
        }
    };
    std::vector<conflux::task<void>> workers;
    for (std::size_t i = 0; i < in_flight; ++i) workers.push_back(worker());
    co_await conflux::when_all(std::move(workers));
}

// Streams through `cat` with spawn: write_all on stdin and read_some into a 64 KiB buffer
// run concurrently, counting bytes (the raw loop below does the same). With `keep`, stdout is
// kept instead, read_into a std::string as exec's capture does: the bytes land in 64 MiB of
// fresh memory rather than in one 64 KiB buffer that stays in cache.
conflux::task<void> conflux_cat(const std::string& data, bool keep = false) {
    auto child = conflux::spawn("cat");
    auto feed = [&]() -> conflux::task<void> {
        co_await child.in().write_all(data);
        child.in().close();
    };
    std::size_t got = 0;
    auto drain = [&]() -> conflux::task<void> {
        if (keep) {
            std::string out;
            co_await child.out().read_into(out, 0, nullptr);
            got = out.size();
            co_return;
        }
        std::vector<char> buf(64 * 1024);
        while (std::size_t n = co_await child.out().read_some(std::span<char>(buf))) got += n;
    };
    co_await conflux::when_all(feed(), drain());
    co_await child.wait();
    if (got != data.size()) std::abort();
}

// exec_file capturing 64 MiB into a std::string that grows as it goes (Node's default shape).
// The options are built once by the caller, as the streams row's data is; with `.input_view`
// the call writes the caller's bytes, with `.input` what is timed includes its own copy.
conflux::task<void> conflux_cat_exec(const conflux::exec_options& opts, std::size_t size) {
    auto r = co_await conflux::exec_file("cat", {}, opts);
    if (r.out.size() != size) std::abort();
}

// The raw baseline: one thread, poll() on both ends, 64 KiB read/write. With `keep`, each
// read appends to a std::string (grown by doubling), as a capture must.
void raw_cat(const std::string& data, bool keep = false) {
    char arg0[] = "cat";
    char* argv[] = {arg0, nullptr};
    int out, err, in;
    pid_t pid = raw_spawn("/bin/cat", argv, out, err, in);
    ::close(err);
    ::fcntl(in, F_SETFL, O_NONBLOCK);
    std::size_t got = 0;
    std::size_t written = 0;
    std::vector<char> buf(64 * 1024);
    std::string kept;
    while (true) {
        pollfd fds[2] = {{out, POLLIN, 0}, {in, POLLOUT, 0}};
        const int nfds = in >= 0 ? 2 : 1;
        ::poll(fds, nfds, -1);
        if (in >= 0 && (fds[1].revents & (POLLOUT | POLLERR))) {
            const ssize_t w = ::write(in, data.data() + written,
                                      std::min<std::size_t>(64 * 1024, data.size() - written));
            if (w > 0) written += static_cast<std::size_t>(w);
            if (written == data.size()) {
                ::close(in);
                in = -1;
            }
        }
        if (fds[0].revents & (POLLIN | POLLHUP)) {
            ssize_t r = 0;
            if (keep) {
                const std::size_t old = kept.size();
                kept.resize(old + buf.size());
                r = ::read(out, kept.data() + old, buf.size());
                kept.resize(old + static_cast<std::size_t>(std::max<ssize_t>(r, 0)));
            } else {
                r = ::read(out, buf.data(), buf.size());
            }
            if (r <= 0) break;
            got += static_cast<std::size_t>(r);
        }
    }
    ::close(out);
    int st;
    ::waitpid(pid, &st, 0);
    if (got != data.size()) std::abort();
}

// Line-by-line writing into `cat` (stdout discarded): one write_all per short line, as a
// program that produces its output a line at a time writes it. Each line is one write(2);
// what is measured is the cost per write on top of the system call.
conflux::task<void> conflux_lines(std::size_t lines) {
    const std::vector<conflux::stdio_spec> stdio{
        conflux::stdio_spec::pipe(), conflux::stdio_spec::ignore(), conflux::stdio_spec::inherit()};
    conflux::spawn_options opts{.stdio = stdio};
    auto child = conflux::spawn("cat", {}, opts);
    char line[32];
    for (std::size_t i = 0; i < lines; ++i) {
        const int len = std::snprintf(line, sizeof line, "line %zu\n", i);
        co_await child.in().write_all(std::string_view(line, static_cast<std::size_t>(len)));
    }
    child.in().close();
    if (!(co_await child.wait()).success()) std::abort();
}

// The raw baseline: a blocking write(2) per line into the same `cat`, stdout discarded.
void raw_lines(std::size_t lines) {
    char arg0[] = "cat";
    char* argv[] = {arg0, nullptr};
    int p0[2];
    if (::pipe2(p0, O_CLOEXEC) != 0) std::abort();
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p0[0], 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    pid_t pid;
    if (posix_spawn(&pid, "/bin/cat", &fa, nullptr, argv, environ) != 0) std::abort();
    posix_spawn_file_actions_destroy(&fa);
    ::close(p0[0]);
    char line[32];
    for (std::size_t i = 0; i < lines; ++i) {
        const int len = std::snprintf(line, sizeof line, "line %zu\n", i);
        if (::write(p0[1], line, static_cast<std::size_t>(len)) != len) std::abort();
    }
    ::close(p0[1]);
    int st;
    ::waitpid(pid, &st, 0);
}

} // namespace

int main() {
    bench::header();

    const std::size_t n = 200;
    const double raw = bench::seconds_per_op(
        [](std::size_t k) {
            for (std::size_t i = 0; i < k; ++i) raw_true_once();
        },
        n, 3);
    const double ours =
        bench::seconds_per_op([](std::size_t k) { conflux::run(conflux_true_seq(k)); }, n, 3);
    bench::row("exec_file(\"/bin/true\") latency", ours, raw, "s", false,
               bench::node_figure("process_execfile.js"));

    const std::size_t m = 320;
    const double raw_par = bench::ops_per_second([](std::size_t k) { raw_parallel(k, 32); }, m, 3);
    const double ours_par =
        bench::ops_per_second([](std::size_t k) { conflux::run(conflux_parallel(k, 32)); }, m, 3);
    bench::row("spawns/s, 32 in flight", ours_par, raw_par, "/s", true,
               bench::node_figure("process_execfile.js", {"parallel"}));

    {
        // 1 GiB touched: a fork() would copy its page tables; clone(CLONE_VM) does not.
        const double small =
            bench::seconds_per_op([](std::size_t k) { conflux::run(conflux_true_seq(k)); }, 100, 3);
        const std::size_t big = std::size_t(1) << 30;
        std::unique_ptr<char[]> heap(new char[big]);
        for (std::size_t i = 0; i < big; i += 4096) heap[i] = static_cast<char>(i);
        const double large =
            bench::seconds_per_op([](std::size_t k) { conflux::run(conflux_true_seq(k)); }, 100, 3);
        bench::row("spawn latency, 1 GiB heap vs small heap", large, small, "s", false);
        volatile char sink = heap[big - 4096];
        (void)sink;
    }

    const std::string data(64 * 1024 * 1024, 'x');
    const double mb = static_cast<double>(data.size()) / 1e6;
    const double raw_tp = mb / bench::best_seconds([&](std::size_t) { raw_cat(data); }, 1, 3);
    const double ours_tp =
        mb / bench::best_seconds([&](std::size_t) { conflux::run(conflux_cat(data)); }, 1, 3);
    bench::row("64 MiB through cat (spawn streams)", ours_tp, raw_tp, "MB/s", true);
    const auto captured_tp = [&](const conflux::exec_options& o) {
        return mb / bench::best_seconds(
                        [&](std::size_t) { conflux::run(conflux_cat_exec(o, data.size())); }, 1, 3);
    };
    // The input is the caller's (`.input_view`), as the streams row's is: nothing is copied.
    const conflux::exec_options cat_opts{.input_view = data, .max_buffer = 0};
    const double exec_tp = captured_tp(cat_opts);
    bench::row("64 MiB through cat (exec_file, captured)", exec_tp, raw_tp, "MB/s", true);
    bench::row("64 MiB through cat, exec_file captured vs spawn streams", exec_tp, ours_tp, "MB/s",
               true);
    // The same with `.reserve_output` = the size: the capture never grows.
    const conflux::exec_options reserved_opts{
        .input_view = data, .max_buffer = 0, .reserve_output = data.size()};
    const double reserved_tp = captured_tp(reserved_opts);
    bench::row("64 MiB through cat, exec_file captured with reserve_output vs spawn streams",
               reserved_tp, ours_tp, "MB/s", true);
    // `.input` instead of `.input_view`: the call copies 64 MiB into fresh pages first.
    const conflux::exec_options copied_opts{.input = data, .max_buffer = 0};
    const double copied_tp = captured_tp(copied_opts);
    bench::row("64 MiB through cat, exec_file captured with .input copied vs spawn streams",
               copied_tp, ours_tp, "MB/s", true);
    // What keeping the bytes costs, whoever keeps them: the streams row and the raw loop
    // discard into a 64 KiB buffer, a capture writes 64 MiB of fresh memory.
    const double kept_tp =
        mb / bench::best_seconds([&](std::size_t) { conflux::run(conflux_cat(data, true)); }, 1, 3);
    bench::row("64 MiB through cat, exec_file captured vs spawn streams kept with read_into",
               exec_tp, kept_tp, "MB/s", true);
    const double raw_kept_tp =
        mb / bench::best_seconds([&](std::size_t) { raw_cat(data, true); }, 1, 3);
    bench::row("64 MiB through cat, raw loop keeping the bytes vs discarding them", raw_kept_tp,
               raw_tp, "MB/s", true);

    {
        // Interleaved, best of 3 each: the machine's drift lands on both sides alike.
        const std::size_t lines = 1000000;
        double ours_lines = 0;
        double raw_lines_rate = 0;
        for (int round = 0; round < 3; ++round) {
            ours_lines = std::max(
                ours_lines, bench::ops_per_second(
                                [](std::size_t k) { conflux::run(conflux_lines(k)); }, lines, 1));
            raw_lines_rate =
                std::max(raw_lines_rate,
                         bench::ops_per_second([](std::size_t k) { raw_lines(k); }, lines, 1));
        }
        bench::row("1 M short lines into cat, write_all each", ours_lines, raw_lines_rate, "/s",
                   true, bench::node_figure("process_stdin_lines.js", {std::to_string(lines)}));
    }
    return 0;
}
