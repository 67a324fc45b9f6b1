#include <conflux/net.hpp>
#include <conflux/run.hpp>
#include <conflux/when_all.hpp>

#include <doctest/doctest.h>

#include "support/test_support.hpp"

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using conflux::task;
using conflux::tcp_listener;
using conflux::tcp_stream;

namespace {

// Answers one request line per connection, then closes (server first: TIME_WAIT stays on the
// listening port's side and the clients' ephemeral ports are not used up).
task<void> serve(tcp_stream s, int& served) {
    if (auto line = co_await s.read_line()) {
        co_await s.write_all("re: " + *line + "\n");
        ++served;
    }
}

task<void> acceptor(tcp_listener& listener, int total, int& served) {
    for (int i = 0; i < total; ++i) conflux::detach(serve(co_await listener.accept(), served));
}

task<void> client(std::uint16_t port, int rounds, int id, int& ok) {
    for (int i = 0; i < rounds; ++i) {
        tcp_stream s = co_await conflux::connect("127.0.0.1", port);
        const std::string msg = std::to_string(id) + "/" + std::to_string(i);
        co_await s.write_all(msg + "\n");
        auto reply = co_await s.read_line();
        if (reply && *reply == "re: " + msg) ++ok;
        CHECK(!(co_await s.read_line()));
    }
}

} // namespace

TEST_CASE("10,000 connections, 50 at a time, leave no descriptor behind") {
    const int clients = 50;
    const int rounds = std::max(2, static_cast<int>(10'000 * conflux_test::stress_scale()) / 50);
    const int total = clients * rounds;
    conflux_test::watchdog dog(60s, 4);
    const auto before = conflux_test::open_fds();
    int served = 0;
    int ok = 0;
    conflux::run([&]() -> task<void> {
        auto listener = tcp_listener::bind("127.0.0.1", 0, {.backlog = 1024});
        const auto port = listener.local_endpoint().port();
        conflux::detach(acceptor(listener, total, served));
        for (int c = 0; c < clients; ++c) conflux::detach(client(port, rounds, c, ok));
        while (ok < total) co_await conflux::sleep_for(10ms);
        // Let the servers' frames finish.
        while (served < total) co_await conflux::sleep_for(1ms);
    }());
    CHECK(ok == total);
    CHECK(served == total);
    CHECK(conflux_test::open_fds() == before);
}
