// Core runtime: post + resume on an event_loop and a thread_pool against raw queues of
// function pointers, a cross-thread wake-up ping-pong against a raw eventfd ping-pong, and the
// await of a task that completes at once against a direct call and the simplest lazy task.
#include "bench.hpp"

#include <conflux/conflux.hpp>

#include <atomic>
#include <condition_variable>
#include <coroutine>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <exception>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include <sys/eventfd.h>
#include <unistd.h>

namespace {

// --- one thread: schedule() round trips through the loop's ready queue -------------------

conflux::task<> yield_n(conflux::event_loop& loop, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) co_await loop.schedule();
}

void loop_yields(std::size_t n) {
    conflux::event_loop loop;
    loop.run_until_complete(yield_n(loop, n));
}

std::uint64_t raw_counter = 0;
[[gnu::noinline]] void raw_step() { ++raw_counter; }

// Hides which function a pointer holds, as a real queue of work does: otherwise the compiler
// sees the one function pushed and inlines it, and the baseline stops being a queue of
// function pointers.
template <class F>
F* opaque(F* f) {
    asm volatile("" : "+r"(f));
    return f;
}

// The baseline: a single-threaded FIFO of function pointers, each popped and called.
void raw_queue(std::size_t n) {
    std::deque<void (*)()> queue;
    queue.push_back(opaque(&raw_step));
    for (std::size_t i = 0; i < n; ++i) {
        auto f = queue.front();
        queue.pop_front();
        f();
        queue.push_back(opaque(&raw_step));
    }
}

// --- thread pool: post n items, wait for all ------------------------------------------------

void pool_posts(std::size_t n) {
    conflux::thread_pool pool(2);
    std::atomic<std::size_t> done{0};
    for (std::size_t i = 0; i < n; ++i) {
        pool.post([&done] { done.fetch_add(1, std::memory_order_relaxed); });
    }
    while (done.load(std::memory_order_relaxed) != n) std::this_thread::yield();
}

// The baseline: two threads draining a mutex + condition variable queue of function pointers.
void raw_pool(std::size_t n) {
    std::mutex m;
    std::condition_variable cv;
    std::deque<void (*)(std::atomic<std::size_t>&)> queue;
    std::atomic<std::size_t> done{0};
    bool stop = false;
    auto worker = [&] {
        std::unique_lock lock(m);
        for (;;) {
            cv.wait(lock, [&] { return stop || !queue.empty(); });
            if (queue.empty()) return;
            auto f = queue.front();
            queue.pop_front();
            lock.unlock();
            f(done);
            lock.lock();
        }
    };
    std::thread a(worker), b(worker);
    for (std::size_t i = 0; i < n; ++i) {
        std::lock_guard lock(m);
        queue.push_back(
            [](std::atomic<std::size_t>& d) { d.fetch_add(1, std::memory_order_relaxed); });
        cv.notify_one();
    }
    while (done.load(std::memory_order_relaxed) != n) std::this_thread::yield();
    {
        std::lock_guard lock(m);
        stop = true;
    }
    cv.notify_all();
    a.join();
    b.join();
}

// --- thread pool: coroutines yield on the pool --------------------------------------------

constexpr std::size_t pool_chains = 64;

conflux::task<> pool_yield_chain(conflux::thread_pool& pool, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) co_await pool.schedule();
}

void pool_yields(std::size_t n) {
    conflux::thread_pool pool(2);
    std::vector<conflux::task<>> chains;
    for (std::size_t i = 0; i < pool_chains; ++i) {
        chains.push_back(pool_yield_chain(pool, n / pool_chains));
    }
    conflux::run(conflux::when_all(std::move(chains)));
}

// The baseline: the same 64 chains as function pointers that re-queue themselves on two
// threads draining a mutex + condition variable queue.
struct raw_yield_pool {
    std::mutex m;
    std::condition_variable cv;
    std::deque<void (*)(raw_yield_pool&)> queue;
    std::atomic<std::int64_t> remaining{0};
    std::atomic<std::int64_t> done{0};
    bool stop = false;

    void push(void (*f)(raw_yield_pool&)) {
        std::lock_guard lock(m);
        queue.push_back(f);
        cv.notify_one();
    }
};

void raw_pool_step(raw_yield_pool& p) {
    // Re-queues while more than one call per chain is left: exactly `remaining` calls in all.
    if (p.remaining.fetch_sub(1, std::memory_order_relaxed) > std::int64_t{pool_chains}) {
        p.push(opaque(&raw_pool_step));
    }
    p.done.fetch_add(1, std::memory_order_relaxed);
}

void raw_pool_yields(std::size_t n) {
    raw_yield_pool p;
    p.remaining = static_cast<std::int64_t>(n);
    auto worker = [&p] {
        std::unique_lock lock(p.m);
        for (;;) {
            p.cv.wait(lock, [&] { return p.stop || !p.queue.empty(); });
            if (p.queue.empty()) return;
            auto f = p.queue.front();
            p.queue.pop_front();
            lock.unlock();
            f(p);
            lock.lock();
        }
    };
    std::thread a(worker), b(worker);
    for (std::size_t i = 0; i < pool_chains; ++i) p.push(opaque(&raw_pool_step));
    while (p.done.load(std::memory_order_relaxed) != static_cast<std::int64_t>(n)) {
        std::this_thread::yield();
    }
    {
        std::lock_guard lock(p.m);
        p.stop = true;
    }
    p.cv.notify_all();
    a.join();
    b.join();
}

// --- two threads: a coroutine bounces between two loops -------------------------------------

conflux::task<> bounce(conflux::event_loop& here, conflux::event_loop& there, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
        co_await there.schedule();
        co_await here.schedule();
    }
}

void loop_ping_pong(std::size_t n) {
    conflux::event_loop a;
    conflux::event_loop b;
    std::thread other([&] { b.run(); });
    a.run_until_complete(bounce(a, b, n));
    b.stop();
    other.join();
}

// The baseline: two threads blocking on two eventfds in turn.
void raw_eventfd_ping_pong(std::size_t n) {
    int ping = ::eventfd(0, EFD_CLOEXEC);
    int pong = ::eventfd(0, EFD_CLOEXEC);
    std::thread other([&] {
        std::uint64_t v;
        for (std::size_t i = 0; i < n; ++i) {
            if (::read(ping, &v, sizeof v) != sizeof v) return;
            v = 1;
            if (::write(pong, &v, sizeof v) != sizeof v) return;
        }
    });
    std::uint64_t v = 1;
    for (std::size_t i = 0; i < n; ++i) {
        v = 1;
        if (::write(ping, &v, sizeof v) != sizeof v) break;
        if (::read(pong, &v, sizeof v) != sizeof v) break;
    }
    other.join();
    ::close(ping);
    ::close(pong);
}

// --- awaiting a task that completes at once -------------------------------------------------

conflux::task<int> one() { co_return 1; }

conflux::task<> await_n(std::size_t n) {
    std::size_t sum = 0;
    for (std::size_t i = 0; i < n; ++i) sum += static_cast<std::size_t>(co_await one());
    if (sum != n) std::abort();
}

void task_awaits(std::size_t n) { conflux::run(await_n(n)); }

// The least a lazy task can cost with this compiler: the simplest task that returns a value
// (symmetric transfer back to its awaiter, no stop token, no executor, no flat-stack loop),
// with a one-frame recycler for an allocator, so that malloc is not what is measured. What
// conflux's task does on top (executor affinity, stop-token inheritance, the resume loop that
// keeps chains of any depth on a flat stack) shows as the ratio to this row.
struct floor_task {
    struct promise_type {
        int value = 0;
        std::coroutine_handle<> awaiter;

        static inline thread_local void* spare = nullptr;
        static void* operator new(std::size_t n) {
            return spare ? std::exchange(spare, nullptr) : ::operator new(n);
        }
        static void operator delete(void* p) noexcept {
            if (spare) {
                ::operator delete(p);
            } else {
                spare = p;
            }
        }

        floor_task get_return_object() noexcept {
            return floor_task{std::coroutine_handle<promise_type>::from_promise(*this)};
        }
        std::suspend_always initial_suspend() const noexcept { return {}; }
        struct back_to_awaiter {
            bool await_ready() const noexcept { return false; }
            std::coroutine_handle<>
            await_suspend(std::coroutine_handle<promise_type> self) const noexcept {
                return self.promise().awaiter;
            }
            void await_resume() const noexcept {}
        };
        back_to_awaiter final_suspend() const noexcept { return {}; }
        void return_value(int v) noexcept { value = v; }
        void unhandled_exception() const noexcept { std::terminate(); }
    };

    explicit floor_task(std::coroutine_handle<promise_type> h) noexcept : handle(h) {}
    floor_task(floor_task&& other) noexcept : handle(std::exchange(other.handle, {})) {}
    floor_task& operator=(floor_task&&) = delete;
    ~floor_task() {
        if (handle) handle.destroy();
    }

    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiting) noexcept {
        handle.promise().awaiter = awaiting;
        return handle;
    }
    int await_resume() const noexcept { return handle.promise().value; }

    std::coroutine_handle<promise_type> handle;
};

floor_task floor_one() { co_return 1; }

conflux::task<> floor_await_n(std::size_t n) {
    std::size_t sum = 0;
    for (std::size_t i = 0; i < n; ++i) sum += static_cast<std::size_t>(co_await floor_one());
    if (sum != n) std::abort();
}

void floor_task_awaits(std::size_t n) { conflux::run(floor_await_n(n)); }

std::uint64_t call_counter = 0;
[[gnu::noinline]] void plain_call() {
    ++call_counter;
    asm volatile("");
}
void plain_calls(std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) plain_call();
}

} // namespace

int main() {
    bench::header();
    bench::row("event_loop schedule() + resume, 1 thread",
               bench::ops_per_second(loop_yields, 2'000'000),
               bench::ops_per_second(raw_queue, 2'000'000), "op/s", true,
               bench::node_figure("core_post.js"));
    bench::row("thread_pool schedule() + resume, 2 threads",
               bench::ops_per_second(pool_yields, 512'000),
               bench::ops_per_second(raw_pool_yields, 512'000), "op/s");
    // post(f) also allocates the callable's holder, which the baseline's plain function
    // pointers do not.
    bench::row("thread_pool post(f) + run, 2 threads", bench::ops_per_second(pool_posts, 500'000),
               bench::ops_per_second(raw_pool, 500'000), "op/s");
    bench::row("cross-thread hop between two loops (round trip)",
               bench::ops_per_second(loop_ping_pong, 50'000),
               bench::ops_per_second(raw_eventfd_ping_pong, 50'000), "rt/s");
    bench::row("co_await of a task that completes at once",
               bench::ops_per_second(task_awaits, 2'000'000),
               bench::ops_per_second(plain_calls, 2'000'000), "op/s");
    bench::row("co_await of a task that completes at once, vs the simplest lazy task",
               bench::ops_per_second(task_awaits, 2'000'000),
               bench::ops_per_second(floor_task_awaits, 2'000'000), "op/s");
    bench::row("co_await of the simplest lazy task (the compiler's floor), vs a direct call",
               bench::ops_per_second(floor_task_awaits, 2'000'000),
               bench::ops_per_second(plain_calls, 2'000'000), "op/s");
}
