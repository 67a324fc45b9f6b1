#pragma once

// The loop-side state of one child process: its pidfd watched for the exit, the waiters,
// the kill timers and the pipes. Shared (std::shared_ptr) between the `child_process`
// handle, pending waits and, once the handle is dropped, a reaper task owned by the loop.

#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/exit_status.hpp>
#include <conflux/stream.hpp>
#include <conflux/task.hpp>
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
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <utility>
#include <vector>

#include <signal.h>
#include <sys/epoll.h>
#include <sys/wait.h>

namespace conflux::detail {

class child_state : public std::enable_shared_from_this<child_state>, private io_handler {
public:
    struct wait_node {
        loop_wait wait;
        wait_node* next = nullptr;
        wait_node* prev = nullptr;
        bool linked = false;
    };

    child_state(event_loop& loop, launched&& l, std::string program) : m_loop(&loop) {
        m_pid = l.pid;
        m_pidfd = std::move(l.pidfd);
        m_program = std::move(program);
        on_events = &on_pidfd_event;
        // Level-triggered: the pidfd stays readable from the exit until we reap.
        loop_access::reactor(loop).add(m_pidfd.get(), EPOLLIN, this);
        m_registered = true;
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
            static_cast<child_state*>(e->context)->send(SIGKILL);
        };
    }

    child_state(const child_state&) = delete;
    child_state& operator=(const child_state&) = delete;

    ~child_state() {
        m_stop_callback.reset();
        loop_access::remove_timer(*m_loop, &m_timeout);
        loop_access::remove_timer(*m_loop, &m_grace);
        if (m_registered) loop_access::registered_reactor(*m_loop).remove(m_pidfd.get());
        if (!m_status && m_pidfd && m_sigkilled) {
            // The loop is going away with a killed child not reaped yet: SIGKILL cannot be
            // ignored, so this wait is short, and it leaves no zombie behind.
            siginfo_t info{};
            while (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(m_pidfd.get()), &info,
                            WEXITED) < 0 &&
                   errno == EINTR) {
            }
        } else if (!m_status && m_pidfd) {
            // A child left running (detached, or not killed on drop) outlives its loop: the
            // process-wide orphan list keeps its pidfd and a later spawn reaps it.
            orphan_children::instance().adopt(std::move(m_pidfd));
        }
    }

    enum class reason { none, timeout, cancelled, overflow };

    void configure(const std::chrono::milliseconds timeout, int kill_signal,
                   std::chrono::milliseconds grace, bool tree, const std::stop_token& token) {
        m_kill_signal = kill_signal;
        m_grace_period = grace;
        m_tree = tree;
        if (timeout.count() > 0) {
            m_timeout.deadline = std::chrono::steady_clock::now() + timeout;
            loop_access::add_timer(*m_loop, &m_timeout);
        }
        if (token.stop_possible()) {
            m_stop_callback.emplace(token, on_stop{weak_from_this(), m_loop});
        }
    }

    event_loop& loop() const noexcept { return *m_loop; }
    pid_t pid() const noexcept { return m_pid; }
    const std::string& program() const noexcept { return m_program; }
    const std::optional<exit_status>& status() const noexcept { return m_status; }
    reason kill_reason() const noexcept { return m_reason; }

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

    /// Sends `sig` to the child (its group with kill_tree). False when it has already been
    /// reaped or is gone. Throws `std::system_error` for an invalid signal.
    bool send(int sig) {
        if (m_status) return false;
        // The group id is the child's pid, which cannot be reused while the child is not
        // reaped; so a group signal sent now never reaches a stranger.
        if (m_tree) {
            if (::kill(-m_pid, sig) != 0 && errno != ESRCH && errno != EPERM) {
                throw_errno("kill", m_program);
            }
        }
        if (pidfd_send_signal(m_pidfd.get(), sig) != 0) {
            if (errno == ESRCH) return false;
            throw_errno("kill", m_program);
        }
        if (sig == SIGKILL) m_sigkilled = true;
        return true;
    }

    /// `kill_signal` now, SIGKILL after the grace period if the child is still there.
    void terminate(reason why) noexcept {
        if (m_status) return;
        if (m_reason == reason::none) m_reason = why;
        try {
            send(m_kill_signal);
        } catch (...) {
            // An invalid kill_signal: fall through to SIGKILL at once.
            m_grace_period = std::chrono::milliseconds(0);
        }
        if (m_kill_signal != SIGKILL && !m_grace.queued()) {
            m_grace.deadline = std::chrono::steady_clock::now() + m_grace_period;
            loop_access::add_timer(*m_loop, &m_grace);
        }
    }

    /// Kill-on-drop: SIGKILL now.
    void kill_now() noexcept {
        try {
            send(SIGKILL);
        } catch (...) {
        }
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
            // Resumed either by the exit (status known) or by the cancellation (withdrawn).
            if (m_node.wait.finish()) throw operation_cancelled();
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

    void reap() noexcept {
        siginfo_t info{};
        int r;
        do {
            r = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(m_pidfd.get()), &info,
                         WEXITED | WNOHANG);
        } while (r < 0 && errno == EINTR);
        if (r == 0 && info.si_pid == 0) return; // not exited yet (a spurious wake-up)
        if (r < 0) {
            // ECHILD: the process set SIGCHLD to SIG_IGN and the kernel reaped the child;
            // its status is lost.
            m_status = exit_status();
        } else if (info.si_code == CLD_EXITED) {
            m_status = exit_status::exited(info.si_status);
        } else {
            m_status = exit_status::killed(info.si_status, info.si_code == CLD_DUMPED);
        }
        loop_access::registered_reactor(*m_loop).remove(m_pidfd.get());
        m_registered = false;
        m_pidfd.reset();
        loop_access::remove_timer(*m_loop, &m_timeout);
        loop_access::remove_timer(*m_loop, &m_grace);
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
    int m_kill_signal = SIGTERM;
    std::chrono::milliseconds m_grace_period{2000};
    reason m_reason = reason::none;
    std::optional<exit_status> m_status;
    wait_node* m_waiters = nullptr;
    timer_entry m_timeout;
    timer_entry m_grace;
    std::vector<std::pair<int, readable_stream>> m_readers;
    std::vector<std::pair<int, writable_stream>> m_writers;
    std::optional<std::stop_callback<on_stop>> m_stop_callback;
};

} // namespace conflux::detail
