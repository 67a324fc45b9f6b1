#pragma once

#include <conflux/detail/cpp20.hpp>

#if !CONFLUX_HAS_FORK_IPC
#error "conflux/process_pool.hpp: process pools are not supported on Windows yet"
#include <conflux/detail/compilation_stopped_by_the_error_above>
#endif

#include <conflux/channel.hpp>
#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/exit_status.hpp>
#include <conflux/fork.hpp>
#include <conflux/ipc.hpp>
#include <conflux/pool.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/pool_histogram.hpp>
#include <conflux/detail/process_pool_child.hpp>
#include <conflux/detail/process_pool_impl.hpp>
#include <conflux/detail/process_self.hpp>
#include <conflux/detail/result.hpp>

#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>

namespace conflux {

/// A function a `process_pool` can run, registered under a name: the child processes are the
/// same program, so the pool sends the name and the arguments (encoded by `codec<T>`), and the
/// child calls its own copy. Define it at namespace scope, so that it is registered before
/// `conflux::run` in the parent and in every child:
///
/// ```
/// const conflux::pool_function<std::uint64_t(std::uint64_t)> count_primes(
///     "count_primes", [](std::uint64_t limit) { return ...; });
/// ...
/// std::uint64_t n = co_await pool.run(count_primes, 1'000'000);
/// ```
///
/// The function is a plain function or a coroutine function returning `task<R>` (it then runs
/// on the child's event loop). Its exception reaches the caller of `run` as `remote_error`
/// (with the type's name and `what()`). Registering a name twice throws `std::logic_error`.
template <class Signature>
class pool_function;

template <class R, class... Args>
class pool_function<R(Args...)> {
public:
    using result_type = R;
    using reply_type = std::variant<detail::non_void_t<R>, detail::pool_failure>;

    template <class F>
    pool_function(std::string name, F fn) : m_name(std::move(name)) {
        detail::register_process_pool_entry();
        auto [it, inserted] = detail::pool_functions().try_emplace(m_name, serve(std::move(fn)));
        if (!inserted) {
            throw std::logic_error("conflux::pool_function: \"" + m_name +
                                   "\" is registered twice");
        }
    }

    const std::string& name() const noexcept { return m_name; }

private:
    template <class F>
    static detail::pool_server serve(F fn) {
        return [fn = std::move(fn)](ipc_channel& parent_channel) mutable -> task<void> {
            std::optional<reply_type> reply;
            try {
                auto args = co_await parent_channel.receive<std::tuple<std::decay_t<Args>...>>();
                if (!args) co_return;
                using call_t = decltype(std::apply(fn, std::move(*args)));
                if constexpr (detail::unwrap_task<call_t>::is_task) {
                    task<R> t = std::apply(fn, std::move(*args));
                    if constexpr (std::is_void_v<R>) {
                        co_await std::move(t);
                        reply.emplace(std::in_place_index<0>);
                    } else {
                        reply.emplace(std::in_place_index<0>, co_await std::move(t));
                    }
                } else if constexpr (std::is_void_v<R>) {
                    std::apply(fn, std::move(*args));
                    reply.emplace(std::in_place_index<0>);
                } else {
                    reply.emplace(std::in_place_index<0>, std::apply(fn, std::move(*args)));
                }
            } catch (const std::exception& e) {
                reply.emplace(
                    std::in_place_index<1>,
                    detail::pool_failure{detail::current_exception_type_name(), e.what()});
            } catch (...) {
                reply.emplace(std::in_place_index<1>,
                              detail::pool_failure{detail::current_exception_type_name(),
                                                   "unknown exception"});
            }
            co_await parent_channel.send(std::move(*reply));
        };
    }

    std::string m_name;
};

/// The process-backed `worker_pool`: the same options, `run`/`try_run`/`close`/`stats`, but
/// each task runs in a child process started with `conflux::fork` (this same program), so that
/// a crash, a leak or a stuck library takes down one child, not the caller. Tasks are
/// `pool_function`s (a child runs a function by name), their arguments and results travel
/// over the child's typed IPC channel (`codec<T>`; a shareable `buffer`, a `shared_buffer` or
/// a `file_descriptor` as a descriptor, not as bytes).
///
/// - Children as `worker_pool` has threads: `minimum` are started when the pool is created
///   on an event loop's thread (or, created elsewhere, when it first runs a task), more up to
///   `maximum` while tasks wait for one, and a child above the minimum that stays idle for
///   `idle_timeout` is disconnected and reaped (never below `minimum`, however many idle
///   timeouts end together). `max_queue` bounds the tasks waiting for a child (`run` waits
///   for room, `try_run` throws `pool_error`).
/// - A child that dies while running a task (a signal, `exit`) fails that task with
///   `pool_error` naming the process, how it ended and the function; the pool reaps it,
///   starts a replacement and carries on.
/// - Cancellation through the awaiter's stop token: a queued task is removed
///   (`operation_cancelled`); a running one cannot be interrupted inside a process, so its
///   child is killed (and replaced), and `run` throws `operation_cancelled`.
/// - `co_await close()` lets accepted tasks finish, then disconnects every child and reaps
///   it. Destroying the pool fails queued tasks with `pool_error`, kills the children running
///   tasks (those `run`s fail with `pool_error`) and lets the loop reap every child.
///
/// A process pool belongs to the event loop of the thread that creates it (or, created on no
/// loop's thread, to the loop it first runs on): `run`, `close`, `stats` and the destructor
/// are called on that loop's thread. `child_args` are the children's command-line
/// arguments (their `main` runs up to `conflux::run`, which then serves the pool).
///
/// ```
/// conflux::process_pool pool({.maximum = 4});
/// std::uint64_t n = co_await pool.run(count_primes, 1'000'000);
/// ```
class process_pool {
public:
    explicit process_pool(worker_pool_options options = {}, arguments child_args = {})
        : m_state(std::make_shared<state>()) {
        if (options.maximum == 0) options.maximum = thread_pool::default_thread_count();
        if (options.minimum > options.maximum) {
            throw std::invalid_argument("conflux::process_pool \"" + options.name +
                                        "\": minimum (" + std::to_string(options.minimum) +
                                        ") exceeds maximum (" + std::to_string(options.maximum) +
                                        ")");
        }
        detail::register_process_pool_entry();
        m_state->options = std::move(options);
        m_state->child_args = std::move(child_args);
        if (event_loop::current() != nullptr) m_state->bind_loop("conflux::process_pool");
    }

    process_pool(const process_pool&) = delete;
    process_pool& operator=(const process_pool&) = delete;

    ~process_pool() { m_state->shut_down(); }

    /// Awaitable: runs `fn(args...)` in a child process and gives its result; rethrows its
    /// exception as `remote_error`. Waits for room when the queue is full. Resumes on the
    /// pool's loop. Throws `pool_error` after `close()`, when the pool is destroyed first or
    /// when the child dies, `operation_cancelled` when the awaiter's token stops it.
    template <class R, class... P, class... Args>
    requires(sizeof...(P) == sizeof...(Args))
        [[nodiscard]] task<R> run(const pool_function<R(P...)>& fn, Args&&... args) {
        detail::pool_check_temporaries<const pool_function<R(P...)>&, Args...>();
        return run_impl<R, std::decay_t<P>...>(m_state, true, fn.name(),
                                               std::decay_t<P>(std::forward<Args>(args))...);
    }

    /// `run`, except that a full queue fails the task at once with `pool_error`.
    template <class R, class... P, class... Args>
    requires(sizeof...(P) == sizeof...(Args))
        [[nodiscard]] task<R> try_run(const pool_function<R(P...)>& fn, Args&&... args) {
        detail::pool_check_temporaries<const pool_function<R(P...)>&, Args...>();
        return run_impl<R, std::decay_t<P>...>(m_state, false, fn.name(),
                                               std::decay_t<P>(std::forward<Args>(args))...);
    }

    /// Refuses new tasks, waits for the accepted ones (and for children being started or
    /// ending), then disconnects every child and waits for it to exit. Idempotent.
    [[nodiscard]] task<void> close() { return state::close(m_state); }

    bool closed() const noexcept { return m_state->closed; }

    /// As `worker_pool::stats`; `threads` counts child processes, those being started and
    /// those ended by their idle timeout but not reaped yet included. On the pool's loop.
    worker_pool_stats stats() const {
        const state& st = *m_state;
        worker_pool_stats out;
        out.threads = st.live + st.leaving;
        out.idle = st.live > st.busy + st.starting ? st.live - st.busy - st.starting : 0;
        out.queued = st.queued;
        out.waiting_for_room = st.room_waiting;
        out.running = st.busy;
        out.completed = st.completed;
        out.wait_time.add(st.wait_time);
        out.run_time.add(st.run_time);
        out.wait_time.finish();
        out.run_time.finish();
        return out;
    }

    const worker_pool_options& options() const noexcept { return m_state->options; }

private:
    using state = detail::process_pool_state;
    using slot = detail::process_pool_slot;
    using state_ptr = std::shared_ptr<state>;

    template <class R, class... P>
    static task<R> run_impl(state_ptr st, bool wait, std::string name, P... args) {
        using reply_type = typename pool_function<R(P...)>::reply_type;
        std::stop_token token = co_await get_stop_token();
        if (st->closed) {
            throw pool_error(st->prefix() + (st->destroyed ? "destroyed" : "run() after close()"));
        }
        st->bind_loop("conflux::process_pool::run");
        const auto queued_at = std::chrono::steady_clock::now();
        slot* s = co_await state::acquire(st, wait, token);
        s->busy = true;
        ++st->busy;
        const auto begin = std::chrono::steady_clock::now();
        st->wait_time.record(begin - queued_at);

        std::optional<reply_type> reply;
        bool cancelled = false;
        try {
            co_await s->child->send(name);
            std::tuple<P...> packed(std::move(args)...);
            co_await s->child->send(packed);
            reply = co_await s->child->template receive<reply_type>(token);
        } catch (const operation_cancelled&) {
            cancelled = true;
        } catch (...) {
            // The channel failed (the child wrote garbage, or vanished mid-send): as a death.
        }
        st->run_time.record(std::chrono::steady_clock::now() - begin);
        ++st->completed;

        if (!reply) {
            // Dead, or to be killed: reap it, then replace it unless the pool is going away.
            // With a token of its own: the caller's may be the one that stopped the task.
            const auto pid = s->child->pid();
            task<exit_status> reaping = detail::with_stop_token(state::reap_and_replace(st, s), {});
            exit_status status = co_await std::move(reaping);
            if (cancelled) throw operation_cancelled();
            if (st->destroyed) {
                throw pool_error(st->prefix() + "destroyed while \"" + name + "\" ran");
            }
            throw pool_error(st->prefix() + "worker process " + std::to_string(pid) + " " +
                             status.to_string() + " while running \"" + name + "\"");
        }
        st->release(*s);
        if (reply->index() == 1) {
            auto& failure = std::get<1>(*reply);
            throw remote_error(std::move(failure.type), std::move(failure.message));
        }
        if constexpr (!std::is_void_v<R>) {
            co_return std::get<0>(std::move(*reply));
        }
    }

    state_ptr m_state;
};

} // namespace conflux
