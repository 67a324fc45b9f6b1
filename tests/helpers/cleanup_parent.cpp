// A parent that starts a child and then dies by SIGKILL, for the `cleanup` tests.
//
//   conflux_cleanup_parent <child program> <main|thread> <cleanup 0|1>
//
// Starts `<child program> sleep 30000` (from the main thread, or from a std::thread that
// returns right after), prints the child's pid on a line, checks 200 ms later that the child
// still runs (a thread's exit must not kill it) and prints "alive" or "dead", then SIGKILLs
// itself.

#include <conflux/process.hpp>
#include <conflux/run.hpp>

#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdio>
#include <string>
#include <string_view>
#include <thread>

#include <signal.h>
#include <unistd.h>

namespace {

// Running, not a zombie: the state letter of /proc/<pid>/stat.
bool running(int pid) {
    std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
    if (f == nullptr) return false;
    char buf[512] = {};
    const std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    const std::string_view stat(buf, n);
    const auto paren = stat.rfind(')');
    return paren != std::string_view::npos && paren + 2 < stat.size() && stat[paren + 2] != 'Z';
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 4) {
        std::fprintf(stderr, "usage: %s child main|thread 0|1\n", argv[0]);
        return 2;
    }
    const std::string program = argv[1];
    const bool from_thread = std::string_view(argv[2]) == "thread";
    const bool cleanup = std::string_view(argv[3]) == "1";
    int pid = -1;
    auto start = [&]() -> conflux::task<> {
        conflux::spawn_options o{.stdio = {conflux::stdio_spec::ignore(),
                                           conflux::stdio_spec::ignore(),
                                           conflux::stdio_spec::ignore()},
                                 .cleanup = cleanup};
        auto child = conflux::spawn(program, {"sleep", "30000"}, o);
        pid = child.pid();
        child.detach();
        co_return;
    };
    if (from_thread) {
        std::thread t([&] { conflux::run(start()); });
        t.join();
    } else {
        conflux::run(start());
    }
    std::printf("%d\n", pid);
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    std::printf("%s\n", running(pid) ? "alive" : "dead");
    std::fflush(stdout);
    ::kill(::getpid(), SIGKILL);
    return 3;
}
