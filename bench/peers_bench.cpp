// conflux beside its C++ peers, on the same machine in the same run: Boost.Asio (io_context
// post + run, asio::thread_pool, awaitable post, experimental::concurrent_channel) and
// Boost.Process v2 (async_execute, readable/writable pipes). Each peer is used the way its
// documentation shows, optimised like conflux (-O2), doing the same work: the same number of
// handlers, the same round trips, the same child with the same pipes.
//
// Built only when Boost is found (bench/CMakeLists.txt); without it the rows say so.
#include "baselines.hpp"
#include "bench.hpp"

#include <conflux/conflux.hpp>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#ifdef CONFLUX_BENCH_HAVE_BOOST
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/experimental/concurrent_channel.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/readable_pipe.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/writable_pipe.hpp>
#include <boost/asio/write.hpp>
// With BOOST_PROCESS_USE_STD_FS (no Boost.Filesystem library to link), Process v2 of 1.81
// relies on these arriving through Boost.Filesystem's headers.
#include <boost/optional.hpp>
#include <boost/type_traits/decay.hpp>
#include <boost/type_traits/is_convertible.hpp>

#include <boost/process/v2/execute.hpp>
#include <boost/process/v2/process.hpp>
#include <boost/process/v2/stdio.hpp>

namespace asio = boost::asio;
namespace bp = boost::process::v2;
#endif

namespace {

// --- post + run on one thread ---------------------------------------------------------------

void conflux_posts(std::size_t n) {
    conflux::event_loop loop;
    std::size_t done = 0;
    for (std::size_t i = 0; i < n; ++i) {
        loop.post([&] {
            if (++done == n) loop.stop();
        });
    }
    loop.run();
}

conflux::task<> yield_n(conflux::event_loop& loop, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) co_await loop.schedule();
}

void conflux_yields(std::size_t n) {
    conflux::event_loop loop;
    loop.run_until_complete(yield_n(loop, n));
}

// --- post n on a 2-thread pool, wait for all ------------------------------------------------

void conflux_pool_posts(std::size_t n) {
    conflux::thread_pool pool(2);
    std::atomic<std::size_t> done{0};
    for (std::size_t i = 0; i < n; ++i) {
        pool.post([&done] { done.fetch_add(1, std::memory_order_relaxed); });
    }
    while (done.load(std::memory_order_relaxed) != n) std::this_thread::yield();
}

// --- child processes ------------------------------------------------------------------------

conflux::task<> conflux_true_quiet(std::size_t n) {
    const std::vector<conflux::stdio_spec> stdio{conflux::stdio_spec::ignore(),
                                                 conflux::stdio_spec::ignore(),
                                                 conflux::stdio_spec::ignore()};
    const conflux::spawn_options opts{.stdio = stdio};
    for (std::size_t i = 0; i < n; ++i) {
        auto child = conflux::spawn("/bin/true", {}, opts);
        co_await child.wait();
    }
}

conflux::task<> conflux_true_exec(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) co_await conflux::exec_file("/bin/true");
}

conflux::task<> conflux_cat(const std::string& data) {
    auto child = conflux::spawn("/bin/cat");
    auto feed = [&]() -> conflux::task<> {
        co_await child.in().write_all(data);
        child.in().close();
    };
    std::size_t got = 0;
    auto drain = [&]() -> conflux::task<> {
        std::vector<char> buf(64 * 1024);
        while (std::size_t k = co_await child.out().read_some(std::span<char>(buf))) got += k;
    };
    co_await conflux::when_all(feed(), drain());
    co_await child.wait();
    if (got != data.size()) std::abort();
}

#ifdef CONFLUX_BENCH_HAVE_BOOST

void asio_posts(std::size_t n) {
    asio::io_context ctx(1);
    std::size_t done = 0;
    for (std::size_t i = 0; i < n; ++i) asio::post(ctx, [&done] { ++done; });
    ctx.run();
    if (done != n) std::abort();
}

asio::awaitable<void> asio_yield_n(std::size_t n) {
    auto ex = co_await asio::this_coro::executor;
    for (std::size_t i = 0; i < n; ++i) co_await asio::post(ex, asio::use_awaitable);
}

void asio_yields(std::size_t n) {
    asio::io_context ctx(1);
    asio::co_spawn(ctx, asio_yield_n(n), asio::detached);
    ctx.run();
}

void asio_pool_posts(std::size_t n) {
    asio::thread_pool pool(2);
    std::atomic<std::size_t> done{0};
    for (std::size_t i = 0; i < n; ++i) {
        asio::post(pool, [&done] { done.fetch_add(1, std::memory_order_relaxed); });
    }
    while (done.load(std::memory_order_relaxed) != n) std::this_thread::yield();
    pool.join();
}

using asio_channel =
    asio::experimental::concurrent_channel<void(boost::system::error_code, std::size_t)>;

void asio_ping_pong(std::size_t n) {
    asio::io_context main_ctx(1);
    asio::io_context echo_ctx(1);
    asio_channel ping(main_ctx, 1);
    asio_channel pong(main_ctx, 1);
    asio::co_spawn(
        echo_ctx,
        [&]() -> asio::awaitable<void> {
            try {
                for (;;) {
                    const std::size_t v = co_await ping.async_receive(asio::use_awaitable);
                    co_await pong.async_send(boost::system::error_code{}, v, asio::use_awaitable);
                }
            } catch (const boost::system::system_error&) {
                // ping closed: done
            }
        },
        asio::detached);
    std::thread echo([&] { echo_ctx.run(); });
    asio::co_spawn(
        main_ctx,
        [&]() -> asio::awaitable<void> {
            for (std::size_t i = 0; i < n; ++i) {
                co_await ping.async_send(boost::system::error_code{}, i, asio::use_awaitable);
                co_await pong.async_receive(asio::use_awaitable);
            }
            ping.close();
        },
        asio::detached);
    main_ctx.run();
    echo.join();
}

void boost_true_quiet(std::size_t n) {
    asio::io_context ctx;
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
            for (std::size_t i = 0; i < n; ++i) {
                co_await bp::async_execute(
                    bp::process(ctx, "/bin/true", {}, bp::process_stdio{nullptr, nullptr, nullptr}),
                    asio::use_awaitable);
            }
        },
        asio::detached);
    ctx.run();
}

// exec_file's work: three pipes, stdin closed at once, stdout and stderr read to the end
// (concurrently), then the exit status.
asio::awaitable<void> boost_read_to_end(asio::readable_pipe& pipe, std::string& into) {
    boost::system::error_code ec;
    co_await asio::async_read(pipe, asio::dynamic_buffer(into),
                              asio::redirect_error(asio::use_awaitable, ec));
}

void boost_true_exec(std::size_t n) {
    asio::io_context ctx;
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
            for (std::size_t i = 0; i < n; ++i) {
                asio::writable_pipe in(ctx);
                asio::readable_pipe out(ctx);
                asio::readable_pipe err(ctx);
                bp::process proc(ctx, "/bin/true", {}, bp::process_stdio{in, out, err});
                in.close();
                std::string o, e;
                using namespace asio::experimental::awaitable_operators;
                co_await (boost_read_to_end(out, o) && boost_read_to_end(err, e));
                co_await proc.async_wait(asio::use_awaitable);
            }
        },
        asio::detached);
    ctx.run();
}

void boost_cat(const std::string& data) {
    asio::io_context ctx;
    asio::writable_pipe in(ctx);
    asio::readable_pipe out(ctx);
    bp::process proc(ctx, "/bin/cat", {}, bp::process_stdio{in, out, {}});
    std::size_t got = 0;
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
            co_await asio::async_write(in, asio::buffer(data), asio::use_awaitable);
            in.close();
        },
        asio::detached);
    asio::co_spawn(
        ctx,
        [&]() -> asio::awaitable<void> {
            std::vector<char> buf(64 * 1024);
            boost::system::error_code ec;
            for (;;) {
                const std::size_t k = co_await out.async_read_some(
                    asio::buffer(buf), asio::redirect_error(asio::use_awaitable, ec));
                got += k;
                if (ec) break;
            }
        },
        asio::detached);
    ctx.run();
    proc.wait();
    if (got != data.size()) std::abort();
}

#endif // CONFLUX_BENCH_HAVE_BOOST

// Prints a row against the peer, or says the peer is not installed. The two sides alternate,
// three rounds, and each keeps its best: the drift of a shared machine lands on both alike.
template <class Ours, class Theirs>
void versus(std::string_view name, std::string_view peer, Ours&& ours, Theirs&& theirs,
            std::string_view unit, bool higher_is_better) {
    auto better = [&](double a, double b) {
        return higher_is_better ? std::max(a, b) : std::min(a, b);
    };
    double figure = ours();
#ifdef CONFLUX_BENCH_HAVE_BOOST
    double peer_figure = theirs();
    for (int round = 1; round < 3; ++round) {
        figure = better(figure, ours());
        peer_figure = better(peer_figure, theirs());
    }
    bench::peer_row(name, figure, peer, peer_figure, unit, higher_is_better);
#else
    (void)theirs;
    bench::peer_row(name, figure, peer, std::nullopt, unit, higher_is_better,
                    "boost: not installed");
#endif
}

} // namespace

int main() {
    bench::header();
    // The child process rows come first, while this process is small: a fork()-based spawn
    // costs more as the parent's memory grows (the 1 GiB row below shows by how much).
    const std::size_t spawns = 100;
    versus(
        "spawn + wait /bin/true, no pipes (vs async_execute)", "Process v2",
        [&] {
            return bench::seconds_per_op([](std::size_t k) { conflux::run(conflux_true_quiet(k)); },
                                         spawns, 3);
        },
        [&] {
#ifdef CONFLUX_BENCH_HAVE_BOOST
            return bench::seconds_per_op(boost_true_quiet, spawns, 3);
#else
            return 0.0;
#endif
        },
        "s", false);
    versus(
        "exec_file /bin/true, 3 pipes read to the end", "Process v2",
        [&] {
            return bench::seconds_per_op([](std::size_t k) { conflux::run(conflux_true_exec(k)); },
                                         spawns, 3);
        },
        [&] {
#ifdef CONFLUX_BENCH_HAVE_BOOST
            return bench::seconds_per_op(boost_true_exec, spawns, 3);
#else
            return 0.0;
#endif
        },
        "s", false);
    {
        const std::string data(64 * 1024 * 1024, 'x');
        const double mb = static_cast<double>(data.size()) / 1e6;
        versus(
            "64 MiB through cat, pipes both ways", "Process v2",
            [&] {
                return mb / bench::best_seconds(
                                [&](std::size_t) { conflux::run(conflux_cat(data)); }, 1, 3);
            },
            [&] {
#ifdef CONFLUX_BENCH_HAVE_BOOST
                return mb / bench::best_seconds([&](std::size_t) { boost_cat(data); }, 1, 3);
#else
                return 0.0;
#endif
            },
            "MB/s", true);
    }
    const std::size_t posts = 1'000'000;
    versus(
        "post + run, 1 thread (event_loop vs io_context)", "Asio",
        [&] { return bench::ops_per_second(conflux_posts, posts); },
        [&] {
#ifdef CONFLUX_BENCH_HAVE_BOOST
            return bench::ops_per_second(asio_posts, posts);
#else
            return 0.0;
#endif
        },
        "op/s", true);
    versus(
        "co_await schedule() vs co_await asio::post, 1 thread", "Asio",
        [&] { return bench::ops_per_second(conflux_yields, posts); },
        [&] {
#ifdef CONFLUX_BENCH_HAVE_BOOST
            return bench::ops_per_second(asio_yields, posts);
#else
            return 0.0;
#endif
        },
        "op/s", true);
    versus(
        "post + run, 2-thread pool (thread_pool vs asio::thread_pool)", "Asio",
        [&] { return bench::ops_per_second(conflux_pool_posts, 500'000); },
        [&] {
#ifdef CONFLUX_BENCH_HAVE_BOOST
            return bench::ops_per_second(asio_pool_posts, 500'000);
#else
            return 0.0;
#endif
        },
        "op/s", true);
    versus(
        "channel ping-pong, two threads (vs concurrent_channel)", "Asio",
        [&] { return bench::ops_per_second(bench::channel_ping_pong, 50'000); },
        [&] {
#ifdef CONFLUX_BENCH_HAVE_BOOST
            return bench::ops_per_second(asio_ping_pong, 50'000);
#else
            return 0.0;
#endif
        },
        "rt/s", true);

    {
        // 1 GiB touched: a fork() copies its page tables, clone(CLONE_VM) does not.
        const std::size_t big = std::size_t(1) << 30;
        std::unique_ptr<char[]> heap(new char[big]);
        for (std::size_t i = 0; i < big; i += 4096) heap[i] = static_cast<char>(i);
        versus(
            "spawn + wait /bin/true from a 1 GiB parent", "Process v2",
            [&] {
                return bench::seconds_per_op(
                    [](std::size_t k) { conflux::run(conflux_true_quiet(k)); }, 50, 3);
            },
            [&] {
#ifdef CONFLUX_BENCH_HAVE_BOOST
                return bench::seconds_per_op(boost_true_quiet, 10, 2);
#else
                return 0.0;
#endif
            },
            "s", false);
        volatile char sink = heap[big - 4096];
        (void)sink;
    }
    return 0;
}
