#include <conflux/event_loop.hpp>
#include <conflux/run.hpp>
#include <conflux/sleep.hpp>
#include <conflux/task.hpp>
#include <conflux/thread_pool.hpp>
#include <conflux/when_any.hpp>

#include "support/test_support.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

conflux::task<int> value(int v) { co_return v; }

conflux::task<> nothing() { co_return; }

conflux::task<int&> reference_to(int& x) { co_return x; }

conflux::task<int> thrower() {
    throw std::runtime_error("boom");
    co_return 0;
}

// The machine stack's depth at the innermost await: a plain function's frame address (a
// coroutine's locals live in its heap frame, which says nothing about the stack).
[[gnu::noinline]] std::uintptr_t stack_address() {
    auto address = reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
    asm volatile("" : : "r"(address) : "memory");
    return address;
}

conflux::task<std::uintptr_t> stack_probe() { co_return stack_address(); }

struct counts_destruction {
    int* count;
    ~counts_destruction() { ++*count; }
};

conflux::task<> holds(std::shared_ptr<int> token) {
    (void)token;
    co_return;
}

conflux::task<> sleeps_forever(int* destroyed) {
    counts_destruction guard{destroyed};
    co_await conflux::sleep_for(24h);
}

// --- deep chains of awaits -------------------------------------------------------------------

// Deep enough to overflow an 8 MiB stack were each level to keep even 84 bytes of it.
constexpr int deep_levels = 100'000;

// The lowest and highest native stack addresses seen at the probes of one test. A chain that
// kept stack per level would span megabytes (and crash first); a flat one spans at most the
// few kilobytes that awaits may nest above a resume loop, and the frames of the test itself.
struct stack_span {
    std::uintptr_t low = UINTPTR_MAX;
    std::uintptr_t high = 0;
    void probe() {
        const std::uintptr_t here = stack_address();
        low = std::min(low, here);
        high = std::max(high, here);
    }
    std::uintptr_t bytes() const { return high - low; }
};
constexpr std::uintptr_t flat_stack_bytes = 256 * 1024;

// Where the innermost level of a chain waits, if it does.
enum class innermost { completes, sleeps, yields_to_loop, hops_to_pool, resumes_inline };

// Suspends and resumes its coroutine at once, inside await_suspend: a foreign awaitable that
// completes synchronously on the awaiting coroutine's own stack.
//
// Out of line: Clang 14 at -O1 and above miscompiles a coroutine into which such an
// await_suspend is inlined — the coroutine loses a temporary across its other suspensions
// and crashes as it resumes from them, with conflux's earlier task as with this one (Clang 19
// is right). This test is about conflux's resume loop, not that.
struct resumes_inline {
    bool await_ready() const noexcept { return false; }
    [[gnu::noinline]] void await_suspend(std::coroutine_handle<> h) const { h.resume(); }
    void await_resume() const noexcept {}
};

conflux::task<> hop_to(conflux::thread_pool& pool) { co_await pool.schedule(); }

struct chain_context {
    innermost how = innermost::completes;
    conflux::thread_pool* pool = nullptr;
    stack_span span;
};

// `co_return 1 + co_await deep(n - 1)`, probing the stack at every level on the way back up.
conflux::task<long> deep(int n, chain_context& c) {
    if (n == 0) {
        c.span.probe();
        switch (c.how) {
        case innermost::completes:
            break;
        case innermost::sleeps:
            co_await conflux::sleep_for(1ms);
            break;
        case innermost::yields_to_loop:
            co_await conflux::event_loop::current()->schedule();
            break;
        case innermost::hops_to_pool:
            co_await c.pool->schedule();
            // Then completes on a pool thread as the awaiter of a task completing there too:
            // the levels above must still unwind on their own executor, the loop.
            co_await hop_to(*c.pool);
            break;
        case innermost::resumes_inline:
            co_await resumes_inline{};
            break;
        }
        c.span.probe();
        co_return 0;
    }
    const long below = co_await deep(n - 1, c);
    c.span.probe();
    co_return 1 + below;
}

conflux::task<long> deep_throw(int n) {
    if (n == 0) throw std::runtime_error("from the bottom");
    co_return 1 + co_await deep_throw(n - 1);
}

// A chain `n` deep whose innermost task sleeps for a day, cancellable through the stop token
// it inherits from the top.
conflux::task<long> deep_sleeper(int n, bool& inherited) {
    if (n == 0) {
        inherited = (co_await conflux::get_stop_token()).stop_possible();
        co_await conflux::sleep_for(24h);
        co_return 0;
    }
    co_return 1 + co_await deep_sleeper(n - 1, inherited);
}

// A loop of awaits of tasks that complete at once, run at the bottom of a chain `n` deep.
conflux::task<long> loop_at_depth(int n, int awaits, stack_span& span) {
    if (n > 0) co_return co_await loop_at_depth(n - 1, awaits, span);
    long sum = 0;
    for (int i = 0; i < awaits; ++i) {
        sum += co_await value(1);
        if (i % 1024 == 0) span.probe();
    }
    co_return sum;
}

// Completes at once unless `i` is a multiple of `every`: then yields to the loop first.
conflux::task<int> sometimes_yields(int i, int every) {
    if (i % every == 0) co_await conflux::event_loop::current()->schedule();
    co_return 1;
}

// Completes at once on its first await, suspends on its second, and completes at once again.
conflux::task<int> ready_then_suspends() {
    int sum = co_await value(1);
    co_await conflux::event_loop::current()->schedule();
    sum += co_await value(2);
    co_return sum;
}

// A chain `n` deep, each level awaiting tasks that complete at once (one of them throwing, and
// caught) before the level below, and again after it.
conflux::task<long> deep_with_ready(int n, stack_span& span) {
    long sum = co_await value(1);
    try {
        co_await thrower();
    } catch (const std::runtime_error&) {
        ++sum;
    }
    if (n > 0) sum += co_await deep_with_ready(n - 1, span);
    sum += co_await value(1);
    if (n % 1024 == 0) span.probe();
    co_return sum;
}

// A coroutine no loop runs: eager, and awaiting a task from its own body. Not a task, so it has
// no stop token for the task to inherit.
struct eager {
    struct promise_type {
        eager get_return_object() noexcept { return {}; }
        std::suspend_never initial_suspend() const noexcept { return {}; }
        std::suspend_never final_suspend() const noexcept { return {}; }
        void return_void() const noexcept {}
        void unhandled_exception() const noexcept { std::terminate(); }
    };
};

conflux::task<bool> token_possible() {
    co_return (co_await conflux::get_stop_token()).stop_possible();
}

eager await_from_eager(int& got, bool& stop_possible) {
    got = co_await value(7);
    stop_possible = co_await token_possible();
}

} // namespace

TEST_CASE("a task returns its value, void and references") {
    CHECK(conflux::run(value(42)) == 42);
    conflux::run(nothing());
    int x = 1;
    int& r = conflux::run([](int& target) -> conflux::task<int&> {
        int& got = co_await reference_to(target);
        co_return got;
    }(x));
    CHECK(&r == &x);
}

TEST_CASE("a task's exception reaches its awaiter") {
    auto outer = []() -> conflux::task<std::string> {
        try {
            co_await thrower();
        } catch (const std::runtime_error& e) {
            co_return e.what();
        }
        co_return "not thrown";
    };
    CHECK(conflux::run(outer()) == "boom");
    CHECK_THROWS_WITH_AS(conflux::run(thrower()), "boom", std::runtime_error);
}

TEST_CASE("a million synchronously completing awaits keep the stack flat") {
    auto loop = []() -> conflux::task<bool> {
        std::uintptr_t first = co_await stack_probe();
        long sum = 0;
        for (int i = 0; i < 1'000'000; ++i) sum += co_await value(1);
        std::uintptr_t last = co_await stack_probe();
        co_return (sum == 1'000'000 && first == last);
    };
    CHECK(conflux::run(loop()));
}

TEST_CASE("a chain of 100 000 nested awaits runs on a flat stack") {
    chain_context c;
    CHECK(conflux::run(deep(deep_levels, c)) == deep_levels);
    CHECK(c.span.bytes() < flat_stack_bytes);
}

TEST_CASE("a chain of 100 000 whose innermost task waits resumes through every level") {
    conflux::thread_pool pool(1);
    for (innermost how : {innermost::sleeps, innermost::yields_to_loop, innermost::hops_to_pool,
                          innermost::resumes_inline}) {
        CAPTURE(static_cast<int>(how));
        chain_context c{how, &pool, {}};
        auto top = [&]() -> conflux::task<bool> {
            const auto loop_thread = conflux_test::thread_id();
            const long levels = co_await deep(deep_levels, c);
            // Executor affinity holds at the top too: the chain may have unwound on the pool.
            co_return (levels == deep_levels && conflux_test::thread_id() == loop_thread);
        };
        CHECK(conflux::run(top()));
        // The chain went down on one stack and, for a hop, came back up on another.
        if (how != innermost::hops_to_pool) CHECK(c.span.bytes() < flat_stack_bytes);
    }
}

TEST_CASE("an exception propagates up 100 000 levels") {
    auto top = []() -> conflux::task<std::string> {
        try {
            co_await deep_throw(deep_levels);
        } catch (const std::runtime_error& e) {
            co_return e.what();
        }
        co_return "not thrown";
    };
    CHECK(conflux::run(top()) == "from the bottom");
}

TEST_CASE("a stop request reaches the innermost of 100 000 levels and unwinds them all") {
    bool inherited = false;
    auto top = [&]() -> conflux::task<std::size_t> {
        auto r = co_await conflux::when_any(deep_sleeper(deep_levels, inherited),
                                            conflux::sleep_for(1ms));
        co_return r.index();
    };
    CHECK(conflux::run(top()) == 1);
    CHECK(inherited);
}

TEST_CASE("synchronous awaits at the bottom of a deep chain keep the stack flat") {
    stack_span span;
    CHECK(conflux::run(loop_at_depth(1000, 200'000, span)) == 200'000);
    CHECK(span.bytes() < flat_stack_bytes);
}

TEST_CASE("a child that completes at once, in every level of a deep chain, keeps it flat") {
    stack_span span;
    // Four at each level: value(1) twice, and the caught throw of thrower().
    CHECK(conflux::run(deep_with_ready(deep_levels, span)) == 3L * (deep_levels + 1));
    CHECK(span.bytes() < flat_stack_bytes);
}

TEST_CASE("an exception from a child that completes at once reaches its awaiter every time") {
    auto loop = []() -> conflux::task<long> {
        long caught = 0;
        for (int i = 0; i < 100'000; ++i) {
            try {
                if (i % 2 == 0) {
                    co_await thrower();
                } else {
                    caught += co_await value(0); // no throw: the next await starts clean
                }
            } catch (const std::runtime_error& e) {
                if (std::string(e.what()) == "boom") ++caught;
            }
        }
        co_return caught;
    };
    CHECK(conflux::run(loop()) == 50'000);
}

TEST_CASE("a child that completes at once on some awaits and suspends on others") {
    // Which awaits suspend changes from one to the next: each must resume its awaiter once, on
    // the loop's thread, with its value, and the stack must stay flat throughout.
    auto loop = []() -> conflux::task<bool> {
        const auto loop_thread = conflux_test::thread_id();
        stack_span span;
        long sum = 0;
        for (int i = 0; i < 100'000; ++i) {
            sum += co_await sometimes_yields(i, 7);
            if (i % 1024 == 0) span.probe();
        }
        for (int i = 0; i < 1000; ++i) sum += co_await ready_then_suspends();
        co_return (sum == 100'000 + 3 * 1000 && span.bytes() < flat_stack_bytes &&
                   conflux_test::thread_id() == loop_thread);
    };
    CHECK(conflux::run(loop()));
}

TEST_CASE("a coroutine that no loop runs awaits a task, which inherits no stop token") {
    int got = 0;
    bool stop_possible = true;
    await_from_eager(got, stop_possible);
    CHECK(got == 7);
    CHECK_FALSE(stop_possible);
}

TEST_CASE("destroying an unstarted task frees its frame") {
    auto token = std::make_shared<int>(0);
    {
        auto t = holds(token);
        CHECK(token.use_count() == 2);
    }
    CHECK(token.use_count() == 1);
}

TEST_CASE("destroying a suspended task frees its frame exactly once") {
    int destroyed = 0;
    {
        conflux::event_loop loop;
        loop.detach(sleeps_forever(&destroyed));
        loop.post([&] { loop.stop(); });
        loop.run();
        CHECK(destroyed == 0);
    }
    CHECK(destroyed == 1);
}

TEST_CASE("awaiting an empty or finished task is a clear error") {
    auto empty = []() -> conflux::task<> {
        conflux::task<int> t = value(1);
        conflux::task<int> moved = std::move(t);
        CHECK_FALSE(t.valid());
        CHECK(moved.valid());
        co_await t;
    };
    CHECK_THROWS_WITH_AS(conflux::run(empty()),
                         "conflux::task: awaiting an empty (moved-from) task", std::logic_error);

    auto twice = []() -> conflux::task<> {
        conflux::task<int> t = value(1);
        co_await t;
        CHECK(t.done());
        co_await t;
    };
    CHECK_THROWS_AS(conflux::run(twice()), std::logic_error);
}

TEST_CASE("an awaiter resumes on its own executor after the task hopped to a pool") {
    conflux::thread_pool pool(2);
    auto hop = [&]() -> conflux::task<std::thread::id> {
        co_await pool.schedule();
        co_return conflux_test::thread_id();
    };
    auto outer = [&]() -> conflux::task<bool> {
        auto loop_thread = conflux_test::thread_id();
        auto pool_thread = co_await hop();
        bool resumed_home = conflux_test::thread_id() == loop_thread;
        co_return (pool_thread != loop_thread && resumed_home &&
                   conflux::event_loop::current() != nullptr);
    };
    for (int i = 0; i < 200; ++i) REQUIRE(conflux::run(outer()));
}

TEST_CASE("an awaiter resumes on its own executor after the task completed on a pool's loop") {
    // The task hops to the pool and awaits there a task that hops again: it is resumed, and
    // completes, in a trampoline loop on a pool thread, and must still send its awaiter back
    // to the event loop.
    conflux::thread_pool pool(2);
    auto hop_then_await = [&]() -> conflux::task<std::thread::id> {
        co_await pool.schedule();
        co_await hop_to(pool);
        co_return conflux_test::thread_id();
    };
    auto outer = [&]() -> conflux::task<bool> {
        const auto loop_thread = conflux_test::thread_id();
        const auto pool_thread = co_await hop_then_await();
        co_return (pool_thread != loop_thread && conflux_test::thread_id() == loop_thread &&
                   conflux::event_loop::current() != nullptr);
    };
    for (int i = 0; i < 200; ++i) REQUIRE(conflux::run(outer()));
}

TEST_CASE("a task inherits its awaiter's stop token") {
    auto inner = []() -> conflux::task<bool> {
        std::stop_token token = co_await conflux::get_stop_token();
        co_return token.stop_possible();
    };
    auto outer = [&]() -> conflux::task<bool> {
        std::stop_token own = co_await conflux::get_stop_token();
        bool inherited = co_await inner();
        co_return own.stop_possible() == inherited;
    };
    CHECK(conflux::run(outer()));
}

// --- frame recycling (detail/frame_allocator.hpp) --------------------------------------------

namespace {

// Completes at once, giving the address of the awaiting coroutine's frame.
struct frame_address {
    void* address = nullptr;
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> h) noexcept {
        address = h.address();
        return false;
    }
    void* await_resume() const noexcept { return address; }
};

conflux::task<void*> own_frame() { co_return co_await frame_address{}; }

// Hands a task through a call the optimiser cannot see into: Clang at -O2 otherwise places
// a task's frame inside its awaiter's (allocation elision), and no allocator is called.
[[gnu::noinline]] conflux::task<void*> escaped(conflux::task<void*> t) { return t; }

conflux::task<bool> frames_of_ready_tasks_are_reused() {
    void* first = co_await escaped(own_frame());
    void* second = co_await escaped(own_frame());
    co_return first == second;
}

} // namespace

TEST_CASE("the frame cache reuses a block within its size class") {
    using conflux::detail::frame_cache;
    frame_cache cache{};
    cache.status = frame_cache::state::live; // as the thread's own cache once it keeps a block
    void* a = cache.allocate(100);
    cache.deallocate(a, 100);
    CHECK(cache.held() == 1);
    CHECK(cache.allocate(70) == a); // 70 and 100 bytes share the 128-byte class
    CHECK(cache.held() == 0);
    void* b = cache.allocate(40); // another class: a fresh block
    CHECK(b != a);
    cache.deallocate(a, 100);
    cache.deallocate(b, 40);
    CHECK(cache.held() == 2);
    CHECK(cache.release() == 2);
    CHECK(cache.held() == 0);
    CHECK(cache.held_bytes == 0);
}

TEST_CASE("the frame cache keeps no big frame and stays within its budget") {
    using conflux::detail::frame_cache;
    frame_cache cache{};
    cache.status = frame_cache::state::live;
    void* big = cache.allocate(conflux::detail::frame_cache_largest + 1);
    cache.deallocate(big, conflux::detail::frame_cache_largest + 1);
    CHECK(cache.held() == 0);

    constexpr std::size_t size = conflux::detail::frame_cache_largest;
    constexpr std::size_t fit = conflux::detail::frame_cache_budget / size;
    std::vector<void*> blocks;
    for (std::size_t i = 0; i < fit + 5; ++i) blocks.push_back(cache.allocate(size));
    for (void* p : blocks) cache.deallocate(p, size);
    CHECK(cache.held() == fit);
    CHECK(cache.held_bytes <= conflux::detail::frame_cache_budget);
    CHECK(cache.release() == fit);
}

TEST_CASE("a cache that is not a thread's own, or is gone, keeps nothing") {
    using conflux::detail::frame_cache;
    frame_cache cache{}; // unused, and not this thread's: it cannot register a reaper
    cache.deallocate(cache.allocate(64), 64);
    CHECK(cache.held() == 0);
    cache.status = frame_cache::state::gone;
    cache.deallocate(cache.allocate(64), 64);
    CHECK(cache.held() == 0);
}

TEST_CASE("task frames are recycled, except in sanitizer builds") {
    bool reused = false;
    std::size_t held = 0;
    // A thread of its own: its cache starts empty.
    std::thread([&] {
        reused = conflux::run(frames_of_ready_tasks_are_reused());
        held = conflux::detail::this_thread_frame_cache().held();
    }).join();
    if constexpr (conflux::detail::frame_recycling) {
        CHECK(reused);
        CHECK(held > 0);
    } else {
        CHECK(held == 0);
    }
}

TEST_CASE("a frame freed on another thread joins that thread's cache") {
    void* frame = conflux::detail::frame_allocate(200);
    std::size_t held = 0;
    void* again = nullptr;
    std::thread([&] {
        conflux::detail::frame_deallocate(frame, 200);
        held = conflux::detail::this_thread_frame_cache().held();
        again = conflux::detail::frame_allocate(230); // the same 256-byte class
        conflux::detail::frame_deallocate(again, 230);
    }).join();
    if constexpr (conflux::detail::frame_recycling) {
        CHECK(held == 1);
        CHECK(again == frame);
    } else {
        CHECK(held == 0);
    }
}

// Not on Windows, where the cache is off: its hand-back at thread exit is a thread_local's
// destructor, which MinGW-w64's runtime cannot run safely (see detail/frame_allocator.hpp).
#if !CONFLUX_PLATFORM_WINDOWS
TEST_CASE("a thread's frame cache is given back when the thread exits") {
    const std::size_t before = conflux::detail::frame_cache_blocks_released.load();
    std::size_t held = 0;
    std::thread([&] {
        // The thread's own cache, used directly: this runs in sanitizer builds too, where
        // LeakSanitizer would report blocks left behind.
        auto& cache = conflux::detail::this_thread_frame_cache();
        void* a = cache.allocate(64);
        void* b = cache.allocate(300);
        void* c = cache.allocate(1000);
        cache.deallocate(a, 64);
        cache.deallocate(b, 300);
        cache.deallocate(c, 1000);
        held = cache.held();
    }).join();
    CHECK(held == 3);
    CHECK(conflux::detail::frame_cache_blocks_released.load() >= before + 3);
}
#endif
