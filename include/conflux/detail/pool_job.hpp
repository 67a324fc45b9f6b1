#pragma once

// The jobs of a `worker_pool` (pool.hpp): one lives in the frame of the `run` that awaits it,
// is queued in an intrusive list, runs on a pool thread and hands its result back.

#include <conflux/detail/cpp20.hpp>

#include <conflux/error.hpp>
#include <conflux/executor.hpp>
#include <conflux/spawn_thread.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/gcc12_temporaries.hpp>
#include <conflux/detail/waiter_list.hpp>

#include <chrono>
#include <exception>
#include <functional>
#include <stop_token>
#include <tuple>
#include <type_traits>
#include <utility>

namespace conflux {

class worker_pool;

namespace detail {

/// A task handed to a pool: lives in the frame of the `run` that awaits it.
struct pool_job {
    enum class state : unsigned char { queued, overflow, running, finished };

    pool_job* prev = nullptr;
    pool_job* next = nullptr;
    state where = state::queued; // under the pool's lock until the job runs
    bool is_coroutine = false;
    parking park;                           // the awaiting coroutine
    const std::stop_token* token = nullptr; // the one the task sees
    std::chrono::steady_clock::time_point queued_at{};

    virtual void execute() noexcept = 0;    // a plain function: runs it, stores the outcome
    virtual task<void> execute_async() = 0; // a coroutine: awaits it, stores the outcome
    virtual void fail(std::exception_ptr e) noexcept = 0;

protected:
    ~pool_job() = default;
};

/// An intrusive FIFO of jobs (doubly linked, for cancellation).
class pool_job_list {
public:
    bool empty() const noexcept { return m_head == nullptr; }
    std::size_t size() const noexcept { return m_size; }

    void push_back(pool_job* j) noexcept {
        j->next = nullptr;
        j->prev = m_tail;
        if (m_tail) {
            m_tail->next = j;
        } else {
            m_head = j;
        }
        m_tail = j;
        ++m_size;
    }

    pool_job* pop_front() noexcept {
        pool_job* j = m_head;
        if (j) erase(j);
        return j;
    }

    void erase(pool_job* j) noexcept {
        (j->prev ? j->prev->next : m_head) = j->next;
        (j->next ? j->next->prev : m_tail) = j->prev;
        j->prev = j->next = nullptr;
        --m_size;
    }

private:
    pool_job* m_head = nullptr;
    pool_job* m_tail = nullptr;
    std::size_t m_size = 0;
};

/// With GCC 12, refuses the temporaries a `co_await pool.run(...)` would destroy twice.
template <class F, class... Args>
constexpr void pool_check_temporaries() noexcept {
#if CONFLUX_DETAIL_GCC12_TEMPORARIES
    static_assert(!gcc12_unsafe_rvalue<F> && !(gcc12_unsafe_rvalue<Args> || ...),
                  "GCC 12 destroys a lambda with captures, or an aggregate, written inside a "
                  "co_await expression twice: name it first (`auto fn = [v] {...}; co_await "
                  "pool.run(fn);`) or pass what it captures as arguments "
                  "(`pool.run([](T v) {...}, v)`) (GCC >= 13 and Clang accept it)");
#endif
}

template <class R, class F, class... Args>
class pool_job_of final : public pool_job {
    using call_t = call_result_t<F, Args...>;

public:
    explicit pool_job_of(F f, Args... args) : m_fn(std::move(f)), m_args(std::move(args)...) {
        is_coroutine = unwrap_task<call_t>::is_task;
    }

    void execute() noexcept override {
        if constexpr (!unwrap_task<call_t>::is_task) {
            try {
                if constexpr (std::is_void_v<R>) {
                    call();
                    m_out.set_value();
                } else {
                    m_out.set_value(call());
                }
            } catch (...) {
                m_out.set_exception(std::current_exception());
            }
        }
    }

    task<void> execute_async() override {
        if constexpr (unwrap_task<call_t>::is_task) {
            try {
                task<R> t = with_stop_token(call(), *token);
                if constexpr (std::is_void_v<R>) {
                    co_await std::move(t);
                    m_out.set_value();
                } else {
                    m_out.set_value(co_await std::move(t));
                }
            } catch (...) {
                m_out.set_exception(std::current_exception());
            }
        }
        co_return;
    }

    void fail(std::exception_ptr e) noexcept override { m_out.set_exception(std::move(e)); }

    R take() { return m_out.take(); }

private:
    decltype(auto) call() {
        return std::apply(
            [this](Args&... a) -> decltype(auto) { return invoke_with_token(m_fn, *token, a...); },
            m_args);
    }

    F m_fn;
    std::tuple<Args...> m_args;
    result<R> m_out;
};

} // namespace detail

} // namespace conflux
