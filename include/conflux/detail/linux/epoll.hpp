#pragma once

#include <conflux/detail/posix/unique_fd.hpp>
#include <conflux/detail/system_error.hpp>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

namespace conflux::detail {

/// Receives readiness events for an fd registered with the loop's epoll instance.
struct io_handler {
    void (*on_events)(io_handler*, std::uint32_t events) noexcept = nullptr;
};

/// The Linux backend of the event loop: an epoll instance plus an eventfd to wake it from
/// other threads. Everything epoll-specific stays here so another backend (kqueue) can slot
/// in behind the same members.
class epoll_reactor {
public:
    static constexpr int max_events = 128;

    // The interests a registration asks for, and what its events mean, in the terms the
    // layers above use (io_watch, the pidfd watch): they never see an EPOLL* bit.
    /// Readability, reported once per change (edge-triggered), with the peer's hang-up.
    static constexpr std::uint32_t read_edges = EPOLLIN | EPOLLRDHUP | EPOLLET;
    /// The same plus write space.
    static constexpr std::uint32_t read_write_edges = read_edges | EPOLLOUT;
    /// Readability reported for as long as it lasts (level-triggered): a pidfd from the
    /// child's exit until it is reaped.
    static constexpr std::uint32_t readable_level = EPOLLIN;

    static constexpr bool hung_up(std::uint32_t events) noexcept {
        return (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    }
    /// Data, the end of the stream or an error: a read would not block.
    static constexpr bool readable(std::uint32_t events) noexcept {
        return (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    }
    /// Space or an error: a write would not block.
    static constexpr bool writable(std::uint32_t events) noexcept {
        return (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0;
    }

    epoll_reactor() : m_epoll(::epoll_create1(EPOLL_CLOEXEC)) {
        if (!m_epoll) throw_errno("epoll_create1");
        m_wake = unique_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
        if (!m_wake) throw_errno("eventfd");
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.ptr = nullptr; // the wake-up fd is the only registration without a handler
        if (::epoll_ctl(m_epoll.get(), EPOLL_CTL_ADD, m_wake.get(), &ev) != 0) {
            throw_errno("epoll_ctl add", "eventfd");
        }
    }

    void add(int fd, std::uint32_t events, io_handler* handler) {
        epoll_event ev{};
        ev.events = events;
        ev.data.ptr = handler;
        if (::epoll_ctl(m_epoll.get(), EPOLL_CTL_ADD, fd, &ev) != 0) throw_errno("epoll_ctl add");
        ++m_watched;
    }

    void modify(int fd, std::uint32_t events, io_handler* handler) {
        epoll_event ev{};
        ev.events = events;
        ev.data.ptr = handler;
        if (::epoll_ctl(m_epoll.get(), EPOLL_CTL_MOD, fd, &ev) != 0) throw_errno("epoll_ctl mod");
    }

    /// modify() for paths that cannot throw: false if the kernel refused.
    bool try_modify(int fd, std::uint32_t events, io_handler* handler) noexcept {
        epoll_event ev{};
        ev.events = events;
        ev.data.ptr = handler;
        return ::epoll_ctl(m_epoll.get(), EPOLL_CTL_MOD, fd, &ev) == 0;
    }

    /// Ends the registration add() made (once for each).
    void remove(int fd) noexcept {
        // Failure means the fd was already closed (and so dropped from the set): nothing to do.
        ::epoll_ctl(m_epoll.get(), EPOLL_CTL_DEL, fd, nullptr);
        --m_watched;
    }

    /// True while an fd is registered: only then must the loop sleep in wait(). A loop that
    /// watches none sleeps on a word instead (detail/loop_sleep.hpp), which costs a futex
    /// wait and wake where the eventfd costs a write, epoll_pwait2 and a read.
    bool watching() const noexcept { return m_watched != 0; }

    /// Wakes a thread blocked in wait(). Async-signal-safe and thread-safe.
    void wake() noexcept {
        std::uint64_t one = 1;
        // EAGAIN means the counter is already non-zero: the loop will wake anyway.
        [[maybe_unused]] auto n = ::write(m_wake.get(), &one, sizeof one);
    }

    /// Waits for events up to `timeout` (none = forever) and dispatches them to their
    /// handlers. Returns the number of events.
    template <class Rep, class Period>
    int wait(std::optional<std::chrono::duration<Rep, Period>> timeout) {
        epoll_event events[max_events];
        int n = wait_raw(events, timeout);
        for (int i = 0; i < n; ++i) {
            auto* handler = static_cast<io_handler*>(events[i].data.ptr);
            if (handler == nullptr) {
                std::uint64_t counter;
                [[maybe_unused]] auto r = ::read(m_wake.get(), &counter, sizeof counter);
            } else {
                handler->on_events(handler, events[i].events);
            }
        }
        return n;
    }

private:
    template <class Rep, class Period>
    int wait_raw(epoll_event* events, std::optional<std::chrono::duration<Rep, Period>> timeout) {
        using namespace std::chrono;
        int n;
#ifdef SYS_epoll_pwait2
        if (m_have_pwait2) {
            timespec ts{};
            timespec* tsp = nullptr;
            if (timeout) {
                auto ns = duration_cast<nanoseconds>(*timeout).count();
                if (ns < 0) ns = 0;
                ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
                ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
                tsp = &ts;
            }
            // epoll_pwait2 (Linux 5.11) takes a nanosecond timeout; epoll_wait rounds timers
            // to whole milliseconds.
            n = static_cast<int>(
                ::syscall(SYS_epoll_pwait2, m_epoll.get(), events, max_events, tsp, nullptr, 0));
            if (n >= 0) return n;
            if (errno == ENOSYS) {
                m_have_pwait2 = false;
            } else if (errno == EINTR) {
                return 0;
            } else {
                throw_errno("epoll_pwait2");
            }
        }
#endif
        int ms = -1;
        if (timeout) {
            auto t = ceil<milliseconds>(*timeout).count();
            ms = t < 0 ? 0 : (t > 0x7fffffff ? 0x7fffffff : static_cast<int>(t));
        }
        n = ::epoll_wait(m_epoll.get(), events, max_events, ms);
        if (n >= 0) return n;
        if (errno == EINTR) return 0;
        throw_errno("epoll_wait");
    }

    unique_fd m_epoll;
    unique_fd m_wake;
    std::size_t m_watched = 0; // registrations made by add() and not yet removed
    bool m_have_pwait2 = true;
};

} // namespace conflux::detail
