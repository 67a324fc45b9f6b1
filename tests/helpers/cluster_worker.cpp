// Worker program for the cluster tests, run by a `cluster` in the test process.
//   serve <host> <port>   listen through the cluster; answer each line with "<id> <pid>";
//                         a listen error is sent to the primary as a string, then exit 2
//   fail <host> <port>    as serve, but the handler throws at the first line it reads
//   crash <code>          exit at once with <code>
//   echo                  answer each message from the primary with "echo: <message>"
//   bogus                 send the primary a message only a primary sends; exit 3 once the
//                         primary closed the link
#include <conflux/cluster.hpp>
#include <conflux/run.hpp>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

#include <unistd.h>

namespace {

conflux::task<void> answer(conflux::tcp_stream s) {
    const std::string me =
        std::to_string(conflux::cluster::worker_id()) + " " + std::to_string(::getpid()) + "\n";
    while (auto line = co_await s.read_line()) co_await s.write_all(me);
}

conflux::task<void> fail(conflux::tcp_stream s) {
    // Not `if (co_await ...) throw`: GCC 12 then never starts the coroutine's body.
    auto line = co_await s.read_line();
    if (line) throw std::runtime_error("handler failed on purpose");
}

conflux::task<int> serve(std::string host, std::uint16_t port,
                         std::function<conflux::task<void>(conflux::tcp_stream)> handler) {
    conflux::cluster_listener listener;
    std::string failure;
    try {
        listener = co_await conflux::cluster::listen(host, port);
    } catch (const std::system_error& e) {
        failure = e.what();
    }
    if (!failure.empty()) {
        co_await conflux::cluster::send_to_primary(failure);
        co_return 2;
    }
    co_await listener.serve(std::move(handler));
    co_return 0;
}

conflux::task<int> echo() {
    while (auto m = co_await conflux::cluster::receive<std::string>()) {
        co_await conflux::cluster::send_to_primary("echo: " + *m);
    }
    co_return 0;
}

// Breaks the protocol: a `connection` goes from the primary to a worker, never back.
conflux::task<int> bogus() {
    auto& ws = conflux::detail::cluster_worker();
    conflux::detail::cluster_envelope e;
    e.what = conflux::detail::cluster_envelope::connection;
    e.key = 1;
    co_await ws.link.send(std::move(e));
    co_await ws.link.flush();
    // The primary refuses it and closes the link: the worker sees the primary gone.
    auto m = co_await conflux::cluster::receive<std::string>();
    co_return m ? 1 : 3;
}

} // namespace

int main(int argc, char** argv) {
    if (!conflux::cluster::is_worker() || argc < 2) {
        std::fprintf(stderr, "conflux_cluster_worker: run me through a conflux::cluster\n");
        return 1;
    }
    const std::string mode = argv[1];
    if ((mode == "serve" || mode == "fail") && argc >= 4) {
        return conflux::run(serve(argv[2], static_cast<std::uint16_t>(std::atoi(argv[3])),
                                  mode == "serve" ? answer : fail));
    }
    if (mode == "crash" && argc >= 3) return std::atoi(argv[2]);
    if (mode == "echo") return conflux::run(echo());
    if (mode == "bogus") return conflux::run(bogus());
    return 1;
}
