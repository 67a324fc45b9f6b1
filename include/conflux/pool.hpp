#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/executor.hpp>
#include <conflux/spawn_thread.hpp>
#include <conflux/task.hpp>
#include <conflux/thread_pool.hpp>
#include <conflux/detail/gcc12_temporaries.hpp>
#include <conflux/detail/native_thread.hpp>
#include <conflux/detail/pool_histogram.hpp>
#include <conflux/detail/pool_job.hpp>
#include <conflux/detail/waiter_list.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <limits>
#include <list>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace conflux {

/// Thrown by a pool's `run`/`try_run` when the pool cannot take the task: it is closed
/// (`close()` was called), it was destroyed with the task still queued, its queue is full
/// (`try_run`), or — for a `process_pool` — the worker process running the task died.
class pool_error : public error {
public:
    using error::error;
};

/// Options of a `worker_pool` (and of a `process_pool`), for designated initialisers:
/// `conflux::worker_pool pool({.minimum = 2, .maximum = 8, .max_queue = 1024});`
struct worker_pool_options {
    /// Tasks the queue may hold without bound.
    static constexpr std::size_t unbounded = std::numeric_limits<std::size_t>::max();

    /// Threads started at once and kept however idle (Piscina's `minThreads`).
    std::size_t minimum = 1;
    /// Threads at most; 0 for the number of hardware threads (Piscina's `maxThreads`).
    std::size_t maximum = 0;
    /// How long a thread above `minimum` stays idle before it ends (Piscina's
    /// `idleTimeout`); zero or negative: threads above the minimum never end while the pool
    /// is open.
    std::chrono::milliseconds idle_timeout{1000};
    /// Tasks that may wait for a thread once every thread (up to `maximum`) is busy
    /// (Piscina's `maxQueue`). Beyond it `run` waits for room and `try_run` fails.
    std::size_t max_queue = unbounded;
    /// The threads' name (ps, top, gdb; cut to 15 bytes) and the pool's in error messages.
    std::string name = "conflux-pool";
};

/// A histogram of durations (Piscina's `waitTime` and `runTime`): how many were recorded and
/// their distribution, in log-linear buckets each at most 12.5 % wide. Percentiles are the
/// upper bound of the bucket they fall in. A copied snapshot: it does not change afterwards.
class duration_histogram {
public:
    std::uint64_t count() const noexcept { return m_count; }

    /// The mean duration (exact); zero when empty.
    std::chrono::nanoseconds mean() const noexcept {
        return std::chrono::nanoseconds(m_count == 0 ? 0 : m_sum / m_count);
    }

    /// The longest duration recorded (exact); zero when empty.
    std::chrono::nanoseconds max() const noexcept {
        return std::chrono::nanoseconds(static_cast<std::int64_t>(m_max));
    }

    /// The duration below which `p` percent of the recorded ones fall (`percentile(99)`), at
    /// the bucket's precision and never above `max()`; zero when empty. Throws
    /// `std::invalid_argument` for `p` outside [0, 100].
    std::chrono::nanoseconds percentile(double p) const {
        if (!(p >= 0.0 && p <= 100.0)) {
            throw std::invalid_argument("conflux::duration_histogram::percentile: p must be in "
                                        "[0, 100]");
        }
        if (m_count == 0) return std::chrono::nanoseconds(0);
        auto rank = static_cast<std::uint64_t>(p / 100.0 * static_cast<double>(m_count) + 0.5);
        if (rank == 0) rank = 1;
        if (rank > m_count) rank = m_count;
        std::uint64_t seen = 0;
        for (std::size_t i = 0; i < m_buckets.size(); ++i) {
            seen += m_buckets[i];
            if (seen >= rank) {
                const std::uint64_t upper = detail::pool_buckets::upper(i);
                return std::chrono::nanoseconds(
                    static_cast<std::int64_t>(upper < m_max ? upper : m_max));
            }
        }
        return max();
    }

private:
    friend class worker_pool;
    friend class process_pool;

    void add(const detail::pool_recorder& r) noexcept { r.add_to(m_buckets, m_sum, m_max); }
    void finish() noexcept {
        m_count = 0;
        for (std::uint64_t c : m_buckets) m_count += c;
    }

    std::array<std::uint64_t, detail::pool_buckets::count> m_buckets{};
    std::uint64_t m_sum = 0;
    std::uint64_t m_max = 0;
    std::uint64_t m_count = 0;
};

/// What a pool reports about itself (`worker_pool::stats()`), read at one moment.
struct worker_pool_stats {
    /// Threads (or worker processes) alive or starting.
    std::size_t threads = 0;
    /// Of those, the ones waiting for a task.
    std::size_t idle = 0;
    /// Tasks in the queue, not yet taken by a thread (Piscina's `queueSize`).
    std::size_t queued = 0;
    /// Tasks whose `run` waits for room in a full queue.
    std::size_t waiting_for_room = 0;
    /// Tasks running now.
    std::size_t running = 0;
    /// Tasks that ran to an end, with a value or an exception (Piscina's `completed`).
    std::uint64_t completed = 0;
    /// Time from `run` to a thread taking the task (Piscina's `waitTime`).
    duration_histogram wait_time;
    /// Time the task ran (Piscina's `runTime`).
    duration_histogram run_time;
};

class worker_pool;

/// A pool of worker threads, each running its own `event_loop`, behind a bounded queue
/// (Piscina's `Piscina`, done in C++): `co_await pool.run(f, args...)` runs `f(args...)` on one
/// of the threads and resumes the caller with its result, or rethrows its exception.
///
/// - `f` may be a plain function (it runs on the thread and occupies it until it returns) or a
///   coroutine function returning `task<T>` (it runs on the thread's loop, so it may await
///   timers, channels, I/O; the thread takes its next task when it completes). If `f` takes a
///   `std::stop_token` first, it gets the task's token.
/// - The arguments and the result are moved, never copied: a `buffer` moved into a task, or
///   returned from one, changes hands without its bytes being touched.
/// - The pool starts `minimum` threads, grows up to `maximum` while tasks queue up, and lets a
///   thread above the minimum end after `idle_timeout` without work.
/// - `max_queue` bounds the tasks waiting for a thread once every thread is busy: beyond it
///   `run` waits for room, `try_run` throws `pool_error`.
/// - Cancellation, through the stop token the awaiting coroutine has (or inherits, as under
///   `when_any`): a task still queued is removed and its `run` throws `operation_cancelled`;
///   a running task sees its token stopped (what it then does is its own affair; its outcome
///   is what `run` gives).
/// - `co_await close()` refuses new tasks, lets the queued and running ones finish and ends
///   the threads. The destructor instead fails the queued tasks (`pool_error`), stops the
///   running ones' tokens and joins every thread before it returns.
///
/// `run`, `try_run` and `stats` are thread-safe; `run` is awaited on an `event_loop` or a
/// `thread_pool` (a pool's own tasks may use it) and resumes there. Immovable.
///
/// ```
/// conflux::worker_pool pool({.maximum = 4});
/// std::uint64_t n = co_await pool.run(count_primes, 0, 1'000'000);
/// ```
///
/// With GCC 12, a lambda with captures (or an aggregate) written in the call inside a
/// `co_await` would be destroyed twice, so such rvalues do not compile there (a static_assert
/// says what to write): name the lambda first, or pass what it captures as arguments.
class worker_pool {
public:
    /// Starts `options.minimum` threads. Throws `std::invalid_argument` when `minimum` exceeds
    /// `maximum` (after 0 became the hardware count), `std::system_error` ("pthread_create")
    /// when a thread cannot be started.
    explicit worker_pool(worker_pool_options options = {}) : m_options(std::move(options)) {
        if (m_options.maximum == 0) m_options.maximum = thread_pool::default_thread_count();
        if (m_options.minimum > m_options.maximum) {
            throw std::invalid_argument("conflux::worker_pool \"" + m_options.name +
                                        "\": minimum (" + std::to_string(m_options.minimum) +
                                        ") exceeds maximum (" + std::to_string(m_options.maximum) +
                                        ")");
        }
        try {
            for (std::size_t i = 0; i < m_options.minimum; ++i) {
                slot* s = nullptr;
                {
                    std::lock_guard lock(m_mutex);
                    ++m_threads;
                    s = &m_slots.emplace_back(*this);
                }
                start(*s);
            }
        } catch (...) {
            shut_down();
            throw;
        }
    }

    worker_pool(const worker_pool&) = delete;
    worker_pool& operator=(const worker_pool&) = delete;

    /// Fails the queued tasks with `pool_error`, stops the running tasks' tokens and joins
    /// every thread (waiting for running tasks to end).
    ~worker_pool() { shut_down(); }

    /// Awaitable: runs `f(args...)` (or `f(token, args...)`) on a pool thread and gives its
    /// result, or rethrows its exception. Waits for room when the queue is full. Resumes on
    /// the awaiter's executor. Throws `pool_error` after `close()` or when the pool is
    /// destroyed with the task queued, `operation_cancelled` when the awaiter's stop token
    /// removed the task from the queue.
    template <class F, class... Args>
    [[nodiscard]] task<spawn_thread_result_t<F, Args...>> run(F&& f, Args&&... args) {
        detail::pool_check_temporaries<F, Args...>();
        return run_impl<std::decay_t<F>, std::decay_t<Args>...>(true, std::forward<F>(f),
                                                                std::forward<Args>(args)...);
    }

    /// `run`, except that a full queue fails the task at once with `pool_error` instead of
    /// waiting for room (Piscina's behaviour with `maxQueue`).
    template <class F, class... Args>
    [[nodiscard]] task<spawn_thread_result_t<F, Args...>> try_run(F&& f, Args&&... args) {
        detail::pool_check_temporaries<F, Args...>();
        return run_impl<std::decay_t<F>, std::decay_t<Args>...>(false, std::forward<F>(f),
                                                                std::forward<Args>(args)...);
    }

    /// Refuses new tasks (`run` throws `pool_error`), waits until every task already accepted
    /// has run, then ends the threads and joins them. Resumes on the awaiter's executor.
    /// Idempotent.
    [[nodiscard]] task<void> close();

    /// True once `close()` was called (or the pool is being destroyed).
    bool closed() const {
        std::lock_guard lock(m_mutex);
        return m_closed;
    }

    /// The numbers a user can read: threads, queue, running, completed, and the wait and run
    /// time histograms. Thread-safe.
    worker_pool_stats stats() const;

    const worker_pool_options& options() const noexcept { return m_options; }

private:
    // One thread: its loop, its place in the idle list and the counters it alone writes.
    struct slot;

    // The awaiter inside `run`: queues the job, cancels it through the awaiter's token.
    template <class Job>
    class submit_awaiter;

    template <class F, class... Args>
    task<spawn_thread_result_t<F, Args...>> run_impl(bool wait, F f, Args... args) {
        using R = spawn_thread_result_t<F, Args...>;
        std::stop_token token = co_await get_stop_token();
        detail::pool_job_of<R, F, Args...> job(std::move(f), std::move(args)...);
        submit_awaiter<detail::pool_job_of<R, F, Args...>> awaiter(*this, job, std::move(token),
                                                                   wait);
        co_return co_await awaiter;
    }

    // Queues `job`, or hands it straight to an idle thread; starts a thread when every one is
    // busy and the pool may grow.
    void submit(detail::pool_job& job, bool wait);

    // The awaiter's stop callback: takes a waiting job back, or stops a running one's token.
    void cancel(detail::pool_job& job, std::stop_source& own) noexcept;

    // Under the lock: moves a job waiting for room into the queue.
    void refill() noexcept;

    void unlink_idle(slot& s) noexcept;

    // Under the lock: this thread ends (it is counted out; the last one wakes close()).
    detail::parking* count_out(slot& s) noexcept;

    // The thread's wait for its next job: the queue's oldest, a job handed over while idle,
    // or null when the thread is to end.
    struct next_job;

    // The idle timer fired on the thread's loop: the thread ends unless a job was handed to
    // it meanwhile (its wake-up is then on the way).
    void idle_expired(slot& s) noexcept;

    task<void> pump(slot& s);

    void start(slot& s);

    // Joins the threads that ended (all of them with `all`), folding their counters into the
    // pool's.
    void join_exited(bool all) noexcept;

    struct closer_awaiter;

    void shut_down() noexcept;

    worker_pool_options m_options;
    mutable std::mutex m_mutex;
    detail::pool_job_list m_queue;
    detail::pool_job_list m_overflow; // `run`s waiting for room in a full queue
    std::list<slot> m_slots;          // every thread not yet joined
    slot* m_idle_head = nullptr;      // most recently idle first
    std::size_t m_idle_count = 0;
    std::size_t m_threads = 0; // alive or starting
    std::size_t m_leaving = 0; // of those, ended by their idle timer and not exited yet
    bool m_closed = false;
    bool m_stopping = false;
    detail::parking* m_closer = nullptr;
    std::uint64_t m_retired_started = 0;
    std::uint64_t m_retired_completed = 0;
    detail::pool_recorder m_retired_wait;
    detail::pool_recorder m_retired_run;
    std::stop_source m_shutdown;
    std::stop_token m_shutdown_token = m_shutdown.get_token();
};

} // namespace conflux

// The private machinery of worker_pool, defined out of its class.
#include <conflux/detail/worker_pool_impl.hpp>
