#pragma once

// The primary side of a cluster: worker slots and their supervision (spawn, restart with
// back-off, disconnect deadline), the servers it binds and the round-robin hand-over of
// accepted sockets, and SIGTERM/SIGINT read on the loop. Feature internals of
// cluster.hpp, which instantiates `cluster_primary` with its public option and event types
// (this header never includes cluster.hpp).

#include <conflux/channel.hpp>
#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/exit_status.hpp>
#include <conflux/ipc.hpp>
#include <conflux/net.hpp>
#include <conflux/process.hpp>
#include <conflux/sleep.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/cluster_protocol.hpp>
#include <conflux/detail/cluster_signals.hpp>
#include <conflux/detail/io_watch.hpp>
#include <conflux/detail/ipc_channel_state.hpp>
#include <conflux/detail/process_name.hpp>
#include <conflux/detail/process_self.hpp>
#include <conflux/detail/socket.hpp>
#include <conflux/detail/system_error.hpp>
#include <conflux/detail/unique_fd.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace conflux::detail {

/// SIGTERM and SIGINT, blocked in the installing thread and read on a loop.
class cluster_signals {
public:
    /// Blocks the two signals in the calling thread and watches them on `loop`. Throws
    /// `std::system_error`.
    void install(event_loop& loop) {
        m_signals.open();
        m_watch = std::make_unique<io_watch>(loop, m_signals.fd());
    }

    /// The number of a signal that arrived, or 0 when none is pending.
    int take() noexcept { return m_signals.take(); }

    /// Resumes on the loop once a signal may be pending; `token` cancels.
    [[nodiscard]] auto readable(std::stop_token token) { return m_watch->readable(token); }

    /// Stops watching and puts the thread's old mask back. Idempotent.
    void restore() noexcept {
        m_watch.reset(); // before the descriptor it watches
        m_signals.close();
    }

private:
    termination_signal_fd m_signals;
    std::unique_ptr<io_watch> m_watch;
};

/// One address the workers listen on.
struct cluster_server {
    std::uint32_t id = 0;
    std::string host;
    std::uint16_t port = 0;
    std::uint8_t policy = cluster_envelope::policy_round_robin;
    std::optional<tcp_listener> listener; // round_robin, shared
    unique_fd reserve;                    // reuse_port: bound, never listening: holds the port
    std::uint16_t bound_port = 0;
    std::vector<std::pair<unsigned, std::uint32_t>> rotation; // worker id, its listen key
    std::size_t next = 0;
    std::deque<file_descriptor> pending;
    std::stop_source stop;
};

/// One worker, 1..N, across its restarts.
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

/// The state of a `cluster` and the coroutines that run it, all on the loop that made it.
/// `Options` and `Event` are `cluster_options` and `worker_event`, which cluster.hpp
/// declares. Shared by the `cluster` object and every coroutine it detached, so that
/// dropping the object while workers exit is safe.
template <class Options, class Event>
class cluster_primary : public std::enable_shared_from_this<cluster_primary<Options, Event>> {
public:
    using kind = typename Event::kind;

    explicit cluster_primary(Options options) : m_loop(&require_loop("conflux::cluster")) {
        if (options.workers == 0) {
            options.workers = std::max(1U, std::thread::hardware_concurrency());
        }
        m_program = options.program.empty() ? std::string(self_executable()) : options.program;
        m_name = options.program.empty() ? own_program_name() : program_base_name(options.program);
        m_title = options.title.empty() ? process_title(m_name, "worker") : options.title;
        m_args = options.args ? *options.args : own_arguments();
        m_options = std::move(options);
    }
    cluster_primary(const cluster_primary&) = delete;
    cluster_primary& operator=(const cluster_primary&) = delete;

    /// What dropping the `cluster` does: kills the workers still running (SIGKILL; they are
    /// reaped in the background), stops the servers, restores the signal mask.
    void abandon() noexcept {
        m_shutting_down = true;
        m_shutdown.request_stop();
        for (auto& slot : m_slots) {
            if (slot->alive && slot->child != nullptr) slot->child->kill(SIGKILL);
        }
        for (auto& srv : m_servers) srv->stop.request_stop();
        m_signals.restore();
    }

    void start() {
        check_loop("start");
        if (m_started) throw std::logic_error("conflux::cluster::start: already started");
        m_started = true;
        if (m_options.handle_signals) {
            m_signals.install(*m_loop);
            m_loop->detach(watch_signals(this->shared_from_this()));
        }
        for (unsigned i = 1; i <= m_options.workers; ++i) {
            auto slot = std::make_unique<cluster_slot>();
            slot->id = i;
            m_slots.push_back(std::move(slot));
        }
        for (auto& slot : m_slots) {
            ++m_running;
            m_loop->detach(supervise(this->shared_from_this(), slot.get()));
        }
    }

    [[nodiscard]] auto next_event(std::stop_token token) { return m_events.receive(token); }

    void disconnect(unsigned id) {
        check_loop("disconnect");
        for (auto& slot : m_slots) {
            if (slot->id == id) disconnect_slot(*slot);
        }
    }

    void shutdown() {
        check_loop("shutdown");
        begin_shutdown();
    }

    /// Sends a `user` envelope to worker `id`. Throws `ipc_error` if it is not running.
    task<void> send(unsigned id, std::vector<std::byte> payload) {
        cluster_slot* target = nullptr;
        for (auto& slot : m_slots) {
            if (slot->id == id && slot->alive) target = slot.get();
        }
        if (target == nullptr) throw ipc_error("conflux::cluster::send: worker not running");
        cluster_envelope e;
        e.what = cluster_envelope::user;
        e.payload = std::move(payload);
        co_await target->link.send(std::move(e));
    }

    int pid(unsigned id) const noexcept {
        for (auto& slot : m_slots) {
            if (slot->id == id && slot->alive) return slot->pid;
        }
        return 0;
    }

    unsigned size() const noexcept { return static_cast<unsigned>(m_slots.size()); }

private:
    using self_ptr = std::shared_ptr<cluster_primary>;

    void check_loop(const char* what) const {
        if (!m_loop->running_in_this_thread()) {
            throw std::logic_error(std::string("conflux::cluster::") + what +
                                   " off the cluster's event loop");
        }
    }

    void emit(Event e) {
        try {
            if (!m_events.try_send(std::move(e))) ++m_dropped_events;
        } catch (const channel_closed&) {
            // The cluster has finished and `next_event` returns empty: nobody reads events any
            // more. Counted with the events dropped for a full queue.
            ++m_dropped_events;
        }
    }

    void emit_error(unsigned worker, int pid, std::string text) {
        Event e;
        e.what = kind::error;
        e.worker = worker;
        e.pid = pid;
        e.address = std::move(text);
        emit(std::move(e));
    }

    void remove_from_rotations(unsigned id) {
        for (auto& srv : m_servers) {
            std::erase_if(srv->rotation, [id](const auto& r) { return r.first == id; });
        }
    }

    // Runs worker `slot`, again and again as the restart policy allows.
    static task<void> supervise(self_ptr self, cluster_slot* slot) {
        auto& st = *self;
        while (!st.m_shutting_down) {
            std::optional<child_process> child;
            try {
                auto [parent_end, child_end] = ipc_socketpair();
                spawn_options so;
                so.stdio = {stdio_spec::inherit(), stdio_spec::inherit(), stdio_spec::inherit(),
                            stdio_spec::from_fd(child_end.get())};
                so.env_set = {{cluster_worker_env, std::to_string(slot->id)},
                              {process_name_env, st.m_name}};
                so.argv0 = st.m_title + " " + std::to_string(slot->id);
                so.kill_on_drop = true;
                child.emplace(spawn(st.m_program, st.m_args, so));
                slot->link = ipc_channel(file_descriptor(parent_end.release()));
            } catch (const std::exception& e) {
                Event ev;
                ev.what = kind::gave_up;
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
            co_await serve_worker(self, slot);
            st.remove_from_rotations(slot->id);
            slot->link.disconnect();
            const exit_status status = co_await child->wait(std::stop_token{});
            slot->alive = false;
            slot->child = nullptr;
            slot->kill_timer.request_stop();
            slot->link = ipc_channel();
            Event ev;
            ev.what = kind::exit;
            ev.worker = slot->id;
            ev.pid = slot->pid;
            ev.status = status;
            st.emit(std::move(ev));
            if (st.m_shutting_down || slot->disconnecting || !st.m_options.restart.enabled) break;
            const auto lived = std::chrono::steady_clock::now() - slot->started;
            const auto& policy = st.m_options.restart;
            if (lived >= policy.stable_after) slot->failures = 0;
            ++slot->failures;
            if (policy.max_consecutive_failures != 0 &&
                slot->failures > policy.max_consecutive_failures) {
                Event g;
                g.what = kind::gave_up;
                g.worker = slot->id;
                g.failures = slot->failures;
                st.emit(std::move(g));
                break;
            }
            auto delay = policy.initial_delay;
            for (unsigned i = 1; i < slot->failures && delay < policy.max_delay; ++i) delay *= 2;
            delay = std::min(delay, policy.max_delay);
            Event r;
            r.what = kind::restart;
            r.worker = slot->id;
            r.delay = delay;
            r.failures = slot->failures;
            st.emit(std::move(r));
            try {
                co_await sleep_for(delay, st.m_shutdown.get_token());
            } catch (const operation_cancelled&) {
                break;
            }
        }
        if (--st.m_running == 0 && st.m_shutting_down) st.finish();
    }

    // The primary's side of one worker's channel, until the worker closes it (or dies).
    static task<void> serve_worker(self_ptr self, cluster_slot* slot) {
        auto& st = *self;
        for (;;) {
            std::optional<cluster_envelope> m;
            try {
                m = co_await slot->link.receive<cluster_envelope>(std::stop_token{});
                if (m) check_from_worker(*m);
            } catch (const std::exception& e) {
                // Malformed input from the worker closed the channel (or, for a message that
                // decodes but breaks the protocol, `supervise` closes it on return): report
                // it; the worker's exit (it sees end-of-file and leaves) follows as usual.
                st.emit_error(slot->id, slot->pid,
                              std::string("reading the worker's messages: ") + e.what());
                m.reset();
            }
            if (!m) co_return;
            Event e;
            e.worker = slot->id;
            e.pid = slot->pid;
            switch (m->what) {
            case cluster_envelope::online:
                e.what = kind::online;
                st.emit(std::move(e));
                break;
            case cluster_envelope::listen:
                st.handle_listen(*slot, *m);
                break;
            case cluster_envelope::listening:
                e.what = kind::listening;
                e.address = m->text;
                st.emit(std::move(e));
                break;
            case cluster_envelope::user:
                e.what = kind::message;
                e.payload = std::move(m->payload);
                st.emit(std::move(e));
                break;
            case cluster_envelope::failure:
                st.emit_error(slot->id, slot->pid, std::move(m->text));
                break;
            default:
                break;
            }
        }
    }

    void handle_listen(cluster_slot& slot, cluster_envelope& request) {
        cluster_envelope reply;
        reply.what = cluster_envelope::listen_reply;
        reply.key = request.key;
        reply.policy = static_cast<std::uint8_t>(m_options.policy);
        cluster_server* srv = nullptr;
        for (auto& s : m_servers) {
            if (s->host == request.host && s->port == request.port) srv = s.get();
        }
        try {
            if (srv == nullptr) srv = open_server(request);
            reply.port = srv->bound_port;
            if (srv->policy == cluster_envelope::policy_shared) {
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
            if (!slot.link.try_send(std::move(reply))) {
                emit_error(slot.id, slot.pid, "listen reply: the worker's channel is full");
                return;
            }
        } catch (const std::exception&) {
            // The channel is closed: the worker is gone, and its exit event follows.
            return;
        }
        if (ok && srv->policy == cluster_envelope::policy_round_robin && !slot.disconnecting) {
            srv->rotation.emplace_back(slot.id, request.key);
            // Hand over connections that arrived while no worker listened.
            while (!srv->pending.empty() && deliver(*srv, srv->pending.front())) {
                srv->pending.pop_front();
            }
        }
    }

    cluster_server* open_server(const cluster_envelope& request) {
        auto srv = std::make_unique<cluster_server>();
        srv->id = m_next_server++;
        srv->host = request.host;
        srv->port = request.port;
        srv->policy = static_cast<std::uint8_t>(m_options.policy);
        listen_options lo;
        lo.backlog = request.backlog;
        lo.no_delay = request.no_delay != 0;
        if (srv->policy == cluster_envelope::policy_reuse_port) {
            // Bound but never listening: it holds the port (chosen here when 0 was asked
            // for) for the workers' SO_REUSEPORT sockets without taking connections itself.
            const auto addresses = resolve_numeric(request.host, request.port);
            const auto& address = addresses.front();
            const std::string object = address.to_string();
            auto fd = open_stream_socket(address.family(), object);
            set_int_option(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1, object);
            set_int_option(fd.get(), SOL_SOCKET, SO_REUSEPORT, 1, object);
            if (address.family() == AF_INET6) {
                set_int_option(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, 0, object);
            }
            if (::bind(fd.get(), address.get(), address.length) != 0) {
                throw_errno("bind", object);
            }
            srv->bound_port = local_address(fd.get()).port();
            srv->reserve = std::move(fd);
        } else {
            srv->listener = tcp_listener::bind(request.host, request.port, lo);
            srv->bound_port = srv->listener->local_endpoint().port();
            if (srv->policy == cluster_envelope::policy_round_robin) {
                m_loop->detach(accept_loop(this->shared_from_this(), srv.get()));
            }
        }
        m_servers.push_back(std::move(srv));
        return m_servers.back().get();
    }

    // Round robin: hands `conn` to the next worker in the rotation; false if none took it.
    bool deliver(cluster_server& srv, file_descriptor& conn) {
        for (std::size_t tries = 0; tries < srv.rotation.size(); ++tries) {
            const auto [id, key] = srv.rotation[srv.next++ % srv.rotation.size()];
            for (auto& slot : m_slots) {
                if (slot->id != id || !slot->alive || slot->disconnecting) continue;
                cluster_envelope m;
                m.what = cluster_envelope::connection;
                m.key = key;
                m.fd = std::move(conn);
                bool sent = false;
                try {
                    sent = slot->link.try_send(std::move(m));
                } catch (const std::exception&) {
                    // This worker's channel is closed (it is dying, its exit event follows):
                    // the connection goes to the next worker instead.
                    sent = false;
                }
                if (sent) return true;
                conn = std::move(m.fd);
            }
        }
        return false;
    }

    static task<void> accept_loop(self_ptr self, cluster_server* srv) {
        auto token = srv->stop.get_token();
        for (;;) {
            int fd = -1;
            try {
                fd = co_await srv->listener->accept_native(token);
            } catch (const operation_cancelled&) {
                break;
            } catch (const std::system_error& e) {
                // accept_native retries transient errors and backs off on exhausted
                // descriptors or memory by itself: what reaches here is permanent (the socket
                // is unusable), so retrying would spin. Report it and stop serving this
                // address; clients are then refused instead of left waiting.
                self->emit_error(0, 0, e.what());
                break;
            }
            file_descriptor conn(fd);
            if (!self->deliver(*srv, conn)) {
                // No worker listens right now (all restarting): keep a bounded number.
                if (srv->pending.size() < 1024) srv->pending.push_back(std::move(conn));
            }
        }
        srv->listener->close();
    }

    static task<void> watch_signals(self_ptr self) {
        auto token = self->m_shutdown.get_token();
        for (;;) {
            if (const int signal_number = self->m_signals.take(); signal_number != 0) {
                Event e;
                e.what = kind::signal;
                e.signal_number = signal_number;
                self->emit(std::move(e));
                self->begin_shutdown();
                co_return;
            }
            try {
                co_await self->m_signals.readable(token);
            } catch (const operation_cancelled&) {
                co_return;
            }
        }
    }

    void begin_shutdown() {
        if (m_shutting_down) return;
        m_shutting_down = true;
        m_shutdown.request_stop();
        for (auto& srv : m_servers) srv->stop.request_stop();
        for (auto& slot : m_slots) {
            if (slot->alive) disconnect_slot(*slot);
        }
        if (m_running == 0) finish();
    }

    void finish() {
        m_signals.restore();
        m_events.close();
    }

    void disconnect_slot(cluster_slot& slot) {
        if (!slot.alive || slot.disconnecting) return;
        slot.disconnecting = true;
        remove_from_rotations(slot.id);
        Event e;
        e.what = kind::disconnect;
        e.worker = slot.id;
        e.pid = slot.pid;
        emit(std::move(e));
        cluster_envelope m;
        m.what = cluster_envelope::disconnect;
        try {
            if (!slot.link.try_send(std::move(m))) {
                emit_error(slot.id, slot.pid, "disconnect: the worker's channel is full");
            }
        } catch (const std::exception&) {
            // The channel is closed: the worker is already leaving; the deadline below
            // still ends it if it lingers.
        }
        slot.kill_timer = std::stop_source();
        m_loop->detach(kill_after(this->shared_from_this(), &slot, slot.kill_timer.get_token()));
    }

    static task<void> kill_after(self_ptr self, cluster_slot* slot, std::stop_token token) {
        try {
            co_await sleep_for(self->m_options.disconnect_timeout, token);
        } catch (const operation_cancelled&) {
            co_return;
        }
        if (slot->alive && slot->child != nullptr) slot->child->kill(SIGKILL);
    }

    event_loop* m_loop;
    Options m_options;
    std::string m_program;
    std::string m_name;  // the workers' program name (ps -o comm)
    std::string m_title; // their argv[0], before the id
    std::vector<std::string> m_args;
    std::vector<std::unique_ptr<cluster_slot>> m_slots;
    std::vector<std::unique_ptr<cluster_server>> m_servers;
    channel<Event> m_events{1 << 16};
    std::uint64_t m_dropped_events = 0;
    std::stop_source m_shutdown;
    bool m_shutting_down = false;
    bool m_started = false;
    unsigned m_running = 0;
    std::uint32_t m_next_server = 1;
    cluster_signals m_signals;
};

} // namespace conflux::detail
