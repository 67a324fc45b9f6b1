#pragma once

// The loop-side state of one child process on Windows (child_state.hpp has the POSIX one,
// with the same members for process.hpp and exec.hpp; child_state_base.hpp what both
// share): its process handle, whose exit the
// system's thread pool posts to the loop's completion port; its Job object, which bounds its
// descendants; the waiters, the timers and the pipes.
//
// Ending a child: Windows has no signals. SIGTERM, SIGKILL, SIGINT and SIGQUIT end it at once
// with TerminateProcess (the whole job with kill_tree), as libuv does; 0 asks whether it
// still runs; any other signal is refused (ENOSYS). There is no grace period: nothing can be
// asked to end gracefully, so the SIGKILL that follows `kill_signal` on POSIX has nothing
// left to do. A child ended so reports `exit_status::killed(signal)` with the signal asked
// for (its exit code is 1).

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_WINDOWS
#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/exit_status.hpp>
#include <conflux/detail/child_exit.hpp>
#include <conflux/detail/child_state_base.hpp>
#include <conflux/detail/epoll.hpp>
#include <conflux/detail/launch.hpp>
#include <conflux/detail/spawn.hpp>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

namespace conflux::detail {

/// The exit code a child ended by `kill` gets (libuv's choice too).
inline constexpr unsigned terminated_exit_code = 1;
/// SIGKILL, which Windows' <csignal> does not name.
inline constexpr int sigkill = 9;

class child_state : public child_state_base<child_state> {
public:
    child_state(event_loop& loop, launched&& l, std::string program)
        : child_state_base(loop, std::move(program)), m_pid(l.pid), m_process(std::move(l.process)),
          m_job(std::move(l.job)) {
        const std::string who = "child " + std::to_string(m_pid) + " (" + m_program + ")";
        for (auto& p : l.pipes) adopt_pipe(p.child_fd, p.parent_writes, p.handle.release(), who);
        // Last: nothing above may throw once the pool may call us.
        m_watch =
            exit_watch::start(m_process.get(), loop_access::reactor(loop).port(), &on_exit, this);
        join_loop();
    }

    child_state(const child_state&) = delete;
    child_state& operator=(const child_state&) = delete;

    ~child_state() {
        if (m_loop != nullptr) let_go_of_loop();
        if (m_watch != nullptr) m_watch->stop();
        // The job's last handle closing kills what it holds (KILL_ON_JOB_CLOSE): descendants
        // left running (a child let go of, or without kill_tree) are kept until they end.
        if (m_job) kept_jobs::instance().keep(m_job.release());
    }

    void configure(const limits& l) {
        configure_common(l);
        m_tree = l.tree;
    }

    unsigned long pid() const noexcept { return m_pid; }
    /// Never: ending a process on Windows takes no grace period.
    bool kill_pending() const noexcept { return false; }
    std::chrono::steady_clock::time_point grace_deadline() const noexcept {
        return std::chrono::steady_clock::now();
    }
    /// With kill_tree, the job still lets the descendants be ended after the child's exit.
    bool group_id_held() const noexcept { return !m_status || (m_tree && m_job); }

    /// Ends the child (its job with kill_tree) for SIGTERM, SIGKILL, SIGINT, SIGQUIT; probes
    /// for 0. False when there is nobody left to end. Throws `std::system_error` (ENOSYS)
    /// for another signal.
    bool send(int sig) {
        const bool ends = sig == SIGTERM || sig == sigkill || sig == SIGINT || sig == 3;
        if (sig != 0 && !ends) {
            throw std::system_error(ENOSYS, std::generic_category(),
                                    "kill \"" + m_program + "\" (signal " + std::to_string(sig) +
                                        " does not exist on Windows)");
        }
        const bool exited = m_status || process_exit_code(m_process.get()).has_value();
        if (m_tree && m_job) {
            if (job_active_processes(m_job.get()) == 0) return false;
            if (sig == 0) return true;
            if (!exited) m_killed_by = sig;
            if (const unsigned long err = terminate_job(m_job.get(), terminated_exit_code)) {
                throw_system_error(static_cast<int>(err), "kill", m_program);
            }
            return true;
        }
        if (exited) return false;
        if (sig == 0) return true;
        if (terminate_process(m_process.get(), terminated_exit_code) != 0) {
            // It ended meanwhile (ERROR_ACCESS_DENIED): nobody to end.
            return false;
        }
        m_killed_by = sig;
        return true;
    }

    /// Ends the child, or for exec the call, because of `why`; after the exit it also stops
    /// the pipe readers.
    void terminate(reason why) noexcept {
        const bool exited = m_status.has_value();
        if (exited && !m_bound_after_exit && !(m_tree && m_job)) return;
        if (m_reason == reason::none && (!exited || m_bound_after_exit)) m_reason = why;
        try {
            send(m_kill_signal);
        } catch (...) {
            // A kill_signal Windows cannot send: end the child all the same.
            kill_now();
        }
        if (exited) m_abort.request_stop();
    }

    /// Kill-on-drop: the child, or its job with kill_tree, ended now.
    void kill_now() noexcept {
        try {
            send(sigkill);
        } catch (...) {
            // Cannot happen with SIGKILL; a destructor could not report it anyway.
        }
    }

private:
    friend child_state_base;

    static void on_exit(void* self) noexcept { static_cast<child_state*>(self)->exited(); }

    // The loop is closing: an exit its port has not delivered yet is read now.
    void see_exit_now() noexcept {
        if (process_exit_code(m_process.get())) exited();
    }

    void let_go_of_loop() noexcept {
        // The pool's wait posts to this loop's port, which is going away.
        if (m_watch != nullptr) {
            m_watch->stop();
            m_watch = nullptr;
        }
        release_loop();
    }

    void exited() noexcept {
        if (m_status) return;
        const std::optional<unsigned long> code = process_exit_code(m_process.get());
        if (!code) return;
        if (m_killed_by != 0 && *code == terminated_exit_code) {
            m_status = exit_status::killed(m_killed_by);
        } else {
            // Exit codes are 32 bits; NTSTATUS codes (0xC0000005, an access violation) come out
            // negative.
            m_status = exit_status::exited(static_cast<int>(*code));
        }
        if (m_closing) return;
        if (!m_bound_after_exit && !(m_tree && m_job)) {
            loop_access::remove_timer(*m_loop, &m_timeout);
        }
        settle_exit();
    }

    unsigned long m_pid;
    unique_handle m_process;
    unique_handle m_job;
    exit_watch* m_watch = nullptr;
    bool m_tree = false;
    int m_killed_by = 0;
};

} // namespace conflux::detail
#endif
