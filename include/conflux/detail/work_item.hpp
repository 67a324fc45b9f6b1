#pragma once

#include <coroutine>
#include <utility>

namespace conflux::detail {

/// An intrusive unit of work for executor queues. Queues never allocate: the item lives in
/// whatever posted it (an awaiter in a coroutine frame, or a heap wrapper for a callable).
struct work_item {
    enum class action { run, discard };

    work_item* next = nullptr;
    /// `run` executes the item; `discard` releases it without running (a loop destroyed with
    /// work still queued). After either, the queue must not touch the item again.
    void (*invoke)(work_item*, action) noexcept = nullptr;

    void run() noexcept { invoke(this, action::run); }
    void discard() noexcept { invoke(this, action::discard); }
};

/// Resumes a coroutine when run. Discarding does nothing: the frame is owned elsewhere.
struct resume_item : work_item {
    std::coroutine_handle<> handle;

    resume_item() noexcept { invoke = &invoke_resume; }

    static void invoke_resume(work_item* self, action a) noexcept {
        if (a == action::run) static_cast<resume_item*>(self)->handle.resume();
    }

    /// Runs `item`. Most queued items resume a coroutine: those are recognised and resumed
    /// directly, one indirect call instead of two on an executor's hottest path.
    static void run(work_item* item) noexcept {
        if (item->invoke == &invoke_resume) {
            static_cast<resume_item*>(item)->handle.resume();
        } else {
            item->run();
        }
    }
};

/// The awaiter of every `schedule()`: queues a resume item on `Executor` via `enqueue`.
///
/// An executor that can hand back the next coroutine to run at once (`enqueue_and_take_next`,
/// the event loop on its own thread) is resumed into directly by symmetric transfer, instead
/// of returning to its run loop to pop it.
template <class Executor>
class schedule_awaiter {
public:
    explicit schedule_awaiter(Executor& target) noexcept : m_target(target) {}
    bool await_ready() const noexcept { return false; }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> h) noexcept {
        m_item.handle = h;
        if constexpr (requires { m_target.enqueue_and_take_next(&m_item); }) {
            return m_target.enqueue_and_take_next(&m_item);
        } else {
            m_target.enqueue(&m_item);
            return std::noop_coroutine();
        }
    }
    void await_resume() const noexcept {}

private:
    Executor& m_target;
    resume_item m_item;
};

/// Owns a callable posted with `post(f)`; the one allocation a type-erased post needs.
template <class F>
struct posted_function : work_item {
    F fn;

    explicit posted_function(F&& f) : fn(std::move(f)) {
        invoke = [](work_item* self, action a) noexcept {
            auto* me = static_cast<posted_function*>(self);
            if (a == action::run) {
                // A posted callable has nowhere to report an exception; like a thread's
                // top-level function, escaping it terminates.
                me->fn();
            }
            delete me;
        };
    }
};

/// Single-threaded FIFO of work items. `m_tail` is meaningful only while `m_head` is set,
/// which spares the hot push/pop pair two stores.
class work_queue {
public:
    bool empty() const noexcept { return m_head == nullptr; }

    void push(work_item* item) noexcept {
        item->next = nullptr;
        if (m_head) {
            m_tail->next = item;
        } else {
            m_head = item;
        }
        m_tail = item;
    }

    /// Appends a chain already linked through `next` (oldest first).
    void push_chain(work_item* first, work_item* last) noexcept {
        if (!first) return;
        if (m_head) {
            m_tail->next = first;
        } else {
            m_head = first;
        }
        m_tail = last;
    }

    /// The oldest item without taking it, or nullptr.
    work_item* front() const noexcept { return m_head; }

    /// The oldest item, or nullptr. Its `next` is left as it was: pushing sets it again.
    work_item* pop() noexcept {
        work_item* item = m_head;
        if (item) m_head = item->next;
        return item;
    }

    /// Takes the whole queue, leaving this one empty.
    work_queue take() noexcept {
        work_queue out;
        out.m_head = m_head;
        out.m_tail = m_tail;
        m_head = m_tail = nullptr;
        return out;
    }

    /// Drops every item without touching it (the items' memory may be gone).
    void forget_all() noexcept { m_head = m_tail = nullptr; }

    void discard_all() noexcept {
        while (work_item* item = pop()) item->discard();
    }

private:
    work_item* m_head = nullptr;
    work_item* m_tail = nullptr;
};

} // namespace conflux::detail
