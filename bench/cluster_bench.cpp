// HTTP/1.1 keep-alive "hello" requests per second under wrk on loopback: a conflux cluster in
// each scheduling mode against Node's cluster + http (bench/node/cluster_http.js) with the same
// number of workers, measured in the same run, and 1 worker for the series. Baseline: one
// conflux process, no cluster.
// Needs `wrk` (Debian package); without it the rows are skipped.
//
// This program is its own cluster worker: the primary re-runs it in the worker role.
#include "bench.hpp"

#include <conflux/cluster.hpp>
#include <conflux/process.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/when_all.hpp>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <unistd.h>

namespace {

constexpr unsigned workers = 2;
constexpr const char* duration = "3s";
constexpr const char* connections = "64";

constexpr std::string_view reply = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                                   "Content-Length: 14\r\n\r\nHello, world!\n";

conflux::task<void> serve_connection(conflux::tcp_stream s) {
    std::string in;
    std::string out;
    char buf[16384];
    for (;;) {
        const std::size_t n = co_await s.read_some(std::span<char>(buf));
        if (n == 0) co_return;
        in.append(buf, n);
        std::size_t pos = 0;
        for (auto end = in.find("\r\n\r\n"); end != std::string::npos;
             end = in.find("\r\n\r\n", pos)) {
            out.append(reply);
            pos = end + 4;
        }
        in.erase(0, pos);
        if (!out.empty()) {
            co_await s.write_all(out);
            out.clear();
        }
    }
}

// wrk resets its connections when it stops: that ends the connection, nothing more.
conflux::task<void> serve_http(conflux::tcp_stream s) {
    try {
        co_await serve_connection(std::move(s));
    } catch (const std::system_error&) {
    }
}

std::optional<std::string> which(const char* program) {
    const char* path = std::getenv("PATH");
    std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
    std::size_t start = 0;
    while (start <= dirs.size()) {
        std::size_t end = dirs.find(':', start);
        if (end == std::string::npos) end = dirs.size();
        const std::string candidate = dirs.substr(start, end - start) + "/" + program;
        if (::access(candidate.c_str(), X_OK) == 0) return candidate;
        start = end + 1;
    }
    return std::nullopt;
}

// Runs wrk against the port and returns its requests per second.
conflux::task<std::optional<double>> wrk(const std::string& wrk_path, std::uint16_t port) {
    // Named locals, not braced temporaries, as coroutine arguments: GCC 12 mis-copies
    // aggregate temporaries that live across a co_await.
    conflux::exec_options options;
    options.timeout = std::chrono::seconds(30);
    options.check = false;
    std::vector<std::string> args{"-t1", std::string("-c") + connections,
                                  std::string("-d") + duration,
                                  "http://127.0.0.1:" + std::to_string(port) + "/"};
    auto r = co_await conflux::exec_file(wrk_path, args, options);
    const auto at = r.out.find("Requests/sec:");
    if (at == std::string::npos) co_return std::nullopt;
    co_return std::atof(r.out.c_str() + at + 13);
}

conflux::task<std::optional<double>>
conflux_cluster(const std::string& wrk_path, conflux::scheduling policy, unsigned count = workers) {
    conflux::cluster c({.workers = count,
                        .policy = policy,
                        .args = std::vector<std::string>{"worker"},
                        .handle_signals = false});
    c.start();
    unsigned listening = 0;
    std::optional<double> figure;
    while (auto e = co_await c.next_event()) {
        if (e->what == conflux::worker_event::kind::listening && ++listening == count) {
            const auto port = static_cast<std::uint16_t>(
                std::atoi(e->address.substr(e->address.rfind(':') + 1).c_str()));
            figure = co_await wrk(wrk_path, port);
            c.shutdown();
        }
    }
    co_return figure;
}

conflux::task<std::optional<double>> single_process(const std::string& wrk_path) {
    auto listener = conflux::tcp_listener::bind("127.0.0.1", 0, {.no_delay = true});
    std::stop_source stop;
    auto acceptor = [&]() -> conflux::task<void> {
        try {
            for (;;) conflux::detach(serve_http(co_await listener.accept(stop.get_token())));
        } catch (const conflux::operation_cancelled&) {
        }
    };
    auto driver = [&]() -> conflux::task<std::optional<double>> {
        auto f = co_await wrk(wrk_path, listener.local_endpoint().port());
        stop.request_stop();
        co_return f;
    };
    auto [a, figure] = co_await conflux::when_all(acceptor(), driver());
    co_return figure;
}

conflux::task<std::optional<double>> node_cluster(const std::string& wrk_path,
                                                  const std::string& sched) {
    const auto node = which("node");
    if (!node) co_return std::nullopt;
    const std::string script = std::string(CONFLUX_BENCH_NODE_DIR) + "/cluster_http.js";
    // A port that is free right now: bind 0, read it back, let it go.
    std::uint16_t port = 0;
    {
        auto probe = conflux::tcp_listener::bind("127.0.0.1", 0);
        port = probe.local_endpoint().port();
    }
    conflux::spawn_options options{.stdio = {conflux::stdio_spec::ignore(),
                                             conflux::stdio_spec::pipe(),
                                             conflux::stdio_spec::inherit()},
                                   .timeout = std::chrono::seconds(60)};
    auto child = conflux::spawn(
        *node, {script, std::to_string(workers), std::to_string(port), sched}, options);
    auto line = co_await child.out().read_line();
    std::optional<double> figure;
    if (line && line->rfind("listening", 0) == 0) figure = co_await wrk(wrk_path, port);
    child.kill(SIGTERM);
    (void)co_await child.wait();
    co_return figure;
}

conflux::task<int> primary() {
    bench::header();
    const auto wrk_path = which("wrk");
    if (!wrk_path) {
        std::printf("| cluster HTTP hello (wrk missing: skipped) | – | – | – | – |\n");
        co_return 0;
    }
    // The baseline is measured first and last and its best kept: one 3 s wrk run drifts with
    // whatever else the two cores are doing.
    auto baseline = co_await single_process(*wrk_path);
    const auto node_rr = co_await node_cluster(*wrk_path, "rr");
    const auto node_none = co_await node_cluster(*wrk_path, "none");
    struct mode {
        const char* name;
        conflux::scheduling policy;
        std::optional<double> node;
        std::optional<double> figure{};
    };
    mode modes[] = {
        {"round_robin", conflux::scheduling::round_robin, node_rr},
        {"shared", conflux::scheduling::shared, node_none},
        // Node has no SO_REUSEPORT mode: compare with its default (round robin).
        {"reuse_port", conflux::scheduling::reuse_port, node_rr},
    };
    // The series: 1 worker beside 2 (wrk takes one of the machine's two cores).
    const auto one = co_await conflux_cluster(*wrk_path, conflux::scheduling::round_robin, 1);
    for (auto& m : modes) m.figure = co_await conflux_cluster(*wrk_path, m.policy);
    if (const auto again = co_await single_process(*wrk_path); again && baseline) {
        baseline = std::max(*baseline, *again);
    }
    if (!baseline) co_return 0;
    if (one) {
        bench::row("series: cluster HTTP hello, 1 worker, round_robin (req/s)", *one, *baseline, "",
                   true);
    }
    for (const auto& m : modes) {
        if (!m.figure) continue;
        bench::row(std::string("cluster HTTP hello, 2 workers, ") + m.name + " (req/s)", *m.figure,
                   *baseline, "", true, m.node);
    }
    co_return 0;
}

conflux::task<int> worker() {
    auto listener = co_await conflux::cluster::listen("127.0.0.1", 0, {.no_delay = true});
    co_await listener.serve(serve_http);
    co_return 0;
}

} // namespace

int main() {
    if (conflux::cluster::is_worker()) return conflux::run(worker());
    return conflux::run(primary());
}
