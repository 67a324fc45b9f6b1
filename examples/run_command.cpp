// Runs a command and prints its output and exit status: exec_file without a shell.
#include <conflux/conflux.hpp>

#include <cstdio>

conflux::task<int> amain() {
    conflux::exec_result r = co_await conflux::exec_file("uname", {"-s"});
    std::printf("stdout: %s", r.out.c_str());
    std::printf("status: %s\n", r.status.to_string().c_str());

    // A failing command throws process_error carrying what was captured.
    try {
        co_await conflux::exec("echo partial; echo 'it broke' >&2; exit 3");
    } catch (const conflux::process_error& e) {
        std::printf("error:  %s\n", e.what());
        std::printf("stdout: %s", e.result().out.c_str());
    }
    co_return 0;
}

int main() { return conflux::run(amain()); }
