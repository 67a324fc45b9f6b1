// Like `xargs -P 4`: 12 commands, at most 4 at once, each with a 1 s timeout, and a summary
// table. The pool's threads are the slots; each job waits for its child on its thread's loop.
#include <conflux/conflux.hpp>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

// One job: "ok", "timed out" or how the command ended.
conflux::task<std::string> run_job(std::string command) {
    conflux::exec_options opts{.timeout = std::chrono::seconds(1)};
    try {
        co_await conflux::exec(command, opts);
        co_return "ok";
    } catch (const conflux::process_error& e) {
        co_return e.timed_out() ? "timed out" : e.status().to_string();
    }
}

conflux::task<int> amain() {
    // Short sleeps, so several really overlap; one fails, one runs into its timeout.
    std::vector<std::string> commands(12, "sleep 0.05");
    commands[4] = "exit 1";
    commands[9] = "sleep 5";
    conflux::worker_pool pool({.maximum = 4, .name = "jobs"});
    std::vector<conflux::task<std::string>> jobs;
    for (const auto& c : commands) jobs.push_back(pool.run(run_job, c));
    std::vector<std::string> results = co_await conflux::when_all(std::move(jobs));

    std::printf("%-4s %-12s %s\n", "job", "command", "result");
    int failed = 0;
    for (std::size_t i = 0; i < results.size(); ++i) {
        failed += results[i] != "ok";
        std::printf("%-4zu %-12s %s\n", i, commands[i].c_str(), results[i].c_str());
    }
    std::printf("%zu jobs, %d failed\n", commands.size(), failed);
    co_return failed == 2 ? 0 : 1;
}

int main() { return conflux::run(amain()); }
