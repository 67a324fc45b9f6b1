#pragma once

// The loop-side state of one child process: its pidfd watched for the exit, the waiters,
// the kill timers and the pipes. Shared (std::shared_ptr) between the `child_process`
// handle, pending waits and, once the handle is dropped, a reaper task owned by the loop.
//
// With a process group of its own (kill_tree), the exited leader is not reaped at once: its
// status is read with WNOWAIT and the zombie is kept until this state is destroyed. A pid
// that is still a zombie cannot be handed to a new process, so the group id (the leader's
// pid) cannot be reused either, and a signal to the group can never reach a stranger.
// (On Windows the state is child_state_windows.hpp, with the same members; what both share
// is child_state_base.hpp.)

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_WINDOWS
#include <conflux/detail/child_state_windows.hpp>
#else

#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/exit_status.hpp>
#include <conflux/detail/child_exit.hpp>
#include <conflux/detail/child_state_base.hpp>
#include <conflux/detail/epoll.hpp>
#include <conflux/detail/launch.hpp>
#include <conflux/detail/orphans.hpp>
#include <conflux/detail/spawn.hpp>
#include <conflux/detail/timer_heap.hpp>
#include <conflux/detail/unique_fd.hpp>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <string>
#include <utility>

namespace conflux::detail {

class child_state : public child_state_base<child_state>, private io_handler {
public:
    child_state(event_loop& loop, launched&& l, std::string program)
        : child_state_base(loop, std::move(program)), m_pid(l.pid), m_pidfd(std::move(l.pidfd)) {
        on_events = &on_pidfd_event;
        const std::string who = "child " + std::to_string(m_pid) + " (" + m_program + ")";
        for (auto& p : l.pipes) adopt_pipe(p.child_fd, p.parent_writes, p.fd.release(), who);
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
        // Registered last: nothing above may throw once the loop points at us.
        // Level-triggered: the pidfd stays readable from the exit until we reap.
        loop_access::reactor(loop).add(m_pidfd.get(), io_reactor::readable_level, this);
        m_registered = true;
        join_loop();
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
        configure_common(l);
        m_grace_period = l.kill_grace;
        m_tree = l.tree;
    }

    pid_t pid() const noexcept { return m_pid; }
    /// A kill_signal was sent and the SIGKILL after the grace period is still to come.
    bool kill_pending() const noexcept { return m_kill_pending; }
    /// When the pending SIGKILL is due.
    std::chrono::steady_clock::time_point grace_deadline() const noexcept {
        return m_grace.deadline;
    }
    /// The exited leader is kept as a zombie so that its group can still be signalled.
    bool group_id_held() const noexcept { return m_zombie_held || !m_status; }

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

private:
    friend child_state_base;

    static void on_pidfd_event(io_handler* h, std::uint32_t) noexcept {
        static_cast<child_state*>(h)->reap();
    }

    // The loop is closing: an exit it has not delivered yet is read now.
    void see_exit_now() noexcept { reap(); }

    // The pidfd stays, for kill() and for the final reap.
    void let_go_of_loop() noexcept {
        loop_access::remove_timer(*m_loop, &m_grace);
        if (m_registered) loop_access::registered_reactor(*m_loop).remove(m_pidfd.get());
        m_registered = false;
        release_loop();
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
        settle_exit();
    }

    pid_t m_pid = -1;
    unique_fd m_pidfd;
    bool m_registered = false;
    bool m_sigkilled = false;
    bool m_tree = false;
    bool m_zombie_held = false;
    bool m_kill_pending = false;
    std::chrono::milliseconds m_grace_period{2000};
    timer_entry m_grace;
};

} // namespace conflux::detail
#endif
