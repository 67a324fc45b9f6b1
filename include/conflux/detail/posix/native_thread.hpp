#pragma once

#include <conflux/detail/posix/sigpipe.hpp>
#include <conflux/detail/system_error.hpp>

#include <chrono>
#include <cstddef>
#include <exception>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>

namespace conflux::detail {

/// How to start a thread: its name (shown by ps, top, gdb; cut to the kernel's 15 bytes) and
/// its stack size (0: the system default; otherwise rounded up to whole pages and to at
/// least PTHREAD_STACK_MIN).
struct thread_options {
    std::string name;
    std::size_t stack_size = 0;
};

/// A joinable POSIX thread with a name and a stack size, which std::thread cannot set.
/// Joined on destruction.
class native_thread {
public:
    native_thread() noexcept = default;

    /// Starts `f` on a new thread. Throws `std::system_error` naming `pthread_create` and the
    /// thread's name (EAGAIN when the system is out of threads).
    template <class F>
    native_thread(F&& f, const thread_options& options) {
        using fn_t = std::decay_t<F>;
        struct start_block {
            fn_t fn;
            std::string name;
            bool unblock_sigpipe;
        };
        // A loop's thread may have SIGPIPE blocked for its run() (detail/sigpipe.hpp); the new
        // thread would inherit that mask for good.
        auto block = std::make_unique<start_block>(
            start_block{fn_t(std::forward<F>(f)), options.name, sigpipe_blocked_by_conflux()});
        pthread_attr_t attr;
        if (int err = ::pthread_attr_init(&attr); err != 0) {
            throw_system_error(err, "pthread_attr_init", options.name);
        }
        struct attr_guard {
            pthread_attr_t* a;
            ~attr_guard() { ::pthread_attr_destroy(a); }
        } guard{&attr};
        if (options.stack_size != 0) {
            const std::size_t page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
            // PTHREAD_STACK_MIN may be a call to sysconf (glibc 2.34+), of type long.
            const auto min_stack = static_cast<std::size_t>(PTHREAD_STACK_MIN);
            std::size_t size = options.stack_size < min_stack ? min_stack : options.stack_size;
            size = (size + page - 1) / page * page;
            if (int err = ::pthread_attr_setstacksize(&attr, size); err != 0) {
                throw_system_error(err, "pthread_attr_setstacksize", options.name);
            }
        }
        auto entry = [](void* p) -> void* {
            std::unique_ptr<start_block> b(static_cast<start_block*>(p));
            if (b->unblock_sigpipe) unblock_inherited_sigpipe();
            if (!b->name.empty()) {
                std::string shown = b->name.substr(0, 15);
                ::pthread_setname_np(::pthread_self(), shown.c_str());
            }
            b->fn();
            return nullptr;
        };
        if (int err = ::pthread_create(&m_thread, &attr, entry, block.get()); err != 0) {
            throw_system_error(err, "pthread_create", options.name);
        }
        block.release();
        m_joinable = true;
    }

    native_thread(native_thread&& other) noexcept
        : m_thread(other.m_thread), m_joinable(std::exchange(other.m_joinable, false)) {}
    native_thread& operator=(native_thread&& other) noexcept {
        if (this != &other) {
            join();
            m_thread = other.m_thread;
            m_joinable = std::exchange(other.m_joinable, false);
        }
        return *this;
    }
    native_thread(const native_thread&) = delete;
    native_thread& operator=(const native_thread&) = delete;
    ~native_thread() { join(); }

    bool joinable() const noexcept { return m_joinable; }

    /// Lets the thread run on its own (no-op if not joinable).
    void detach() noexcept {
        if (!m_joinable) return;
        m_joinable = false;
        ::pthread_detach(m_thread);
    }

    /// Waits for the thread to end (no-op if not joinable).
    void join() noexcept {
        if (!m_joinable) return;
        m_joinable = false;
        ::pthread_join(m_thread, nullptr);
    }

    /// Joins a thread that has announced that it is about to end (it runs no more of its
    /// function's code): yields the processor while the thread finishes exiting, for at most
    /// `budget`, then waits for it like `join()`.
    ///
    /// The announcement wakes the joiner while the thread still has its exit to run (the C
    /// runtime's clean-up, its stack's release, the exit system call), and a pthread_join
    /// that blocks then costs a second sleep and wake-up. A thread on the joiner's processor
    /// finishes during the first yield; one on another processor usually within a few yields,
    /// which then stand in for a short spin that leaves the processor to others.
    void join_exiting(std::chrono::nanoseconds budget) noexcept {
        if (!m_joinable) return;
#if defined(__GLIBC__)
        const auto deadline = std::chrono::steady_clock::now() + budget;
        while (::pthread_tryjoin_np(m_thread, nullptr) == EBUSY) {
            if (std::chrono::steady_clock::now() >= deadline) {
                join();
                return;
            }
            ::sched_yield();
        }
        m_joinable = false;
#else
        join();
#endif
    }

private:
    pthread_t m_thread{};
    bool m_joinable = false;
};

} // namespace conflux::detail
