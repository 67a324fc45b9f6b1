// find . -type f | sed 's/.*\///; s/^[^.]*$/(none)/; s/.*\.//' | sort | uniq -c | sort -rn:
// the file extensions under the current directory, most common first. The five children are
// joined by pipes of their own; only the last one's output reaches this process.
#include <conflux/conflux.hpp>

#include <cstdio>

conflux::task<int> amain() {
    using conflux::command;
    auto spec = command("find", {".", "-type", "f"}) |
                command("sed", {"s/.*\\///; s/^[^.]*$/(none)/; s/.*\\.//"}) | command("sort") |
                command("uniq", {"-c"}) | command("sort", {"-rn"});
    conflux::pipeline_options opts{.timeout = std::chrono::seconds(20)};
    try {
        conflux::pipeline_result r = co_await conflux::pipeline(spec, opts);
        std::printf("%s", r.out.c_str());
    } catch (const conflux::pipeline_error& e) { // names the stage that failed
        std::fprintf(stderr, "%s\n", e.what());
        co_return 1;
    }
    co_return 0;
}

int main() { return conflux::run(amain()); }
