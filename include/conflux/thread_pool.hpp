#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/executor.hpp>
#include <conflux/detail/pool_queue.hpp>
#include <conflux/detail/sigpipe.hpp>
#include <conflux/detail/spin.hpp>
#include <conflux/detail/thread_local.hpp>
#include <conflux/detail/work_item.hpp>

#include <atomic>
#include <chrono>
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
        m_thread_count = threads;
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

    /// Runs `f` on one of the pool's threads. Thread-safe. A small trivially copyable `f`
    /// (up to three pointers, such as a lambda capturing references or pointers) is copied
    /// into the pool's queue itself; any other `f` is moved into one allocation of its own.
    /// Throws `std::bad_alloc` if the queue cannot grow; `f` is then not run.
    template <std::invocable F>
    void post(F&& f) {
        using fn_t = std::decay_t<F>;
        if constexpr (detail::pool_cell::fits<fn_t> && std::is_invocable_v<fn_t&>) {
            const fn_t fn(std::forward<F>(f));
            bool queued;
            {
                std::lock_guard lock(m_mutex);
                queued = m_queue.push_inline(fn);
                if (queued) pushed();
            }
            if (!queued) throw std::bad_alloc();
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
        // Out of memory for the queue's next block, the item waits in the intrusive list,
        // which cannot fail; only its place in the order is lost.
        if (!m_queue.push_item(item)) m_overflow.push(item);
        pushed();
    }

    /// Low-level, for `schedule()`: queues `item` and returns the coroutine to resume now.
    /// On one of the pool's own threads with nothing else queued, that is the item's own
    /// coroutine, at once: the thread would only pop it again. With work queued there, the
    /// item joins the queue without waking another thread, since this one goes straight
    /// back to the queue.
    std::coroutine_handle<> enqueue_and_take_next(detail::work_item* item) noexcept {
        if (!running_in_this_thread() || item->invoke != &detail::resume_item::invoke_resume) {
            enqueue(item);
            return std::noop_coroutine();
        }
        {
            std::lock_guard lock(m_mutex);
            if (!m_queue.empty() || !m_overflow.empty()) {
                if (!m_queue.push_item(item)) m_overflow.push(item);
                m_pushes.store(m_pushes.load(std::memory_order_relaxed) + 1,
                               std::memory_order_relaxed);
                return std::noop_coroutine();
            }
        }
        return static_cast<detail::resume_item*>(item)->handle;
    }

private:
    // Called under the lock after each push. Notifies under the lock: once it is released,
    // the item may run and lead to the pool's destruction on another thread before a later
    // notify would touch it. A thread spinning for work takes the item without a wake-up,
    // and wakes a sleeper itself if more is queued.
    void pushed() noexcept {
        // A plain increment: written only under the lock; spinning threads read it unlocked
        // as a hint (relaxed), then look at the queue under the lock.
        m_pushes.store(m_pushes.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        if (m_idle > 0 && m_spinning == 0) m_wakeup.notify_one();
    }

    void work() {
        detail::current_pool_slot() = this;
        detail::current_executor_scope scope{any_executor(*this)};
        std::unique_lock lock(m_mutex);
        for (;;) {
            while (m_queue.empty() && m_overflow.empty() && !m_stopping) {
                // Spin a little for the next push before sleeping: a sleeper costs the poster
                // a wake-up call and itself a trip through the scheduler, many times a post.
                if (m_spin.should_spin()) {
                    ++m_spinning;
                    const unsigned seen = m_pushes.load(std::memory_order_relaxed);
                    lock.unlock();
                    const bool saw = detail::spin_until(
                        [&] { return m_pushes.load(std::memory_order_relaxed) != seen; },
                        spin_budget);
                    lock.lock();
                    --m_spinning;
                    m_spin.record(saw);
                    continue;
                }
                ++m_idle;
                m_wakeup.wait(lock);
                --m_idle;
            }
            // A share of the queue per lock, never more than the other threads' share, so
            // that a burst is not taken by one thread while others idle.
            const std::size_t queued = m_queue.size();
            const std::size_t share = (queued + m_thread_count - 1) / m_thread_count;
            detail::pool_cell batch[max_batch];
            void* retired = nullptr;
            if (std::size_t n =
                    m_queue.pop_some(batch, share < max_batch ? share : max_batch, retired)) {
                // Pushes seen by a spinning thread woke nobody: pass the rest on.
                if (!m_queue.empty() && m_idle > 0 && m_spinning == 0) m_wakeup.notify_one();
                lock.unlock();
                detail::pool_queue::delete_retired(retired);
                for (std::size_t i = 0; i < n; ++i) batch[i].run();
            } else if (detail::work_item* item = m_overflow.pop()) {
                lock.unlock();
                detail::resume_item::run(item);
            } else {
                return; // stopping and drained
            }
            lock.lock();
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

    static constexpr std::size_t max_batch = 8;
    static constexpr std::chrono::nanoseconds spin_budget{std::chrono::microseconds(20)};

    std::mutex m_mutex;
    std::condition_variable m_wakeup;
    detail::pool_queue m_queue;
    detail::work_queue m_overflow; // items that found no room in m_queue; see enqueue
    std::size_t m_idle = 0;        // threads asleep in m_wakeup
    std::size_t m_spinning = 0;    // threads spinning for m_pushes to change
    std::atomic<unsigned> m_pushes{0};
    detail::spin_governor m_spin;
    bool m_stopping = false;
    std::size_t m_thread_count = 0; // set before the threads start, which read it
    std::vector<std::thread> m_threads;
};

static_assert(executor<thread_pool>);

} // namespace conflux
