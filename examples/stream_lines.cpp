// Streams a child's output line by line as it arrives, feeding its stdin at the same time.
#include <conflux/conflux.hpp>

#include <cstdio>
#include <string>

conflux::task<void> feed(conflux::writable_stream& in) {
    for (int i = 1; i <= 5; ++i) co_await in.write_all("item " + std::to_string(i) + "\n");
    in.close(); // EOF: the child finishes
}

conflux::task<void> print(conflux::readable_stream& out) {
    int n = 0;
    while (auto line = co_await out.read_line()) std::printf("%3d | %s\n", ++n, line->c_str());
}

conflux::task<int> amain() {
    // sed -u answers each line as soon as it reads it, upper-cased.
    auto child = conflux::spawn("sed", {"-u", "s/.*/\\U&/"});
    co_await conflux::when_all(feed(child.in()), print(child.out()));
    conflux::exit_status st = co_await child.wait();
    std::printf("sed %s\n", st.to_string().c_str());
    co_return st.success() ? 0 : 1;
}

int main() { return conflux::run(amain()); }
