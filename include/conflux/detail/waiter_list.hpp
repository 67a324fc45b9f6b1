#pragma once

#include <conflux/executor.hpp>
#include <conflux/detail/intrusive_list.hpp>
#include <conflux/detail/spin_wait.hpp>
#include <conflux/detail/work_item.hpp>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <utility>

namespace conflux::detail {

/// How long a waiter spins before it really sleeps, when its peer runs on another thread:
/// a round trip between two threads then costs two cache-line transfers instead of two
/// eventfd or futex wake-ups. Idle waits pay this once and then sleep.
inline constexpr std::chrono::nanoseconds waiter_spin_budget{std::chrono::microseconds(20)};

/// One party suspended until someone else acts: a coroutine (resumed through the executor it
/// was running on) or a plain thread (blocked on a futex). `wake()` is called exactly once,
/// by whoever decided the outcome, after it released every lock.
///
/// For a coroutine the suspension and the wake-up race: the waker may arrive while
/// `await_suspend` is still running (even before it returns). The state word settles it —
/// whichever side comes second carries on, so the coroutine resumes exactly once, inline in
/// `await_suspend` when the wake came first, through its executor otherwise.
class parking {
public:
    enum : std::uint32_t { arming, suspended, sleeping, woken };

    /// Prepares a coroutine wait (called in `await_suspend`, before the waiter is visible).
    void prepare(std::coroutine_handle<> h, any_executor resume_on) noexcept {
        m_resume.handle = h;
        m_executor = resume_on;
        m_thread = false;
        m_state.store(arming, std::memory_order_relaxed);
    }

    /// Prepares a plain-thread wait.
    void prepare_thread() noexcept {
        m_thread = true;
        m_state.store(arming, std::memory_order_relaxed);
    }

    /// Ends `await_suspend` once the waiter is visible: true to stay suspended, false when the
    /// wake-up already came (the coroutine goes on at once). With `spin`, waits briefly for the
    /// wake-up first, which then needs no trip through the executor.
    bool finish_suspend(bool spin) noexcept {
        if (spin && spin_until([this] { return is_woken(); }, waiter_spin_budget)) return false;
        std::uint32_t expected = arming;
        // acq_rel: on success publishes the suspension to the waker; on failure (acquire)
        // sees what the waker wrote before waking us.
        return m_state.compare_exchange_strong(expected, suspended, std::memory_order_acq_rel,
                                               std::memory_order_acquire);
    }

    /// Blocks the calling thread until `wake()`: spins briefly, then sleeps on a futex.
    void block() noexcept {
        if (spin_until([this] { return is_woken(); }, waiter_spin_budget)) return;
        std::uint32_t expected = arming;
        if (!m_state.compare_exchange_strong(expected, sleeping, std::memory_order_acq_rel,
                                             std::memory_order_acquire)) {
            return; // woken meanwhile
        }
        while (m_state.load(std::memory_order_acquire) == sleeping) {
            futex_wait_private(m_state, sleeping);
        }
    }

    /// Resumes the waiter. Nothing may touch this object after it returns.
    void wake() noexcept {
        if (m_thread) {
            // acq_rel: publishes the outcome; the sleeper's acquire load pairs with it.
            if (m_state.exchange(woken, std::memory_order_acq_rel) == sleeping) {
                futex_wake_private(&m_state, 1);
            }
            return;
        }
        // Read before the exchange: once it is done the coroutine may run and end at once.
        const any_executor executor = m_executor;
        resume_item* item = &m_resume;
        if (m_state.exchange(woken, std::memory_order_acq_rel) == suspended) {
            executor.enqueue(item);
        }
    }

    /// True when a wake-up from the calling thread would cross to another thread.
    bool remote() const noexcept { return m_thread || !m_executor.running_in_this_thread(); }

private:
    bool is_woken() const noexcept { return m_state.load(std::memory_order_acquire) == woken; }

    std::atomic<std::uint32_t> m_state{arming};
    bool m_thread = false;
    any_executor m_executor;
    resume_item m_resume;
};

/// The decision of one wait, which may be linked into several channels at once (a select):
/// the first party to claim it — a channel completing it, or its cancellation — owns the
/// outcome; every other party skips it.
struct wait_core {
    static constexpr std::uint32_t open = std::numeric_limits<std::uint32_t>::max();
    static constexpr std::uint32_t cancelled = open - 1;

    std::atomic<std::uint32_t> claim{open};
    parking park;

    /// Claims the wait for `who` (a branch index or `cancelled`).
    bool try_claim(std::uint32_t who) noexcept {
        std::uint32_t expected = open;
        // acq_rel: the claimer's hand-over is ordered after seeing the wait open, and the
        // waiter reads the winner with acquire.
        return claim.compare_exchange_strong(expected, who, std::memory_order_acq_rel,
                                             std::memory_order_acquire);
    }
    std::uint32_t winner() const noexcept { return claim.load(std::memory_order_acquire); }
};

/// A waiter's entry in one channel's list of senders or receivers. Linked and unlinked only
/// under that channel's lock.
struct waiter_node {
    waiter_node* prev = nullptr;
    waiter_node* next = nullptr;
    waiter_node* wake_next = nullptr;
    bool linked = false;
    wait_core* core = nullptr;
    std::uint32_t index = 0;
    /// Takes the channel's lock and unlinks this node if it is still linked.
    void (*withdraw)(waiter_node*) noexcept = nullptr;
    void* owner = nullptr;
    /// This node, as the one-element array a single wait's `cancel_wait` points at.
    waiter_node* self = this;
};

/// A channel's waiting senders or receivers, in the order they came (`push_back`, `front`).
using waiter_list = intrusive_list<waiter_node>;

/// Waiters whose outcome was decided under a lock, woken once the lock is released.
class wake_list {
public:
    wake_list() noexcept = default;
    wake_list(const wake_list&) = delete;
    wake_list& operator=(const wake_list&) = delete;
    ~wake_list() { wake_all(); }

    void push(waiter_node* n) noexcept {
        if (n->core->park.remote()) m_remote = true;
        n->wake_next = m_head;
        m_head = n;
    }

    bool empty() const noexcept { return m_head == nullptr; }

    /// True if one of the waiters runs on another thread.
    bool remote() const noexcept { return m_remote; }

    void wake_all() noexcept {
        waiter_node* n = std::exchange(m_head, nullptr);
        while (n) {
            waiter_node* next = n->wake_next; // the node may be gone once woken
            n->core->park.wake();
            n = next;
        }
    }

private:
    waiter_node* m_head = nullptr;
    bool m_remote = false;
};

/// The stop callback of a wait: claims it as cancelled, withdraws its nodes, wakes it.
struct cancel_wait {
    wait_core* core;
    waiter_node* const* nodes;
    std::size_t count;
    void operator()() const noexcept {
        if (!core->try_claim(wait_core::cancelled)) return;
        for (std::size_t i = 0; i < count; ++i) nodes[i]->withdraw(nodes[i]);
        core->park.wake();
    }
};

} // namespace conflux::detail
