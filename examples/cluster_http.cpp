// A minimal HTTP/1.1 keep-alive "hello" server on conflux::cluster.
//
//   cluster_http                                   self-test: 2 workers on an ephemeral port,
//                                                  a few requests to itself, exit 0
//   cluster_http serve <workers> <port> <rr|shared|reuse_port>
//                                                  serve until SIGTERM/SIGINT; prints
//                                                  "listening <port>" once every worker listens
//
// The same program is primary and worker: the primary re-runs it, with the same arguments,
// in the worker role (`cluster::is_worker()`).
#include <conflux/cluster.hpp>
#include <conflux/run.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace {

struct settings {
    bool self_test = true;
    unsigned workers = 2;
    std::uint16_t port = 0;
    conflux::scheduling policy = conflux::scheduling::round_robin;
};

settings parse(int argc, char** argv) {
    settings s;
    if (argc >= 5 && std::strcmp(argv[1], "serve") == 0) {
        s.self_test = false;
        s.workers = static_cast<unsigned>(std::atoi(argv[2]));
        s.port = static_cast<std::uint16_t>(std::atoi(argv[3]));
        const std::string_view mode = argv[4];
        if (mode == "shared") s.policy = conflux::scheduling::shared;
        if (mode == "reuse_port") s.policy = conflux::scheduling::reuse_port;
    }
    return s;
}

constexpr std::string_view reply = "HTTP/1.1 200 OK\r\n"
                                   "Content-Type: text/plain\r\n"
                                   "Content-Length: 14\r\n"
                                   "\r\n"
                                   "Hello, world!\n";

bool asks_to_close(std::string_view head) {
    // Header names are case-insensitive; this server only cares about one of them.
    for (std::size_t at = head.find("\r\n"); at != std::string_view::npos;
         at = head.find("\r\n", at + 2)) {
        const std::string_view line = head.substr(at + 2, 17);
        if (line.size() == 17 && (line[0] == 'C' || line[0] == 'c') &&
            line.substr(1) == "onnection: close") {
            return true;
        }
    }
    return false;
}

// One connection: answers every complete request (pipelined ones too) until the client
// closes or asks to.
conflux::task<void> serve_http(conflux::tcp_stream s) {
    std::string in;
    std::string out;
    char buf[16384];
    for (;;) {
        const std::size_t n = co_await s.read_some(std::span<char>(buf));
        if (n == 0) co_return;
        in.append(buf, n);
        bool close = false;
        std::size_t pos = 0;
        for (;;) {
            const auto end = in.find("\r\n\r\n", pos);
            if (end == std::string::npos) break;
            close = asks_to_close(std::string_view(in).substr(pos, end - pos + 2));
            out.append(reply);
            pos = end + 4;
            if (close) break;
        }
        in.erase(0, pos);
        if (!out.empty()) {
            co_await s.write_all(out);
            out.clear();
        }
        if (close) co_return;
    }
}

conflux::task<int> worker(settings s) {
    auto listener = co_await conflux::cluster::listen("127.0.0.1", s.port, {.no_delay = true});
    co_await listener.serve(serve_http);
    co_return 0;
}

// Three keep-alive requests on one connection, then one that asks to close.
conflux::task<bool> self_test_requests(std::uint16_t port) {
    auto s = co_await conflux::connect("127.0.0.1", port);
    const std::string get = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for (int i = 0; i < 3; ++i) {
        co_await s.write_all(get);
        std::string got;
        while (got.size() < reply.size()) {
            char buf[256];
            const std::size_t n = co_await s.read_some(std::span<char>(buf));
            if (n == 0) co_return false;
            got.append(buf, n);
        }
        if (got != reply) co_return false;
    }
    co_await s.write_all("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    co_return (co_await s.read_all()) == reply;
}

conflux::task<int> primary(settings s) {
    conflux::cluster c({.workers = s.workers, .policy = s.policy});
    c.start();
    unsigned listening = 0;
    int status = 0;
    while (auto e = co_await c.next_event()) {
        using kind = conflux::worker_event::kind;
        if (e->what == kind::listening && ++listening == s.workers) {
            const auto port = static_cast<std::uint16_t>(
                std::atoi(e->address.substr(e->address.rfind(':') + 1).c_str()));
            std::printf("listening %u\n", port);
            std::fflush(stdout);
            if (s.self_test) {
                const bool ok = co_await self_test_requests(port);
                std::printf("self-test: %s\n", ok ? "ok" : "FAILED");
                status = ok ? 0 : 1;
                c.shutdown();
            }
        } else if (e->what == kind::exit && e->status.signal()) {
            std::fprintf(stderr, "worker %u (pid %d) killed by signal %d\n", e->worker, e->pid,
                         *e->status.signal());
        } else if (e->what == kind::restart) {
            std::fprintf(stderr, "worker %u restarting in %lld ms (crash %u)\n", e->worker,
                         static_cast<long long>(e->delay.count()), e->failures);
        }
    }
    co_return status;
}

} // namespace

int main(int argc, char** argv) {
    const settings s = parse(argc, argv);
    if (conflux::cluster::is_worker()) return conflux::run(worker(s));
    return conflux::run(primary(s));
}
