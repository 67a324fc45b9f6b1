#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/channel.hpp>
#include <conflux/error.hpp>
#include <conflux/sleep.hpp>
#include <conflux/spawn_thread.hpp>
#include <conflux/task.hpp>
#include <conflux/when_any.hpp>
#include <conflux/detail/native_thread.hpp>

#include <atomic>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdio>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>

namespace conflux {

/// Thrown by `worker::join` for a worker that ended with an exception not derived from
/// `std::exception`, and by `worker::terminate` for a worker that ignored the request.
class worker_error : public error {
public:
    using error::error;
};

namespace detail {

/// The two channels behind an entangled pair of ports.
template <class A, class B>
struct port_link {
    channel<A> forward{channel<A>::unbounded};
    channel<B> backward{channel<B>::unbounded};
};

} // namespace detail

/// One end of a two-way typed message link (Node.js's `MessagePort`): posts `Send` values
/// to the other end and receives `Receive` values from it. Made in pairs by
/// `message_channel`, and given to a worker's body to talk to its parent.
///
/// Move-only; a port is itself a value that can be moved into a worker's data or posted
/// through another port, so that two workers talk directly. Thread-safe like `channel`.
/// Closing either end (or destroying it) closes the link both ways: what was posted before
/// stays receivable, then `receive()` gives `std::nullopt` and `post` returns false.
template <class Send, class Receive = Send>
class message_port {
public:
    /// A port linked to nothing: `post` returns false, `receive` ends at once.
    message_port() noexcept = default;

    message_port(message_port&& other) noexcept
        : m_link(std::move(other.m_link)), m_out(std::exchange(other.m_out, nullptr)),
          m_in(std::exchange(other.m_in, nullptr)) {}
    message_port& operator=(message_port&& other) noexcept {
        if (this != &other) {
            close();
            m_link = std::move(other.m_link);
            m_out = std::exchange(other.m_out, nullptr);
            m_in = std::exchange(other.m_in, nullptr);
        }
        return *this;
    }
    message_port(const message_port&) = delete;
    message_port& operator=(const message_port&) = delete;
    ~message_port() { close(); }

    /// Posts `value` to the other end without waiting (the link is unbounded): true if it
    /// was queued, false once the link is closed (the value is dropped). Throws
    /// `conflux::error` for a detached `buffer`.
    bool post(Send value) {
        if (!m_out) return false;
        try {
            return m_out->try_send(std::move(value));
        } catch (const channel_closed&) {
            return false;
        }
    }

    /// Awaitable: the next message, or `std::nullopt` once the link is closed and drained.
    /// Resumes on the awaiting coroutine's executor; cancelled by `token` (or the inherited
    /// stop token) with `operation_cancelled`.
    [[nodiscard]] typename channel<Receive>::receive_awaiter receive(std::stop_token token = {}) {
        return inbox().receive(std::move(token));
    }

    /// Receives without waiting: a message, or `std::nullopt` when none is waiting or once
    /// the link is closed and drained (the end, as `receive` reports it; `inbox().closed()`
    /// tells the two apart). Never throws.
    std::optional<Receive> try_receive() { return m_in ? m_in->try_receive() : std::nullopt; }

    /// `receive` for plain threads (blocks).
    std::optional<Receive> blocking_receive(std::stop_token token = {}) {
        return inbox().blocking_receive(std::move(token));
    }

    /// Closes the link both ways. Idempotent.
    void close() noexcept {
        if (m_out) m_out->close();
        if (m_in) m_in->close();
    }

    /// False for a default-constructed or moved-from port.
    bool linked() const noexcept { return m_link != nullptr; }

    /// The channel this port receives from (for `receive_any` over several ports).
    channel<Receive>& inbox() {
        if (!m_in) {
            struct closed_channel : channel<Receive> {
                closed_channel() : channel<Receive>(0) { this->close(); }
            };
            static closed_channel closed_inbox;
            return closed_inbox;
        }
        return *m_in;
    }

private:
    template <class A, class B>
    friend struct message_channel;
    template <class In, class Out>
    friend class worker;

    message_port(std::shared_ptr<void> link, channel<Send>* out, channel<Receive>* in) noexcept
        : m_link(std::move(link)), m_out(out), m_in(in) {}

    std::shared_ptr<void> m_link;
    channel<Send>* m_out = nullptr;
    channel<Receive>* m_in = nullptr;
};

/// An entangled pair of ports (Node.js's `MessageChannel`): what `port1` posts, `port2`
/// receives, and the other way round. Hand the ports to two workers to let them talk
/// directly.
///
/// ```
/// conflux::message_channel<int> mc;
/// conflux::worker<conflux::message_port<int>> w(body);
/// w.post(std::move(mc.port2));
/// mc.port1.post(42);
/// ```
template <class A, class B = A>
struct message_channel {
    message_port<A, B> port1;
    message_port<B, A> port2;

    message_channel() {
        auto link = std::make_shared<detail::port_link<A, B>>();
        port1 = message_port<A, B>(link, &link->forward, &link->backward);
        port2 = message_port<B, A>(link, &link->backward, &link->forward);
    }
};

/// Options of a worker, for designated initialisers.
struct worker_options {
    /// The thread's name (shown by ps/top/gdb, cut to 15 bytes) and in error messages.
    std::string name = "conflux-worker";
    /// The thread's stack size; 0 for the system default.
    std::size_t stack_size = 0;
    /// How long `terminate()` and the destructor wait for the worker to honour its stop
    /// token before reporting it.
    std::chrono::milliseconds terminate_deadline{1000};
};

/// A long-lived thread with its own `event_loop` running a coroutine (Node.js's `Worker`),
/// talking to its parent through typed ports: the parent posts `ToWorker` messages and
/// receives `FromWorker` ones, the body the other way round.
///
/// The body is called on the worker's thread as `body(port, std::move(data))` — or
/// `body(port)` without data — where `port` is a `message_port<FromWorker, ToWorker>&`, and
/// returns `task<void>`. When it returns, the worker's port closes: the parent receives what
/// was posted, then `std::nullopt`.
///
/// - `join()` waits for the body to end and rethrows its exception (a non-`std::exception`
///   one as `worker_error`).
/// - `terminate()` asks the worker to stop: its body's stop token is requested, so each of
///   its pending awaits ends with `operation_cancelled`. A worker that does not end within
///   `terminate_deadline` is reported with `worker_error` (it keeps running).
/// - Destroying a worker terminates it and joins its thread; one that ignores the stop
///   token past the deadline is reported on stderr, then still waited for — never leaked.
///
/// Move-only. `post` and `receive` are thread-safe; `join` and `terminate` are awaited on an
/// event loop, one at a time.
///
/// ```
/// conflux::worker<int, int> w([](auto& parent, int base) -> conflux::task<> {
///     while (auto n = co_await parent.receive()) parent.post(*n + base);
/// }, 100);
/// w.post(1);
/// int r = *co_await w.receive();   // 101
/// ```
template <class ToWorker, class FromWorker = ToWorker>
class worker {
public:
    /// The port the body receives: it posts `FromWorker` and receives `ToWorker`.
    using body_port = message_port<FromWorker, ToWorker>;

    /// Starts `body(port, std::move(data))` on a new thread. Throws `std::system_error`
    /// ("pthread_create" and the worker's name) when no thread can be started.
    template <class F, class Data>
    requires std::invocable<F&, body_port&, Data&&> worker(F body, Data data,
                                                           worker_options options = {})
        : worker(start_tag{}, std::move(options),
                 [body = std::move(body), data = std::move(data)](body_port& port) mutable
                 -> task<void> { return std::invoke(body, port, std::move(data)); }) {}

    /// Starts `body(port)` on a new thread.
    template <class F>
    requires std::invocable<F&, body_port&>
    explicit worker(F body, worker_options options = {})
        : worker(start_tag{}, std::move(options), std::move(body)) {}

    worker(worker&&) noexcept = default;
    worker& operator=(worker&& other) noexcept {
        if (this != &other) {
            shut_down();
            m_state = std::move(other.m_state);
            m_port = std::move(other.m_port);
            m_thread = std::move(other.m_thread);
        }
        return *this;
    }
    worker(const worker&) = delete;
    worker& operator=(const worker&) = delete;

    ~worker() { shut_down(); }

    /// Posts a message to the worker without waiting; false once the worker has ended.
    bool post(ToWorker value) { return m_port.post(std::move(value)); }

    /// Awaitable: the worker's next message, or `std::nullopt` once it ended and everything
    /// it posted was received. Resumes on the awaiter's executor; cancellable through the
    /// stop token (`operation_cancelled`).
    [[nodiscard]] auto receive(std::stop_token token = {}) { return m_port.receive(token); }

    /// Receives without waiting: the worker's next message, or `std::nullopt` when none is
    /// waiting or once it ended and everything it posted was received. Never throws.
    std::optional<FromWorker> try_receive() { return m_port.try_receive(); }

    /// The parent's end of the worker's port.
    message_port<ToWorker, FromWorker>& port() noexcept { return m_port; }

    const std::string& name() const noexcept { return m_state->options.name; }

    /// True until the body has ended.
    bool running() const noexcept {
        return m_state && !m_state->finished.load(std::memory_order_acquire);
    }

    /// Asks the worker to stop (its stop token), without waiting. Thread-safe.
    void request_stop() noexcept {
        if (m_state) {
            m_state->terminated.store(true, std::memory_order_relaxed);
            m_state->stop.request_stop();
        }
    }

    /// Waits for the worker's body to end, joins its thread and rethrows the body's
    /// exception (except the `operation_cancelled` that a `terminate` caused). Resumes on the
    /// awaiter's executor; the wait is cancelled by the awaiter's stop token
    /// (`operation_cancelled`, the worker keeps running). Throws `worker_error` for a body
    /// that threw something not derived from `std::exception`.
    task<void> join() {
        co_await m_state->exited.receive();
        finish_join();
    }

    /// Asks the worker to stop and waits up to `terminate_deadline` for it to end: every
    /// pending await in its body ends with `operation_cancelled`. Throws `worker_error` if it
    /// did not end in time (it is left running; dropping the worker waits for it). The
    /// body's own failure, if any, is left for `join()`. Awaited on an event loop.
    task<void> terminate() {
        request_stop();
        state& st = *m_state;
        auto outcome = co_await when_any([&st]() -> task<void> { co_await st.exited.receive(); }(),
                                         sleep_for(st.options.terminate_deadline));
        if (outcome.index() == 1) {
            throw worker_error("conflux::worker \"" + st.options.name + "\": still running " +
                               std::to_string(st.options.terminate_deadline.count()) +
                               " ms after terminate() (its body ignores its stop token)");
        }
        std::lock_guard lock(st.join_mutex);
        m_thread.join_exiting(detail::thread_exit_budget);
    }

private:
    struct state {
        worker_options options;
        std::stop_source stop;
        channel<int> exited{0}; // closed when the body has ended
        std::exception_ptr failure;
        std::atomic<bool> finished{false};
        std::atomic<bool> terminated{false};
        std::mutex join_mutex;
    };

    struct start_tag {};

    template <class Body>
    worker(start_tag, worker_options options, Body body) : m_state(std::make_unique<state>()) {
        m_state->options = std::move(options);
        message_channel<ToWorker, FromWorker> link;
        m_port = std::move(link.port1);
        state* st = m_state.get();
        m_thread = detail::native_thread(
            [st, body = std::move(body), port = std::move(link.port2)]() mutable noexcept {
                try {
                    detail::run_with_stop_token(std::invoke(body, port), st->stop.get_token());
                } catch (...) {
                    st->failure = std::current_exception();
                }
                port.close();
                st->finished.store(true, std::memory_order_release);
                st->exited.close(); // last touch of the state by this thread
            },
            detail::thread_options{m_state->options.name, m_state->options.stack_size});
    }

    void finish_join() {
        state& st = *m_state;
        {
            std::lock_guard lock(st.join_mutex);
            m_thread.join_exiting(detail::thread_exit_budget);
        }
        if (!st.failure) return;
        try {
            std::rethrow_exception(st.failure);
        } catch (const operation_cancelled&) {
            if (!st.terminated.load(std::memory_order_relaxed)) throw;
        } catch (const std::exception&) {
            throw;
        } catch (...) {
            throw worker_error("conflux::worker \"" + st.options.name +
                               "\": exited with an unknown exception (not derived from "
                               "std::exception)");
        }
    }

    void shut_down() noexcept {
        if (!m_state) return;
        request_stop();
        m_port.close();
        if (m_thread.joinable()) {
            const auto deadline =
                std::chrono::steady_clock::now() + m_state->options.terminate_deadline;
            auto pause = std::chrono::microseconds(50);
            bool reported = false;
            while (!m_state->finished.load(std::memory_order_acquire)) {
                if (!reported && std::chrono::steady_clock::now() >= deadline) {
                    std::fprintf(
                        stderr,
                        "conflux::worker \"%s\": still running %lld ms after being "
                        "dropped (its body ignores its stop token); waiting for it\n",
                        m_state->options.name.c_str(),
                        static_cast<long long>(m_state->options.terminate_deadline.count()));
                    reported = true;
                }
                std::this_thread::sleep_for(pause);
                if (pause < std::chrono::milliseconds(5)) pause *= 2;
            }
            std::lock_guard lock(m_state->join_mutex);
            m_thread.join_exiting(detail::thread_exit_budget);
        }
        m_state.reset();
    }

    std::unique_ptr<state> m_state;
    message_port<ToWorker, FromWorker> m_port;
    detail::native_thread m_thread;
};

} // namespace conflux
