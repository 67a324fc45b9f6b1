#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/executor.hpp>
#include <conflux/detail/sigpipe.hpp>
#include <conflux/detail/thread_local.hpp>
#include <conflux/detail/work_item.hpp>

#include <concepts>
#include <condition_variable>
#include <coroutine>
#include <cstddef>
#include <mutex>
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

    /// Runs `f` on one of the pool's threads. Thread-safe; allocates once to hold `f`.
    template <std::invocable F>
    void post(F&& f) {
        using fn_t = std::decay_t<F>;
        enqueue(new detail::posted_function<fn_t>(fn_t(std::forward<F>(f))));
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
        m_queue.push(item);
        // Notify under the lock: once it is released, the item may run and lead to the
        // pool's destruction on another thread before a later notify would touch it.
        if (m_idle > 0) m_wakeup.notify_one();
    }

private:
    void work() {
        detail::current_pool_slot() = this;
        detail::current_executor_scope scope{any_executor(*this)};
        std::unique_lock lock(m_mutex);
        for (;;) {
            while (m_queue.empty() && !m_stopping) {
                ++m_idle;
                m_wakeup.wait(lock);
                --m_idle;
            }
            detail::work_item* item = m_queue.pop();
            if (!item) return; // stopping and drained
            lock.unlock();
            detail::resume_item::run(item);
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

    std::mutex m_mutex;
    std::condition_variable m_wakeup;
    detail::work_queue m_queue;
    std::size_t m_idle = 0;
    bool m_stopping = false;
    std::vector<std::thread> m_threads;
};

static_assert(executor<thread_pool>);

} // namespace conflux
