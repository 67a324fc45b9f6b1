#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/channel.hpp>
#include <conflux/codec.hpp>
#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/exit_status.hpp>
#include <conflux/ipc.hpp>
#include <conflux/net.hpp>
#include <conflux/process.hpp>
#include <conflux/sleep.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/cluster_protocol.hpp>
#include <conflux/detail/io_watch.hpp>
#include <conflux/detail/socket.hpp>
#include <conflux/detail/system_error.hpp>
#include <conflux/detail/unique_fd.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include <pthread.h>
#include <sys/signalfd.h>

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
    };
    kind what = kind::online;
    /// The worker's slot, 1..workers (0 for `signal`). Stays the same across restarts.
    unsigned worker = 0;
    int pid = 0;
    /// `listening`: the address served, as text — the host the worker gave `listen` ("::"
    /// for an empty one) and the port bound: "127.0.0.1:8080", "[::1]:8080" (the same as its
    /// `cluster_listener::address()`). `gave_up` for a worker that could not be started: why.
    std::string address;
    exit_status status{};
    std::chrono::milliseconds delay{0};
    unsigned failures = 0;
    int signal_number = 0;
    std::vector<std::byte> payload;

    /// Decodes a `message` event's payload as `T` (throws `ipc_error` if it is no `T`).
    template <class T>
    T message() const {
        return conflux::decode<T>(payload);
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
    /// exception escaping a handler ends that connection only.
    [[nodiscard]] task<void> serve(std::function<task<void>(tcp_stream)> handler);

private:
    friend class cluster;
    std::optional<tcp_listener> m_listener;
    std::shared_ptr<channel<file_descriptor>> m_queue; // round_robin: sockets from the primary
    std::string m_address;
    std::uint16_t m_port = 0;
    scheduling m_policy = scheduling::round_robin;
};

namespace detail {

struct cluster_worker_state {
    event_loop* loop = nullptr;
    ipc_channel link;
    std::stop_source disconnect;
    std::uint32_t next_key = 1;
    std::map<std::uint32_t, std::shared_ptr<channel<cluster_envelope>>> replies;
    std::map<std::uint32_t, std::shared_ptr<channel<file_descriptor>>> connections;
    channel<std::vector<std::byte>> messages{4096};
};

// The worker's link to its primary. Made on first use and never destroyed: the worker's
// loop may end before static destructors run, and the process exits soon after anyway.
[[gnu::noinline]] inline cluster_worker_state*& cluster_worker_slot() noexcept {
    static cluster_worker_state* state = nullptr;
    return state;
}

struct cluster_server {
    std::uint32_t id = 0;
    std::string host;
    std::uint16_t port = 0;
    scheduling policy = scheduling::round_robin;
    std::optional<tcp_listener> listener; // round_robin, shared
    unique_fd reserve;                    // reuse_port: bound, never listening: holds the port
    std::uint16_t bound_port = 0;
    std::vector<std::pair<unsigned, std::uint32_t>> rotation; // worker id, its listen key
    std::size_t next = 0;
    std::deque<file_descriptor> pending;
    std::stop_source stop;
};

struct cluster_slot {
    unsigned id = 0;
    int pid = 0;
    ipc_channel link;
    child_process* child = nullptr;
    bool alive = false;
    bool disconnecting = false;
    unsigned failures = 0;
    std::chrono::steady_clock::time_point started;
    std::stop_source kill_timer;
};

struct cluster_state {
    event_loop* loop = nullptr;
    cluster_options options;
    std::string program;
    std::vector<std::string> args;
    std::vector<std::unique_ptr<cluster_slot>> slots;
    std::vector<std::unique_ptr<cluster_server>> servers;
    channel<worker_event> events{1 << 16};
    std::uint64_t dropped_events = 0;
    std::stop_source shutdown;
    bool shutting_down = false;
    bool started = false;
    unsigned running = 0;
    std::uint32_t next_server = 1;
    unique_fd signal_fd;
    std::unique_ptr<io_watch> signal_watch;
    sigset_t old_mask{};
    bool mask_changed = false;

    void emit(worker_event e) {
        try {
            if (!events.try_send(std::move(e))) ++dropped_events;
        } catch (const channel_closed&) {
        }
    }
};

} // namespace detail

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
    static bool is_worker() noexcept { return std::getenv(detail::cluster_worker_env) != nullptr; }
    /// In a worker, its slot number 1..N (stable across restarts); 0 in the primary.
    static unsigned worker_id() noexcept {
        const char* v = std::getenv(detail::cluster_worker_env);
        return v == nullptr ? 0U : static_cast<unsigned>(std::strtoul(v, nullptr, 10));
    }

    /// A primary that has not started yet. Must be made on an event loop's thread (throws
    /// `std::logic_error` otherwise).
    explicit cluster(cluster_options options = {})
        : m_state(std::make_shared<detail::cluster_state>()) {
        m_state->loop = &detail::require_loop("conflux::cluster");
        if (options.workers == 0)
            options.workers = std::max(1U, std::thread::hardware_concurrency());
        m_state->program =
            options.program.empty() ? std::string("/proc/self/exe") : options.program;
        m_state->args = options.args ? *options.args : detail::own_arguments();
        m_state->options = std::move(options);
    }
    cluster(const cluster&) = delete;
    cluster& operator=(const cluster&) = delete;

    /// Kills the workers still running (SIGKILL; they are reaped in the background).
    ~cluster() {
        auto& st = *m_state;
        st.shutting_down = true;
        st.shutdown.request_stop();
        for (auto& slot : st.slots) {
            if (slot->alive && slot->child != nullptr) slot->child->kill(SIGKILL);
        }
        for (auto& srv : st.servers) srv->stop.request_stop();
        restore_signals(st);
    }

    /// Starts the workers (and the signal handling). Returns at once; follow them with
    /// `next_event()`. Throws `std::logic_error` if called twice or off the cluster's loop.
    void start() {
        auto& st = *m_state;
        check_loop("start");
        if (st.started) throw std::logic_error("conflux::cluster::start: already started");
        st.started = true;
        if (st.options.handle_signals) install_signals(m_state);
        for (unsigned i = 1; i <= st.options.workers; ++i) {
            auto slot = std::make_unique<detail::cluster_slot>();
            slot->id = i;
            st.slots.push_back(std::move(slot));
        }
        for (auto& slot : st.slots) {
            ++st.running;
            st.loop->detach(supervise(m_state, slot.get()));
        }
    }

    /// The next lifecycle event; empty once the cluster has shut down and every worker has
    /// exited. Resumes on the cluster's loop; cancelled by `token` (default: inherited).
    [[nodiscard]] task<std::optional<worker_event>> next_event(std::stop_token token = {}) {
        if (!token.stop_possible()) token = co_await get_stop_token();
        co_return co_await m_state->events.receive(token);
    }

    /// Asks worker `id` to stop accepting, finish its connections and exit; kills it after
    /// `disconnect_timeout`. It is not restarted. No effect on a worker that is not running.
    void disconnect(unsigned id) {
        check_loop("disconnect");
        for (auto& slot : m_state->slots) {
            if (slot->id == id) disconnect_slot(m_state, *slot);
        }
    }

    /// Graceful shutdown: no more restarts, every worker disconnected (killed after the
    /// deadline), listening sockets closed. Returns at once; `next_event()` returns empty
    /// once everything has exited. SIGTERM/SIGINT do the same.
    void shutdown() {
        check_loop("shutdown");
        begin_shutdown(m_state);
    }

    /// Sends `message` (any type `codec<T>` encodes) to worker `id`, which reads it with
    /// `cluster::receive<T>()`. Throws `ipc_error` if that worker is not running.
    template <class T>
    [[nodiscard]] task<void> send(unsigned id, T message) {
        detail::cluster_slot* target = nullptr;
        for (auto& slot : m_state->slots) {
            if (slot->id == id && slot->alive) target = slot.get();
        }
        if (target == nullptr) throw ipc_error("conflux::cluster::send: worker not running");
        detail::cluster_envelope e;
        e.what = detail::cluster_envelope::user;
        e.payload = conflux::encode(message);
        co_await target->link.send(std::move(e));
    }

    /// Pid of worker `id`, 0 when it is not running.
    int pid(unsigned id) const noexcept {
        for (auto& slot : m_state->slots) {
            if (slot->id == id && slot->alive) return slot->pid;
        }
        return 0;
    }

    /// Number of worker slots.
    unsigned size() const noexcept { return static_cast<unsigned>(m_state->slots.size()); }

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
        auto& ws = worker_state();
        const std::uint32_t key = ws.next_key++;
        auto reply_box = std::make_shared<channel<detail::cluster_envelope>>(1);
        ws.replies[key] = reply_box;
        auto queue = std::make_shared<channel<file_descriptor>>(1 << 14);
        ws.connections[key] = queue;
        detail::cluster_envelope request;
        request.what = detail::cluster_envelope::listen;
        request.key = key;
        request.host = host;
        request.port = port;
        request.backlog = options.backlog;
        request.no_delay = options.no_delay ? 1 : 0;
        co_await ws.link.send(std::move(request));
        auto reply = co_await reply_box->receive();
        ws.replies.erase(key);
        if (!reply) throw error("conflux::cluster::listen: the primary went away");
        if (reply->error != 0) {
            ws.connections.erase(key);
            throw std::system_error(reply->error, std::system_category(), reply->text);
        }
        cluster_listener l;
        l.m_policy = static_cast<scheduling>(reply->policy);
        l.m_port = reply->port;
        l.m_address = detail::host_port(host.empty() ? "::" : host, reply->port);
        if (l.m_policy == scheduling::round_robin) {
            l.m_queue = queue;
        } else {
            ws.connections.erase(key);
            if (l.m_policy == scheduling::shared) {
                l.m_listener = tcp_listener::adopt(reply->fd.release(), options);
            } else {
                options.reuse_port = true;
                l.m_listener = tcp_listener::bind(host, reply->port, options);
            }
        }
        detail::cluster_envelope note;
        note.what = detail::cluster_envelope::listening;
        note.key = key;
        note.text = l.m_address;
        co_await ws.link.send(std::move(note));
        co_return l;
    }

    /// In a worker: sends `message` to the primary (a `message` event there) and waits until
    /// it is written. Throws `ipc_error` if the primary went away.
    template <class T>
    [[nodiscard]] static task<void> send_to_primary(T message) {
        auto& ws = worker_state();
        detail::cluster_envelope e;
        e.what = detail::cluster_envelope::user;
        e.payload = conflux::encode(message);
        co_await ws.link.send(std::move(e));
        co_await ws.link.flush();
    }

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

private:
    template <class T>
    static task<std::optional<T>> receive_gated(std::stop_token token, detail::race_gate gate) {
        if (!token.stop_possible()) token = co_await get_stop_token();
        auto& ws = worker_state();
        auto next = ws.messages.receive(token);
        auto bytes = co_await next;
        if (bytes && !gate.claim()) {
            next.give_back(std::move(bytes));
            throw operation_cancelled();
        }
        if (!bytes) co_return std::nullopt;
        co_return conflux::decode<T>(*bytes);
    }

public:
    /// In a worker: stopped when the primary asks this worker to disconnect, or goes away.
    static std::stop_token disconnect_token() { return worker_state().disconnect.get_token(); }

private:
    static detail::cluster_worker_state& worker_state() {
        if (!is_worker()) {
            throw std::logic_error("conflux::cluster: worker call in a process that is no worker");
        }
        auto*& ws = detail::cluster_worker_slot();
        event_loop& loop = detail::require_loop("conflux::cluster (worker)");
        if (ws == nullptr) {
            ws = new detail::cluster_worker_state();
            ws->loop = &loop;
            ws->link = ipc_channel(file_descriptor(detail::cluster_ipc_fd));
            detail::cluster_envelope hello;
            hello.what = detail::cluster_envelope::online;
            ws->link.try_send(std::move(hello));
            loop.detach(worker_dispatch(ws));
        } else if (ws->loop != &loop) {
            throw std::logic_error("conflux::cluster: worker calls must all be on one event loop");
        }
        return *ws;
    }

    static task<void> worker_dispatch(detail::cluster_worker_state* ws) {
        for (;;) {
            std::optional<detail::cluster_envelope> m;
            try {
                m = co_await ws->link.receive<detail::cluster_envelope>();
            } catch (const std::exception&) {
                m.reset();
            }
            if (!m) break;
            switch (m->what) {
            case detail::cluster_envelope::listen_reply:
                if (auto it = ws->replies.find(m->key); it != ws->replies.end()) {
                    it->second->try_send(std::move(*m));
                }
                break;
            case detail::cluster_envelope::connection:
                if (auto it = ws->connections.find(m->key); it != ws->connections.end()) {
                    auto queue = it->second;
                    try {
                        co_await queue->send(std::move(m->fd));
                    } catch (const channel_closed&) {
                    }
                }
                break;
            case detail::cluster_envelope::user:
                co_await ws->messages.send(std::move(m->payload));
                break;
            case detail::cluster_envelope::disconnect:
                ws->disconnect.request_stop();
                break;
            default:
                break;
            }
        }
        // The primary is gone: stop accepting, end every wait.
        ws->disconnect.request_stop();
        for (auto& [key, box] : ws->replies) box->close();
        for (auto& [key, queue] : ws->connections) queue->close();
        ws->messages.close();
    }

    void check_loop(const char* what) const {
        if (!m_state->loop->running_in_this_thread()) {
            throw std::logic_error(std::string("conflux::cluster::") + what +
                                   " off the cluster's event loop");
        }
    }

    static void install_signals(const std::shared_ptr<detail::cluster_state>& sp) {
        auto& st = *sp;
        sigset_t set;
        ::sigemptyset(&set);
        ::sigaddset(&set, SIGTERM);
        ::sigaddset(&set, SIGINT);
        if (::pthread_sigmask(SIG_BLOCK, &set, &st.old_mask) != 0) {
            detail::throw_errno("pthread_sigmask");
        }
        st.mask_changed = true;
        st.signal_fd = detail::unique_fd(::signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
        if (!st.signal_fd) detail::throw_errno("signalfd");
        st.signal_watch = std::make_unique<detail::io_watch>(*st.loop, st.signal_fd.get());
        st.loop->detach(watch_signals(sp));
    }

    static void restore_signals(detail::cluster_state& st) noexcept {
        st.signal_watch.reset();
        st.signal_fd.reset();
        if (st.mask_changed) {
            ::pthread_sigmask(SIG_SETMASK, &st.old_mask, nullptr);
            st.mask_changed = false;
        }
    }

    static task<void> watch_signals(std::shared_ptr<detail::cluster_state> sp) {
        auto token = sp->shutdown.get_token();
        for (;;) {
            signalfd_siginfo info{};
            const ssize_t n = ::read(sp->signal_fd.get(), &info, sizeof info);
            if (n == static_cast<ssize_t>(sizeof info)) {
                worker_event e;
                e.what = worker_event::kind::signal;
                e.signal_number = static_cast<int>(info.ssi_signo);
                sp->emit(std::move(e));
                begin_shutdown(sp);
                co_return;
            }
            try {
                co_await sp->signal_watch->readable(token);
            } catch (const operation_cancelled&) {
                co_return;
            }
        }
    }

    static void begin_shutdown(const std::shared_ptr<detail::cluster_state>& sp) {
        auto& st = *sp;
        if (st.shutting_down) return;
        st.shutting_down = true;
        st.shutdown.request_stop();
        for (auto& srv : st.servers) srv->stop.request_stop();
        for (auto& slot : st.slots) {
            if (slot->alive) disconnect_slot(sp, *slot);
        }
        if (st.running == 0) finish(st);
    }

    static void finish(detail::cluster_state& st) {
        restore_signals(st);
        st.events.close();
    }

    static void disconnect_slot(const std::shared_ptr<detail::cluster_state>& sp,
                                detail::cluster_slot& slot) {
        if (!slot.alive || slot.disconnecting) return;
        slot.disconnecting = true;
        remove_from_rotations(*sp, slot.id);
        worker_event e;
        e.what = worker_event::kind::disconnect;
        e.worker = slot.id;
        e.pid = slot.pid;
        sp->emit(std::move(e));
        detail::cluster_envelope m;
        m.what = detail::cluster_envelope::disconnect;
        try {
            slot.link.try_send(std::move(m));
        } catch (const std::exception&) {
        }
        slot.kill_timer = std::stop_source();
        sp->loop->detach(kill_after(sp, &slot, slot.kill_timer.get_token()));
    }

    static task<void> kill_after(std::shared_ptr<detail::cluster_state> sp,
                                 detail::cluster_slot* slot, std::stop_token token) {
        try {
            co_await sleep_for(sp->options.disconnect_timeout, token);
        } catch (const operation_cancelled&) {
            co_return;
        }
        if (slot->alive && slot->child != nullptr) slot->child->kill(SIGKILL);
    }

    static void remove_from_rotations(detail::cluster_state& st, unsigned id) {
        for (auto& srv : st.servers) {
            std::erase_if(srv->rotation, [id](const auto& r) { return r.first == id; });
        }
    }

    static task<void> supervise(std::shared_ptr<detail::cluster_state> sp,
                                detail::cluster_slot* slot) {
        auto& st = *sp;
        while (!st.shutting_down) {
            std::optional<child_process> child;
            try {
                int sv[2];
                if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
                    detail::throw_errno("socketpair");
                }
                detail::unique_fd parent_end(sv[0]);
                detail::unique_fd child_end(sv[1]);
                spawn_options so;
                so.stdio = {stdio_spec::inherit(), stdio_spec::inherit(), stdio_spec::inherit(),
                            stdio_spec::from_fd(child_end.get())};
                so.env_set = {{detail::cluster_worker_env, std::to_string(slot->id)}};
                so.kill_on_drop = true;
                child.emplace(spawn(st.program, st.args, so));
                slot->link = ipc_channel(file_descriptor(parent_end.release()));
            } catch (const std::exception& e) {
                worker_event ev;
                ev.what = worker_event::kind::gave_up;
                ev.worker = slot->id;
                ev.address = e.what();
                st.emit(std::move(ev));
                break;
            }
            slot->pid = child->pid();
            slot->child = &*child;
            slot->alive = true;
            slot->disconnecting = false;
            slot->started = std::chrono::steady_clock::now();
            co_await serve_worker(sp, slot);
            remove_from_rotations(st, slot->id);
            slot->link.disconnect();
            const exit_status status = co_await child->wait(std::stop_token{});
            slot->alive = false;
            slot->child = nullptr;
            slot->kill_timer.request_stop();
            slot->link = ipc_channel();
            worker_event ev;
            ev.what = worker_event::kind::exit;
            ev.worker = slot->id;
            ev.pid = slot->pid;
            ev.status = status;
            st.emit(std::move(ev));
            if (st.shutting_down || slot->disconnecting || !st.options.restart.enabled) break;
            const auto lived = std::chrono::steady_clock::now() - slot->started;
            if (lived >= st.options.restart.stable_after) slot->failures = 0;
            ++slot->failures;
            const auto& policy = st.options.restart;
            if (policy.max_consecutive_failures != 0 &&
                slot->failures > policy.max_consecutive_failures) {
                worker_event g;
                g.what = worker_event::kind::gave_up;
                g.worker = slot->id;
                g.failures = slot->failures;
                st.emit(std::move(g));
                break;
            }
            auto delay = policy.initial_delay;
            for (unsigned i = 1; i < slot->failures && delay < policy.max_delay; ++i) delay *= 2;
            delay = std::min(delay, policy.max_delay);
            worker_event r;
            r.what = worker_event::kind::restart;
            r.worker = slot->id;
            r.delay = delay;
            r.failures = slot->failures;
            st.emit(std::move(r));
            try {
                co_await sleep_for(delay, st.shutdown.get_token());
            } catch (const operation_cancelled&) {
                break;
            }
        }
        if (--st.running == 0 && st.shutting_down) finish(st);
    }

    // The primary's side of one worker's channel, until the worker closes it (or dies).
    static task<void> serve_worker(std::shared_ptr<detail::cluster_state> sp,
                                   detail::cluster_slot* slot) {
        auto& st = *sp;
        for (;;) {
            std::optional<detail::cluster_envelope> m;
            try {
                m = co_await slot->link.receive<detail::cluster_envelope>(std::stop_token{});
            } catch (const std::exception&) {
                m.reset();
            }
            if (!m) co_return;
            worker_event e;
            e.worker = slot->id;
            e.pid = slot->pid;
            switch (m->what) {
            case detail::cluster_envelope::online:
                e.what = worker_event::kind::online;
                st.emit(std::move(e));
                break;
            case detail::cluster_envelope::listen:
                handle_listen(sp, *slot, *m);
                break;
            case detail::cluster_envelope::listening:
                e.what = worker_event::kind::listening;
                e.address = m->text;
                st.emit(std::move(e));
                break;
            case detail::cluster_envelope::user:
                e.what = worker_event::kind::message;
                e.payload = std::move(m->payload);
                st.emit(std::move(e));
                break;
            default:
                break;
            }
        }
    }

    static void handle_listen(const std::shared_ptr<detail::cluster_state>& sp,
                              detail::cluster_slot& slot, detail::cluster_envelope& request) {
        auto& st = *sp;
        detail::cluster_envelope reply;
        reply.what = detail::cluster_envelope::listen_reply;
        reply.key = request.key;
        reply.policy = static_cast<std::uint8_t>(st.options.policy);
        detail::cluster_server* srv = nullptr;
        for (auto& s : st.servers) {
            if (s->host == request.host && s->port == request.port) srv = s.get();
        }
        try {
            if (srv == nullptr) srv = open_server(sp, request);
            reply.port = srv->bound_port;
            if (srv->policy == scheduling::shared) {
                reply.fd = file_descriptor::duplicate(srv->listener->native_handle());
            }
        } catch (const std::system_error& e) {
            reply.error = e.code().value();
            std::string text = e.what();
            const std::string suffix = ": " + e.code().message();
            if (text.size() > suffix.size() &&
                text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0) {
                text.resize(text.size() - suffix.size());
            }
            reply.text = text;
        } catch (const std::exception& e) {
            reply.error = EINVAL;
            reply.text = e.what();
        }
        const bool ok = reply.error == 0;
        try {
            slot.link.try_send(std::move(reply));
        } catch (const std::exception&) {
            return;
        }
        if (ok && srv->policy == scheduling::round_robin && !slot.disconnecting) {
            srv->rotation.emplace_back(slot.id, request.key);
            // Hand over connections that arrived while no worker listened.
            while (!srv->pending.empty() && deliver(st, *srv, srv->pending.front())) {
                srv->pending.pop_front();
            }
        }
    }

    static detail::cluster_server* open_server(const std::shared_ptr<detail::cluster_state>& sp,
                                               const detail::cluster_envelope& request) {
        auto& st = *sp;
        auto srv = std::make_unique<detail::cluster_server>();
        srv->id = st.next_server++;
        srv->host = request.host;
        srv->port = request.port;
        srv->policy = st.options.policy;
        listen_options lo;
        lo.backlog = request.backlog;
        lo.no_delay = request.no_delay != 0;
        if (srv->policy == scheduling::reuse_port) {
            // Bound but never listening: it holds the port (chosen here when 0 was asked
            // for) for the workers' SO_REUSEPORT sockets without taking connections itself.
            const auto addresses = detail::resolve_numeric(request.host, request.port);
            const auto& address = addresses.front();
            const std::string object = address.to_string();
            auto fd = detail::open_stream_socket(address.family(), object);
            detail::set_int_option(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1, object);
            detail::set_int_option(fd.get(), SOL_SOCKET, SO_REUSEPORT, 1, object);
            if (address.family() == AF_INET6) {
                detail::set_int_option(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, 0, object);
            }
            if (::bind(fd.get(), address.get(), address.length) != 0) {
                detail::throw_errno("bind", object);
            }
            srv->bound_port = detail::local_address(fd.get()).port();
            srv->reserve = std::move(fd);
        } else {
            srv->listener = tcp_listener::bind(request.host, request.port, lo);
            srv->bound_port = srv->listener->local_endpoint().port();
            if (srv->policy == scheduling::round_robin) {
                st.loop->detach(accept_loop(sp, srv.get()));
            }
        }
        st.servers.push_back(std::move(srv));
        return st.servers.back().get();
    }

    // Round robin: hands `conn` to the next worker in the rotation; false if none took it.
    static bool deliver(detail::cluster_state& st, detail::cluster_server& srv,
                        file_descriptor& conn) {
        for (std::size_t tries = 0; tries < srv.rotation.size(); ++tries) {
            const auto [id, key] = srv.rotation[srv.next++ % srv.rotation.size()];
            for (auto& slot : st.slots) {
                if (slot->id != id || !slot->alive || slot->disconnecting) continue;
                detail::cluster_envelope m;
                m.what = detail::cluster_envelope::connection;
                m.key = key;
                m.fd = std::move(conn);
                bool sent = false;
                try {
                    sent = slot->link.try_send(std::move(m));
                } catch (const std::exception&) {
                    sent = false;
                }
                if (sent) return true;
                conn = std::move(m.fd);
            }
        }
        return false;
    }

    static task<void> accept_loop(std::shared_ptr<detail::cluster_state> sp,
                                  detail::cluster_server* srv) {
        auto token = srv->stop.get_token();
        for (;;) {
            int fd = -1;
            try {
                fd = co_await srv->listener->accept_native(token);
            } catch (const operation_cancelled&) {
                break;
            } catch (const std::system_error&) {
                continue;
            }
            file_descriptor conn(fd);
            if (!deliver(*sp, *srv, conn)) {
                // No worker listens right now (all restarting): keep a bounded number.
                if (srv->pending.size() < 1024) srv->pending.push_back(std::move(conn));
            }
        }
        srv->listener->close();
    }

    std::shared_ptr<detail::cluster_state> m_state;
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
    auto in_flight = std::make_shared<std::size_t>(0);
    auto run_one = [](std::function<task<void>(tcp_stream)>* h, tcp_stream s,
                      std::shared_ptr<std::size_t> count) -> task<void> {
        try {
            co_await (*h)(std::move(s));
        } catch (...) {
            // One connection's failure ends that connection only.
        }
        --*count;
    };
    event_loop& loop = detail::require_loop("conflux::cluster_listener::serve");
    while (auto s = co_await accept()) {
        ++*in_flight;
        loop.detach(run_one(&handler, std::move(*s), in_flight));
    }
    m_listener.reset();
    m_queue.reset();
    while (*in_flight != 0) co_await sleep_for(std::chrono::milliseconds(5));
}

} // namespace conflux
