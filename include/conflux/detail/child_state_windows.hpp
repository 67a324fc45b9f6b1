#pragma once

// The loop-side state of one child process on Windows (child_state.hpp has the POSIX one,
// with the same members for process.hpp and exec.hpp): its process handle, whose exit the
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
#include <conflux/stream.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/child_exit.hpp>
#include <conflux/detail/epoll.hpp>
#include <conflux/detail/launch.hpp>
#include <conflux/detail/loop_wait.hpp>
#include <conflux/detail/spawn.hpp>
#include <conflux/detail/timer_heap.hpp>

#include <cerrno>
#include <chrono>
#include <coroutine>
#include <csignal>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace conflux::detail {

/// The exit code a child ended by `kill` gets (libuv's choice too).
inline constexpr unsigned terminated_exit_code = 1;
/// SIGKILL, which Windows' <csignal> does not name.
inline constexpr int sigkill = 9;

class child_state : public std::enable_shared_from_this<child_state>, private loop_close_hook {
public:
    struct wait_node {
        loop_wait wait;
        wait_node* next = nullptr;
        wait_node* prev = nullptr;
        bool linked = false;
    };

    enum class reason { none, timeout, cancelled, overflow, wait_delay };

    struct limits {
        std::chrono::milliseconds timeout{0};
        int kill_signal = SIGTERM;
        std::chrono::milliseconds kill_grace{2000};
        bool tree = false;
        std::stop_token stop_token{};
        bool bound_after_exit = false;
        std::optional<std::chrono::milliseconds> wait_delay{};
    };

    child_state(event_loop& loop, launched&& l, std::string program)
        : m_loop(&loop), m_pid(l.pid), m_process(std::move(l.process)), m_job(std::move(l.job)),
          m_program(std::move(program)) {
        on_close = &on_loop_closing;
        const std::string who = "child " + std::to_string(m_pid) + " (" + m_program + ")";
        for (auto& p : l.pipes) {
            const std::string name = (p.child_fd == 0   ? std::string("stdin")
                                      : p.child_fd == 1 ? std::string("stdout")
                                                        : std::string("stderr")) +
                                     " of " + who;
            if (p.parent_writes) {
                m_writers.emplace_back(p.child_fd, writable_stream(p.handle.release(), loop, name));
            } else {
                m_readers.emplace_back(p.child_fd, readable_stream(p.handle.release(), loop, name));
            }
        }
        m_timeout.context = this;
        m_timeout.fire = [](timer_entry* e) noexcept {
            static_cast<child_state*>(e->context)->terminate(reason::timeout);
        };
        m_delay.context = this;
        m_delay.fire = [](timer_entry* e) noexcept {
            static_cast<child_state*>(e->context)->terminate(reason::wait_delay);
        };
        // Last: nothing above may throw once the pool may call us.
        m_watch =
            exit_watch::start(m_process.get(), loop_access::reactor(loop).port(), &on_exit, this);
        loop_access::add_close_hook(loop, this);
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
        m_kill_signal = l.kill_signal;
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

    event_loop* loop() const noexcept { return m_loop; }
    unsigned long pid() const noexcept { return m_pid; }
    const std::string& program() const noexcept { return m_program; }
    const std::optional<exit_status>& status() const noexcept { return m_status; }
    reason kill_reason() const noexcept { return m_reason; }
    std::stop_token abort_token() const noexcept { return m_abort.get_token(); }
    /// Never: ending a process on Windows takes no grace period.
    bool kill_pending() const noexcept { return false; }
    std::chrono::steady_clock::time_point grace_deadline() const noexcept {
        return std::chrono::steady_clock::now();
    }
    /// With kill_tree, the job still lets the descendants be ended after the child's exit.
    bool group_id_held() const noexcept { return !m_status || (m_tree && m_job); }

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
        void operator()() const {
            loop->post([s = state] {
                if (auto locked = s.lock()) locked->terminate(reason::cancelled);
            });
        }
    };

    static void on_exit(void* self) noexcept { static_cast<child_state*>(self)->exited(); }

    static void on_loop_closing(loop_close_hook* hook) noexcept {
        auto* self = static_cast<child_state*>(hook);
        const std::shared_ptr<child_state> keep = self->weak_from_this().lock();
        self->m_closing = true;
        // An exit not yet delivered by the port: read it now.
        if (!self->m_status && process_exit_code(self->m_process.get())) self->exited();
        self->let_go_of_loop();
        while (wait_node* n = self->m_waiters) {
            self->unlink(n);
            n->wait.abandon();
        }
    }

    void let_go_of_loop() noexcept {
        m_stop_callback.reset();
        // The pool's wait posts to this loop's port, which is going away.
        if (m_watch != nullptr) {
            m_watch->stop();
            m_watch = nullptr;
        }
        loop_access::remove_close_hook(*m_loop, this);
        loop_access::remove_timer(*m_loop, &m_timeout);
        loop_access::remove_timer(*m_loop, &m_delay);
        for (auto& r : m_readers) stream_access::abandon(r.second);
        for (auto& w : m_writers) stream_access::abandon(w.second);
        m_loop = nullptr;
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
        if (m_reason != reason::none) {
            m_abort.request_stop();
        } else if (m_wait_delay) {
            m_delay.deadline = std::chrono::steady_clock::now() + *m_wait_delay;
            loop_access::add_timer(*m_loop, &m_delay);
        }
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
    unsigned long m_pid;
    unique_handle m_process;
    unique_handle m_job;
    std::string m_program;
    exit_watch* m_watch = nullptr;
    bool m_tree = false;
    bool m_bound_after_exit = false;
    bool m_closing = false;
    int m_kill_signal = SIGTERM;
    int m_killed_by = 0;
    std::optional<std::chrono::milliseconds> m_wait_delay;
    reason m_reason = reason::none;
    std::optional<exit_status> m_status;
    wait_node* m_waiters = nullptr;
    timer_entry m_timeout;
    timer_entry m_delay;
    std::stop_source m_abort;
    std::vector<std::pair<int, readable_stream>> m_readers;
    std::vector<std::pair<int, writable_stream>> m_writers;
    std::optional<std::stop_callback<on_stop>> m_stop_callback;
};

} // namespace conflux::detail
#endif
