#include <conflux/error.hpp>
#include <conflux/run.hpp>
#include <conflux/shared_buffer.hpp>
#include <conflux/sleep.hpp>
#include <conflux/task.hpp>
#include <conflux/thread_pool.hpp>
#include <conflux/when_all.hpp>
#include <conflux/when_any.hpp>

#include <doctest/doctest.h>

#if !defined(_WIN32)
#include "support/shm_child.hpp"
#endif
#include "support/test_support.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#if defined(_WIN32)
#include <windows.h>
#else
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using conflux::wait_result;

namespace {

#if defined(_WIN32)
using thread_number = unsigned long;

/// True when thread `tid` is queued to sleep in an atomic_view wait: on Windows conflux keeps
/// the queues of sleepers itself (detail/windows/futex.hpp) and can say.
bool asleep_in_futex(thread_number tid) {
    return conflux::detail::futex::sleeper_table::instance().queued(tid);
}

thread_number this_tid() { return ::GetCurrentThreadId(); }
#else
using thread_number = pid_t;

/// Waits for the child and returns its exit code (or 128 + signal).
int reap(pid_t pid) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) return -1;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/// True when thread `tid` of this process is asleep inside a futex system call.
bool asleep_in_futex(thread_number tid) {
    std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/syscall");
    long number = -1;
    if (!(in >> number)) return false;
    std::ifstream stat("/proc/self/task/" + std::to_string(tid) + "/stat");
    std::string line;
    std::getline(stat, line);
    const auto close = line.rfind(')');
    const bool sleeping =
        close != std::string::npos && close + 2 < line.size() && line[close + 2] == 'S';
#ifdef SYS_futex_waitv
    if (number == SYS_futex_waitv) return sleeping;
#endif
    return number == SYS_futex && sleeping;
}

pid_t this_tid() { return static_cast<pid_t>(::syscall(SYS_gettid)); }
#endif

/// Waits (bounded) until `tid` sleeps in a futex.
void await_asleep(thread_number tid) {
    const auto give_up = clock_type::now() + 10s;
    while (!asleep_in_futex(tid)) {
        REQUIRE(clock_type::now() < give_up);
        std::this_thread::sleep_for(1ms);
    }
    // In the syscall and sleeping: queued. A little extra for the record.
    std::this_thread::sleep_for(2ms);
}

/// Checks that a timed wait of `timeout` took `waited`, within tolerance (R57): never early —
/// the 1 ms only absorbs the clock read before the wait starts its own — and not much late.
/// The late bound is not a latency target: the futex or timer itself is precise to
/// microseconds, but this suite also runs under ASan and TSan on a loaded 2-core CI machine,
/// where a woken thread can wait hundreds of milliseconds for a core. 1 s over the timeout is
/// far above that and still catches a timeout that is ignored or doubled.
void check_waited(clock_type::duration waited, std::chrono::milliseconds timeout) {
    INFO("waited ", std::chrono::duration<double, std::milli>(waited).count(), " ms for a ",
         timeout.count(), " ms timeout");
    CHECK(waited >= timeout - 1ms);
    CHECK(waited < timeout + 1s);
}

} // namespace

TEST_CASE_TEMPLATE("Atomics operations per index", T, std::int8_t, std::uint8_t, std::int16_t,
                   std::uint16_t, std::int32_t, std::uint32_t, std::int64_t, std::uint64_t) {
    static_assert(std::atomic_ref<T>::is_always_lock_free);
    conflux::shared_buffer memory(64);
    auto v = memory.view<T>();
    REQUIRE(v.size() == 64 / sizeof(T));

    CHECK(v.store(1, T(5)) == T(5));
    CHECK(v.load(1) == T(5));
    CHECK(v.add(1, T(3)) == T(5));
    CHECK(v.load(1) == T(8));
    CHECK(v.sub(1, T(10)) == T(8));
    CHECK(v.load(1) == T(T(8) - T(10))); // wraps like a typed array
    v.store(2, T(0b1100));
    CHECK(v.bit_and(2, T(0b1010)) == T(0b1100));
    CHECK(v.load(2) == T(0b1000));
    CHECK(v.bit_or(2, T(0b0011)) == T(0b1000));
    CHECK(v.load(2) == T(0b1011));
    CHECK(v.bit_xor(2, T(0b1111)) == T(0b1011));
    CHECK(v.load(2) == T(0b0100));
    CHECK(v.exchange(2, T(77)) == T(0b0100));
    CHECK(v.load(2) == T(77));
    // compare_exchange returns the old value whether or not it stored.
    CHECK(v.compare_exchange(2, T(1), T(9)) == T(77));
    CHECK(v.load(2) == T(77));
    CHECK(v.compare_exchange(2, T(77), T(9)) == T(77));
    CHECK(v.load(2) == T(9));
    const T max = std::numeric_limits<T>::max();
    v.store(3, max);
    CHECK(v.add(3, T(1)) == max);
    CHECK(v.load(3) == std::numeric_limits<T>::min());
    CHECK(v.load(0, std::memory_order_relaxed) == T(0));

    const std::size_t n = v.size();
    CHECK_THROWS_AS(v.load(n), std::out_of_range);
    CHECK_THROWS_AS(v.store(n, T(1)), std::out_of_range);
    CHECK_THROWS_AS(v.add(n + 100, T(1)), std::out_of_range);
    CHECK_THROWS_AS(v.compare_exchange(static_cast<std::size_t>(-1), T(0), T(1)),
                    std::out_of_range);
    CHECK_THROWS_AS((void)v.wait(n, T(0), 0ms), std::out_of_range);
    CHECK_THROWS_AS((void)v.notify(n), std::out_of_range);
    CHECK_THROWS_AS((void)v.wait_async(n, T(0)), std::out_of_range);

    // wait: not-equal at once, timed-out at once for a zero timeout, notify with no waiter.
    CHECK(v.wait(1, T(1), 10s) == wait_result::not_equal);
    CHECK(v.wait(0, T(0), 0ms) == wait_result::timed_out);
    CHECK(v.notify(0) == 0);
    const auto start = clock_type::now();
    CHECK(v.wait(0, T(0), 30ms) == wait_result::timed_out);
    check_waited(clock_type::now() - start, 30ms);
}

// Every standard spelling of an integer is an element, not only the <cstdint> aliases: on
// x86-64 Linux std::int64_t is long, so long long needs its own admission.
static_assert(conflux::atomic_element<long long> && conflux::atomic_element<unsigned long long>);
static_assert(conflux::atomic_element<long> && conflux::atomic_element<unsigned long>);
static_assert(conflux::atomic_element<short> && conflux::atomic_element<unsigned int>);
static_assert(conflux::atomic_element<signed char> && conflux::atomic_element<unsigned char>);
static_assert(!conflux::atomic_element<bool> && !conflux::atomic_element<char>);
static_assert(!conflux::atomic_element<wchar_t> && !conflux::atomic_element<char8_t>);
static_assert(!conflux::atomic_element<char16_t> && !conflux::atomic_element<char32_t>);
static_assert(!conflux::atomic_element<const int> && !conflux::atomic_element<volatile long>);
static_assert(!conflux::atomic_element<float> && !conflux::atomic_element<std::int32_t*>);

TEST_CASE_TEMPLATE("long long views: add, compare_exchange, wait and notify", T, long long,
                   unsigned long long) {
    static_assert(std::atomic_ref<T>::is_always_lock_free);
    conflux_test::watchdog dog(20s);
    conflux::shared_buffer memory(64);
    const auto whole = memory.view<T>();
    CHECK(whole.size() == 64 / sizeof(T));
    const auto v = memory.view<T>(16, 2);
    REQUIRE(v.size() == 2);

    CHECK(v.add(0, T(40)) == T(0));
    CHECK(v.add(0, T(2)) == T(40));
    CHECK(v.load(0) == T(42));
    CHECK(whole.load(2) == T(42)); // the same element through the other view
    const T big = std::numeric_limits<T>::max() - T(1);
    CHECK(v.compare_exchange(0, T(41), big) == T(42)); // expected differs: no store
    CHECK(v.load(0) == T(42));
    CHECK(v.compare_exchange(0, T(42), big) == T(42));
    CHECK(v.load(0) == big);
    CHECK(v.add(0, T(2)) == big); // wraps
    CHECK(v.load(0) == std::numeric_limits<T>::min());

    // A waiter blocked on element 1 is woken by a store to its high half and a notify.
    v.store(1, T(7));
    CHECK(v.wait(1, T(8), 1s) == wait_result::not_equal);
    std::atomic<thread_number> tid{0};
    std::atomic<int> result{-1};
    std::thread waiter([&] {
        tid.store(this_tid());
        result.store(static_cast<int>(v.wait(1, T(7), 10s)));
    });
    while (tid.load() == 0) std::this_thread::yield();
    await_asleep(tid.load());
    CHECK(result.load() == -1);
    CHECK(v.notify(0) == 0); // the neighbour element has no waiter
    v.store(1, static_cast<T>((T(1) << 32) | T(7)));
    CHECK(v.notify(1) == 1);
    waiter.join();
    CHECK(result.load() == static_cast<int>(wait_result::ok));
    CHECK(v.notify(1) == 0);
}

TEST_CASE("exact counters from several threads") {
    conflux_test::watchdog dog(20s);
    conflux::shared_buffer memory(64);
    const auto c32 = memory.view<std::uint32_t>(0, 1);
    const auto c64 = memory.view<std::int64_t>(8, 1);
    const auto c8 = memory.view<std::uint8_t>(16, 4);
    constexpr int threads = 4;
    const int per_thread = static_cast<int>(100'000 * conflux_test::stress_scale());
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([=] {
            for (int i = 0; i < per_thread; ++i) {
                c32.add(0, 1);
                c64.sub(0, 1);
                c8.add(static_cast<std::size_t>(t), 1);
            }
        });
    }
    for (auto& t : pool) t.join();
    CHECK(c32.load(0) == static_cast<std::uint32_t>(threads * per_thread));
    CHECK(c64.load(0) == -static_cast<std::int64_t>(threads) * per_thread);
    for (std::size_t t = 0; t < threads; ++t) {
        CHECK(c8.load(t) == static_cast<std::uint8_t>(per_thread));
    }
}

TEST_CASE("notify wakes exactly count waiters, oldest first") {
    conflux_test::watchdog dog(30s);
    conflux::shared_buffer memory(64);
    const auto cell = memory.view<std::int32_t>(0, 1);
    constexpr int n = 5;
    // Each waiter records the notify (phase) that woke it; threads woken by one notify may
    // run in any order, so the phases, not the order of running, show who was woken.
    std::atomic<int> phase{0};
    std::vector<std::atomic<int>> woken_in(n);
    std::atomic<int> woke{0};
    std::vector<std::thread> threads;
    for (int k = 0; k < n; ++k) {
        std::atomic<thread_number> tid{0};
        threads.emplace_back([&, k] {
            tid.store(this_tid());
            const wait_result r = cell.wait(0, 0, 20s);
            woken_in[static_cast<std::size_t>(k)].store(r == wait_result::ok ? phase.load() : -1);
            woke.fetch_add(1);
        });
        while (tid.load() == 0) std::this_thread::yield();
        await_asleep(tid.load()); // queued in this order
    }
    auto woken_settle = [&](int expected) {
        const auto give_up = clock_type::now() + 10s;
        while (woke.load() < expected && clock_type::now() < give_up) {
            std::this_thread::sleep_for(1ms);
        }
        std::this_thread::sleep_for(20ms); // nobody else wakes late
        return woke.load();
    };
    CHECK(cell.notify(0, 0) == 0);
    phase.store(1);
    CHECK(cell.notify(0, 1) == 1);
    CHECK(woken_settle(1) == 1);
    phase.store(2);
    CHECK(cell.notify(0, 2) == 2);
    CHECK(woken_settle(3) == 3);
    phase.store(3);
    CHECK(cell.notify(0) == 2);
    CHECK(woken_settle(5) == 5);
    CHECK(cell.notify(0) == 0);
    for (auto& t : threads) t.join();
    std::vector<int> phases;
    for (auto& w : woken_in) phases.push_back(w.load());
    CHECK(phases == std::vector<int>{1, 2, 2, 3, 3});
}

TEST_CASE("notify reaches only waiters of its own element") {
    conflux_test::watchdog dog(30s);
    conflux::shared_buffer memory(64);
    // Bytes 0 and 1 share one futex word; index 1 of the int32 view is another word.
    const auto bytes = memory.view<std::uint8_t>();
    const auto words = memory.view<std::int32_t>();
    std::atomic<thread_number> tid0{0}, tid1{0};
    std::atomic<int> result0{-1}, result1{-1};
    std::thread waiter0([&] {
        tid0.store(this_tid());
        result0.store(static_cast<int>(bytes.wait(0, 0, 20s)));
    });
    std::thread waiter1([&] {
        tid1.store(this_tid());
        result1.store(static_cast<int>(bytes.wait(1, 0, 20s)));
    });
    while (tid0.load() == 0 || tid1.load() == 0) std::this_thread::yield();
    await_asleep(tid0.load());
    await_asleep(tid1.load());

    CHECK(words.notify(1) == 0);    // another index: nobody
    CHECK(bytes.notify(2) == 0);    // a neighbour byte in the same word: nobody
    CHECK(bytes.notify(1, 1) == 1); // only the waiter of byte 1, though byte 0's came first
    waiter1.join();
    CHECK(result1.load() == static_cast<int>(wait_result::ok));
    CHECK(result0.load() == -1);
    CHECK(asleep_in_futex(tid0.load()));
    CHECK(bytes.notify(0) == 1);
    waiter0.join();
    CHECK(result0.load() == static_cast<int>(wait_result::ok));
}

TEST_CASE("a neighbour's change in the same word does not end a wait") {
    conflux_test::watchdog dog(30s);
    conflux::shared_buffer memory(64);
    const auto halves = memory.view<std::uint16_t>();
    std::atomic<thread_number> tid{0};
    std::atomic<int> result{-1};
    std::thread waiter([&] {
        tid.store(this_tid());
        result.store(static_cast<int>(halves.wait(0, 0, 20s)));
    });
    while (tid.load() == 0) std::this_thread::yield();
    for (std::uint16_t k = 1; k <= 50; ++k) halves.store(1, k); // same word, other element
    await_asleep(tid.load());
    CHECK(result.load() == -1);
    halves.store(0, 1);
    CHECK(halves.notify(0) == 1);
    waiter.join();
    CHECK(result.load() == static_cast<int>(wait_result::ok));
}

TEST_CASE("64-bit wait sees a change confined to the high half") {
    conflux_test::watchdog dog(30s);
    conflux::shared_buffer memory(64);
    const auto wide = memory.view<std::uint64_t>();
    wide.store(1, 7);
    CHECK(wide.wait(1, std::uint64_t{7} << 32, 0ms) == wait_result::not_equal);
    std::atomic<thread_number> tid{0};
    std::atomic<int> result{-1};
    std::thread waiter([&] {
        tid.store(this_tid());
        result.store(static_cast<int>(wide.wait(1, 7, 20s)));
    });
    while (tid.load() == 0) std::this_thread::yield();
    await_asleep(tid.load());
    CHECK(result.load() == -1);
    wide.store(1, (std::uint64_t{1} << 32) | 7); // the low half is unchanged
    CHECK(wide.notify(1) == 1);
    waiter.join();
    CHECK(result.load() == static_cast<int>(wait_result::ok));
    // With the value in place before the wait starts: not_equal, whichever half differs.
    CHECK(wide.wait(1, 7, 1s) == wait_result::not_equal);
    CHECK(wide.wait(1, std::uint64_t{2} << 32 | 7, 1s) == wait_result::not_equal);
}

TEST_CASE_TEMPLATE("ping-pong between threads", T, std::int32_t, std::uint64_t, std::int16_t) {
    conflux_test::watchdog dog(30s);
    conflux::shared_buffer memory(64);
    const auto cell = memory.view<T>(8, 1);
    // For 64-bit, only the high half moves: the round trip relies on futex_waitv.
    constexpr int shift = sizeof(T) == 8 ? 32 : 0;
    auto value = [](int k) { return static_cast<T>(static_cast<T>(k) << shift); };
    const int rounds = static_cast<int>(5000 * conflux_test::stress_scale());
    std::thread partner([&] {
        for (int k = 0; k < rounds; ++k) {
            while (cell.load(0) != value(2 * k + 1)) cell.wait(0, value(2 * k));
            cell.store(0, value(2 * k + 2));
            cell.notify(0);
        }
    });
    for (int k = 0; k < rounds; ++k) {
        cell.store(0, value(2 * k + 1));
        cell.notify(0);
        while (cell.load(0) != value(2 * k + 2)) cell.wait(0, value(2 * k + 1));
    }
    partner.join();
    CHECK(cell.load(0) == value(2 * rounds));
}

#if !defined(_WIN32) // Linux before 5.16 only
TEST_CASE("64-bit ping-pong on the path for kernels without futex_waitv") {
    conflux_test::watchdog dog(30s);
    conflux::detail::futex::pretend_no_waitv.store(true);
    struct restore {
        ~restore() { conflux::detail::futex::pretend_no_waitv.store(false); }
    } restore_after;
    conflux::shared_buffer memory(64);
    const auto cell = memory.view<std::uint64_t>(8, 1);
    const int rounds = static_cast<int>(300 * conflux_test::stress_scale());
    auto value = [](int k) { return static_cast<std::uint64_t>(k) << 32; };
    std::thread partner([&] {
        for (int k = 0; k < rounds; ++k) {
            while (cell.load(0) != value(2 * k + 1)) cell.wait(0, value(2 * k));
            cell.store(0, value(2 * k + 2));
            cell.notify(0);
        }
    });
    for (int k = 0; k < rounds; ++k) {
        cell.store(0, value(2 * k + 1));
        cell.notify(0);
        while (cell.load(0) != value(2 * k + 2)) cell.wait(0, value(2 * k + 1));
    }
    partner.join();
    CHECK(cell.load(0) == value(2 * rounds));
    // Timeouts still hold on this path.
    const auto start = clock_type::now();
    CHECK(cell.wait(0, value(2 * rounds), 30ms) == wait_result::timed_out);
    check_waited(clock_type::now() - start, 30ms);
}
#endif

#if !defined(_WIN32) // memory shared across processes: not on Windows yet
TEST_CASE("exact counters from a parent and a spawned child process") {
    conflux_test::watchdog dog(30s);
    conflux::shared_buffer memory(64);
    const auto c32 = memory.view<std::uint32_t>(8, 1);
    const auto c64 = memory.view<std::uint64_t>(16, 1);
    const auto n = static_cast<std::uint64_t>(1'000'000 * conflux_test::stress_scale());
    const pid_t child = conflux_test::start_shm_child(memory, "count", n);
    for (std::uint64_t k = 0; k < n; ++k) {
        c32.add(0, 1);
        c64.add(0, 1);
    }
    CHECK(reap(child) == 0);
    CHECK(c32.load(0) == static_cast<std::uint32_t>(2 * n));
    CHECK(c64.load(0) == 2 * n);
    CHECK(conflux_test::no_children_left());
}

TEST_CASE("wait/notify ping-pong across processes") {
    conflux_test::watchdog dog(30s);
    conflux::shared_buffer memory(64);
    const int rounds = static_cast<int>(2000 * conflux_test::stress_scale());

    SUBCASE("32-bit") {
        const auto cells = memory.view<std::int32_t>(0, 2);
        const pid_t child =
            conflux_test::start_shm_child(memory, "pong", static_cast<std::uint64_t>(rounds));
        for (int k = 0; k < rounds; ++k) {
            cells.store(0, 2 * k + 1);
            cells.notify(0);
            while (cells.load(0) != 2 * k + 2) cells.wait(0, 2 * k + 1, 10s);
        }
        CHECK(reap(child) == 0);
        CHECK(cells.load(0) == 2 * rounds);
    }
    SUBCASE("64-bit, high half only") {
        const auto word = memory.view<std::uint64_t>(16, 1);
        const pid_t child =
            conflux_test::start_shm_child(memory, "pong64", static_cast<std::uint64_t>(rounds));
        for (std::uint64_t k = 0; k < static_cast<std::uint64_t>(rounds); ++k) {
            word.store(0, (2 * k + 1) << 32);
            word.notify(0);
            while (word.load(0) != (2 * k + 2) << 32) word.wait(0, (2 * k + 1) << 32, 10s);
        }
        CHECK(reap(child) == 0);
        CHECK(word.load(0) == static_cast<std::uint64_t>(2 * rounds) << 32);
    }
    CHECK(conflux_test::no_children_left());
}

TEST_CASE("notify counts a waiter in another process") {
    conflux_test::watchdog dog(30s);
    conflux::shared_buffer memory(64);
    const auto cells = memory.view<std::int32_t>(0, 2);
    const pid_t child = conflux_test::start_shm_child(memory, "wait");
    // The child's wait returns only when notified; notify reports 1 once it sleeps.
    const auto give_up = clock_type::now() + 10s;
    std::size_t woken = 0;
    while (woken == 0 && clock_type::now() < give_up) {
        woken = cells.notify(0, 1);
        if (woken == 0) std::this_thread::sleep_for(1ms);
    }
    CHECK(woken == 1);
    CHECK(reap(child) == 0);
    CHECK(cells.notify(0) == 0);
}

TEST_CASE("a child dying mid-protocol leaves the parent's timed wait returning normally") {
    conflux_test::watchdog dog(30s);
    conflux::shared_buffer memory(64);
    const auto cells = memory.view<std::int32_t>(0, 2);
    const pid_t child = conflux_test::start_shm_child(memory, "die");
    // The child announces itself, then dies without ever writing cell 0.
    while (cells.load(1) == 0) CHECK(cells.wait(1, 0, 10s) != wait_result::timed_out);
    const auto start = clock_type::now();
    CHECK(cells.wait(0, 0, 300ms) == wait_result::timed_out);
    check_waited(clock_type::now() - start, 300ms);
    CHECK(reap(child) == 7);

    // And one killed outright while the parent waits.
    const pid_t victim = conflux_test::start_shm_child(memory, "wait");
    std::this_thread::sleep_for(20ms);
    CHECK(::kill(victim, SIGKILL) == 0);
    const auto victim_start = clock_type::now();
    CHECK(cells.wait(0, 0, 200ms) == wait_result::timed_out);
    check_waited(clock_type::now() - victim_start, 200ms);
    CHECK(reap(victim) == 128 + SIGKILL);
    CHECK(cells.notify(0) == 0); // the dead waiter is gone from the queue
    CHECK(conflux_test::no_children_left());
}

// ---- wait_async -------------------------------------------------------------------------
#endif

TEST_CASE("wait_async: not-equal and zero timeout complete without suspending") {
    conflux::shared_buffer memory(16);
    const auto v = memory.view<std::int32_t>();
    v.store(0, 3);
    auto body = [&]() -> conflux::task<> {
        CHECK(co_await v.wait_async(0, 1) == wait_result::not_equal);
        CHECK(co_await v.wait_async(0, 3, 0ms) == wait_result::timed_out);
        const auto start = clock_type::now();
        CHECK(co_await v.wait_async(0, 3, 30ms) == wait_result::timed_out);
        check_waited(clock_type::now() - start, 30ms);
    };
    conflux::run(body());
    CHECK(v.notify(0) == 0);
}

TEST_CASE("wait_async does not block the loop and is woken by notify from another thread") {
    conflux_test::watchdog dog(20s);
    conflux::shared_buffer memory(16);
    const auto v = memory.view<std::int32_t>();
    std::atomic<std::size_t> notified{0};
    auto waiter = [&]() -> conflux::task<wait_result> { co_return co_await v.wait_async(0, 0); };
    auto ticker = [&]() -> conflux::task<int> {
        int ticks = 0;
        for (; ticks < 5; ++ticks) co_await conflux::sleep_for(5ms);
        // The loop kept serving timers while the waiter was pending; now wake it.
        std::thread notifier([&] {
            std::size_t n = 0;
            while ((n = v.notify(0)) == 0) std::this_thread::sleep_for(1ms);
            notified.store(n);
        });
        notifier.detach();
        co_return ticks;
    };
    auto body = [&]() -> conflux::task<> {
        auto [r, ticks] = co_await conflux::when_all(waiter(), ticker());
        CHECK(r == wait_result::ok);
        CHECK(ticks == 5);
    };
    conflux::run(body());
    CHECK(notified.load() == 1);
}

TEST_CASE("wait_async resumes on its own loop") {
    conflux_test::watchdog dog(20s);
    conflux::shared_buffer memory(16);
    const auto v = memory.view<std::int32_t>();
    std::thread::id loop_thread;
    std::thread::id resumed_on;
    auto body = [&]() -> conflux::task<> {
        loop_thread = std::this_thread::get_id();
        std::thread notifier([&] {
            while (v.notify(0) == 0) std::this_thread::sleep_for(1ms);
        });
        const wait_result r = co_await v.wait_async(0, 0, 10s);
        resumed_on = std::this_thread::get_id();
        notifier.join();
        CHECK(r == wait_result::ok);
    };
    conflux::run(body());
    CHECK(resumed_on == loop_thread);
}

TEST_CASE("wait_async is cancelled through its stop token") {
    conflux_test::watchdog dog(20s);
    conflux::shared_buffer memory(16);
    const auto v = memory.view<std::int32_t>();
    auto body = [&]() -> conflux::task<> {
        std::stop_source source;
        std::thread canceller([&] {
            std::this_thread::sleep_for(20ms);
            source.request_stop();
        });
        CHECK_THROWS_AS(co_await v.wait_async(0, 0, 10s, source.get_token()),
                        conflux::operation_cancelled);
        canceller.join();
        // Already stopped: throws without waiting.
        CHECK_THROWS_AS(co_await v.wait_async(0, 0, 10s, source.get_token()),
                        conflux::operation_cancelled);
        CHECK(v.notify(0) == 0); // the cancelled waiter is gone
    };
    conflux::run(body());
}

TEST_CASE("1,000 pending wait_async waiters released in batches, oldest first") {
    conflux_test::watchdog dog(30s);
    conflux::shared_buffer memory(64);
    const auto v = memory.view<std::uint8_t>();
    constexpr int n = 1000;
    constexpr std::size_t batch = 100;
    std::vector<int> order;
    std::vector<wait_result> results(n, wait_result::not_equal);
    auto one = [&](int k) -> conflux::task<> {
        results[static_cast<std::size_t>(k)] = co_await v.wait_async(5, 0, 20s);
        order.push_back(k);
    };
    auto body = [&]() -> conflux::task<> {
        for (int k = 0; k < n; ++k) conflux::detach(one(k));
        co_await conflux::sleep_for(1ms); // every waiter has suspended
        CHECK(order.empty());
        CHECK(v.notify(4) == 0); // a neighbour byte
        for (std::size_t released = 0; released < n; released += batch) {
            CHECK(v.notify(5, batch) == batch);
            co_await conflux::sleep_for(1ms);
            CHECK(order.size() == released + batch);
        }
        CHECK(v.notify(5) == 0);
    };
    conflux::run(body());
    REQUIRE(order.size() == n);
    for (int k = 0; k < n; ++k) {
        CHECK(order[static_cast<std::size_t>(k)] == k);
        CHECK(results[static_cast<std::size_t>(k)] == wait_result::ok);
    }
}

#if !defined(_WIN32) // from_fd: memory from another process
TEST_CASE("wait_async meets notify through another mapping of the same memory") {
    conflux_test::watchdog dog(20s);
    conflux::shared_buffer memory(64);
    const conflux::shared_buffer other = conflux::shared_buffer::from_fd(memory.fd(), 64);
    const auto mine = memory.view<std::int64_t>(8, 2);
    const auto theirs = other.view<std::int64_t>(8, 2);
    auto body = [&]() -> conflux::task<> {
        std::thread notifier([&] {
            while (theirs.notify(1) == 0) std::this_thread::sleep_for(1ms);
        });
        CHECK(co_await mine.wait_async(1, 0, 10s) == wait_result::ok);
        notifier.join();
    };
    conflux::run(body());
}
#endif

TEST_CASE("wait_async outside an event loop is a clear error") {
    conflux::shared_buffer memory(16);
    const auto v = memory.view<std::int32_t>();
    auto body = [&]() -> conflux::task<std::string> {
        conflux::event_loop& loop = *conflux::event_loop::current();
        std::string message;
        {
            conflux::thread_pool pool(1);
            co_await pool.schedule();
            try {
                co_await v.wait_async(0, 0, 10ms);
            } catch (const std::logic_error& e) {
                message = e.what();
            }
            co_await loop.schedule(); // the pool is joined from the loop's thread
        }
        co_return message;
    };
    CHECK(conflux::run(body()).find("wait_async") != std::string::npos);
}

TEST_CASE("wait_async inherits cancellation from when_any") {
    conflux_test::watchdog dog(20s);
    conflux::shared_buffer memory(16);
    const auto v = memory.view<std::int32_t>();
    auto waiter = [&]() -> conflux::task<wait_result> { co_return co_await v.wait_async(0, 0); };
    auto body = [&]() -> conflux::task<> {
        const auto start = clock_type::now();
        auto result = co_await conflux::when_any(waiter(), conflux::sleep_for(20ms));
        CHECK(result.index() == 1);
        // The waiter is cancelled when the 20 ms sleep wins; it must not hold when_any longer.
        check_waited(clock_type::now() - start, 20ms);
        CHECK(v.notify(0) == 0);
    };
    conflux::run(body());
}

// ---- wait_async across processes --------------------------------------------------------

#if !defined(_WIN32) // memory shared across processes: not on Windows yet
namespace {

/// The leader's side of a ping-pong on cell 0 (odd values ours, even the partner's) as a
/// coroutine; returns how many waits ran into their 2 s bound (each one a lost wake-up).
conflux::task<int> async_leader(conflux::atomic_view<std::int32_t> cells, int rounds) {
    int late = 0;
    for (int k = 0; k < rounds; ++k) {
        cells.store(0, 2 * k + 1);
        cells.notify(0);
        while (cells.load(0) != 2 * k + 2) {
            const wait_result r = co_await cells.wait_async(0, 2 * k + 1, 2s);
            if (r == wait_result::timed_out) ++late;
        }
    }
    co_return late;
}

std::size_t async_waiters_now() {
    return conflux::detail::async_wait_registry::instance().waiting();
}

} // namespace

TEST_CASE("wait_async across processes: 1,000 round trips, each wake within 2 s") {
    conflux_test::watchdog dog(60s);
    const auto fds_before = conflux_test::open_fds();
    {
        conflux::shared_buffer memory(64);
        const auto cells = memory.view<std::int32_t>(0, 2);
        constexpr int rounds = 1000;

        SUBCASE("a coroutine here, a thread blocked in wait there") {
            const pid_t child = conflux_test::start_shm_child(memory, "pong", rounds);
            CHECK(conflux::run(async_leader(cells, rounds)) == 0);
            CHECK(reap(child) == 0);
        }
        SUBCASE("a coroutine here, a coroutine there") {
            const pid_t child = conflux_test::start_shm_child(memory, "apong", rounds);
            CHECK(conflux::run(async_leader(cells, rounds)) == 0);
            CHECK(reap(child) == 0); // 4: one of its waits ran into the bound
        }
        SUBCASE("a thread here, a coroutine there") {
            const pid_t child = conflux_test::start_shm_child(memory, "apong", rounds);
            for (int k = 0; k < rounds; ++k) {
                cells.store(0, 2 * k + 1);
                cells.notify(0);
                while (cells.load(0) != 2 * k + 2) {
                    REQUIRE(cells.wait(0, 2 * k + 1, 10s) != wait_result::timed_out);
                }
            }
            CHECK(reap(child) == 0);
        }
        CHECK(cells.load(0) == 2 * rounds);
        CHECK(async_waiters_now() == 0);
        // One watcher thread at most, however many waits there were.
        CHECK(conflux::detail::doorbell_watcher::instance().threads() <= 1);
    }
    CHECK(conflux_test::no_children_left());
    CHECK(conflux_test::open_fds() == fds_before);
}

TEST_CASE("wait_async across processes: timeout, and a notify without a store") {
    conflux_test::watchdog dog(30s);
    conflux::shared_buffer memory(64);
    const auto cells = memory.view<std::int32_t>(0, 2);
    // The child notifies cell 0 without changing it: that does not resume a waiter of another
    // process (docs/shared_buffer.md), so the wait runs to its timeout.
    const pid_t child = conflux_test::start_shm_child(memory, "poke");
    auto body = [&]() -> conflux::task<> {
        const auto start = clock_type::now();
        const wait_result r = co_await cells.wait_async(0, 0, 300ms);
        CHECK(r == wait_result::timed_out);
        check_waited(clock_type::now() - start, 300ms);
        CHECK(async_waiters_now() == 0);
    };
    conflux::run(body());
    while (cells.load(1) == 0) REQUIRE(cells.wait(1, 0, 10s) != wait_result::timed_out);
    cells.store(1, 2);
    cells.notify(1);
    CHECK(reap(child) == 0);
}

TEST_CASE("wait_async across processes: cancellation deregisters the waiter") {
    conflux_test::watchdog dog(30s);
    conflux::shared_buffer memory(64);
    const auto cells = memory.view<std::int32_t>(0, 2);
    const pid_t child = conflux_test::start_shm_child(memory, "pong", 1);
    auto body = [&]() -> conflux::task<> {
        std::stop_source source;
        std::thread canceller([&] {
            std::this_thread::sleep_for(20ms);
            source.request_stop();
        });
        CHECK_THROWS_AS(co_await cells.wait_async(0, 0, 10s, source.get_token()),
                        conflux::operation_cancelled);
        canceller.join();
        CHECK(async_waiters_now() == 0);
        // Still usable: one round trip with the child.
        CHECK(co_await async_leader(cells, 1) == 0);
    };
    conflux::run(body());
    CHECK(reap(child) == 0);
}

TEST_CASE("wait_async across processes: the buffer destroyed while a waiter is pending") {
    conflux_test::watchdog dog(30s);
    const auto fds_before = conflux_test::open_fds();
    pid_t child = -1;
    {
        std::optional<conflux::shared_buffer> memory(std::in_place, 64);
        child = conflux_test::start_shm_child(*memory, "pong", 1);
        auto waiter = [](conflux::atomic_view<std::int32_t> cells) -> conflux::task<int> {
            co_return co_await async_leader(cells, 1);
        };
        auto drop = [&]() -> conflux::task<> {
            co_await conflux::sleep_for(20ms); // the waiter is suspended by now
            memory.reset();                    // its view still holds the memory
            co_return;
        };
        auto body = [&]() -> conflux::task<int> {
            auto w = waiter(memory->view<std::int32_t>(0, 2));
            auto d = drop();
            auto results = co_await conflux::when_all(std::move(w), std::move(d));
            co_return std::get<0>(results);
        };
        CHECK(conflux::run(body()) == 0);
        CHECK_FALSE(memory.has_value());
    }
    CHECK(reap(child) == 0);
    CHECK(conflux_test::open_fds() == fds_before);
}

TEST_CASE("wait_async across processes on the path for kernels without futex_waitv") {
    conflux_test::watchdog dog(60s);
    auto& watcher = conflux::detail::doorbell_watcher::instance();
    conflux::detail::futex::pretend_no_waitv.store(true);
    struct restore {
        ~restore() { conflux::detail::futex::pretend_no_waitv.store(false); }
    } restore_waitv;
    const std::size_t threads_before = watcher.threads();
    {
        conflux::shared_buffer memory(64);
        const auto cells = memory.view<std::int32_t>(0, 2);
        constexpr int rounds = 300;
        const pid_t child = conflux_test::start_shm_child(memory, "pong", rounds);
        CHECK(conflux::run(async_leader(cells, rounds)) == 0);
        CHECK(reap(child) == 0);
        // A thread of its own for this buffer (one futex word per wait on such kernels).
        CHECK(watcher.threads() == threads_before + 1);
    }
    // The buffer gone, its thread ends (woken by the unmapping).
    const auto give_up = clock_type::now() + 5s;
    while (watcher.threads() != threads_before && clock_type::now() < give_up) {
        std::this_thread::sleep_for(1ms);
    }
    CHECK(watcher.threads() == threads_before);
}

// TSan cannot start threads in a child forked from a multithreaded process (it kills it).
#if defined(__SANITIZE_THREAD__)
#define CONFLUX_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CONFLUX_TEST_TSAN 1
#endif
#endif

#ifndef CONFLUX_TEST_TSAN
TEST_CASE("wait_async across processes: a child made by fork() starts its own watcher") {
    conflux_test::watchdog dog(60s);
    conflux::shared_buffer memory(64);
    const auto cells = memory.view<std::int32_t>(0, 2);
    // This process's watcher runs (started here if no earlier test did).
    {
        const pid_t child = conflux_test::start_shm_child(memory, "pong", 1);
        CHECK(conflux::run(async_leader(cells, 1)) == 0);
        CHECK(reap(child) == 0);
    }
    cells.store(0, 0);
    constexpr int rounds = 200;
    const pid_t pid = ::fork();
    if (pid == 0) {
        // Only the forking thread exists here: the parent's watcher does not. A coroutine
        // woken from the parent must get a watcher of its own.
        int late = 0;
        try {
            late = conflux::run(async_leader(cells, rounds));
        } catch (...) {
            late = -1;
        }
        std::_Exit(late == 0 ? 0 : 5);
    }
    REQUIRE(pid > 0);
    for (int k = 0; k < rounds; ++k) {
        while (cells.load(0) != 2 * k + 1) {
            REQUIRE(cells.wait(0, 2 * k, 10s) != wait_result::timed_out);
        }
        cells.store(0, 2 * k + 2);
        cells.notify(0);
    }
    CHECK(reap(pid) == 0);
    CHECK(conflux_test::no_children_left());
}
#endif
#endif
