#include <conflux/fork.hpp>
#include <conflux/process.hpp>
#include <conflux/run.hpp>

#include <doctest/doctest.h>

#include "support/test_support.hpp"

#include <chrono>
#include <cstdlib>
#include <string>

using namespace std::chrono_literals;
using conflux::task;

namespace {

bool have_node() { return std::system("node --version >/dev/null 2>&1") == 0; }

} // namespace

TEST_CASE("a conflux parent forks a Node.js child over Node's json IPC framing") {
    if (!have_node()) {
        MESSAGE("node is not installed: skipping the Node.js interoperability test");
        return;
    }
    conflux_test::watchdog dog(30s);
    conflux::run([]() -> task<void> {
        const std::string script = "process.on('message', (m) => {"
                                   "  process.send({got: m, pid: process.pid});"
                                   "  if (m.last) process.disconnect();"
                                   "});";
        const conflux::spawn_options options;
        const conflux::ipc_options ipc{.mode = conflux::ipc_mode::json};
        auto child = co_await conflux::fork_file("node", {"-e", script}, options, ipc);
        co_await child.send(std::string(R"({"hello":"node","utf8":"h\u00e9 \u2713"})"));
        co_await child.send(std::string(R"({"last":true})"));
        auto first = co_await child.receive<std::string>();
        REQUIRE(first);
        CHECK(first->find(R"("got":{"hello":"node")") != std::string::npos);
        auto second = co_await child.receive<std::string>();
        REQUIRE(second);
        CHECK(second->find(R"("got":{"last":true})") != std::string::npos);
        CHECK(!(co_await child.receive<std::string>()));
        CHECK((co_await child.wait()).success());
    }());
}

TEST_CASE("a Node.js parent forks a conflux program and talks to it with process.send") {
    if (!have_node()) {
        MESSAGE("node is not installed: skipping the Node.js interoperability test");
        return;
    }
    conflux_test::watchdog dog(30s);
    const std::string helper = (conflux_test::helper_dir() / "conflux_node_ipc_child").string();
    const std::string script =
        "const cp = require('child_process');"
        "const c = cp.fork('unused', [], {execPath: process.argv[1], serialization: 'json',"
        "                                 stdio: ['ignore', 'inherit', 'inherit', 'ipc']});"
        "const got = [];"
        "c.on('message', (m) => { got.push(m); if (got.length === 2) c.disconnect(); });"
        "c.on('exit', (code) => { console.log(JSON.stringify({code, got})); });"
        "c.send({a: 1}); c.send(['x', 'y\\n']);";
    auto result = conflux::run(conflux::exec_file("node", {"-e", script, helper}));
    CHECK(result.out.find(R"("code":0)") != std::string::npos);
    CHECK(result.out.find(R"({"echo":{"a":1},"n":1})") != std::string::npos);
    CHECK(result.out.find(R"({"echo":["x","y\n"],"n":2})") != std::string::npos);
}
