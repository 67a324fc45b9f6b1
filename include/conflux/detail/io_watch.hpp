#pragma once

#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/detail/epoll.hpp>
#include <conflux/detail/loop_wait.hpp>

#include <coroutine>
#include <cstdint>
#include <stop_token>

namespace conflux::detail {

/// Watches one non-blocking fd on an event loop for readability and writability
/// (edge-triggered), for the layers above: streams, pidfds, sockets. At most one reader and
/// one writer wait at a time. Belongs to the loop's thread.
///
/// Use: try the operation; on EAGAIN, `co_await watch.readable(token)` and try again. An edge
/// that arrives while nobody waits is remembered, so the next wait returns at once (it may
/// then be spurious: callers always retry the syscall).
///
/// Write space is watched only from the first wait for it until an edge finds no writer
/// waiting: a Unix socket signals write space at every read its peer makes, and a standing
/// write interest would wake a sleeping loop for each of those reads.
class io_watch : private io_handler {
public:
    enum class direction { read, write };

    io_watch(event_loop& loop, int fd) : m_loop(&loop), m_fd(fd) {
        on_events = &dispatch;
        loop_access::reactor(loop).add(fd, read_interest, this);
    }
    io_watch(const io_watch&) = delete;
    io_watch& operator=(const io_watch&) = delete;
    ~io_watch() { loop_access::registered_reactor(*m_loop).remove(m_fd); }

    event_loop& loop() const noexcept { return *m_loop; }
    int fd() const noexcept { return m_fd; }

    /// Whether the fd has reported a hang-up or an error. Such an edge comes once: a reader
    /// that decides from its own reads that nothing is left must still read once more to
    /// see the end of the stream.
    bool hung_up() const noexcept { return m_hung_up; }

    class awaiter {
    public:
        awaiter(io_watch& watch, direction dir, std::stop_token token) noexcept
            : m_watch(watch), m_dir(dir), m_token(std::move(token)) {}
        awaiter(const awaiter&) = delete;
        awaiter& operator=(const awaiter&) = delete;
        ~awaiter() {
            // Destroyed while waiting (loop shutdown): leave no dangling waiter behind.
            if (slot() == &m_wait) slot() = nullptr;
        }

        bool await_ready() {
            if (m_token.stop_requested()) throw operation_cancelled();
            bool& ready = m_dir == direction::read ? m_watch.m_read_ready : m_watch.m_write_ready;
            return std::exchange(ready, false);
        }

        void await_suspend(std::coroutine_handle<> h) {
            if (slot() != nullptr) {
                throw std::logic_error("conflux: two coroutines waiting on the same fd direction");
            }
            if (m_dir == direction::write && !m_watch.m_write_armed) {
                // Modifying an edge-triggered registration reports the fd's current state,
                // so space that is already there is not missed.
                loop_access::registered_reactor(*m_watch.m_loop)
                    .modify(m_watch.m_fd, write_interest, &m_watch);
                m_watch.m_write_armed = true;
            }
            slot() = &m_wait;
            m_wait.arm(
                h, any_executor(*m_watch.m_loop), m_token,
                [](void* self) noexcept {
                    auto* me = static_cast<awaiter*>(self);
                    me->slot() = nullptr;
                },
                this);
        }

        void await_resume() {
            if (m_wait.finish()) throw operation_cancelled();
        }

    private:
        loop_wait*& slot() noexcept {
            return m_dir == direction::read ? m_watch.m_reader : m_watch.m_writer;
        }

        io_watch& m_watch;
        direction m_dir;
        std::stop_token m_token;
        loop_wait m_wait;
    };

    /// Resumes when the fd becomes readable, hangs up or errs (or at once if that happened
    /// since the last wait). Throws `operation_cancelled` when `token` is stopped.
    [[nodiscard]] awaiter readable(std::stop_token token = {}) noexcept {
        return awaiter(*this, direction::read, std::move(token));
    }

    /// Resumes when the fd becomes writable or errs. Throws `operation_cancelled` when
    /// `token` is stopped.
    [[nodiscard]] awaiter writable(std::stop_token token = {}) noexcept {
        return awaiter(*this, direction::write, std::move(token));
    }

private:
    static void dispatch(io_handler* handler, std::uint32_t events) noexcept {
        auto* self = static_cast<io_watch*>(handler);
        if (io_reactor::hung_up(events)) self->m_hung_up = true;
        if (io_reactor::readable(events)) {
            wake(self->m_reader, self->m_read_ready);
        }
        if (io_reactor::writable(events)) {
            const bool writer_waited = self->m_writer != nullptr;
            wake(self->m_writer, self->m_write_ready);
            if (!writer_waited && self->m_write_armed &&
                loop_access::registered_reactor(*self->m_loop)
                    .try_modify(self->m_fd, read_interest, self)) {
                self->m_write_armed = false;
            }
        }
    }

    static void wake(loop_wait*& waiter, bool& ready) noexcept {
        if (waiter) {
            std::exchange(waiter, nullptr)->complete();
        } else {
            ready = true;
        }
    }

    static constexpr std::uint32_t read_interest = io_reactor::read_edges;
    static constexpr std::uint32_t write_interest = io_reactor::read_write_edges;

    event_loop* m_loop;
    int m_fd;
    bool m_write_armed = false;
    bool m_hung_up = false;
    loop_wait* m_reader = nullptr;
    loop_wait* m_writer = nullptr;
    bool m_read_ready = false;
    bool m_write_ready = false;
};

} // namespace conflux::detail
