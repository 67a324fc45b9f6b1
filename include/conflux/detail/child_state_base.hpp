#pragma once

// What the child states of both platforms share: the limits a call sets, why the library
// ended a child, its pipes by the child's fd, the coroutines waiting for its exit, and what
// the exit settles once it is known. The platform's `child_state` (child_state.hpp on POSIX,
// child_state_windows.hpp on Windows) derives from it: it watches for the exit, signals or
// terminates the child, and calls back here.

#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/exit_status.hpp>
#include <conflux/stream.hpp>
#include <conflux/detail/intrusive_list.hpp>
#include <conflux/detail/loop_wait.hpp>
#include <conflux/detail/timer_heap.hpp>

#include <chrono>
#include <coroutine>
#include <csignal>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

namespace conflux::detail {

/// Why the library ended (or is ending) the child, or the call it belongs to.
enum class child_end_reason { none, timeout, cancelled, overflow, wait_delay };

/// How long the child and, for exec, the call may take, and how it is ended.
struct child_limits {
    std::chrono::milliseconds timeout{0};
    int kill_signal = SIGTERM;
    std::chrono::milliseconds kill_grace{2000};
    bool tree = false;
    std::stop_token stop_token{};
    /// exec: the deadline and the cancellation bound the whole call, reading included, so
    /// they stay armed after the child's exit.
    bool bound_after_exit = false;
    /// exec: how long after the exit the pipes are still read; empty = no limit.
    std::optional<std::chrono::milliseconds> wait_delay{};
};

/// `State` is the platform's child_state. It provides `terminate(reason)`, `see_exit_now()`
/// (the loop is closing: collect an exit the loop has not delivered yet) and
/// `let_go_of_loop()` (withdraw its own registrations, then call `release_loop()`).
template <class State>
class child_state_base : public std::enable_shared_from_this<State>, private loop_close_hook {
public:
    using reason = child_end_reason;
    using limits = child_limits;

    struct wait_node {
        loop_wait wait;
        wait_node* next = nullptr;
        wait_node* prev = nullptr;
        bool linked = false;
    };

    child_state_base(const child_state_base&) = delete;
    child_state_base& operator=(const child_state_base&) = delete;

    /// The loop the child belongs to; nullptr once that loop has been destroyed.
    event_loop* loop() const noexcept { return m_loop; }
    const std::string& program() const noexcept { return m_program; }
    const std::optional<exit_status>& status() const noexcept { return m_status; }
    reason kill_reason() const noexcept { return m_reason; }
    /// Stopped when the pipes should no longer be read: the library ended the call
    /// (timeout, cancellation, wait_delay) after the child's exit.
    std::stop_token abort_token() const noexcept { return m_abort.get_token(); }

    readable_stream* reader(int fd) noexcept {
        for (auto& [n, s] : m_readers) {
            if (n == fd) return &s;
        }
        return nullptr;
    }
    writable_stream* writer(int fd) noexcept {
        for (auto& [n, s] : m_writers) {
            if (n == fd) return &s;
        }
        return nullptr;
    }

    /// Awaits the exit on the child's loop (callers hop there first).
    class wait_awaiter {
    public:
        wait_awaiter(std::shared_ptr<State> s, std::stop_token token) noexcept
            : m_state(std::move(s)), m_token(std::move(token)) {}
        wait_awaiter(const wait_awaiter&) = delete;
        wait_awaiter& operator=(const wait_awaiter&) = delete;
        ~wait_awaiter() { base().m_waiters.unlink(&m_node); }

        bool await_ready() {
            if (base().m_status) return true;
            if (m_token.stop_requested()) throw operation_cancelled();
            return false;
        }

        void await_suspend(std::coroutine_handle<> h) {
            base().m_waiters.link(&m_node);
            m_node.wait.arm(
                h, any_executor(*base().m_loop), m_token,
                [](void* self) noexcept {
                    auto* me = static_cast<wait_awaiter*>(self);
                    me->base().m_waiters.unlink(&me->m_node);
                },
                this);
        }

        exit_status await_resume() {
            // Resumed by the exit (status known), by the cancellation (withdrawn), or by the
            // loop's destruction (status known only if the exit had been seen by then).
            if (m_node.wait.finish()) throw operation_cancelled();
            if (!base().m_status) {
                throw std::logic_error("conflux::child_process::wait: the child's event loop was "
                                       "destroyed while waiting");
            }
            return *base().m_status;
        }

    private:
        child_state_base& base() const noexcept { return *m_state; }

        std::shared_ptr<State> m_state;
        std::stop_token m_token;
        wait_node m_node;
    };

protected:
    child_state_base(event_loop& loop, std::string program)
        : m_loop(&loop), m_program(std::move(program)) {
        on_close = &on_loop_closing;
        m_timeout.context = this;
        m_timeout.fire = [](timer_entry* e) noexcept { end(e, reason::timeout); };
        m_delay.context = this;
        m_delay.fire = [](timer_entry* e) noexcept { end(e, reason::wait_delay); };
    }
    ~child_state_base() = default;

    /// Takes the parent's end of one of the child's pipes, named after the child's fd.
    template <class NativeHandle>
    void adopt_pipe(int child_fd, bool parent_writes, NativeHandle handle, const std::string& who) {
        std::string name = child_fd == 0   ? std::string("stdin")
                           : child_fd == 1 ? std::string("stdout")
                           : child_fd == 2 ? std::string("stderr")
                                           : "fd " + std::to_string(child_fd);
        name += " of " + who;
        if (parent_writes) {
            m_writers.emplace_back(child_fd, writable_stream(handle, *m_loop, std::move(name)));
            stream_access::mark_library_pipe(m_writers.back().second);
        } else {
            m_readers.emplace_back(child_fd, readable_stream(handle, *m_loop, std::move(name)));
            stream_access::mark_library_pipe(m_readers.back().second);
        }
    }

    /// Last in the platform's constructor: nothing may throw once the loop points at us.
    void join_loop() { loop_access::add_close_hook(*m_loop, this); }

    /// What both platforms take from the limits: the deadline, the cancellation and how the
    /// call is bounded after the exit.
    void configure_common(const limits& l) {
        m_kill_signal = l.kill_signal;
        m_bound_after_exit = l.bound_after_exit;
        m_wait_delay = l.wait_delay;
        if (l.timeout.count() > 0) {
            m_timeout.deadline = std::chrono::steady_clock::now() + l.timeout;
            loop_access::add_timer(*m_loop, &m_timeout);
        }
        if (l.stop_token.stop_possible()) {
            m_stop_callback.emplace(l.stop_token, on_stop{this->weak_from_this(), m_loop});
        }
    }

    /// The exit is known (`m_status` set): stops the pipe readers if the library ended the
    /// child, else arms wait_delay; then resumes the waiters, unless the loop is closing
    /// (on_loop_closing resumes them).
    void settle_exit() noexcept {
        if (m_reason != reason::none) {
            // Ended by us: do not wait for descendants that may still hold the pipes.
            m_abort.request_stop();
        } else if (m_wait_delay) {
            m_delay.deadline = std::chrono::steady_clock::now() + *m_wait_delay;
            loop_access::add_timer(*m_loop, &m_delay);
        }
        if (m_closing) return;
        // complete() may not resume inline (it enqueues), so the list stays ours while we walk.
        while (wait_node* n = m_waiters.take_first()) n->wait.complete();
    }

    /// The shared part of letting go of the loop: cancellation, close hook, timers, streams.
    void release_loop() noexcept {
        m_stop_callback.reset();
        loop_access::remove_close_hook(*m_loop, this);
        loop_access::remove_timer(*m_loop, &m_timeout);
        loop_access::remove_timer(*m_loop, &m_delay);
        for (auto& r : m_readers) stream_access::abandon(r.second);
        for (auto& w : m_writers) stream_access::abandon(w.second);
        m_loop = nullptr;
    }

    event_loop* m_loop;
    std::string m_program;
    bool m_bound_after_exit = false;
    bool m_closing = false; // the loop is being destroyed
    int m_kill_signal = SIGTERM;
    std::optional<std::chrono::milliseconds> m_wait_delay;
    reason m_reason = reason::none;
    std::optional<exit_status> m_status;
    timer_entry m_timeout;
    timer_entry m_delay;
    std::stop_source m_abort;

private:
    struct on_stop {
        std::weak_ptr<State> state;
        event_loop* loop;
        // Runs on whichever thread stops the token: only a post to the loop happens here.
        void operator()() const {
            loop->post([s = state] {
                if (auto locked = s.lock()) locked->terminate(reason::cancelled);
            });
        }
    };

    static void end(timer_entry* e, reason why) noexcept {
        static_cast<State*>(static_cast<child_state_base*>(e->context))->terminate(why);
    }

    // The loop is being destroyed and this state (kept by a handle) outlives it: withdraw
    // everything from the loop. Waits still pending come from coroutines of other loops (the
    // frames of this loop's own are gone by now): this loop cannot resume them any more, so
    // they are resumed here, at once, and each goes back to its own executor from there.
    static void on_loop_closing(loop_close_hook* hook) noexcept {
        auto* self = static_cast<child_state_base*>(hook);
        auto* state = static_cast<State*>(self);
        const std::shared_ptr<State> keep = self->weak_from_this().lock();
        self->m_closing = true;
        if (!self->m_status) state->see_exit_now();
        state->let_go_of_loop();
        while (wait_node* n = self->m_waiters.take_first()) n->wait.abandon();
    }

    intrusive_list<wait_node> m_waiters;
    std::vector<std::pair<int, readable_stream>> m_readers;
    std::vector<std::pair<int, writable_stream>> m_writers;
    std::optional<std::stop_callback<on_stop>> m_stop_callback;
};

} // namespace conflux::detail
