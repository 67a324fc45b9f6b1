// Like `xargs -P K`: runs N commands with at most K at once, and reports each result.
#include <conflux/conflux.hpp>

#include <cstdio>
#include <string>
#include <vector>

struct job_queue {
    std::vector<std::vector<std::string>> commands;
    std::size_t next = 0; // every worker runs on the same loop thread: no lock needed
    int failures = 0;
};

conflux::task<void> worker(int id, job_queue& q) {
    while (q.next < q.commands.size()) {
        const std::size_t index = q.next++;
        const auto& cmd = q.commands[index];
        conflux::exec_options opts{.timeout = std::chrono::seconds(10), .check = false};
        std::vector<std::string> args(cmd.begin() + 1, cmd.end());
        conflux::exec_result r = co_await conflux::exec_file(cmd[0], args, opts);
        if (!r.status.success()) ++q.failures;
        std::printf("[worker %d] job %zu (%s %s): %s\n", id, index, cmd[0].c_str(),
                    args.empty() ? "" : args[0].c_str(), r.status.to_string().c_str());
    }
}

conflux::task<int> amain() {
    job_queue q;
    for (int i = 0; i < 12; ++i) {
        // A short sleep each, so several really overlap; every fifth one fails on purpose.
        q.commands.push_back({"sh", "-c", i % 5 == 4 ? "exit 1" : "sleep 0.05"});
    }
    const int parallel = 4;
    std::vector<conflux::task<void>> workers;
    for (int id = 0; id < parallel; ++id) workers.push_back(worker(id, q));
    co_await conflux::when_all(std::move(workers));
    std::printf("%zu jobs, %d failed\n", q.commands.size(), q.failures);
    co_return q.failures == 2 ? 0 : 1;
}

int main() { return conflux::run(amain()); }
