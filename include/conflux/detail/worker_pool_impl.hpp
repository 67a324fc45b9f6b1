#pragma once

// The private machinery of `worker_pool` (pool.hpp), defined out of its class: the thread
// slots, the queue hand-off, growth and idle shrinking, cancellation and shutdown. pool.hpp
// includes this header at its end; included first, this header includes pool.hpp, whose own
// include of it is then skipped.
#include <conflux/pool.hpp>

#include <atomic>
#include <chrono>
#include <coroutine>
#include <cstdint>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>

namespace conflux {

struct worker_pool::slot {
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
    bool leaving = false; // its idle timer ended it: counted in m_leaving until it exits
    bool exited = false;
    bool launched = false; // the thread handle is in place (under the lock)
    detail::timer_entry idle_timer;
    std::atomic<std::uint64_t> started{0};
    std::atomic<std::uint64_t> completed{0};
    detail::pool_recorder wait_time;
    detail::pool_recorder run_time;
    detail::native_thread thread;
};

template <class Job>
class worker_pool::submit_awaiter {
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

inline void worker_pool::submit(detail::pool_job& job, bool wait) {
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

inline void worker_pool::cancel(detail::pool_job& job, std::stop_source& own) noexcept {
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

inline void worker_pool::refill() noexcept {
    if (!m_overflow.empty() && m_queue.size() < m_options.max_queue) {
        detail::pool_job* j = m_overflow.pop_front();
        j->where = detail::pool_job::state::queued;
        m_queue.push_back(j);
    }
}

inline void worker_pool::unlink_idle(slot& s) noexcept {
    (s.idle_prev ? s.idle_prev->idle_next : m_idle_head) = s.idle_next;
    if (s.idle_next) s.idle_next->idle_prev = s.idle_prev;
    s.idle_prev = s.idle_next = nullptr;
    s.idle = false;
    --m_idle_count;
}

inline detail::parking* worker_pool::count_out(slot& s) noexcept {
    s.exited = true;
    if (std::exchange(s.leaving, false)) --m_leaving;
    --m_threads;
    return m_threads == 0 ? std::exchange(m_closer, nullptr) : nullptr;
}

struct worker_pool::next_job {
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
        // A timeout beyond a century (milliseconds::max()) is "never": now() + it would
        // overflow the clock and end the thread at once.
        constexpr auto never = std::chrono::hours(24 * 365 * 100);
        if (pool.m_threads > pool.m_options.minimum && pool.m_options.idle_timeout.count() > 0 &&
            pool.m_options.idle_timeout < never) {
            s.idle_timer.deadline = std::chrono::steady_clock::now() + pool.m_options.idle_timeout;
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
            if (s.idle_timer.queued()) detail::loop_access::remove_timer(*s.loop, &s.idle_timer);
            job = std::exchange(s.handoff, nullptr);
            if (!job) {
                std::lock_guard lock(pool.m_mutex);
                closer = pool.count_out(s);
            }
        }
        return job;
    }
};

inline void worker_pool::idle_expired(slot& s) noexcept {
    {
        std::lock_guard lock(m_mutex);
        // Not idle: a job was handed over and its wake-up is on the way.
        // Threads whose timers fire together must not all leave: those already on their way
        // out no longer count towards the minimum.
        if (!s.idle || m_threads - m_leaving <= m_options.minimum) return;
        ++m_leaving;
        s.leaving = true;
        unlink_idle(s);
        s.handoff = nullptr;
    }
    s.loop->enqueue(&s.wake);
}

inline task<void> worker_pool::pump(slot& s) {
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

inline void worker_pool::start(slot& s) {
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

inline void worker_pool::join_exited(bool all) noexcept {
    std::list<slot> done;
    for (bool unlaunched = true; unlaunched;) {
        std::unique_lock lock(m_mutex);
        unlaunched = false;
        for (auto it = m_slots.begin(); it != m_slots.end();) {
            auto next = std::next(it);
            // Not before start() handed the thread over (a failed start counts as handed).
            if (it->launched && (all || it->exited)) done.splice(done.end(), m_slots, it);
            // A thread grown just before close() may have counted out before the thread that
            // started it stored its handle: joining all of them waits for that store.
            if (all && !it->launched) unlaunched = true;
            it = next;
        }
        lock.unlock();
        if (unlaunched) std::this_thread::yield();
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

struct worker_pool::closer_awaiter {
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

inline void worker_pool::shut_down() noexcept {
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
        j->fail(std::make_exception_ptr(pool_error("conflux::worker_pool \"" + m_options.name +
                                                   "\": destroyed with the task still queued")));
        j->park.wake();
    }
    for (slot* s : idle) s->loop->enqueue(&s->wake);
    join_exited(true);
}

inline task<void> worker_pool::close() {
    closer_awaiter awaiter{*this};
    co_await awaiter;
    join_exited(true);
}

inline worker_pool_stats worker_pool::stats() const {
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

} // namespace conflux
