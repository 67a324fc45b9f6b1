#pragma once

// The loop-side state of one child process: its pidfd watched for the exit, the waiters,
// the kill timers and the pipes. Shared (std::shared_ptr) between the `child_process`
// handle, pending waits and, once the handle is dropped, a reaper task owned by the loop.
//
// With a process group of its own (kill_tree), the exited leader is not reaped at once: its
// status is read with WNOWAIT and the zombie is kept until this state is destroyed. A pid
// that is still a zombie cannot be handed to a new process, so the group id (the leader's
// pid) cannot be reused either, and a signal to the group can never reach a stranger.
// (On Windows the state is child_state_windows.hpp, with the same members.)

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_WINDOWS
#include <conflux/detail/child_state_windows.hpp>
#else

#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/exit_status.hpp>
#include <conflux/stream.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/child_exit.hpp>
#include <conflux/detail/epoll.hpp>
#include <conflux/detail/launch.hpp>
#include <conflux/detail/loop_wait.hpp>
#include <conflux/detail/orphans.hpp>
#include <conflux/detail/spawn.hpp>
#include <conflux/detail/timer_heap.hpp>
#include <conflux/detail/unique_fd.hpp>

#include <cerrno>
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

class child_state : public std::enable_shared_from_this<child_state>,
                    private io_handler,
                    private loop_close_hook {
public:
    struct wait_node {
        loop_wait wait;
        wait_node* next = nullptr;
        wait_node* prev = nullptr;
        bool linked = false;
    };

    /// Why the library ended (or is ending) the child, or the call it belongs to.
    enum class reason { none, timeout, cancelled, overflow, wait_delay };

    /// How long the child and, for exec, the call may take, and how it is ended.
    struct limits {
        std::chrono::milliseconds timeout{0};
        int kill_signal = SIGTERM;
        std::chrono::milliseconds kill_grace{2000};
        bool tree = false;
        std::stop_token stop_token{};
        /// exec: the deadline and the cancellation bound the whole call, reading included,
        /// so they stay armed after the child's exit.
        bool bound_after_exit = false;
        /// exec: how long after the exit the pipes are still read; empty = no limit.
        std::optional<std::chrono::milliseconds> wait_delay{};
    };

    child_state(event_loop& loop, launched&& l, std::string program) : m_loop(&loop) {
        m_pid = l.pid;
        m_pidfd = std::move(l.pidfd);
        m_program = std::move(program);
        on_events = &on_pidfd_event;
        on_close = &on_loop_closing;
        const std::string who = "child " + std::to_string(m_pid) + " (" + m_program + ")";
        for (auto& p : l.pipes) {
            const std::string name = (p.child_fd == 0   ? std::string("stdin")
                                      : p.child_fd == 1 ? std::string("stdout")
                                      : p.child_fd == 2 ? std::string("stderr")
                                                        : "fd " + std::to_string(p.child_fd)) +
                                     " of " + who;
            if (p.parent_writes) {
                m_writers.emplace_back(p.child_fd, writable_stream(p.fd.release(), loop, name));
            } else {
                m_readers.emplace_back(p.child_fd, readable_stream(p.fd.release(), loop, name));
            }
        }
        m_timeout.context = this;
        m_timeout.fire = [](timer_entry* e) noexcept {
            static_cast<child_state*>(e->context)->terminate(reason::timeout);
        };
        m_grace.context = this;
        m_grace.fire = [](timer_entry* e) noexcept {
            auto* self = static_cast<child_state*>(e->context);
            self->m_kill_pending = false;
            try {
                self->send(SIGKILL);
            } catch (...) {
                // send throws for an invalid signal, or a pidfd_send_signal failing other
                // than with ESRCH (gone): neither happens with SIGKILL to our own child, and
                // a timer has no one to report to; wait() still reports the exit.
            }
        };
        m_delay.context = this;
        m_delay.fire = [](timer_entry* e) noexcept {
            static_cast<child_state*>(e->context)->terminate(reason::wait_delay);
        };
        // Registered last: nothing above may throw once the loop points at us.
        // Level-triggered: the pidfd stays readable from the exit until we reap.
        loop_access::reactor(loop).add(m_pidfd.get(), io_reactor::readable_level, this);
        m_registered = true;
        loop_access::add_close_hook(loop, this);
    }

    child_state(const child_state&) = delete;
    child_state& operator=(const child_state&) = delete;

    ~child_state() {
        if (m_loop != nullptr) let_go_of_loop();
        // A kill sequence of ours cut short (the state is going away before the grace period
        // ended): finish it, the group included, so nothing we meant to end survives.
        if (m_kill_pending) {
            if (m_tree && group_id_held()) signal_process_group(m_pid, SIGKILL);
            if (!m_status && m_pidfd) {
                pidfd_send_signal(m_pidfd.get(), SIGKILL);
                m_sigkilled = true;
            }
        }
        if (m_zombie_held) {
            // Exited and waited for with WNOWAIT: reaping now cannot block.
            reap_blocking();
        } else if (!m_status && m_pidfd && m_sigkilled) {
            // Going away with a killed child not reaped yet: SIGKILL cannot be ignored, so this
            // wait is short, and it leaves no zombie behind.
            reap_blocking();
        } else if (!m_status && m_pidfd) {
            // A child left running (detached, or not killed on drop) outlives its watch: the
            // process-wide orphan list keeps its pidfd and a later spawn reaps it.
            orphan_children::instance().adopt(std::move(m_pidfd));
        }
    }

    void configure(const limits& l) {
        m_kill_signal = l.kill_signal;
        m_grace_period = l.kill_grace;
        m_tree = l.tree;
        m_bound_after_exit = l.bound_after_exit;
        m_wait_delay = l.wait_delay;
        if (l.timeout.count() > 0) {
            m_timeout.deadline = std::chrono::steady_clock::now() + l.timeout;
            loop_access::add_timer(*m_loop, &m_timeout);
        }
        if (l.stop_token.stop_possible()) {
            m_stop_callback.emplace(l.stop_token, on_stop{weak_from_this(), m_loop});
        }
    }

    /// The loop the child belongs to; nullptr once that loop has been destroyed.
    event_loop* loop() const noexcept { return m_loop; }
    pid_t pid() const noexcept { return m_pid; }
    const std::string& program() const noexcept { return m_program; }
    const std::optional<exit_status>& status() const noexcept { return m_status; }
    reason kill_reason() const noexcept { return m_reason; }
    /// Stopped when the pipes should no longer be read: the library ended the call
    /// (timeout, cancellation, wait_delay) after the child's exit.
    std::stop_token abort_token() const noexcept { return m_abort.get_token(); }
    /// A kill_signal was sent and the SIGKILL after the grace period is still to come.
    bool kill_pending() const noexcept { return m_kill_pending; }
    /// When the pending SIGKILL is due.
    std::chrono::steady_clock::time_point grace_deadline() const noexcept {
        return m_grace.deadline;
    }
    /// The exited leader is kept as a zombie so that its group can still be signalled.
    bool group_id_held() const noexcept { return m_zombie_held || !m_status; }

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

    /// Sends `sig` to the child, and with kill_tree to its process group. After the leader's
    /// exit only the group is signalled (kill_tree), which its zombie keeps reserved.
    /// False when there is nobody it may signal. Throws `std::system_error` for an invalid
    /// signal.
    bool send(int sig) {
        if (m_status) {
            if (!m_tree || !m_zombie_held) return false;
            const int err = signal_process_group(m_pid, sig);
            if (err == 0) return true;
            if (err == ESRCH || err == EPERM) return false;
            throw_system_error(err, "kill", m_program);
        }
        // The group id is the child's pid, which cannot be reused while the child is not
        // reaped; so a group signal sent now never reaches a stranger.
        if (m_tree) {
            const int err = signal_process_group(m_pid, sig);
            if (err != 0 && err != ESRCH && err != EPERM)
                throw_system_error(err, "kill", m_program);
        }
        if (pidfd_send_signal(m_pidfd.get(), sig) != 0) {
            if (errno == ESRCH) return false;
            throw_errno("kill", m_program);
        }
        if (sig == SIGKILL) m_sigkilled = true;
        return true;
    }

    /// Ends the child, or for exec the call, because of `why`: `kill_signal` to the child (or
    /// to its group once it has exited), SIGKILL after the grace period to whatever is left.
    /// After the exit it also stops the pipe readers.
    void terminate(reason why) noexcept {
        const bool exited = m_status.has_value();
        if (exited && !m_bound_after_exit && !m_zombie_held) return;
        // A spawned child's own status says how it ended; only a call still running (exec)
        // or a child not yet exited takes the reason.
        if (m_reason == reason::none && (!exited || m_bound_after_exit)) m_reason = why;
        bool sent = false;
        try {
            sent = send(m_kill_signal);
        } catch (...) {
            // An invalid kill_signal: SIGKILL at once instead.
            m_grace_period = std::chrono::milliseconds(0);
            sent = true;
        }
        if (sent && m_kill_signal != SIGKILL && !m_grace.queued() && m_loop != nullptr) {
            m_grace.deadline = std::chrono::steady_clock::now() + m_grace_period;
            loop_access::add_timer(*m_loop, &m_grace);
            m_kill_pending = true;
        }
        if (exited) m_abort.request_stop();
    }

    /// Kill-on-drop: SIGKILL now, to the group too with kill_tree (even after the leader's
    /// exit).
    void kill_now() noexcept {
        try {
            send(SIGKILL);
        } catch (...) {
            // As in the grace timer: cannot happen with SIGKILL, and a destructor cannot
            // report it.
        }
        m_kill_pending = false;
        if (m_loop != nullptr) loop_access::remove_timer(*m_loop, &m_grace);
    }

    /// Awaits the exit on the child's loop (callers hop there first).
    class wait_awaiter {
    public:
        wait_awaiter(std::shared_ptr<child_state> s, std::stop_token token) noexcept
            : m_state(std::move(s)), m_token(std::move(token)) {}
        wait_awaiter(const wait_awaiter&) = delete;
        wait_awaiter& operator=(const wait_awaiter&) = delete;
        ~wait_awaiter() {
            if (m_node.linked) m_state->unlink(&m_node);
        }

        bool await_ready() {
            if (m_state->m_status) return true;
            if (m_token.stop_requested()) throw operation_cancelled();
            return false;
        }

        void await_suspend(std::coroutine_handle<> h) {
            m_state->link(&m_node);
            m_node.wait.arm(
                h, any_executor(*m_state->m_loop), m_token,
                [](void* self) noexcept {
                    auto* me = static_cast<wait_awaiter*>(self);
                    if (me->m_node.linked) me->m_state->unlink(&me->m_node);
                },
                this);
        }

        exit_status await_resume() {
            // Resumed by the exit (status known), by the cancellation (withdrawn), or by the
            // loop's destruction (status known only if the exit had been seen by then).
            if (m_node.wait.finish()) throw operation_cancelled();
            if (!m_state->m_status) {
                throw std::logic_error("conflux::child_process::wait: the child's event loop was "
                                       "destroyed while waiting");
            }
            return *m_state->m_status;
        }

    private:
        std::shared_ptr<child_state> m_state;
        std::stop_token m_token;
        wait_node m_node;
    };

private:
    struct on_stop {
        std::weak_ptr<child_state> state;
        event_loop* loop;
        // Runs on whichever thread stops the token: only a post to the loop happens here.
        void operator()() const {
            loop->post([s = state] {
                if (auto locked = s.lock()) locked->terminate(reason::cancelled);
            });
        }
    };

    static void on_pidfd_event(io_handler* h, std::uint32_t) noexcept {
        static_cast<child_state*>(h)->reap();
    }

    // The loop is being destroyed and this state (kept by a handle) outlives it: withdraw
    // everything from the loop; the pidfd stays, for kill() and for the final reap.
    static void on_loop_closing(loop_close_hook* hook) noexcept {
        auto* self = static_cast<child_state*>(hook);
        // Waits still pending come from coroutines of other loops (the frames of this loop's
        // own are gone by now): this loop cannot resume them any more, so they are resumed
        // here, at once, and each goes back to its own executor from there.
        const std::shared_ptr<child_state> keep = self->weak_from_this().lock();
        self->m_closing = true;
        if (!self->m_status) self->reap(); // an exit not yet seen by the loop
        self->let_go_of_loop();
        while (wait_node* n = self->m_waiters) {
            self->unlink(n);
            n->wait.abandon();
        }
    }

    void let_go_of_loop() noexcept {
        m_stop_callback.reset();
        loop_access::remove_close_hook(*m_loop, this);
        loop_access::remove_timer(*m_loop, &m_timeout);
        loop_access::remove_timer(*m_loop, &m_grace);
        loop_access::remove_timer(*m_loop, &m_delay);
        if (m_registered) loop_access::registered_reactor(*m_loop).remove(m_pidfd.get());
        m_registered = false;
        for (auto& r : m_readers) stream_access::abandon(r.second);
        for (auto& w : m_writers) stream_access::abandon(w.second);
        m_loop = nullptr;
    }

    void reap_blocking() noexcept {
        reap_child(m_pidfd.get());
        m_zombie_held = false;
    }

    void reap() noexcept {
        // With a group of its own the leader stays a zombie and keeps the group id.
        const child_exit_report exit = poll_child_exit(m_pidfd.get(), m_tree);
        using state = child_exit_report::state;
        if (exit.what == state::running) return; // not exited yet (a spurious wake-up)
        if (exit.what == state::lost) {
            // ECHILD: the process set SIGCHLD to SIG_IGN and the kernel reaped the child;
            // its status is lost.
            m_status = exit_status();
        } else if (exit.what == state::exited) {
            m_status = exit_status::exited(exit.value);
        } else {
            m_status = exit_status::killed(exit.value, exit.core_dumped);
        }
        if (m_registered) loop_access::registered_reactor(*m_loop).remove(m_pidfd.get());
        m_registered = false;
        m_zombie_held = exit.what != state::lost && m_tree;
        if (!m_zombie_held) m_pidfd.reset();
        // What can still be signalled after the exit is the group, if held; what can still
        // be bounded is an exec call, whose pipes may outlive the child.
        if (!m_zombie_held) {
            loop_access::remove_timer(*m_loop, &m_grace);
            m_kill_pending = false;
        }
        if (!m_zombie_held && !m_bound_after_exit) loop_access::remove_timer(*m_loop, &m_timeout);
        if (m_reason != reason::none) {
            // Ended by us: do not wait for descendants that may still hold the pipes.
            m_abort.request_stop();
        } else if (m_wait_delay) {
            m_delay.deadline = std::chrono::steady_clock::now() + *m_wait_delay;
            loop_access::add_timer(*m_loop, &m_delay);
        }
        if (m_closing) return; // the waiters are resumed by on_loop_closing
        // complete() may not resume inline (it enqueues), so the list stays ours while we walk.
        while (wait_node* n = m_waiters) {
            unlink(n);
            n->wait.complete();
        }
    }

    void link(wait_node* n) noexcept {
        n->prev = nullptr;
        n->next = m_waiters;
        if (m_waiters) m_waiters->prev = n;
        m_waiters = n;
        n->linked = true;
    }

    void unlink(wait_node* n) noexcept {
        if (n->prev) {
            n->prev->next = n->next;
        } else {
            m_waiters = n->next;
        }
        if (n->next) n->next->prev = n->prev;
        n->next = n->prev = nullptr;
        n->linked = false;
    }

    event_loop* m_loop;
    pid_t m_pid = -1;
    unique_fd m_pidfd;
    std::string m_program;
    bool m_registered = false;
    bool m_sigkilled = false;
    bool m_tree = false;
    bool m_zombie_held = false;
    bool m_kill_pending = false;
    bool m_bound_after_exit = false;
    bool m_closing = false; // the loop is being destroyed
    int m_kill_signal = SIGTERM;
    std::chrono::milliseconds m_grace_period{2000};
    std::optional<std::chrono::milliseconds> m_wait_delay;
    reason m_reason = reason::none;
    std::optional<exit_status> m_status;
    wait_node* m_waiters = nullptr;
    timer_entry m_timeout;
    timer_entry m_grace;
    timer_entry m_delay;
    std::stop_source m_abort;
    std::vector<std::pair<int, readable_stream>> m_readers;
    std::vector<std::pair<int, writable_stream>> m_writers;
    std::optional<std::stop_callback<on_stop>> m_stop_callback;
};

} // namespace conflux::detail
#endif
