#include <conflux/net.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/when_all.hpp>

#include <doctest/doctest.h>

#include "support/scratch.hpp"
#include "support/test_support.hpp"

#include <chrono>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace std::chrono_literals;
using conflux::task;
using conflux::tcp_listener;
using conflux::tcp_stream;

using conflux_test::temp_dir;

namespace {

template <class F>
auto run(F f) {
    return conflux::run(f());
}

bool ipv6_loopback_available() {
    try {
        auto l = tcp_listener::bind("::1", 0);
        return true;
    } catch (const std::system_error&) {
        return false;
    }
}

// Serves one connection: echoes every line back until the peer shuts down.
task<void> echo_lines(tcp_stream s) {
    while (auto line = co_await s.read_line()) {
        co_await s.write_all(*line + "\n");
    }
    s.shutdown();
}

// Accepts one connection, echoes lines; then a client sends a few lines and checks the replies.
task<void> echo_round_trip(tcp_listener& listener, std::function<task<tcp_stream>()> dial) {
    auto server = [&]() -> task<void> { co_await echo_lines(co_await listener.accept()); };
    auto client = [&]() -> task<void> {
        tcp_stream s = co_await dial();
        for (int i = 0; i < 3; ++i) {
            const std::string msg = "hello " + std::to_string(i);
            co_await s.write_all(msg + "\n");
            auto back = co_await s.read_line();
            REQUIRE(back);
            CHECK(*back == msg);
        }
        s.shutdown();
        CHECK(!(co_await s.read_line()));
    };
    co_await conflux::when_all(server(), client());
}

bool has_flag(int fd, int cmd, int flag) { return (::fcntl(fd, cmd) & flag) != 0; }

double cpu_seconds() {
    rusage ru{};
    ::getrusage(RUSAGE_SELF, &ru);
    return static_cast<double>(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           static_cast<double>(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

} // namespace

TEST_CASE("tcp over IPv4 loopback: echo round trip on an ephemeral port") {
    conflux_test::watchdog dog(10s);
    run([]() -> task<void> {
        auto listener = tcp_listener::bind("127.0.0.1", 0);
        const auto ep = listener.local_endpoint();
        CHECK(ep.is_ipv4());
        CHECK(ep.host() == "127.0.0.1");
        CHECK(ep.port() != 0);
        CHECK(ep.to_string() == "127.0.0.1:" + std::to_string(ep.port()));
        co_await echo_round_trip(listener,
                                 [&] { return conflux::connect("127.0.0.1", ep.port()); });
    });
}

TEST_CASE("tcp over IPv6 loopback: echo round trip, bracketed host, endpoint text") {
    if (!ipv6_loopback_available()) {
        MESSAGE("no IPv6 loopback here: skipped");
        return;
    }
    conflux_test::watchdog dog(10s);
    run([]() -> task<void> {
        auto listener = tcp_listener::bind("[::1]", 0);
        const auto ep = listener.local_endpoint();
        CHECK(ep.is_ipv6());
        CHECK(ep.to_string() == "[::1]:" + std::to_string(ep.port()));
        co_await echo_round_trip(listener, [&] { return conflux::connect("::1", ep.port()); });
    });
}

TEST_CASE("localhost resolves without a resolver; other names are refused clearly") {
    conflux_test::watchdog dog(10s);
    run([]() -> task<void> {
        auto listener = tcp_listener::bind("localhost", 0);
        CHECK(listener.local_endpoint().host() == "127.0.0.1");
        const auto port = listener.local_endpoint().port();
        co_await echo_round_trip(listener, [&] { return conflux::connect("localhost", port); });
        CHECK_THROWS_AS(tcp_listener::bind("example.invalid", 0), std::invalid_argument);
        CHECK_THROWS_AS(co_await conflux::connect("example.invalid", 80), std::invalid_argument);
    });
}

TEST_CASE("unix-domain sockets: path and abstract namespace; the path is removed on close") {
    conflux_test::watchdog dog(10s);
    temp_dir dir;
    const std::string path = (dir.path / "echo.sock").string();
    run([&]() -> task<void> {
        {
            auto listener = tcp_listener::bind_unix(path);
            CHECK(listener.local_endpoint().is_unix());
            CHECK(listener.local_endpoint().host() == path);
            CHECK(std::filesystem::exists(path));
            co_await echo_round_trip(listener, [&] { return conflux::connect_unix(path); });
            // A second bind of the same path fails, naming it.
            try {
                (void)tcp_listener::bind_unix(path);
                FAIL("second bind succeeded");
            } catch (const std::system_error& e) {
                CHECK(e.code().value() == EADDRINUSE);
                CHECK(std::string(e.what()).find(path) != std::string::npos);
            }
        }
        CHECK(!std::filesystem::exists(path));
        const std::string abstract = "@conflux-net-test-" + std::to_string(::getpid());
        auto listener = tcp_listener::bind_unix(abstract);
        CHECK(listener.local_endpoint().host() == abstract);
        co_await echo_round_trip(listener, [&] { return conflux::connect_unix(abstract); });
        CHECK_THROWS_AS(co_await conflux::connect_unix(dir.path.string() + "/nobody.sock"),
                        std::system_error);
    });
}

TEST_CASE("bind to a port in use: EADDRINUSE naming address and port; SO_REUSEPORT shares it") {
    conflux_test::watchdog dog(10s);
    auto first = tcp_listener::bind("127.0.0.1", 0);
    const auto port = first.local_endpoint().port();
    const std::string where = "127.0.0.1:" + std::to_string(port);
    try {
        (void)tcp_listener::bind("127.0.0.1", port);
        FAIL("second bind succeeded");
    } catch (const std::system_error& e) {
        CHECK(e.code().value() == EADDRINUSE);
        const std::string what = e.what();
        CHECK(what.find("bind") != std::string::npos);
        CHECK(what.find(where) != std::string::npos);
        MESSAGE(what);
    }
    auto a = tcp_listener::bind("127.0.0.1", 0, {.reuse_port = true});
    const auto shared = a.local_endpoint().port();
    auto b = tcp_listener::bind("127.0.0.1", shared, {.reuse_port = true});
    CHECK(b.local_endpoint().port() == shared);
}

TEST_CASE("connect to a closed port: ECONNREFUSED naming the address") {
    conflux_test::watchdog dog(10s);
    std::uint16_t port = 0;
    {
        auto l = tcp_listener::bind("127.0.0.1", 0);
        port = l.local_endpoint().port();
    }
    run([&]() -> task<void> {
        try {
            (void)co_await conflux::connect("127.0.0.1", port);
            FAIL("connect succeeded");
        } catch (const std::system_error& e) {
            CHECK(e.code().value() == ECONNREFUSED);
            const std::string what = e.what();
            CHECK(what.find("connect") != std::string::npos);
            CHECK(what.find("127.0.0.1:" + std::to_string(port)) != std::string::npos);
        }
    });
}

TEST_CASE("accept is cancellable; the listener keeps working afterwards") {
    conflux_test::watchdog dog(10s);
    run([]() -> task<void> {
        auto listener = tcp_listener::bind("127.0.0.1", 0);
        std::stop_source stop;
        auto stopper = [&]() -> task<void> {
            co_await conflux::sleep_for(20ms);
            stop.request_stop();
        };
        auto waiter = [&]() -> task<void> {
            CHECK_THROWS_AS((void)co_await listener.accept(stop.get_token()),
                            conflux::operation_cancelled);
        };
        co_await conflux::when_all(waiter(), stopper());
        // An already-stopped token cancels at once.
        CHECK_THROWS_AS((void)co_await listener.accept(stop.get_token()),
                        conflux::operation_cancelled);
        const auto port = listener.local_endpoint().port();
        auto [in, out] =
            co_await conflux::when_all(listener.accept(), conflux::connect("127.0.0.1", port));
        CHECK(in.is_open());
        CHECK(out.is_open());
    });
}

TEST_CASE("sockets are non-blocking and close-on-exec; misuse is a logic_error") {
    conflux_test::watchdog dog(10s);
    run([]() -> task<void> {
        auto listener = tcp_listener::bind("127.0.0.1", 0, {.no_delay = true});
        CHECK(has_flag(listener.native_handle(), F_GETFD, FD_CLOEXEC));
        CHECK(has_flag(listener.native_handle(), F_GETFL, O_NONBLOCK));
        const auto port = listener.local_endpoint().port();
        auto [in, out] =
            co_await conflux::when_all(listener.accept(), conflux::connect("127.0.0.1", port));
        for (int fd : {in.native_handle(), out.native_handle()}) {
            CHECK(has_flag(fd, F_GETFD, FD_CLOEXEC));
            CHECK(has_flag(fd, F_GETFL, O_NONBLOCK));
        }
        CHECK(in.remote_endpoint().port() == out.local_endpoint().port());
        CHECK(in.name() == out.local_endpoint().to_string());
        int nodelay = 0;
        socklen_t len = sizeof nodelay;
        ::getsockopt(in.native_handle(), IPPROTO_TCP, TCP_NODELAY, &nodelay, &len);
        CHECK(nodelay != 0);
        // Two accepts at once: the second is refused, the first stays cancellable.
        std::stop_source stop;
        auto first = [&]() -> task<void> {
            CHECK_THROWS_AS((void)co_await listener.accept(stop.get_token()),
                            conflux::operation_cancelled);
        };
        auto second = [&]() -> task<void> {
            CHECK_THROWS_AS((void)co_await listener.accept(), std::logic_error);
            stop.request_stop();
            co_return;
        };
        co_await conflux::when_all(first(), second());
        CHECK_NOTHROW(listener.close());
        CHECK(!listener.is_open());
        in.close();
        in.close();
        CHECK(!in.is_open());
        CHECK_THROWS_AS(co_await in.write_all("x"), std::logic_error);
    });
}

TEST_CASE("large transfers both ways at once: back-pressure on the send buffer") {
    conflux_test::watchdog dog(20s);
    run([]() -> task<void> {
        auto listener = tcp_listener::bind("127.0.0.1", 0);
        const auto port = listener.local_endpoint().port();
        auto pair =
            co_await conflux::when_all(listener.accept(), conflux::connect("127.0.0.1", port));
        tcp_stream& server = std::get<0>(pair);
        tcp_stream& client = std::get<1>(pair);
        std::string payload(8 << 20, '\0');
        for (std::size_t i = 0; i < payload.size(); ++i) {
            payload[i] = static_cast<char>('a' + (i * 7 + i / 4096) % 26);
        }
        // The server echoes as it reads; the client writes everything before reading anything,
        // so both sides' buffers fill and every write must wait for the other side to drain.
        auto echo = [&]() -> task<void> {
            char buf[65536];
            for (;;) {
                const std::size_t n = co_await server.read_some(std::span<char>(buf));
                if (n == 0) break;
                co_await server.write_all(std::string_view(buf, n));
            }
            server.shutdown();
        };
        auto send = [&]() -> task<void> {
            co_await client.write_all(payload);
            client.shutdown();
        };
        auto receive = [&]() -> task<std::string> { co_return co_await client.read_all(); };
        auto [a, b, back] = co_await conflux::when_all(echo(), send(), receive());
        CHECK(back.size() == payload.size());
        CHECK(back == payload);
    });
}

TEST_CASE("a peer that went away: EPIPE or ECONNRESET, never SIGPIPE") {
    conflux_test::watchdog dog(10s);
    run([]() -> task<void> {
        auto listener = tcp_listener::bind("127.0.0.1", 0);
        const auto port = listener.local_endpoint().port();
        auto [server, client] =
            co_await conflux::when_all(listener.accept(), conflux::connect("127.0.0.1", port));
        server.close();
        const std::string chunk(1 << 16, 'x');
        bool failed = false;
        for (int i = 0; i < 100 && !failed; ++i) {
            try {
                co_await client.write_all(chunk);
            } catch (const std::system_error& e) {
                failed = true;
                CHECK((e.code().value() == EPIPE || e.code().value() == ECONNRESET));
            }
        }
        CHECK(failed);
    });
}

TEST_CASE("connections opened and closed leave no descriptor behind") {
    conflux_test::watchdog dog(60s);
    const int count = std::max(200, static_cast<int>(2000 * conflux_test::stress_scale()));
    run([count]() -> task<void> {
        auto listener = tcp_listener::bind("127.0.0.1", 0);
        const auto port = listener.local_endpoint().port();
        // Warm up once so lazily made state (the listener's watch) is not counted as growth.
        {
            auto [a, b] =
                co_await conflux::when_all(listener.accept(), conflux::connect("127.0.0.1", port));
        }
        const auto before = conflux_test::open_fds();
        for (int i = 0; i < count; ++i) {
            auto [server, client] =
                co_await conflux::when_all(listener.accept(), conflux::connect("127.0.0.1", port));
            co_await client.write_all("ping\n");
            auto line = co_await server.read_line();
            REQUIRE(line);
            // The server closes first, so TIME_WAIT lands on the listening port's side and
            // the client's ephemeral ports are not used up.
            server.close();
            CHECK(co_await client.read_all() == "");
        }
        CHECK(conflux_test::open_fds() == before);
    });
}

TEST_CASE("accept under EMFILE backs off without spinning and recovers when fds free up") {
    conflux_test::watchdog dog(30s);
    conflux_test::meet_error_types_before_emfile();
    run([]() -> task<void> {
        auto listener = tcp_listener::bind("127.0.0.1", 0, {.backlog = 256});
        const auto port = listener.local_endpoint().port();
        // Connections the kernel completes into the listen queue without an accept.
        std::vector<tcp_stream> clients;
        for (int i = 0; i < 20; ++i)
            clients.push_back(co_await conflux::connect("127.0.0.1", port));

        // Cap the descriptor table just above the highest fd in use: every accept now fails
        // with EMFILE. Nothing else in this process opens fds meanwhile (one thread).
        rlimit old{};
        ::getrlimit(RLIMIT_NOFILE, &old);
        int highest = 0;
        for (const auto& entry : conflux_test::open_fds()) {
            highest = std::max(highest, std::atoi(entry.c_str()));
        }
        // Fill every hole below the cap so the table is really full. The cap leaves two
        // slots above the highest fd, so there are always at least two fillers to free later
        // even when the table below has no holes.
        std::vector<int> fillers;
        rlimit low = old;
        low.rlim_cur = static_cast<rlim_t>(highest + 3);
        REQUIRE(::setrlimit(RLIMIT_NOFILE, &low) == 0);
        for (;;) {
            const int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
            if (fd < 0) break;
            fillers.push_back(fd);
        }
        const bool two_fillers = fillers.size() >= 2;
        struct restore {
            rlimit limit;
            std::vector<int>& fds;
            ~restore() {
                for (int fd : fds) ::close(fd);
                ::setrlimit(RLIMIT_NOFILE, &limit);
            }
        } restorer{old, fillers};

        std::vector<tcp_stream> accepted;
        bool stuck = true;
        auto acceptor = [&]() -> task<void> {
            accepted.push_back(co_await listener.accept());
            stuck = false;
            accepted.push_back(co_await listener.accept());
        };
        double used = 0;
        bool was_stuck = false;
        std::uint64_t backoffs = 0;
        auto observer = [&]() -> task<void> {
            const double cpu0 = cpu_seconds();
            co_await conflux::sleep_for(800ms);
            used = cpu_seconds() - cpu0;
            was_stuck = stuck;
            backoffs = listener.exhaustion_backoffs();
            // Free two descriptors: the next back-off round picks the queued connections up.
            for (int freed = 0; freed < 2 && !fillers.empty(); ++freed) {
                ::close(fillers.back());
                fillers.pop_back();
            }
        };
        co_await conflux::when_all(acceptor(), observer());
        // The two accepts took the freed descriptors: the table is full again. Release it all
        // before checking.
        for (int fd : fillers) ::close(fd);
        fillers.clear();
        ::setrlimit(RLIMIT_NOFILE, &old);
        // Checked only now that descriptors are free: UBSan's vptr check needs a pipe of its
        // own to probe memory, and doctest opens files to report; with the table full both
        // fail (a false "invalid vptr" report).
        REQUIRE(two_fillers);
        CHECK(was_stuck);
        CHECK(backoffs >= 2);
        // A spinning accept loop would burn the whole 0.8 s.
        CHECK(used < 0.2);
        MESSAGE("cpu while backing off: " << used << " s, backoffs " << backoffs);
        CHECK(!stuck);
        CHECK(accepted.size() == 2);
        // The accepted connections work.
        co_await clients[0].write_all("ok\n");
        CHECK(co_await accepted[0].read_line() == std::optional<std::string>("ok"));
    });
    // With the limit restored, more connections come in normally.
    run([]() -> task<void> {
        auto listener = tcp_listener::bind("127.0.0.1", 0);
        const auto port = listener.local_endpoint().port();
        auto [a, b] =
            co_await conflux::when_all(listener.accept(), conflux::connect("127.0.0.1", port));
        CHECK(a.is_open());
    });
}

namespace {

// A connected TCP pair over loopback: {accepted, connected}.
task<std::pair<tcp_stream, tcp_stream>> tcp_pair(tcp_listener& listener) {
    const auto port = listener.local_endpoint().port();
    auto [in, out] =
        co_await conflux::when_all(listener.accept(), conflux::connect("127.0.0.1", port));
    co_return std::pair<tcp_stream, tcp_stream>(std::move(in), std::move(out));
}

std::string pattern(std::size_t size) {
    std::string s(size, '\0');
    for (std::size_t i = 0; i < size; ++i) s[i] = static_cast<char>('a' + i % 23);
    return s;
}

} // namespace

TEST_CASE("a second write while one waits on a full socket is a logic_error; the first completes") {
    conflux_test::watchdog dog(20s);
    run([]() -> task<void> {
        auto listener = tcp_listener::bind("127.0.0.1", 0);
        auto pair = co_await tcp_pair(listener);
        tcp_stream& server = pair.first;
        tcp_stream& client = pair.second;
        // More than loopback's send and receive buffers hold, so the write must wait.
        const std::string big = pattern(32 << 20);
        std::string refused;
        auto first = [&]() -> task<void> {
            co_await client.write_all(big);
            client.shutdown();
        };
        auto second = [&]() -> task<std::string> {
            co_await conflux::sleep_for(20ms);
            try {
                co_await client.write("x");
            } catch (const std::logic_error& e) {
                refused = e.what();
            }
            CHECK_THROWS_AS(co_await client.write_all("x"), std::logic_error);
            CHECK_THROWS_AS(client.close(), std::logic_error);
            co_return co_await server.read_all();
        };
        auto [done, got] = co_await conflux::when_all(first(), second());
        // The same refusal as a pipe's (stream_test): one guard for every stream.
        CHECK(refused.find("two writes at once on stream \"" + client.name() + "\"") !=
              std::string::npos);
        CHECK(got.size() == big.size());
        CHECK(got == big);
    });
}

TEST_CASE("write_all on a socket cancelled half-way: a prefix was sent, no extra descriptor") {
    conflux_test::watchdog dog(20s);
    run([]() -> task<void> {
        auto listener = tcp_listener::bind("127.0.0.1", 0);
        auto pair = co_await tcp_pair(listener);
        tcp_stream& server = pair.first;
        tcp_stream& client = pair.second;
        const std::string big = pattern(32 << 20);
        const auto fds = conflux_test::open_fds();
        std::stop_source stop;
        std::vector<std::string> fds_while_waiting;
        auto writer = [&]() -> task<void> {
            CHECK_THROWS_AS(co_await client.write_all(big, stop.get_token()),
                            conflux::operation_cancelled);
            co_await client.write_all("END"); // the write slot was given back
            client.shutdown();
        };
        auto reader = [&]() -> task<std::string> {
            co_await conflux::sleep_for(20ms);
            // Waiting for room takes no descriptor: both directions share one watch.
            fds_while_waiting = conflux_test::open_fds();
            stop.request_stop();
            co_return co_await server.read_all();
        };
        auto [done, got] = co_await conflux::when_all(writer(), reader());
        CHECK(fds_while_waiting == fds);
        REQUIRE(got.size() > 3);
        const std::size_t prefix = got.size() - 3;
        CHECK(got.substr(prefix) == "END");
        CHECK(prefix > 0);
        CHECK(prefix < big.size());
        CHECK(got.compare(0, prefix, big, 0, prefix) == 0);
    });
}

TEST_CASE("a Unix peer that closed: EPIPE from the write, no SIGPIPE, the signal mask untouched") {
    conflux_test::watchdog dog(10s);
    const bool dfl = std::signal(SIGPIPE, SIG_DFL) != SIG_ERR;
    REQUIRE(dfl);
    bool blocked_inside = true;
    run([&]() -> task<void> {
        const std::string path = "@conflux-net-epipe-" + std::to_string(::getpid());
        auto listener = tcp_listener::bind_unix(path);
        auto [server, client] =
            co_await conflux::when_all(listener.accept(), conflux::connect_unix(path));
        server.close();
        try {
            co_await client.write_all("x");
            FAIL("no throw");
        } catch (const std::system_error& e) {
            CHECK(e.code() == std::errc::broken_pipe);
            CHECK(std::string(e.what()).find(path) != std::string::npos);
        }
        // A socket is written with MSG_NOSIGNAL: no signal to block, none raised.
        sigset_t mask;
        ::pthread_sigmask(SIG_BLOCK, nullptr, &mask);
        blocked_inside = sigismember(&mask, SIGPIPE) == 1;
    });
    CHECK(!blocked_inside);
    sigset_t pending;
    ::sigpending(&pending);
    CHECK(!sigismember(&pending, SIGPIPE));
}
