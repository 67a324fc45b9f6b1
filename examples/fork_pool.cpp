// A pool of forked compute workers with crash isolation: each job runs in a child process;
// one job crashes its worker (SIGSEGV) on the first try, the pool sees the channel end,
// restarts the worker and retries the job. The parent never notices more than a lost child.

#include <conflux/fork.hpp>
#include <conflux/run.hpp>
#include <conflux/when_all.hpp>

#include <csignal>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <map>
#include <optional>

struct job {
    int id = 0;
    std::uint64_t n = 0;
    int attempt = 0;
};

struct result {
    int id = 0;
    std::uint64_t sum_of_squares = 0;
};

// The worker: runs in the child, answers jobs until the parent disconnects.
conflux::task<void> worker() {
    while (auto j = co_await conflux::parent().receive<job>()) {
        if (j->id == 3 && j->attempt == 0) {
            std::signal(SIGSEGV, SIG_DFL);
            std::raise(SIGSEGV); // a bug that only bites once
        }
        std::uint64_t sum = 0;
        for (std::uint64_t i = 1; i <= j->n; ++i) sum += i * i;
        co_await conflux::parent().send(result{j->id, sum});
    }
}

conflux::task<int> amain() {
    std::deque<job> queue;
    for (int id = 0; id < 8; ++id) queue.push_back({id, 100000u * (id + 1), 0});
    std::map<int, std::uint64_t> results;
    int restarts = 0;

    auto slot = [&](int number) -> conflux::task<void> {
        std::optional<conflux::forked_child> child;
        while (!queue.empty()) {
            if (!child) child = co_await conflux::fork("worker");
            job j = queue.front();
            queue.pop_front();
            co_await child->send(j);
            if (auto r = co_await child->receive<result>()) {
                results[r->id] = r->sum_of_squares;
                continue;
            }
            // The worker died with the job: reap it, start a new one, retry the job.
            auto status = co_await child->wait();
            std::printf("slot %d: worker died (%s) on job %d; restarting\n", number,
                        status.to_string().c_str(), j.id);
            child.reset();
            ++restarts;
            ++j.attempt;
            queue.push_back(j);
        }
        if (child) {
            child->disconnect();
            co_await child->wait();
        }
    };
    co_await conflux::when_all(slot(1), slot(2));

    for (auto [id, sum] : results) {
        std::printf("job %d: %llu\n", id, static_cast<unsigned long long>(sum));
    }
    std::printf("%zu jobs done, %d restart(s)\n", results.size(), restarts);
    co_return results.size() == 8 && restarts == 1 ? 0 : 1;
}

int main() {
    conflux::register_entry("worker", worker);
    return conflux::run(amain());
}
