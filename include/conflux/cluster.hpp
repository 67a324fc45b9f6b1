#pragma once

#include <conflux/detail/cpp20.hpp>

#if !CONFLUX_HAS_FORK_IPC
#error "conflux/cluster.hpp: clusters are not supported on Windows yet"
#include <conflux/detail/compilation_stopped_by_the_error_above>
#endif

#include <conflux/channel.hpp>
#include <conflux/codec.hpp>
#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/exit_status.hpp>
#include <conflux/net.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/awaitable.hpp>
#include <conflux/detail/cluster_primary.hpp>
#include <conflux/detail/cluster_protocol.hpp>
#include <conflux/detail/cluster_worker.hpp>
#include <conflux/detail/gcc12_temporaries.hpp>
#include <conflux/detail/ipc_message.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace conflux {

/// How the workers of a cluster share a listening address.
enum class scheduling : std::uint8_t {
    /// The primary accepts and hands each connection to the next worker over IPC (Node's
    /// default, SCHED_RR): even spread, one extra hop per connection.
    round_robin = 0,
    /// Every worker accepts on the one listening socket the primary bound and handed out
    /// (Node's SCHED_NONE): no hop, the kernel wakes whichever worker waits.
    shared = 1,
    /// Every worker binds its own SO_REUSEPORT socket and the kernel spreads connections by
    /// hashing them (Node has no such mode): no hop, no shared accept queue.
    reuse_port = 2,
};
static_assert(static_cast<std::uint8_t>(scheduling::reuse_port) ==
                  detail::cluster_envelope::policy_reuse_port,
              "scheduling's values are the wire protocol's");

/// When and how fast dead workers come back; an aggregate for designated initialisers.
struct restart_policy {
    /// Restart a worker that exited without being asked to (crash, signal, exit).
    bool enabled = true;
    /// Delay before the first restart after a crash; doubles with each consecutive crash.
    std::chrono::milliseconds initial_delay{100};
    /// Longest delay between restarts.
    std::chrono::milliseconds max_delay{10'000};
    /// A worker that lived this long before dying resets the crash count.
    std::chrono::milliseconds stable_after{5'000};
    /// Give up on a slot after this many consecutive crashes (0: never).
    unsigned max_consecutive_failures = 0;
};

/// Options of a `cluster` (primary side); an aggregate for designated initialisers.
struct cluster_options {
    /// Number of workers; 0 = `std::thread::hardware_concurrency()`.
    unsigned workers = 0;
    /// How workers share a listening address (Node's `cluster.schedulingPolicy`).
    scheduling policy = scheduling::round_robin;
    /// The worker program; empty = this executable, re-run (Node's `setupPrimary({exec})`).
    std::string program{};
    /// The worker's arguments; default: this process's own arguments.
    std::optional<std::vector<std::string>> args{};
    restart_policy restart{};
    /// How long a disconnecting worker may take to finish before it is killed (SIGKILL).
    std::chrono::milliseconds disconnect_timeout{5'000};
    /// Shut the cluster down gracefully on SIGTERM or SIGINT (read with a signalfd; the two
    /// signals are blocked in the thread that calls `start()` — call it before starting other
    /// threads, which inherit the mask).
    bool handle_signals = true;
    /// What `ps` shows for each worker: its argv[0] is this title followed by the worker's
    /// id ("my-api: worker" gives "my-api: worker 2"), then `args`. Empty: "<name>: worker",
    /// the name being that of `program` (its last path component) or of this program (Node
    /// sets `process.title` for the same purpose). `ps -o comm` and `top` show the name.
    std::string title{};
};

/// Something that happened to a worker, as `cluster::next_event` reports it.
struct worker_event {
    enum class kind {
        online,     ///< the worker process started talking to the primary
        listening,  ///< the worker listens on `address`
        message,    ///< the worker sent a message: decode it with `message<T>()`
        disconnect, ///< the worker was asked to stop accepting and exit
        exit,       ///< the worker exited: `status` says with which code or signal
        restart,    ///< the worker will be restarted after `delay` (crash number `failures`)
        gave_up,    ///< the worker crashed `failures` times in a row and stays down
        signal,     ///< the primary received `signal_number` and shuts down
        error,      ///< something failed that the cluster survived: `address` says what
    };
    kind what = kind::online;
    /// The worker's slot, 1..workers (0 for `signal`). Stays the same across restarts.
    unsigned worker = 0;
    int pid = 0;
    /// `listening`: the address served, as text — the host the worker gave `listen` ("::"
    /// for an empty one) and the port bound: "127.0.0.1:8080", "[::1]:8080" (the same as its
    /// `cluster_listener::address()`). `gave_up` for a worker that could not be started, and
    /// `error`: what failed.
    std::string address;
    exit_status status{};
    std::chrono::milliseconds delay{0};
    unsigned failures = 0;
    int signal_number = 0;
    std::vector<std::byte> payload;

    /// Decodes a `message` event's payload as `T`: `ipc_type_mismatch` if the worker sent
    /// another type, `ipc_error` if it is malformed.
    template <class T>
    T message() const {
        return detail::decode_message<T>(payload);
    }

    /// Decodes a `message` event's payload as whichever of `T...` the worker sent (see
    /// `ipc_channel::receive_one_of`).
    template <class... T>
    std::variant<T...> message_one_of() const {
        return detail::decode_message_one_of<T...>(payload);
    }
};

/// A listener in a worker, shared with the other workers by the cluster's scheduling policy.
/// Belongs to the worker's event loop; `accept` returns empty once the primary asked this
/// worker to disconnect (or went away).
class cluster_listener {
public:
    cluster_listener() = default;
    cluster_listener(cluster_listener&&) noexcept = default;
    cluster_listener& operator=(cluster_listener&&) noexcept = default;

    /// The address served, as "127.0.0.1:8080".
    const std::string& address() const noexcept { return m_address; }
    /// The port served (the one chosen, when 0 was asked for).
    std::uint16_t port() const noexcept { return m_port; }
    /// The scheduling policy the primary applies.
    scheduling policy() const noexcept { return m_policy; }

    /// The next connection, or empty once this worker is disconnecting. Resumes on the
    /// worker's loop; `token` (default: the inherited one) cancels with `operation_cancelled`;
    /// accept errors throw `std::system_error`.
    [[nodiscard]] task<std::optional<tcp_stream>> accept(std::stop_token token = {});

    /// Accepts connections and runs `handler` on each (concurrently, on this loop) until the
    /// worker is disconnected, then waits for the handlers still running and returns. An
    /// exception escaping a handler ends that connection only; the primary sees it as an
    /// `error` event. Resumes on the worker's loop; the inherited stop token cancels it with
    /// `operation_cancelled` (handlers already started then run on by themselves).
    [[nodiscard]] task<void> serve(std::function<task<void>(tcp_stream)> handler);

private:
    friend class cluster;
    std::optional<tcp_listener> m_listener;
    std::shared_ptr<channel<file_descriptor>> m_queue; // round_robin: sockets from the primary
    std::string m_address;
    std::uint16_t m_port = 0;
    scheduling m_policy = scheduling::round_robin;
};

/// Node's `cluster`: a primary process that runs worker processes of the same program, which
/// share server ports.
///
/// ```
/// int main() {
///     if (conflux::cluster::is_primary()) return conflux::run(primary());
///     return conflux::run(worker());
/// }
/// task<int> primary() {
///     conflux::cluster c({.workers = 4});
///     c.start();
///     while (auto e = co_await c.next_event()) log(*e);   // ends after SIGTERM / shutdown()
///     co_return 0;
/// }
/// task<int> worker() {
///     auto l = co_await conflux::cluster::listen("127.0.0.1", 8080);
///     co_await l.serve(handle_connection);                 // until disconnected
///     co_return 0;
/// }
/// ```
///
/// The primary's object and everything it starts belong to the event loop that constructed
/// it: call it there; every await resumes there. Workers are ordinary programs that learn
/// their role from `is_worker()` and talk to the primary through the static members.
class cluster {
public:
    /// True in a process that was not started as a cluster worker.
    static bool is_primary() noexcept { return !is_worker(); }
    /// True in a process started by a `cluster` as one of its workers.
    static bool is_worker() noexcept { return detail::cluster_is_worker(); }
    /// In a worker, its slot number 1..N (stable across restarts); 0 in the primary.
    static unsigned worker_id() noexcept {
        const char* v = std::getenv(detail::cluster_worker_env);
        return v == nullptr ? 0U : static_cast<unsigned>(std::strtoul(v, nullptr, 10));
    }

    /// A primary that has not started yet. Must be made on an event loop's thread (throws
    /// `std::logic_error` otherwise).
    explicit cluster(cluster_options options = {})
        : m_state(std::make_shared<primary>(std::move(options))) {}
    cluster(const cluster&) = delete;
    cluster& operator=(const cluster&) = delete;

    /// Kills the workers still running (SIGKILL; they are reaped in the background).
    ~cluster() { m_state->abandon(); }

    /// Starts the workers (and the signal handling). Returns at once; follow them with
    /// `next_event()`. Throws `std::logic_error` if called twice or off the cluster's loop.
    void start() { m_state->start(); }

    /// The next lifecycle event; empty once the cluster has shut down and every worker has
    /// exited. Resumes on the cluster's loop; cancelled by `token` (default: inherited).
    [[nodiscard]] task<std::optional<worker_event>> next_event(std::stop_token token = {}) {
        if (!token.stop_possible()) token = co_await get_stop_token();
        co_return co_await m_state->next_event(token);
    }

    /// Asks worker `id` to stop accepting, finish its connections and exit; kills it after
    /// `disconnect_timeout`. It is not restarted. No effect on a worker that is not running.
    void disconnect(unsigned id) { m_state->disconnect(id); }

    /// Graceful shutdown: no more restarts, every worker disconnected (killed after the
    /// deadline), listening sockets closed. Returns at once; `next_event()` returns empty
    /// once everything has exited. SIGTERM/SIGINT do the same.
    void shutdown() { m_state->shutdown(); }

    /// Sends `message` (any type `codec<T>` encodes) to worker `id`, which reads it with
    /// `cluster::receive<T>()`. Throws `ipc_error` if that worker is not running. With GCC 12,
    /// refuses the messages `ipc_channel::send` refuses, for the same reason.
#if CONFLUX_DETAIL_GCC12_TEMPORARIES
    // Not a coroutine: the message is encoded here, not copied into the caller's frame.
    template <class T>
    [[nodiscard]] task<void> send(unsigned id, T&& message) {
        static_assert(!detail::gcc12_unsafe_message<T>,
                      "GCC 12 destroys an aggregate written inside a co_await expression twice: "
                      "name the message first and send the name (`T m{...}; co_await "
                      "c.send(id, m);`) (GCC >= 13 and Clang accept it)");
        return m_state->send(id, detail::encode_message(message));
    }
#else
    template <class T>
    [[nodiscard]] task<void> send(unsigned id, T message) {
        co_await m_state->send(id, detail::encode_message(message));
    }
#endif

    /// Pid of worker `id`, 0 when it is not running.
    int pid(unsigned id) const noexcept { return m_state->pid(id); }

    /// Number of worker slots.
    unsigned size() const noexcept { return m_state->size(); }

    // ---- worker side -------------------------------------------------------------------

    /// In a worker: listens on `host`:`port` together with the other workers, by the
    /// primary's scheduling policy. The primary binds (round_robin, shared) or reserves
    /// (reuse_port) the address, so port 0 gives every worker the same ephemeral port.
    ///
    /// Resumes on the worker's loop. Throws `std::system_error` naming the address when it
    /// cannot be bound (`bind "127.0.0.1:8080": Address already in use`), `std::logic_error`
    /// in a process that is no worker, `conflux::error` if the primary went away.
    [[nodiscard]] static task<cluster_listener> listen(std::string host, std::uint16_t port,
                                                       listen_options options = {}) {
        auto grant = co_await detail::cluster_request_listen(host, port, options);
        cluster_listener l;
        l.m_policy = static_cast<scheduling>(grant.policy);
        l.m_port = grant.port;
        l.m_address = grant.address;
        if (l.m_policy == scheduling::round_robin) {
            l.m_queue = std::move(grant.queue);
        } else if (l.m_policy == scheduling::shared) {
            l.m_listener = tcp_listener::adopt(grant.listener.release(), options);
        } else {
            options.reuse_port = true;
            l.m_listener = tcp_listener::bind(host, grant.port, options);
        }
        co_await detail::cluster_announce_listening(grant.key, l.m_address);
        co_return l;
    }

    /// In a worker: sends `message` to the primary (a `message` event there) and waits until
    /// it is written. Throws `ipc_error` if the primary went away. With GCC 12, refuses the
    /// messages `ipc_channel::send` refuses, for the same reason.
#if CONFLUX_DETAIL_GCC12_TEMPORARIES
    // Not a coroutine: the message is encoded here, not copied into the caller's frame.
    template <class T>
    [[nodiscard]] static task<void> send_to_primary(T&& message) {
        static_assert(!detail::gcc12_unsafe_message<T>,
                      "GCC 12 destroys an aggregate written inside a co_await expression twice: "
                      "name the message first and send the name (`T m{...}; co_await "
                      "conflux::cluster::send_to_primary(m);`) (GCC >= 13 and Clang accept it)");
        return send_encoded_to_primary(detail::encode_message(message));
    }
#else
    template <class T>
    [[nodiscard]] static task<void> send_to_primary(T message) {
        co_await send_encoded_to_primary(detail::encode_message(message));
    }
#endif

    /// In a worker: the next message the primary sent with `send`, decoded as `T`; empty once
    /// the primary went away. Cancelled by `token` (default: inherited). Raced in `when_any`,
    /// a receive that lost takes no message.
    template <class T>
    [[nodiscard]] static auto receive(std::stop_token token = {}) {
        auto start = [token = std::move(token)](detail::race_gate gate) {
            return receive_gated<T>(token, gate);
        };
        return detail::gated_operation<std::optional<T>, decltype(start)>(std::move(start));
    }

    /// In a worker: stopped when the primary asks this worker to disconnect, or goes away.
    static std::stop_token disconnect_token() {
        return detail::cluster_worker().disconnect.get_token();
    }

private:
    using primary = detail::cluster_primary<cluster_options, worker_event>;

    static task<void> send_encoded_to_primary(std::vector<std::byte> payload) {
        auto& ws = detail::cluster_worker();
        detail::cluster_envelope e;
        e.what = detail::cluster_envelope::user;
        e.payload = std::move(payload);
        co_await ws.link.send(std::move(e));
        co_await ws.link.flush();
    }

    template <class T>
    static task<std::optional<T>> receive_gated(std::stop_token token, detail::race_gate gate) {
        if (!token.stop_possible()) token = co_await get_stop_token();
        auto& ws = detail::cluster_worker();
        auto next = ws.messages.receive(token);
        auto bytes = co_await next;
        if (bytes && !gate.claim()) {
            next.give_back(std::move(bytes));
            throw operation_cancelled();
        }
        if (!bytes) co_return std::nullopt;
        co_return detail::decode_message<T>(*bytes);
    }

    std::shared_ptr<primary> m_state;
};

inline task<std::optional<tcp_stream>> cluster_listener::accept(std::stop_token token) {
    if (!token.stop_possible()) token = co_await get_stop_token();
    std::stop_token disconnect = cluster::disconnect_token();
    if (disconnect.stop_requested()) co_return std::nullopt;
    // Either stop ends the wait; which one decides between "empty" and "cancelled".
    std::stop_source either;
    std::stop_callback on_user(token, [&] { either.request_stop(); });
    std::stop_callback on_disconnect(disconnect, [&] { either.request_stop(); });
    try {
        if (m_queue) {
            auto fd = co_await m_queue->receive(either.get_token());
            if (!fd) co_return std::nullopt;
            co_return tcp_stream::adopt(fd->release());
        }
        co_return co_await m_listener->accept(either.get_token());
    } catch (const operation_cancelled&) {
        if (token.stop_requested()) throw;
    }
    co_return std::nullopt;
}

inline task<void> cluster_listener::serve(std::function<task<void>(tcp_stream)> handler) {
    event_loop& loop = detail::require_loop("conflux::cluster_listener::serve");
    auto serving = std::make_shared<detail::cluster_serving>();
    serving->handler = std::move(handler);
    while (auto s = co_await accept()) {
        serving->drain.begin();
        loop.detach(detail::cluster_serve_one(serving, std::move(*s)));
    }
    m_listener.reset();
    m_queue.reset();
    std::stop_token token = co_await get_stop_token();
    co_await serving->drain.drained(loop, std::move(token));
}

} // namespace conflux
