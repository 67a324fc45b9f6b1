#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/executor.hpp>
#include <conflux/detail/block_slab.hpp>
#include <conflux/detail/sigpipe.hpp>
#include <conflux/detail/thread_local.hpp>
#include <conflux/detail/work_item.hpp>

#include <concepts>
#include <condition_variable>
#include <coroutine>
#include <cstddef>
#include <mutex>
#include <new>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace conflux {

class thread_pool;

namespace detail {
// Reached out of line: see opaque_address.
[[gnu::noinline]] inline thread_pool*& current_pool_slot() noexcept {
    static thread_local thread_pool* slot = nullptr;
    return *opaque_address(&slot);
}

/// Where a pool's small posted callable leaves its block once it ran, for the pool thread
/// that ran it to give back to the pool's slab (under the lock it takes next anyway).
[[gnu::noinline]] inline work_item*& pool_returned_block_slot() noexcept {
    static thread_local work_item* slot = nullptr;
    return *opaque_address(&slot);
}

/// The size of the blocks a thread_pool recycles for small posted callables.
inline constexpr std::size_t pool_block_bytes = block_slab::block_bytes;

/// A small callable posted to a thread_pool, in a block the pool recycles: once it ran (and
/// it runs only on one of that pool's threads), it hands its block back through
/// pool_returned_block_slot instead of freeing it.
template <class F>
struct pooled_function : work_item {
    F fn;

    explicit pooled_function(F&& f) noexcept : fn(std::move(f)) {
        invoke = [](work_item* self, action a) noexcept {
            auto* me = static_cast<pooled_function*>(self);
            // A pool runs every item it queues, never discards one.
            if (a == action::run) me->fn(); // escaping exceptions terminate, as posted_function
            me->~pooled_function();
            pool_returned_block_slot() = self;
        };
    }
};

template <class F>
inline constexpr bool fits_pool_block = sizeof(pooled_function<F>) <= pool_block_bytes &&
                                        alignof(pooled_function<F>) <= alignof(std::max_align_t) &&
                                        std::is_nothrow_move_constructible_v<F>;
} // namespace detail

/// A fixed set of threads running posted work and the coroutines that hop onto it with
/// `co_await pool.schedule()`.
///
/// `post` and `schedule` are thread-safe. The destructor lets the threads finish everything
/// already queued (including work queued meanwhile), then joins them. Immovable.
///
/// ```
/// conflux::thread_pool pool(4);
/// co_await pool.schedule();      // now on a pool thread
/// auto digest = hash(data);
/// co_await loop.schedule();      // back on the loop (or simply return: awaiters resume
///                                // on their own executor)
/// ```
class thread_pool {
public:
    /// Starts `threads` threads (at least one).
    explicit thread_pool(std::size_t threads = default_thread_count()) {
        if (threads == 0) {
            throw std::invalid_argument("conflux::thread_pool: needs at least one thread");
        }
        m_threads.reserve(threads);
        // Made on a loop's thread that has SIGPIPE blocked for its run() (detail/sigpipe.hpp),
        // the threads would inherit that mask for good.
        const bool unblock_sigpipe = detail::sigpipe_blocked_by_conflux();
        try {
            for (std::size_t i = 0; i < threads; ++i) {
                m_threads.emplace_back([this, unblock_sigpipe] {
                    if (unblock_sigpipe) detail::unblock_inherited_sigpipe();
                    work();
                });
            }
        } catch (...) {
            shut_down();
            throw;
        }
    }

    thread_pool(const thread_pool&) = delete;
    thread_pool& operator=(const thread_pool&) = delete;

    ~thread_pool() { shut_down(); }

    /// The number of hardware threads, or 1 if unknown.
    static std::size_t default_thread_count() noexcept {
        unsigned n = std::thread::hardware_concurrency();
        return n == 0 ? 1 : n;
    }

    std::size_t size() const noexcept { return m_threads.size(); }

    /// Runs `f` on one of the pool's threads. Thread-safe. A small callable (up to 48 bytes,
    /// nothrow movable) goes into a block the pool recycles; a larger one is allocated once.
    template <std::invocable F>
    void post(F&& f) {
        using fn_t = std::decay_t<F>;
        if constexpr (detail::fits_pool_block<fn_t>) {
            fn_t fn(std::forward<F>(f));
            std::lock_guard lock(m_mutex);
            // Moved in under the lock: nothrow, and a few stores for such a callable.
            push_locked(::new (m_blocks.allocate()) detail::pooled_function<fn_t>(std::move(fn)));
        } else {
            enqueue(new detail::posted_function<fn_t>(fn_t(std::forward<F>(f))));
        }
    }

    /// Awaitable that resumes the awaiting coroutine on one of the pool's threads.
    [[nodiscard]] detail::schedule_awaiter<thread_pool> schedule() noexcept {
        return detail::schedule_awaiter<thread_pool>(*this);
    }

    /// True on the pool's own threads.
    bool running_in_this_thread() const noexcept { return detail::current_pool_slot() == this; }

    /// Low-level: queues an intrusive work item. Thread-safe.
    void enqueue(detail::work_item* item) noexcept {
        std::lock_guard lock(m_mutex);
        push_locked(item);
    }

private:
    void push_locked(detail::work_item* item) noexcept {
        m_queue.push(item);
        // Notify under the lock: once it is released, the item may run and lead to the
        // pool's destruction on another thread before a later notify would touch it.
        wake_one();
    }

    // Under the lock. A thread already being woken (notified and not yet back from its wait)
    // is not woken twice: a burst of posts wakes each sleeper once, not once per post.
    void wake_one() noexcept {
        if (m_idle > m_waking) {
            ++m_waking;
            m_wakeup.notify_one();
        }
    }

    void work() {
        detail::current_pool_slot() = this;
        detail::current_executor_scope scope{any_executor(*this)};
        // This thread never moves: the slot's address stays valid for its whole life.
        detail::work_item*& returned = detail::pool_returned_block_slot();
        std::unique_lock lock(m_mutex);
        for (;;) {
            if (returned) m_blocks.deallocate(std::exchange(returned, nullptr));
            if (m_queue.empty() && !m_stopping) wait_for_work(lock);
            detail::work_item* item = m_queue.pop();
            if (!item) return; // stopping and drained
            lock.unlock();
            detail::resume_item::run(item);
            lock.lock();
        }
    }

    // Under the lock, with the queue empty.
    void wait_for_work(std::unique_lock<std::mutex>& lock) {
        while (m_queue.empty() && !m_stopping) {
            ++m_idle;
            m_wakeup.wait(lock);
            --m_idle;
            if (m_waking > 0) --m_waking;
        }
    }

    void shut_down() noexcept {
        {
            std::lock_guard lock(m_mutex);
            m_stopping = true;
        }
        m_wakeup.notify_all();
        for (auto& t : m_threads) {
            if (t.joinable()) t.join();
        }
        m_threads.clear();
    }

    std::mutex m_mutex;
    std::condition_variable m_wakeup;
    detail::work_queue m_queue;
    std::size_t m_idle = 0;      // threads in m_wakeup.wait
    std::size_t m_waking = 0;    // of those, notified and not yet back
    detail::block_slab m_blocks; // holds small posted callables
    bool m_stopping = false;
    std::vector<std::thread> m_threads;
};

static_assert(executor<thread_pool>);

} // namespace conflux
