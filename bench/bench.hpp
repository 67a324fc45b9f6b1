#pragma once

// A small harness: each benchmark runs beside its baseline in the same process and the table
// shows the ratio, because absolute times drift by ±20 % between runs on a shared machine.
//
// Ratio column: "r× baseline" where r > 1 always means conflux did better — figure / baseline
// when higher is better (throughput), baseline / figure when lower is better (latency).
// Node column: the Node.js counterpart measured now, and the same kind of ratio against it.

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#ifndef CONFLUX_BENCH_NODE_DIR
#error "benchmarks are built with CONFLUX_BENCH_NODE_DIR pointing at bench/node"
#endif

namespace bench {

/// Best wall time in seconds of `run_n(n)` over `repeats` runs, after one warm-up run.
template <class F>
double best_seconds(F&& run_n, std::size_t n, int repeats = 5) {
    using clock = std::chrono::steady_clock;
    run_n(n);
    double best = 1e300;
    for (int i = 0; i < repeats; ++i) {
        const auto start = clock::now();
        run_n(n);
        best = std::min(best, std::chrono::duration<double>(clock::now() - start).count());
    }
    return best;
}

/// Operations per second of `run_n(n)`, which performs `n` operations; the best of `repeats`.
template <class F>
double ops_per_second(F&& run_n, std::size_t n, int repeats = 5) {
    return static_cast<double>(n) / best_seconds(run_n, n, repeats);
}

/// Seconds per operation of `run_n(n)`; the best of `repeats`.
template <class F>
double seconds_per_op(F&& run_n, std::size_t n, int repeats = 5) {
    return best_seconds(run_n, n, repeats) / static_cast<double>(n);
}

/// Runs `node bench/node/<script> args...` and returns the number on its last line of output;
/// empty when Node.js is missing or the script fails. `CONFLUX_NODE` names another node binary.
inline std::optional<double> node_figure(const std::string& script,
                                         const std::vector<std::string>& args = {}) {
    const char* node = std::getenv("CONFLUX_NODE");
    std::string command = std::string("'") + (node != nullptr && *node ? node : "node") + "' '" +
                          CONFLUX_BENCH_NODE_DIR + "/" + script + "'";
    for (const auto& arg : args) command += " '" + arg + "'";
    command += " 2>/dev/null";
    FILE* pipe = ::popen(command.c_str(), "r");
    if (pipe == nullptr) return std::nullopt;
    std::string output;
    char chunk[512];
    while (std::size_t got = std::fread(chunk, 1, sizeof chunk, pipe)) output.append(chunk, got);
    if (::pclose(pipe) != 0) return std::nullopt;
    while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
    const auto last = output.rfind('\n');
    const std::string line = last == std::string::npos ? output : output.substr(last + 1);
    char* end = nullptr;
    const double value = std::strtod(line.c_str(), &end);
    if (end == line.c_str()) return std::nullopt;
    return value;
}

/// A figure with engineering units: 1.23 M, 456 k, 7.8 µ.
inline std::string format(double value) {
    struct scale {
        double factor;
        const char* prefix;
    };
    static constexpr scale scales[] = {{1e9, " G"},  {1e6, " M"},  {1e3, " k"}, {1, " "},
                                       {1e-3, " m"}, {1e-6, " µ"}, {1e-9, " n"}};
    for (const auto& s : scales) {
        if (value >= s.factor || s.factor == 1e-9) {
            char text[64];
            std::snprintf(text, sizeof text, "%.3g%s", value / s.factor, s.prefix);
            return text;
        }
    }
    return "0 ";
}

/// conflux's advantage: > 1 means conflux did better, whichever direction is better.
inline double advantage(double figure, double other, bool higher_is_better) {
    return higher_is_better ? figure / other : other / figure;
}

/// Prints the markdown table header that `row` fills.
inline void header() {
    std::printf("| benchmark | conflux | baseline | vs baseline | Node.js |\n");
    std::printf("|---|---|---|---|---|\n");
    std::fflush(stdout);
}

/// Prints one table row: the figure, the baseline measured in the same run, the ratio and,
/// when given, Node.js's figure with conflux's ratio against it (else `absent` in its cell).
inline void row(std::string_view name, double figure, double baseline, std::string_view unit,
                bool higher_is_better = true, std::optional<double> node = {},
                std::string_view absent = "–") {
    const std::string u(unit);
    std::string node_cell(absent);
    if (node) {
        char text[64];
        std::snprintf(text, sizeof text, " / %.2f×", advantage(figure, *node, higher_is_better));
        node_cell = format(*node) + u + text;
    }
    std::printf("| %.*s | %s%s | %s%s | %.2f× baseline | %s |\n", static_cast<int>(name.size()),
                name.data(), format(figure).c_str(), u.c_str(), format(baseline).c_str(), u.c_str(),
                advantage(figure, baseline, higher_is_better), node_cell.c_str());
    std::fflush(stdout);
}

/// Prints a row against a peer library, named in the baseline and ratio cells ("Asio: 4.1 M
/// op/s", "1.30× Asio"); without the peer's figure, `absent` fills those cells.
inline void peer_row(std::string_view name, double figure, std::string_view peer,
                     std::optional<double> theirs, std::string_view unit,
                     bool higher_is_better = true, std::string_view absent = "–") {
    const std::string u(unit);
    std::string baseline(absent);
    std::string ratio(absent);
    if (theirs) {
        baseline = std::string(peer) + ": " + format(*theirs) + u;
        char text[64];
        std::snprintf(text, sizeof text, "%.2f× ", advantage(figure, *theirs, higher_is_better));
        ratio = text + std::string(peer);
    }
    std::printf("| %.*s | %s%s | %s | %s | – |\n", static_cast<int>(name.size()), name.data(),
                format(figure).c_str(), u.c_str(), baseline.c_str(), ratio.c_str());
    std::fflush(stdout);
}

} // namespace bench
