#include <conflux/cluster.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/when_all.hpp>
#include <conflux/when_any.hpp>

#include <doctest/doctest.h>

#include "support/test_support.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using conflux::cluster;
using conflux::task;
using kind = conflux::worker_event::kind;

namespace {

// Asks `rounds` times, each on a fresh connection, which worker answers.
task<void> client(std::uint16_t port, int rounds, int& ok) {
    for (int i = 0; i < rounds; ++i) {
        conflux::tcp_stream s = co_await conflux::connect("127.0.0.1", port);
        co_await s.write_all("who\n");
        if (auto line = co_await s.read_line(); line && !line->empty()) ++ok;
    }
}

} // namespace

TEST_CASE("cluster: 10,000 connections through round_robin leave no descriptor in the primary") {
    // Issue 7: every accepted socket the primary hands to a worker is closed on its side.
    const int clients = 50;
    const int rounds = std::max(2, static_cast<int>(10'000 * conflux_test::stress_scale()) / 50);
    conflux_test::watchdog dog(120s, 4);
    int ok = 0;
    conflux::run([&]() -> task<void> {
        cluster c({.workers = 2,
                   .program = (conflux_test::helper_dir() / "conflux_cluster_worker").string(),
                   .args = std::vector<std::string>{"serve", "127.0.0.1", "0"},
                   .handle_signals = false});
        c.start();
        std::uint16_t port = 0;
        for (int listening = 0; listening < 2;) {
            auto e = co_await conflux::when_any(c.next_event(), conflux::sleep_for(20s));
            REQUIRE(e.index() == 0);
            auto& event = std::get<0>(e);
            REQUIRE(event);
            if (event->what == kind::listening) {
                ++listening;
                const std::string& a = event->address;
                port = static_cast<std::uint16_t>(std::stoi(a.substr(a.rfind(':') + 1)));
            }
        }
        int warm = 0;
        co_await client(port, 4, warm); // every path has run once
        const auto before = conflux_test::open_fds();

        std::vector<task<void>> all;
        for (int i = 0; i < clients; ++i) all.push_back(client(port, rounds, ok));
        co_await conflux::when_all(std::move(all));

        // The workers close their side as the clients close theirs; the primary holds nothing.
        CHECK(conflux_test::open_fds() == before);
        c.shutdown();
        while (co_await c.next_event()) {
        }
    }());
    CHECK(ok == clients * rounds);
    CHECK(conflux_test::zombie_children().empty());
}
