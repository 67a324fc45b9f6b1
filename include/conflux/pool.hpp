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

namespace detail {

/// A task handed to a pool: lives in the frame of the `run` that awaits it.
struct pool_job {
    enum class state : unsigned char { queued, overflow, running, finished };

    pool_job* prev = nullptr;
    pool_job* next = nullptr;
    state where = state::queued; // under the pool's lock until the job runs
    bool is_coroutine = false;
    parking park;                           // the awaiting coroutine
    const std::stop_token* token = nullptr; // the one the task sees
    std::chrono::steady_clock::time_point queued_at{};

    virtual void execute() noexcept = 0;    // a plain function: runs it, stores the outcome
    virtual task<void> execute_async() = 0; // a coroutine: awaits it, stores the outcome
    virtual void fail(std::exception_ptr e) noexcept = 0;

protected:
    ~pool_job() = default;
};

/// An intrusive FIFO of jobs (doubly linked, for cancellation).
class pool_job_list {
public:
    bool empty() const noexcept { return m_head == nullptr; }
    std::size_t size() const noexcept { return m_size; }

    void push_back(pool_job* j) noexcept {
        j->next = nullptr;
        j->prev = m_tail;
        if (m_tail) {
            m_tail->next = j;
        } else {
            m_head = j;
        }
        m_tail = j;
        ++m_size;
    }

    pool_job* pop_front() noexcept {
        pool_job* j = m_head;
        if (j) erase(j);
        return j;
    }

    void erase(pool_job* j) noexcept {
        (j->prev ? j->prev->next : m_head) = j->next;
        (j->next ? j->next->prev : m_tail) = j->prev;
        j->prev = j->next = nullptr;
        --m_size;
    }

private:
    pool_job* m_head = nullptr;
    pool_job* m_tail = nullptr;
    std::size_t m_size = 0;
};

/// With GCC 12, refuses the temporaries a `co_await pool.run(...)` would destroy twice.
template <class F, class... Args>
constexpr void pool_check_temporaries() noexcept {
#if CONFLUX_DETAIL_GCC12_TEMPORARIES
    static_assert(!gcc12_unsafe_rvalue<F> && !(gcc12_unsafe_rvalue<Args> || ...),
                  "GCC 12 destroys a lambda with captures, or an aggregate, written inside a "
                  "co_await expression twice: name it first (`auto fn = [v] {...}; co_await "
                  "pool.run(fn);`) or pass what it captures as arguments "
                  "(`pool.run([](T v) {...}, v)`) (GCC >= 13 and Clang accept it)");
#endif
}

template <class R, class F, class... Args>
class pool_job_of final : public pool_job {
    using call_t = call_result_t<F, Args...>;

public:
    explicit pool_job_of(F f, Args... args) : m_fn(std::move(f)), m_args(std::move(args)...) {
        is_coroutine = unwrap_task<call_t>::is_task;
    }

    void execute() noexcept override {
        if constexpr (!unwrap_task<call_t>::is_task) {
            try {
                if constexpr (std::is_void_v<R>) {
                    call();
                    m_out.set_value();
                } else {
                    m_out.set_value(call());
                }
            } catch (...) {
                m_out.set_exception(std::current_exception());
            }
        }
    }

    task<void> execute_async() override {
        if constexpr (unwrap_task<call_t>::is_task) {
            try {
                task<R> t = with_stop_token(call(), *token);
                if constexpr (std::is_void_v<R>) {
                    co_await std::move(t);
                    m_out.set_value();
                } else {
                    m_out.set_value(co_await std::move(t));
                }
            } catch (...) {
                m_out.set_exception(std::current_exception());
            }
        }
        co_return;
    }

    void fail(std::exception_ptr e) noexcept override { m_out.set_exception(std::move(e)); }

    R take() { return m_out.take(); }

private:
    decltype(auto) call() {
        return std::apply(
            [this](Args&... a) -> decltype(auto) { return invoke_with_token(m_fn, *token, a...); },
            m_args);
    }

    F m_fn;
    std::tuple<Args...> m_args;
    result<R> m_out;
};

} // namespace detail

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
    [[nodiscard]] task<void> close() {
        closer_awaiter awaiter{*this};
        co_await awaiter;
        join_exited(true);
    }

    /// True once `close()` was called (or the pool is being destroyed).
    bool closed() const {
        std::lock_guard lock(m_mutex);
        return m_closed;
    }

    /// The numbers a user can read: threads, queue, running, completed, and the wait and run
    /// time histograms. Thread-safe.
    worker_pool_stats stats() const {
        worker_pool_stats out;
        std::lock_guard lock(m_mutex);
        out.threads = m_threads;
        out.idle = m_idle_count;
        out.queued = m_queue.size();
        out.waiting_for_room = m_overflow.size();
        std::uint64_t started = m_retired_started;
        out.completed = m_retired_completed;
        out.wait_time.add(m_retired_wait);
        out.run_time.add(m_retired_run);
        for (const slot& s : m_slots) {
            started += s.started.load(std::memory_order_relaxed);
            out.completed += s.completed.load(std::memory_order_relaxed);
            out.wait_time.add(s.wait_time);
            out.run_time.add(s.run_time);
        }
        out.running = static_cast<std::size_t>(started - out.completed);
        out.wait_time.finish();
        out.run_time.finish();
        return out;
    }

    const worker_pool_options& options() const noexcept { return m_options; }

private:
    // One thread: its loop, its place in the idle list and the counters it alone writes.
    struct slot {
        explicit slot(worker_pool& p) : pool(p) {
            wake.handle = {};
            idle_timer.context = this;
            idle_timer.fire = [](detail::timer_entry* e) noexcept {
                static_cast<slot*>(e->context)->pool.idle_expired(*static_cast<slot*>(e->context));
            };
        }
        worker_pool& pool;
        event_loop* loop = nullptr;
        detail::resume_item wake;
        detail::pool_job* handoff = nullptr; // a job given to it while idle; null: end
        slot* idle_prev = nullptr;
        slot* idle_next = nullptr;
        bool idle = false;
        bool exited = false;
        bool launched = false; // the thread handle is in place (under the lock)
        detail::timer_entry idle_timer;
        std::atomic<std::uint64_t> started{0};
        std::atomic<std::uint64_t> completed{0};
        detail::pool_recorder wait_time;
        detail::pool_recorder run_time;
        detail::native_thread thread;
    };

    // The awaiter inside `run`: queues the job, cancels it through the awaiter's token.
    template <class Job>
    class submit_awaiter {
    public:
        submit_awaiter(worker_pool& pool, Job& job, std::stop_token caller, bool wait)
            : m_pool(pool), m_job(job), m_caller(std::move(caller)), m_wait(wait) {}
        submit_awaiter(const submit_awaiter&) = delete;
        submit_awaiter& operator=(const submit_awaiter&) = delete;

        bool await_ready() const {
            if (m_caller.stop_requested()) throw operation_cancelled();
            return false;
        }

        bool await_suspend(std::coroutine_handle<> h) {
            any_executor e = current_executor();
            if (!e) {
                throw std::logic_error("conflux::worker_pool::run must be awaited on an "
                                       "event_loop or thread_pool thread");
            }
            m_job.park.prepare(h, e);
            if (m_caller.stop_possible()) {
                // A task of its own to stop: the caller's token and the pool's shutdown both
                // reach it.
                m_own.emplace();
                m_own_token = m_own->get_token();
                m_job.token = &m_own_token;
                m_shutdown.emplace(m_pool.m_shutdown_token, forward_stop{&*m_own});
            } else {
                m_job.token = &m_pool.m_shutdown_token;
            }
            m_pool.submit(m_job, m_wait);
            // After submit: a token already stopped runs the callback here, which finds the
            // job queued and takes it back.
            if (m_caller.stop_possible()) m_cancel.emplace(m_caller, cancel{this});
            return m_job.park.finish_suspend(false);
        }

        decltype(auto) await_resume() {
            m_cancel.reset(); // waits for a callback running on another thread
            m_shutdown.reset();
            return m_job.take();
        }

    private:
        struct forward_stop {
            std::stop_source* source;
            void operator()() const noexcept { source->request_stop(); }
        };
        struct cancel {
            submit_awaiter* self;
            void operator()() const noexcept { self->m_pool.cancel(self->m_job, *self->m_own); }
        };

        worker_pool& m_pool;
        Job& m_job;
        std::stop_token m_caller;
        bool m_wait;
        std::optional<std::stop_source> m_own;
        std::stop_token m_own_token;
        std::optional<std::stop_callback<forward_stop>> m_shutdown;
        std::optional<std::stop_callback<cancel>> m_cancel;
    };

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
    void submit(detail::pool_job& job, bool wait) {
        job.queued_at = std::chrono::steady_clock::now();
        slot* woken = nullptr;
        slot* grown = nullptr;
        {
            std::lock_guard lock(m_mutex);
            if (m_closed) {
                throw pool_error("conflux::worker_pool \"" + m_options.name +
                                 "\": run() after close()");
            }
            if (m_idle_head) {
                woken = m_idle_head;
                unlink_idle(*woken);
                woken->handoff = &job;
                job.where = detail::pool_job::state::running;
                woken->started.store(woken->started.load(std::memory_order_relaxed) + 1,
                                     std::memory_order_relaxed);
            } else if (m_threads < m_options.maximum) {
                // A new thread takes it from the queue: it never waits for room.
                ++m_threads;
                grown = &m_slots.emplace_back(*this);
                job.where = detail::pool_job::state::queued;
                m_queue.push_back(&job);
            } else if (m_queue.size() < m_options.max_queue) {
                job.where = detail::pool_job::state::queued;
                m_queue.push_back(&job);
            } else if (wait) {
                job.where = detail::pool_job::state::overflow;
                m_overflow.push_back(&job);
            } else {
                throw pool_error("conflux::worker_pool \"" + m_options.name +
                                 "\": the queue is full (max_queue " +
                                 std::to_string(m_options.max_queue) + ")");
            }
        }
        if (woken) {
            woken->loop->enqueue(&woken->wake);
        } else if (grown) {
            join_exited(false);
            try {
                start(*grown);
            } catch (...) {
                // No thread for it: take the job back if no other thread can run it.
                std::lock_guard lock(m_mutex);
                --m_threads;
                grown->exited = true;
                grown->launched = true;
                if (m_threads == 0 && job.where == detail::pool_job::state::queued) {
                    m_queue.erase(&job);
                    throw;
                }
            }
        }
    }

    // The awaiter's stop callback: takes a waiting job back, or stops a running one's token.
    void cancel(detail::pool_job& job, std::stop_source& own) noexcept {
        bool running = false;
        {
            std::lock_guard lock(m_mutex);
            if (job.where == detail::pool_job::state::queued) {
                m_queue.erase(&job);
                refill();
            } else if (job.where == detail::pool_job::state::overflow) {
                m_overflow.erase(&job);
            } else {
                running = true;
            }
            if (!running) job.where = detail::pool_job::state::finished;
        }
        if (running) {
            // Outside the lock: the task's own stop callbacks may reach this pool (a task
            // awaiting a nested run).
            own.request_stop();
            return;
        }
        job.fail(std::make_exception_ptr(operation_cancelled()));
        job.park.wake();
    }

    // Under the lock: moves a job waiting for room into the queue.
    void refill() noexcept {
        if (!m_overflow.empty() && m_queue.size() < m_options.max_queue) {
            detail::pool_job* j = m_overflow.pop_front();
            j->where = detail::pool_job::state::queued;
            m_queue.push_back(j);
        }
    }

    void unlink_idle(slot& s) noexcept {
        (s.idle_prev ? s.idle_prev->idle_next : m_idle_head) = s.idle_next;
        if (s.idle_next) s.idle_next->idle_prev = s.idle_prev;
        s.idle_prev = s.idle_next = nullptr;
        s.idle = false;
        --m_idle_count;
    }

    // Under the lock: this thread ends (it is counted out; the last one wakes close()).
    detail::parking* count_out(slot& s) noexcept {
        s.exited = true;
        --m_threads;
        return m_threads == 0 ? std::exchange(m_closer, nullptr) : nullptr;
    }

    // The thread's wait for its next job: the queue's oldest, a job handed over while idle,
    // or null when the thread is to end.
    struct next_job {
        next_job(worker_pool& p, slot& sl) noexcept : pool(p), s(sl) {}
        worker_pool& pool;
        slot& s;
        detail::pool_job* job = nullptr;
        detail::parking* closer = nullptr;
        bool suspended = false;

        bool await_ready() const noexcept { return false; }

        bool await_suspend(std::coroutine_handle<> h) noexcept {
            std::lock_guard lock(pool.m_mutex);
            if (!pool.m_stopping &&
                ((job = pool.m_queue.pop_front()) || (job = pool.m_overflow.pop_front()))) {
                job->where = detail::pool_job::state::running;
                pool.refill();
                s.started.store(s.started.load(std::memory_order_relaxed) + 1,
                                std::memory_order_relaxed);
                return false;
            }
            if (pool.m_closed) {
                closer = pool.count_out(s);
                return false;
            }
            s.wake.handle = h;
            s.handoff = nullptr;
            s.idle = true;
            s.idle_prev = nullptr;
            s.idle_next = pool.m_idle_head;
            if (pool.m_idle_head) pool.m_idle_head->idle_prev = &s;
            pool.m_idle_head = &s;
            ++pool.m_idle_count;
            if (pool.m_threads > pool.m_options.minimum &&
                pool.m_options.idle_timeout.count() > 0) {
                s.idle_timer.deadline =
                    std::chrono::steady_clock::now() + pool.m_options.idle_timeout;
                detail::loop_access::add_timer(*s.loop, &s.idle_timer);
            }
            suspended = true;
            return true;
        }

        detail::pool_job* await_resume() noexcept {
            if (closer) return nullptr;
            if (s.wake.handle) {
                // Woken from idle: by a job, by close/destruction, or by the idle timer.
                s.wake.handle = {};
                if (s.idle_timer.queued())
                    detail::loop_access::remove_timer(*s.loop, &s.idle_timer);
                job = std::exchange(s.handoff, nullptr);
                if (!job) {
                    std::lock_guard lock(pool.m_mutex);
                    closer = pool.count_out(s);
                }
            }
            return job;
        }
    };

    // The idle timer fired on the thread's loop: the thread ends unless a job was handed to
    // it meanwhile (its wake-up is then on the way).
    void idle_expired(slot& s) noexcept {
        {
            std::lock_guard lock(m_mutex);
            // Not idle: a job was handed over and its wake-up is on the way.
            if (!s.idle || m_threads <= m_options.minimum) return;
            unlink_idle(s);
            s.handoff = nullptr;
        }
        s.loop->enqueue(&s.wake);
    }

    task<void> pump(slot& s) {
        // A thread that takes its next job without waiting starts it when the previous one
        // ended: one clock read per job instead of two, which matters where reading the clock
        // costs 100 ns or more (virtual machines). Wait times then leave out the previous
        // job's hand-back (microseconds).
        std::chrono::steady_clock::time_point end{};
        bool have_end = false;
        for (;;) {
            next_job wait{*this, s};
            detail::pool_job* job = co_await wait;
            if (!job) {
                // The last touch of the pool by this thread: close() may then free it.
                if (wait.closer) wait.closer->wake();
                co_return;
            }
            const auto begin = have_end && !wait.suspended ? end : std::chrono::steady_clock::now();
            s.wait_time.record(begin - job->queued_at);
            if (job->is_coroutine) {
                co_await job->execute_async();
            } else {
                job->execute();
            }
            end = std::chrono::steady_clock::now();
            have_end = true;
            s.run_time.record(end - begin);
            s.completed.store(s.completed.load(std::memory_order_relaxed) + 1,
                              std::memory_order_relaxed);
            job->park.wake(); // the job may be gone after this
        }
    }

    void start(slot& s) {
        slot* sp = &s;
        detail::native_thread thread(
            [this, sp]() noexcept {
                event_loop loop;
                sp->loop = &loop;
                try {
                    loop.run_until_complete(pump(*sp));
                } catch (...) {
                    // Only the reactor's own failure (EMFILE), as the thread went idle, gets
                    // here: the thread ends, and a job handed to it meanwhile fails.
                    detail::parking* closer = nullptr;
                    detail::pool_job* orphan = nullptr;
                    {
                        std::lock_guard lock(m_mutex);
                        if (sp->idle) unlink_idle(*sp);
                        orphan = std::exchange(sp->handoff, nullptr);
                        if (!sp->exited) closer = count_out(*sp);
                    }
                    if (orphan) {
                        orphan->fail(std::current_exception());
                        orphan->park.wake();
                    }
                    if (closer) closer->wake();
                }
            },
            detail::thread_options{m_options.name, 0});
        // Under the lock: the thread may already have ended, and another caller may be
        // about to join it.
        std::lock_guard lock(m_mutex);
        s.thread = std::move(thread);
        s.launched = true;
    }

    // Joins the threads that ended (all of them with `all`), folding their counters into the
    // pool's.
    void join_exited(bool all) noexcept {
        std::list<slot> done;
        {
            std::lock_guard lock(m_mutex);
            for (auto it = m_slots.begin(); it != m_slots.end();) {
                auto next = std::next(it);
                // Not before start() handed the thread over (a failed start counts as handed).
                if (it->launched && (all || it->exited)) done.splice(done.end(), m_slots, it);
                it = next;
            }
        }
        if (done.empty()) return;
        for (slot& s : done) s.thread.join();
        std::lock_guard lock(m_mutex);
        for (slot& s : done) {
            m_retired_started += s.started.load(std::memory_order_relaxed);
            m_retired_completed += s.completed.load(std::memory_order_relaxed);
            m_retired_wait.merge(s.wait_time);
            m_retired_run.merge(s.run_time);
        }
    }

    struct closer_awaiter {
        explicit closer_awaiter(worker_pool& p) noexcept : pool(p) {}
        worker_pool& pool;
        bool await_ready() const noexcept { return false; }
        bool await_suspend(std::coroutine_handle<> h) {
            any_executor e = current_executor();
            if (!e) {
                throw std::logic_error("conflux::worker_pool::close must be awaited on an "
                                       "event_loop or thread_pool thread");
            }
            m_park.prepare(h, e);
            std::vector<slot*> idle;
            {
                std::lock_guard lock(pool.m_mutex);
                pool.m_closed = true;
                if (pool.m_threads == 0) return false;
                if (pool.m_closer) {
                    throw std::logic_error("conflux::worker_pool::close: already being awaited");
                }
                pool.m_closer = &m_park;
                while (slot* s = pool.m_idle_head) {
                    pool.unlink_idle(*s);
                    s->handoff = nullptr;
                    idle.push_back(s);
                }
            }
            for (slot* s : idle) s->loop->enqueue(&s->wake);
            return m_park.finish_suspend(false);
        }
        void await_resume() const noexcept {}
        detail::parking m_park;
    };

    void shut_down() noexcept {
        detail::pool_job_list failed;
        std::vector<slot*> idle;
        {
            std::lock_guard lock(m_mutex);
            m_closed = true;
            m_stopping = true;
            // Marked finished under the lock: a cancellation racing with us then leaves them.
            while (detail::pool_job* j = m_queue.pop_front()) {
                j->where = detail::pool_job::state::finished;
                failed.push_back(j);
            }
            while (detail::pool_job* j = m_overflow.pop_front()) {
                j->where = detail::pool_job::state::finished;
                failed.push_back(j);
            }
            while (slot* s = m_idle_head) {
                unlink_idle(*s);
                s->handoff = nullptr;
                idle.push_back(s);
            }
        }
        m_shutdown.request_stop();
        while (detail::pool_job* j = failed.pop_front()) {
            j->fail(
                std::make_exception_ptr(pool_error("conflux::worker_pool \"" + m_options.name +
                                                   "\": destroyed with the task still queued")));
            j->park.wake();
        }
        for (slot* s : idle) s->loop->enqueue(&s->wake);
        join_exited(true);
    }

    worker_pool_options m_options;
    mutable std::mutex m_mutex;
    detail::pool_job_list m_queue;
    detail::pool_job_list m_overflow; // `run`s waiting for room in a full queue
    std::list<slot> m_slots;          // every thread not yet joined
    slot* m_idle_head = nullptr;      // most recently idle first
    std::size_t m_idle_count = 0;
    std::size_t m_threads = 0; // alive or starting
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
