#pragma once

#include <conflux/detail/windows/spin_wait.hpp>
#include <conflux/detail/windows/win32.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>

namespace conflux::detail::futex {

// The wait-on-address interface of detail/linux/futex.hpp, for words of this process only.
//
// WaitOnAddress compares and sleeps like a futex, but cannot say how many sleepers a wake
// reached (Atomics.notify returns that count), knows no wake lanes (several small elements
// share one 32-bit word and must not steal each other's wake-ups), and does not cross
// processes. So the queue of sleepers is kept here, as the kernel keeps a futex's: a table of
// buckets, each a lock and a FIFO list of the threads sleeping on its words. A waiter checks
// the word and joins the list under the bucket's lock; a waker takes the lock, unlinks the
// first `count` matching waiters and wakes each on a flag of its own with WakeByAddressSingle.
// A store followed by a wake can therefore never miss a waiter that checked the value before
// the store: the waker takes the same lock after it stored.

/// How a wait ended.
enum class status {
    woken,      ///< a wake reached this waiter
    changed,    ///< the word no longer held the expected value when the wait began
    timed_out,  ///< the absolute deadline passed
    interrupted ///< never on Windows (no signals interrupt a wait); kept for the interface
};

using deadline_t = std::optional<std::chrono::steady_clock::time_point>;

/// A thread sleeping on one word (or on either of two, for wait_pair).
struct sleeper {
    const std::uint32_t* word = nullptr;
    const std::uint32_t* second = nullptr;
    std::uint32_t bitset = 0;
    unsigned long thread = ::GetCurrentThreadId(); // for `queued`
    sleeper* prev = nullptr;
    sleeper* next = nullptr;
    bool linked = false;
    std::uint32_t woken = 0; // set to 1 under the bucket's lock; WaitOnAddress sleeps on it
};

/// The process-wide queues of sleepers, hashed by word address.
class sleeper_table {
public:
    struct bucket {
        std::mutex lock;
        sleeper* head = nullptr;
        sleeper* tail = nullptr;

        void link(sleeper* s) noexcept {
            s->prev = tail;
            s->next = nullptr;
            (tail ? tail->next : head) = s;
            tail = s;
            s->linked = true;
        }
        void unlink(sleeper* s) noexcept {
            (s->prev ? s->prev->next : head) = s->next;
            (s->next ? s->next->prev : tail) = s->prev;
            s->linked = false;
        }
    };

    /// Never destroyed: a thread may still wake or wait during static destruction.
    static sleeper_table& instance() {
        static sleeper_table* table = new sleeper_table;
        return *table;
    }

    /// The bucket of `word`; the two words of a 64-bit element (8-aligned) share one.
    bucket& of(const void* word) noexcept {
        auto a = reinterpret_cast<std::uintptr_t>(word) >> 3;
        a ^= a >> 17;
        return m_buckets[(a * 0x9E3779B97F4A7C15ull) >> 58]; // 64 buckets
    }

    /// Whether thread `id` is queued to sleep on some word (for tests: the counterpart of
    /// looking at a thread's system call on Linux).
    bool queued(unsigned long id) noexcept {
        for (bucket& b : m_buckets) {
            std::lock_guard guard(b.lock);
            for (const sleeper* s = b.head; s != nullptr; s = s->next) {
                if (s->thread == id) return true;
            }
        }
        return false;
    }

private:
    bucket m_buckets[64];
};

/// Blocks on `s` (already linked into `b`) until woken or `deadline`.
inline status sleep_linked(sleeper_table::bucket& b, sleeper& s,
                           const deadline_t& deadline) noexcept {
    using namespace std::chrono;
    for (;;) {
        DWORD ms = INFINITE;
        if (deadline) {
            const auto left = *deadline - steady_clock::now();
            if (left <= nanoseconds::zero()) {
                std::lock_guard guard(b.lock);
                if (!s.linked) return status::woken; // the wake came first
                b.unlink(&s);
                return status::timed_out;
            }
            const auto t = ceil<milliseconds>(left).count();
            ms = t >= 0x7fffffff ? 0x7fffffff : static_cast<DWORD>(t);
        }
        if (std::atomic_ref<std::uint32_t>(s.woken).load(std::memory_order_acquire) != 0) {
            // The waker set the flag under the lock and wakes us while holding it: pass
            // through the lock so that it is done with `s` before `s` goes away.
            std::lock_guard guard(b.lock);
            return status::woken;
        }
        std::uint32_t zero = 0;
        ::WaitOnAddress(static_cast<volatile void*>(&s.woken), &zero, sizeof zero, ms);
    }
}

/// Sleeps while `*word == expected`, until a wake whose bitset shares a bit with `bitset`, or
/// until `deadline` (none: forever).
inline status wait_bitset(const std::uint32_t* word, std::uint32_t expected, std::uint32_t bitset,
                          const deadline_t& deadline) noexcept {
    sleeper_table::bucket& b = sleeper_table::instance().of(word);
    sleeper s;
    s.word = word;
    s.bitset = bitset;
    {
        std::lock_guard guard(b.lock);
        // seq_cst, under the lock: a waker stores, then takes this lock to wake.
        if (std::atomic_ref<std::uint32_t>(*const_cast<std::uint32_t*>(word))
                .load(std::memory_order_seq_cst) != expected) {
            return status::changed;
        }
        b.link(&s);
    }
    return sleep_linked(b, s, deadline);
}

/// Wakes up to `count` waiters on `word` whose bitset shares a bit with `bitset`, oldest
/// first; returns how many it woke.
inline std::size_t wake_bitset(const std::uint32_t* word, std::size_t count,
                               std::uint32_t bitset) noexcept {
    if (count == 0) return 0;
    sleeper_table::bucket& b = sleeper_table::instance().of(word);
    std::size_t n = 0;
    std::lock_guard guard(b.lock);
    for (sleeper* s = b.head; s != nullptr && n < count;) {
        sleeper* next = s->next;
        if ((s->word == word || s->second == word) && (s->bitset & bitset) != 0) {
            b.unlink(s);
            std::atomic_ref<std::uint32_t>(s->woken).store(1, std::memory_order_release);
            ::WakeByAddressSingle(static_cast<void*>(&s->woken));
            ++n;
        }
        s = next;
    }
    return n;
}

/// Whether `wait_pair` is available: always, here.
inline bool waitv_available() noexcept { return true; }

/// Sleeps while `*first == first_expected` and `*second == second_expected` (both checked
/// under the bucket's lock), until a wake on either word (any bitset) or `deadline`. The two
/// words are the halves of one 8-aligned 64-bit element.
inline status wait_pair(const std::uint32_t* first, std::uint32_t first_expected,
                        const std::uint32_t* second, std::uint32_t second_expected,
                        const deadline_t& deadline) noexcept {
    sleeper_table::bucket& b = sleeper_table::instance().of(first);
    sleeper s;
    s.word = first;
    s.second = second;
    s.bitset = ~std::uint32_t{0};
    {
        std::lock_guard guard(b.lock);
        auto load = [](const std::uint32_t* w) {
            return std::atomic_ref<std::uint32_t>(*const_cast<std::uint32_t*>(w))
                .load(std::memory_order_seq_cst);
        };
        if (load(first) != first_expected || load(second) != second_expected) {
            return status::changed;
        }
        b.link(&s);
    }
    return sleep_linked(b, s, deadline);
}

/// Wakes every waiter on `word`, whatever its bitset. Every word is process-private here.
inline void wake_all(const std::uint32_t* word, bool /*process_private*/) noexcept {
    wake_bitset(word, static_cast<std::size_t>(-1), ~std::uint32_t{0});
}

} // namespace conflux::detail::futex
