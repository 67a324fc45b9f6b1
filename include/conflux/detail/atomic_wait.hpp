#pragma once

#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/async_waiters.hpp>
#include <conflux/detail/futex.hpp>
#include <conflux/detail/memfd.hpp>
#include <conflux/detail/timer_heap.hpp>
#include <conflux/detail/work_item.hpp>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <stop_token>

namespace conflux {

/// How `atomic_view::wait` and `wait_async` ended, like the strings `Atomics.wait` returns.
enum class wait_result {
    ok,        ///< woken by `notify` (or spuriously: see `atomic_view::wait`)
    not_equal, ///< the element did not hold the expected value when the wait began
    timed_out  ///< the timeout passed first
};

namespace detail {

/// The absolute deadline for a relative timeout; none for "forever" (nanoseconds::max() or
/// anything that would overflow the clock). Negative timeouts count as zero.
inline futex::deadline_t deadline_after(std::chrono::nanoseconds timeout) noexcept {
    using clock = std::chrono::steady_clock;
    if (timeout == std::chrono::nanoseconds::max()) return std::nullopt;
    if (timeout < std::chrono::nanoseconds::zero()) timeout = std::chrono::nanoseconds::zero();
    const auto now = clock::now();
    if (timeout >
        std::chrono::duration_cast<std::chrono::nanoseconds>(clock::time_point::max() - now)) {
        return std::nullopt;
    }
    return now + std::chrono::duration_cast<clock::duration>(timeout);
}

/// The futex word a waiter on `p` sleeps on (the aligned 32-bit word holding its first byte)
/// and the wake bitset of its byte lane in that word: waiters are keyed by the element's byte
/// address, as `Atomics` keys them, even when several small elements share one word.
inline const std::uint32_t* futex_word_of(const void* p) noexcept {
    return reinterpret_cast<const std::uint32_t*>(reinterpret_cast<std::uintptr_t>(p) &
                                                  ~std::uintptr_t{3});
}
inline std::uint32_t futex_lane_of(const void* p) noexcept {
    return std::uint32_t{1} << (reinterpret_cast<std::uintptr_t>(p) & 3);
}

/// The blocking wait of `atomic_view::wait` (see its documentation for the semantics).
template <class T>
wait_result wait_element(T* p, T expected, std::chrono::nanoseconds timeout) noexcept {
    std::atomic_ref<T> ref(*p);
    // seq_cst: Atomics.wait reads the value sequentially consistently.
    if (ref.load(std::memory_order_seq_cst) != expected) return wait_result::not_equal;
    if (timeout <= std::chrono::nanoseconds::zero()) return wait_result::timed_out;
    const futex::deadline_t deadline = deadline_after(timeout);

    // No spinning before the futex: measured here, any spin (with or without a pause
    // instruction) only lowered the ping-pong rate, since the kernel already returns at once
    // when the value moved and a spinner steals the core its partner needs.
    const std::uint32_t* word = futex_word_of(p);
    for (;;) {
        futex::status st;
        if constexpr (sizeof(T) <= 4) {
            // The kernel compares the whole word, so read it whole and take our lane out of
            // it: equal word implies equal element, and a change anywhere in the word (our
            // element or a neighbour's) between this read and the kernel's check comes back
            // as `changed` instead of being slept through.
            // atomic_ref<const T> is C++26 (libc++ rejects it); the word is only read here.
            const std::uint32_t w =
                std::atomic_ref<std::uint32_t>(*const_cast<std::uint32_t*>(word))
                    .load(std::memory_order_seq_cst);
            T current;
            std::memcpy(&current,
                        reinterpret_cast<const unsigned char*>(&w) +
                            (reinterpret_cast<std::uintptr_t>(p) & 3),
                        sizeof(T));
            if (current != expected) return wait_result::ok;
            st = futex::wait_bitset(word, w, futex_lane_of(p), deadline);
        } else {
            // 64-bit: a futex compares 32 bits. futex_waitv queues us on the first half and
            // then checks the second, so a change to either half before we sleep is seen and
            // any notify after we are queued (on the first half) reaches us.
            std::uint32_t halves[2];
            std::memcpy(halves, &expected, sizeof halves);
            if (ref.load(std::memory_order_seq_cst) != expected) return wait_result::ok;
            if (futex::waitv_available()) {
                st = futex::wait_pair(word, halves[0], word + 1, halves[1], deadline);
            } else {
                // Kernels before 5.16: sleep on the first half in slices, re-checking the
                // whole value between them. A change confined to the second half and notified
                // in the instant before we sleep is then noticed within one slice.
                auto slice = std::chrono::steady_clock::now() + std::chrono::milliseconds(2);
                if (deadline && *deadline < slice) slice = *deadline;
                st = futex::wait_bitset(word, halves[0], futex_lane_of(p), slice);
                if (st == futex::status::timed_out &&
                    (!deadline || std::chrono::steady_clock::now() < *deadline)) {
                    st = futex::status::interrupted;
                }
            }
        }
        switch (st) {
        case futex::status::woken:
            return wait_result::ok;
        case futex::status::timed_out:
            return wait_result::timed_out;
        case futex::status::changed:
        case futex::status::interrupted:
            if (deadline && std::chrono::steady_clock::now() >= *deadline) {
                return ref.load(std::memory_order_seq_cst) != expected ? wait_result::ok
                                                                       : wait_result::timed_out;
            }
            break; // re-check the value and sleep again
        }
    }
}

/// The wake-up of `atomic_view::notify`: in-process async waiters first (and the doorbell of
/// other processes' async waiters, when there are any), then the kernel's.
template <class T>
std::size_t notify_element(T* p, const wait_key& key, std::size_t count,
                           memfd_mapping::wake_words* wake) noexcept {
    std::size_t woken = async_wait_registry::instance().notify(key, count, wake);
    if (woken < count)
        woken += futex::wake_bitset(futex_word_of(p), count - woken, futex_lane_of(p));
    return woken;
}

/// The awaiter of `atomic_view::wait_async`: a node in the async wait registry plus a timer
/// on the awaiting coroutine's event loop. Exactly one of notify, timer and stop token
/// unlinks the node, and that one queues the coroutine's resumption on the loop.
template <class T>
class wait_async_awaiter : private async_waiter_node {
public:
    wait_async_awaiter(T* p, T expected, wait_key k, std::chrono::nanoseconds timeout,
                       std::stop_token token, std::shared_ptr<memfd_mapping> owner) noexcept
        : m_element(p), m_expected(expected), m_timeout(timeout), m_token(std::move(token)),
          m_owner(std::move(owner)) {
        key = k;
        shared_count = m_owner->wake() ? &m_owner->wake()->async_waiters : nullptr;
        unchanged = [](const async_waiter_node* node) noexcept {
            auto* self = static_cast<const wait_async_awaiter*>(node);
            return self->current() == self->m_expected;
        };
        on_notified = [](async_waiter_node* node) noexcept {
            auto* self = static_cast<wait_async_awaiter*>(node);
            self->m_result = wait_result::ok;
            self->m_loop->enqueue(&self->m_resume);
        };
        m_timer.context = this;
        m_timer.fire = [](timer_entry* e) noexcept {
            auto* self = static_cast<wait_async_awaiter*>(e->context);
            if (async_wait_registry::instance().unlink(self)) {
                self->m_result = wait_result::timed_out;
                self->m_loop->enqueue(&self->m_resume);
            }
        };
        m_resume.owner = this;
        m_resume.invoke = [](work_item* item, work_item::action a) noexcept {
            if (a != work_item::action::run) return;
            auto* self = static_cast<resume_item*>(item)->owner;
            // On the loop's thread: the timer is ours to withdraw.
            if (self->m_timer.queued()) loop_access::remove_timer(*self->m_loop, &self->m_timer);
            self->m_handle.resume();
        };
    }
    wait_async_awaiter(const wait_async_awaiter&) = delete;
    wait_async_awaiter& operator=(const wait_async_awaiter&) = delete;

    ~wait_async_awaiter() {
        // Destroyed while suspended (its loop is being destroyed): withdraw everything.
        if (m_loop == nullptr || m_resumed) return;
        async_wait_registry::instance().unlink(this);
        if (m_timer.queued()) loop_access::remove_timer(*m_loop, &m_timer);
    }

    bool await_ready() {
        if (m_token.stop_requested()) throw operation_cancelled();
        if (current() != m_expected) {
            m_result = wait_result::not_equal;
            return true;
        }
        if (m_timeout <= std::chrono::nanoseconds::zero()) {
            m_result = wait_result::timed_out;
            return true;
        }
        return false;
    }

    template <class Promise>
    bool await_suspend(std::coroutine_handle<Promise> h) {
        if (!m_token.stop_possible()) m_token = stop_token_of(h);
        m_loop = &require_loop("conflux::atomic_view::wait_async");
        m_handle = h;
        // The timer goes in first: it can only fire on this thread, after we return, and
        // nothing is left to undo if linking then fails.
        if (const auto deadline = deadline_after(m_timeout)) {
            m_timer.deadline = *deadline;
            loop_access::add_timer(*m_loop, &m_timer);
        }
        bool linked_now = false;
        try {
            linked_now = async_wait_registry::instance().link(this, m_owner);
        } catch (...) {
            if (m_timer.queued()) loop_access::remove_timer(*m_loop, &m_timer);
            throw;
        }
        if (!linked_now) {
            if (m_timer.queued()) loop_access::remove_timer(*m_loop, &m_timer);
            m_result = wait_result::not_equal;
            return false;
        }
        // From here a notify on another thread may already have queued our resumption; it
        // cannot run before we return to the loop.
        if (m_token.stop_possible()) m_callback.emplace(m_token, on_stop{this});
        return true;
    }

    wait_result await_resume() {
        m_resumed = true;
        m_callback.reset(); // waits for a stop callback running on another thread
        if (m_cancelled) throw operation_cancelled();
        return m_result;
    }

private:
    struct on_stop {
        wait_async_awaiter* self;
        void operator()() const noexcept {
            if (async_wait_registry::instance().unlink(self)) {
                self->m_cancelled = true;
                self->m_loop->enqueue(&self->m_resume);
            }
        }
    };

    struct resume_item : work_item {
        wait_async_awaiter* owner = nullptr;
    };

    T current() const noexcept {
        return std::atomic_ref<T>(*m_element).load(std::memory_order_seq_cst);
    }

    T* m_element;
    T m_expected;
    std::chrono::nanoseconds m_timeout;
    std::stop_token m_token;
    std::shared_ptr<memfd_mapping> m_owner;
    event_loop* m_loop = nullptr;
    std::coroutine_handle<> m_handle;
    timer_entry m_timer;
    resume_item m_resume;
    wait_result m_result = wait_result::ok;
    bool m_cancelled = false;
    bool m_resumed = false;
    std::optional<std::stop_callback<on_stop>> m_callback;
};

} // namespace detail
} // namespace conflux
