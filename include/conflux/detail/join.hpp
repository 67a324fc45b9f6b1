#pragma once

#include <conflux/executor.hpp>
#include <conflux/detail/driver.hpp>
#include <conflux/detail/work_item.hpp>

#include <atomic>
#include <coroutine>
#include <cstddef>
#include <span>

namespace conflux::detail {

/// Counts down the drivers of `when_all`/`when_any`; the last one to arrive resumes the
/// awaiting coroutine on the executor it was running on.
class join_counter {
public:
    explicit join_counter(std::size_t drivers) noexcept : m_remaining(drivers + 1) {}

    /// Called by a finishing driver (its frame already suspended): where to transfer next.
    std::coroutine_handle<> arrive() noexcept {
        // acq_rel: the last arriver sees every driver's result.
        if (m_remaining.fetch_sub(1, std::memory_order_acq_rel) != 1) {
            return std::noop_coroutine();
        }
        if (!m_resume_on || m_resume_on.running_in_this_thread()) {
            return m_resume.handle;
        }
        m_resume_on.enqueue(&m_resume);
        return std::noop_coroutine();
    }

    /// Awaitable that starts every driver and resumes once all have finished.
    auto start_and_wait(std::span<driver> drivers) noexcept {
        struct awaiter {
            join_counter& counter;
            std::span<driver> drivers;
            bool await_ready() const noexcept { return drivers.empty(); }
            bool await_suspend(std::coroutine_handle<> h) noexcept {
                counter.m_resume.handle = h;
                counter.m_resume_on = current_executor();
                for (driver& d : drivers) d.handle().resume();
                // Drop the awaiter's own count; if every driver already finished, go on
                // without suspending.
                return counter.m_remaining.fetch_sub(1, std::memory_order_acq_rel) != 1;
            }
            void await_resume() const noexcept {}
        };
        return awaiter{*this, drivers};
    }

private:
    std::atomic<std::size_t> m_remaining;
    any_executor m_resume_on;
    resume_item m_resume;
};

} // namespace conflux::detail
