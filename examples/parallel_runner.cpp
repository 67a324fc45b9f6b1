// Like `xargs -P K`: runs N commands, at most K at once, each with its own timeout, and
// prints a summary table. The pool's K threads are the K slots; each job is a coroutine that
// waits for its child on its thread's loop.
#include <conflux/conflux.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

using namespace std::chrono_literals;

// One job: "ok", "timed out" or how the command ended.
conflux::task<std::string> run_job(std::string command) {
    conflux::exec_options opts{.timeout = 1s};
    try {
        co_await conflux::exec(command, opts);
        co_return "ok";
    } catch (const conflux::process_error& e) {
        co_return e.timed_out() ? "timed out" : e.status().to_string();
    }
}

conflux::task<int> amain() {
    std::vector<std::string> commands;
    for (int i = 0; i < 12; ++i) {
        // Short sleeps, so several really overlap; one fails, one runs into its timeout.
        commands.push_back(i == 4 ? "exit 1" : i == 9 ? "sleep 5" : "sleep 0.05");
    }
    conflux::worker_pool pool({.maximum = 4, .name = "jobs"});
    std::vector<conflux::task<std::string>> jobs;
    for (const auto& c : commands) jobs.push_back(pool.run(run_job, c));
    std::vector<std::string> results = co_await conflux::when_all(std::move(jobs));

    std::printf("%-4s %-12s %s\n", "job", "command", "result");
    int failed = 0;
    for (std::size_t i = 0; i < results.size(); ++i) {
        failed += results[i] == "ok" ? 0 : 1;
        std::printf("%-4zu %-12s %s\n", i, commands[i].c_str(), results[i].c_str());
    }
    co_await pool.close();
    std::printf("%zu jobs, %d failed\n", commands.size(), failed);
    co_return failed == 2 ? 0 : 1;
}

int main() { return conflux::run(amain()); }
