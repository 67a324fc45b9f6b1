#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/executor.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/driver.hpp>
#include <conflux/detail/epoll.hpp>
#include <conflux/detail/loop_close_hooks.hpp>
#include <conflux/detail/loop_sleep.hpp>
#include <conflux/detail/mpsc_stack.hpp>
#include <conflux/detail/sigpipe.hpp>
#include <conflux/detail/thread_identity.hpp>
#include <conflux/detail/thread_local.hpp>
#include <conflux/detail/timer_heap.hpp>
#include <conflux/detail/work_item.hpp>

#include <atomic>
#include <chrono>
#include <concepts>
#include <coroutine>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_set>
#include <utility>

namespace conflux {

class event_loop;

namespace detail {
// Reached out of line: see opaque_address.
[[gnu::noinline]] inline event_loop*& current_loop_slot() noexcept {
    static thread_local event_loop* slot = nullptr;
    return *opaque_address(&slot);
}
struct loop_access;

} // namespace detail

/// A single-threaded event loop: a queue of ready coroutines, a timer heap and an epoll
/// reactor for fd readiness, all served by the one thread inside `run()`. The reactor's
/// descriptors are opened when the loop first watches an fd: a loop that only runs ready
/// work, timers and wake-ups from other threads (a worker's, a channel consumer's) opens
/// none, and sleeps on a futex while it watches no fd.
///
/// `post` and `schedule` may be used from any thread; everything else that touches the
/// loop's state (streams, child processes, timers) belongs to the loop's thread. An event
/// loop is immovable: queued coroutines point into it.
///
/// Shutdown: a stopped loop keeps what was posted to it and runs it at the next `run()`.
/// Destroying the loop destroys the frames of its detached tasks still suspended (each
/// exactly once, with the tasks they await), and releases queued work without running it.
/// A task detached while that happens (by a destructor in one of those frames) is destroyed
/// at once, never started. Objects still bound to the loop (a `child_process` handle kept
/// beyond it) are told to let go of it. Posting to a loop that is being or has been
/// destroyed from another thread is undefined.
class event_loop {
public:
    event_loop() = default;
    event_loop(const event_loop&) = delete;
    event_loop& operator=(const event_loop&) = delete;

    ~event_loop() {
        m_closing = true;
        // A thread that queued the work that led here may still be inside enqueue() or
        // stop(), about to wake us: let it leave before the members go.
        while (m_foreign_callers.load(std::memory_order_seq_cst) != 0) {
            std::this_thread::yield();
        }
        // Queued work first, while every frame an item may live in is still alive: posted
        // callables are destroyed, coroutine resumptions dropped.
        m_remote.take_into(m_ready);
        m_ready.discard_all();
        // Then the frames: their awaiters withdraw timers and fd interest from structures
        // that are still alive.
        for (void* address : std::exchange(m_detached, {})) {
            std::coroutine_handle<>::from_address(address).destroy();
        }
        // What outlives the frames (handles the user kept) lets go of the loop while its
        // reactor and timers still exist.
        while (detail::loop_close_hook* hook = m_close_hooks.take_first()) hook->on_close(hook);
        // Whatever that queued (a stop callback racing on another thread, which each frame's
        // destruction waited for) lives in freed frames: forget it without touching it.
        m_remote.forget_all();
        m_ready.forget_all();
        m_timers.clear();
    }

    /// Runs ready work, timers and I/O on the calling thread until `stop()` is called (or,
    /// through `conflux::run`, until the main task completes). Rethrows the first exception
    /// that escaped a detached task, after stopping.
    void run() {
        if (m_running.exchange(true, std::memory_order_acq_rel)) {
            throw std::logic_error("conflux::event_loop::run: the loop is already running");
        }
        struct running_guard {
            event_loop& loop;
            event_loop* previous;
            ~running_guard() {
                detail::current_loop_slot() = previous;
                loop.m_owner.store(0, std::memory_order_relaxed);
                loop.m_stop_requested.store(false, std::memory_order_relaxed);
                loop.m_running.store(false, std::memory_order_release);
            }
        } guard{*this, std::exchange(detail::current_loop_slot(), this)};
        m_owner.store(detail::thread_identity(), std::memory_order_relaxed);
        detail::current_executor_scope scope{any_executor(*this)};
        detail::sigpipe_run_scope sigpipe; // see detail/sigpipe.hpp

        unsigned batches = 0;
        while (!m_stop_requested.load(std::memory_order_acquire)) {
            m_remote.take_into(m_ready);
            if (!m_ready.empty()) {
                run_ready_batch();
                // A loop that always has ready work (an endless ping-pong) still serves
                // timers and I/O every so often.
                if (++batches % 16 == 0) {
                    fire_due_timers();
                    // Without a watched fd nothing can be ready.
                    if (m_reactor && m_reactor->watching()) {
                        m_reactor->wait(std::optional<std::chrono::nanoseconds>(0));
                    }
                }
                continue;
            }
            fire_due_timers();
            if (!m_ready.empty()) continue;
            if (m_stop_requested.load(std::memory_order_acquire)) break;
            sleep_until_work();
        }
        if (m_detached_error) {
            std::rethrow_exception(std::exchange(m_detached_error, nullptr));
        }
    }

    /// Makes the current (or, if none is under way, the next) `run()` return after the work
    /// item in progress. Thread-safe.
    void stop() noexcept {
        if (running_in_this_thread()) {
            m_stop_requested.store(true, std::memory_order_release);
            return;
        }
        foreign_call guard(*this);
        // seq_cst: the loop re-checks the request after it announces its sleep (see
        // detail/loop_sleep.hpp).
        m_stop_requested.store(true, std::memory_order_seq_cst);
        m_sleep.wake();
    }

    /// Runs `f` on the loop's thread. Thread-safe; allocates once to hold `f`.
    template <std::invocable F>
    void post(F&& f) {
        using fn_t = std::decay_t<F>;
        enqueue(new detail::posted_function<fn_t>(fn_t(std::forward<F>(f))));
    }

    /// Awaitable that resumes the awaiting coroutine on this loop's thread: hops onto the loop
    /// from another thread, or yields to other ready work when already on it. Thread-safe.
    [[nodiscard]] detail::schedule_awaiter<event_loop> schedule() noexcept {
        return detail::schedule_awaiter<event_loop>(*this);
    }

    /// True on the thread that is inside this loop's `run()`.
    bool running_in_this_thread() const noexcept { return detail::current_loop_slot() == this; }

    /// The loop whose `run()` the calling thread is inside, or nullptr.
    static event_loop* current() noexcept { return detail::current_loop_slot(); }

    /// Starts `t` on this loop and lets the loop own it: its frame lives until it completes or
    /// the loop is destroyed. An exception escaping it stops the loop and is rethrown by
    /// `run()`. Thread-safe.
    void detach(task<void> t) {
        // A destructor running in one of the frames the loop's own destruction destroys (a
        // dropped child_process starting its reaper): nothing will run it, so it ends here.
        if (m_closing) return;
        auto* start = new detached_start(std::move(t), *this);
        enqueue(start);
    }

    /// Low-level: queues an intrusive work item (the allocation-free path of post).
    /// Thread-safe.
    void enqueue(detail::work_item* item) noexcept {
        // The thread inside run() (the common case: a coroutine yielding or waking another)
        // pushes without atomics. Another thread never reads its own identity here: it wrote
        // 0 when its own run() ended, and sees that or a later owner.
        if (m_owner.load(std::memory_order_relaxed) == detail::thread_identity()) {
            m_ready.push(item);
            return;
        }
        foreign_call guard(*this);
        // A seq_cst push: the loop re-checks the queue after it announces its sleep (see
        // detail/loop_sleep.hpp). No system call unless the loop sleeps.
        m_remote.push(item);
        m_sleep.wake();
    }

    /// Low-level, for `schedule()`: queues `item`; on the loop's own thread, inside a batch of
    /// ready work, also takes the oldest ready coroutine off the queue and returns it to be
    /// resumed at once by symmetric transfer (the caller's own, when nothing else is ready).
    /// Otherwise returns `std::noop_coroutine()`. Thread-safe.
    std::coroutine_handle<> enqueue_and_take_next(detail::resume_item* item) noexcept {
        if (m_owner.load(std::memory_order_relaxed) != detail::thread_identity()) {
            enqueue(item);
            return std::noop_coroutine();
        }
        m_ready.push(item);
        // The budget is set only while run_ready_batch runs: outside it (a timer firing, an
        // fd event) the queue is left to the batch. Each transfer counts against the batch,
        // so timers, I/O and other threads' work keep their turn.
        if (m_batch_budget > 0 && !m_stop_requested.load(std::memory_order_relaxed)) {
            detail::work_item* next = m_ready.front();
            if (next->invoke == &detail::resume_item::invoke_resume) {
                m_ready.pop();
                --m_batch_budget;
                return static_cast<detail::resume_item*>(next)->handle;
            }
        }
        return std::noop_coroutine();
    }

    /// Runs `t` to completion on this loop (on the calling thread) and returns its value or
    /// rethrows its exception. This is what `conflux::run` does with a fresh loop.
    template <class T>
    T run_until_complete(task<T> t) {
        if (m_running.load(std::memory_order_acquire)) {
            throw std::logic_error(
                "conflux::event_loop::run_until_complete: the loop is already running");
        }
        detail::result<T> out;
        detail::driver d = detail::drive_into(std::move(t), out);
        d.configure(
            [](void* self, std::coroutine_handle<>) noexcept -> std::coroutine_handle<> {
                static_cast<event_loop*>(self)->stop();
                return std::noop_coroutine();
            },
            this);
        detail::resume_item start;
        start.handle = d.handle();
        enqueue(&start);
        try {
            run();
        } catch (...) {
            abandon_task(d);
            throw;
        }
        if (!out.ready()) {
            abandon_task(d);
            throw std::logic_error(
                "conflux::event_loop::run_until_complete: the loop was stopped before the task "
                "completed");
        }
        return out.take();
    }

private:
    friend struct detail::loop_access;

    // run_until_complete's task did not complete (the loop failed or was stopped): destroys
    // its frames now, before `start` and `d` go out of scope, the way the destructor does.
    // Queued work first, while the frames are alive; then the frames, whose waits may have
    // been claimed by another thread just before (a channel sender waking a receive): the
    // destruction of such a wait lets that thread finish, and the resumption it queued lives
    // in a freed frame, so it is forgotten without being touched.
    void abandon_task(detail::driver& d) noexcept {
        m_remote.take_into(m_ready);
        m_ready.discard_all();
        d.reset();
        while (m_foreign_callers.load(std::memory_order_seq_cst) != 0) {
            std::this_thread::yield();
        }
        m_remote.forget_all();
        m_ready.forget_all();
    }

    // Marks a call from another thread that touches the loop after making work visible to
    // it: that work may end in the loop's destruction, which then waits for the call to end.
    class foreign_call {
    public:
        explicit foreign_call(event_loop& loop) noexcept : m_loop(loop) {
            m_loop.m_foreign_callers.fetch_add(1, std::memory_order_seq_cst);
        }
        foreign_call(const foreign_call&) = delete;
        foreign_call& operator=(const foreign_call&) = delete;
        ~foreign_call() { m_loop.m_foreign_callers.fetch_sub(1, std::memory_order_seq_cst); }

    private:
        event_loop& m_loop;
    };

    struct detached_start : detail::work_item {
        task<void> t;
        event_loop& loop;

        detached_start(task<void>&& body, event_loop& owner) : t(std::move(body)), loop(owner) {
            invoke = [](work_item* self, action a) noexcept {
                auto* me = static_cast<detached_start*>(self);
                if (a == action::run) me->loop.start_detached(std::move(me->t));
                delete me;
            };
        }
    };

    static detail::driver detached_body(task<void> t, event_loop* loop) {
        try {
            co_await std::move(t);
        } catch (...) {
            if (!loop->m_detached_error) loop->m_detached_error = std::current_exception();
            loop->stop();
        }
    }

    void start_detached(task<void> t) noexcept {
        detail::driver d = detached_body(std::move(t), this);
        d.configure(
            [](void* self, std::coroutine_handle<> frame) noexcept -> std::coroutine_handle<> {
                static_cast<event_loop*>(self)->m_detached.erase(frame.address());
                frame.destroy();
                return std::noop_coroutine();
            },
            this);
        auto h = d.release();
        try {
            m_detached.insert(h.address());
        } catch (...) {
            h.destroy();
            if (!m_detached_error) m_detached_error = std::current_exception();
            stop();
            return;
        }
        h.resume();
    }

    // Runs ready work, including work it queues, up to a bound, so that other threads' work,
    // timers and I/O get their turn between batches.
    void run_ready_batch() noexcept {
        m_batch_budget = 256;
        while (m_batch_budget > 0) {
            --m_batch_budget;
            detail::work_item* item = m_ready.pop();
            if (!item) break;
            detail::resume_item::run(item);
            if (m_stop_requested.load(std::memory_order_relaxed)) break;
        }
        m_batch_budget = 0;
    }

    void fire_due_timers() noexcept {
        if (m_timers.empty()) return;
        auto now = std::chrono::steady_clock::now();
        while (!m_timers.empty() && m_timers.top()->deadline <= now) {
            detail::timer_entry* entry = m_timers.pop();
            entry->fire(entry);
        }
    }

    // The reactor, created when the loop first watches an fd, by the loop's thread. Other
    // threads reach it only through m_sleep, once the loop sleeps in it.
    detail::io_reactor& reactor() {
        if (!m_reactor) m_reactor.emplace();
        return *m_reactor;
    }

    void sleep_until_work() {
        detail::loop_sleep::deadline_t deadline;
        if (!m_timers.empty()) deadline = m_timers.top()->deadline;
        m_sleep.sleep(m_reactor ? &*m_reactor : nullptr, deadline, [this] {
            return !m_remote.empty() || m_stop_requested.load(std::memory_order_seq_cst);
        });
    }

    // Empty until the loop first watches an fd; never reset before destruction, so another
    // thread that saw the loop asleep in it may use it until its foreign_call ends.
    std::optional<detail::io_reactor> m_reactor;
    detail::loop_sleep m_sleep;
    detail::work_queue m_ready;
    detail::mpsc_stack m_remote;
    detail::timer_heap m_timers;
    std::unordered_set<void*> m_detached;
    std::exception_ptr m_detached_error;
    detail::loop_close_hooks m_close_hooks;
    bool m_closing = false; // set for the whole of the destructor; loop thread only
    int m_batch_budget = 0; // items the current ready batch may still run; loop thread only
    std::atomic<std::uintptr_t> m_owner{0}; // thread_identity() of the thread in run()
    std::atomic<bool> m_stop_requested{false};
    std::atomic<bool> m_running{false};
    std::atomic<int> m_foreign_callers{0};
};

static_assert(executor<event_loop>);

namespace detail {

/// The loop internals that other layers of conflux use (timers, the reactor), from the
/// thread that runs the loop (or owns it while it does not run).
struct loop_access {
    static void add_timer(event_loop& loop, timer_entry* entry) { loop.m_timers.push(entry); }
    static void remove_timer(event_loop& loop, timer_entry* entry) noexcept {
        loop.m_timers.remove(entry);
    }
    /// The loop's reactor, created on first use. Throws `std::system_error` when the kernel
    /// refuses its descriptors (EMFILE).
    static io_reactor& reactor(event_loop& loop) { return loop.reactor(); }
    /// The reactor of a loop that an fd was registered with (by `reactor(loop).add`), for
    /// the paths that cannot throw: it exists from that registration on.
    static io_reactor& registered_reactor(event_loop& loop) noexcept { return *loop.m_reactor; }
    /// Asks the loop to call `hook->on_close` when it is destroyed (unless unlinked first).
    static void add_close_hook(event_loop& loop, loop_close_hook* hook) noexcept {
        loop.m_close_hooks.link(hook);
    }
    static void remove_close_hook(event_loop& loop, loop_close_hook* hook) noexcept {
        loop.m_close_hooks.unlink(hook);
    }
};

/// The loop running on this thread; throws a clear error naming `operation` if there is none.
inline event_loop& require_loop(const char* operation) {
    event_loop* loop = event_loop::current();
    if (!loop) {
        throw std::logic_error(std::string("conflux: ") + operation +
                               " must be awaited on an event_loop thread");
    }
    return *loop;
}

} // namespace detail

/// Starts `t` on the calling thread's event loop and lets the loop own it (see
/// `event_loop::detach`). Throws `std::logic_error` on a thread that runs no event loop.
inline void detach(task<void> t) { detail::require_loop("conflux::detach").detach(std::move(t)); }

} // namespace conflux
