// A conflux parent talking to a Node.js child over Node's json IPC channel: the child is an
// ordinary Node script using process.on('message') and process.send (node_child.js).

#include <conflux/fork.hpp>
#include <conflux/run.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

conflux::task<int> amain() {
    const auto script = std::filesystem::path(__FILE__).parent_path() / "node_child.js";
    if (std::system("node --version >/dev/null 2>&1") != 0 || !std::filesystem::exists(script)) {
        std::puts("node (or node_child.js) is not available: nothing to do");
        co_return 0;
    }
    const conflux::spawn_options options;
    const conflux::ipc_options json{.mode = conflux::ipc_mode::json};
    auto child = co_await conflux::fork_file("node", {script.string()}, options, json);

    // Messages are JSON texts: bring any JSON library, or write them by hand as here.
    for (int i = 1; i <= 3; ++i) co_await child.send("{\"add\":" + std::to_string(i) + "}");
    co_await child.send(std::string("{\"done\":true}"));
    while (auto reply = co_await child.receive<std::string>()) {
        std::printf("node says: %s\n", reply->c_str());
    }
    const auto status = co_await child.wait();
    std::printf("node child: %s\n", status.to_string().c_str());
    co_return status.success() ? 0 : 1;
}

int main() { return conflux::run(amain()); }
