#pragma once

// The worker side of a cluster: the link to the primary, the loop that reads it, the listen
// handshake, and the bookkeeping of `cluster_listener::serve`. Feature internals of
// cluster.hpp (which includes this header; this one never includes it).

#include <conflux/channel.hpp>
#include <conflux/error.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/executor.hpp>
#include <conflux/ipc.hpp>
#include <conflux/net.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/cluster_protocol.hpp>
#include <conflux/detail/loop_wait.hpp>
#include <conflux/detail/socket.hpp>

#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

namespace conflux::detail {

/// True in a process a cluster started as one of its workers.
inline bool cluster_is_worker() noexcept { return std::getenv(cluster_worker_env) != nullptr; }

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

// Reads the primary's messages and routes them, until the primary goes away.
inline task<void> cluster_worker_dispatch(cluster_worker_state* ws) {
    for (;;) {
        std::optional<cluster_envelope> m;
        try {
            m = co_await ws->link.receive<cluster_envelope>();
            if (m) check_from_primary(*m);
        } catch (const std::exception&) {
            // Malformed input closes the channel (see ipc_channel::receive; a message that
            // decodes but breaks the protocol closes it here): the primary is unreachable from
            // here on, which is what "the primary went away" below handles.
            ws->link.disconnect();
            m.reset();
        }
        if (!m) break;
        switch (m->what) {
        case cluster_envelope::listen_reply:
            if (auto it = ws->replies.find(m->key); it != ws->replies.end()) {
                it->second->try_send(std::move(*m));
            }
            break;
        case cluster_envelope::connection:
            if (auto it = ws->connections.find(m->key); it != ws->connections.end()) {
                auto queue = it->second;
                try {
                    co_await queue->send(std::move(m->fd));
                } catch (const channel_closed&) {
                    // Only the end of this loop closes the queues, so this is unreachable
                    // today; should it happen, dropping the socket closes it and the client
                    // sees end-of-file.
                }
            }
            break;
        case cluster_envelope::user:
            co_await ws->messages.send(std::move(m->payload));
            break;
        case cluster_envelope::disconnect:
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

/// This worker's link to the primary, opened (and announced with `online`) on first use.
/// Throws `std::logic_error` in a process that is no worker, off an event loop, or on
/// another loop than the first call's.
inline cluster_worker_state& cluster_worker() {
    if (!cluster_is_worker()) {
        throw std::logic_error("conflux::cluster: worker call in a process that is no worker");
    }
    auto*& ws = cluster_worker_slot();
    event_loop& loop = require_loop("conflux::cluster (worker)");
    if (ws == nullptr) {
        ws = new cluster_worker_state();
        ws->loop = &loop;
        ws->link = ipc_channel(file_descriptor(cluster_ipc_fd));
        cluster_envelope hello;
        hello.what = cluster_envelope::online;
        ws->link.try_send(std::move(hello));
        loop.detach(cluster_worker_dispatch(ws));
    } else if (ws->loop != &loop) {
        throw std::logic_error("conflux::cluster: worker calls must all be on one event loop");
    }
    return *ws;
}

/// What the primary granted a worker's `listen`.
struct cluster_listen_grant {
    std::uint32_t key = 0;
    std::uint8_t policy = 0;
    std::uint16_t port = 0;
    std::string address;                             // "127.0.0.1:8080", "[::1]:8080"
    file_descriptor listener;                        // shared: the primary's listening socket
    std::shared_ptr<channel<file_descriptor>> queue; // round_robin: sockets from the primary
};

/// Asks the primary to bind (or reserve) `host`:`port`. Throws `std::system_error` with the
/// primary's message when it could not, `conflux::error` when the primary went away.
inline task<cluster_listen_grant> cluster_request_listen(std::string host, std::uint16_t port,
                                                         const listen_options& options) {
    auto& ws = cluster_worker();
    const std::uint32_t key = ws.next_key++;
    auto reply_box = std::make_shared<channel<cluster_envelope>>(1);
    ws.replies[key] = reply_box;
    auto queue = std::make_shared<channel<file_descriptor>>(1 << 14);
    ws.connections[key] = queue;
    cluster_envelope request;
    request.what = cluster_envelope::listen;
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
    cluster_listen_grant grant;
    grant.key = key;
    grant.policy = reply->policy;
    grant.port = reply->port;
    grant.address = host_port(host.empty() ? "::" : host, reply->port);
    grant.listener = std::move(reply->fd);
    if (grant.policy == cluster_envelope::policy_round_robin) {
        grant.queue = std::move(queue);
    } else {
        ws.connections.erase(key); // the worker accepts by itself
    }
    co_return grant;
}

/// Tells the primary that listen `key` now serves `address` (its `listening` event).
inline task<void> cluster_announce_listening(std::uint32_t key, std::string address) {
    auto& ws = cluster_worker();
    cluster_envelope note;
    note.what = cluster_envelope::listening;
    note.key = key;
    note.text = std::move(address);
    co_await ws.link.send(std::move(note));
}

/// Reports a failure the worker survived to the primary, where it is an `error` event. Never
/// throws and never waits: a report that finds the link's queue full is dropped (the
/// failures that matter repeat), and with the primary gone there is nobody to tell.
inline void cluster_report_error(std::string text) noexcept {
    cluster_worker_state* ws = cluster_worker_slot();
    if (ws == nullptr) return;
    try {
        cluster_envelope e;
        e.what = cluster_envelope::failure;
        e.text = std::move(text);
        (void)ws->link.try_send(std::move(e));
    } catch (const std::exception&) {
        // The link is closed (the primary went away; the worker is being disconnected) or
        // out of memory: a report has nowhere to go, and the caller must not fail for it.
    }
}

/// The text an `error` event carries for the exception `e`.
inline std::string cluster_describe(std::exception_ptr e) {
    try {
        std::rethrow_exception(std::move(e));
    } catch (const std::exception& x) {
        return x.what();
    } catch (...) {
        return "an exception that is no std::exception";
    }
}

/// Counts the connection handlers a `cluster_listener::serve` started. Once the count is
/// zero, the last handler to end resumes the one coroutine waiting in `drained()`; nobody
/// polls. Belongs to one event loop: the handlers are detached on it and, by executor
/// affinity, end on it, so the count needs no atomics.
class cluster_drain {
public:
    void begin() noexcept { ++m_running; }

    void end() noexcept {
        if (--m_running == 0 && m_waiter != nullptr) std::exchange(m_waiter, nullptr)->complete();
    }

    /// Resumes on `loop` once every handler has ended (at once if none runs); `token` cancels
    /// with `operation_cancelled` (the handlers go on by themselves).
    [[nodiscard]] auto drained(event_loop& loop, std::stop_token token) {
        struct awaiter {
            cluster_drain* self;
            event_loop* loop;
            std::stop_token token;
            loop_wait wait;

            awaiter(cluster_drain* d, event_loop* l, std::stop_token t)
                : self(d), loop(l), token(std::move(t)) {}
            awaiter(const awaiter&) = delete;
            awaiter& operator=(const awaiter&) = delete;
            // A frame destroyed while it waits (its loop going away) leaves no dangling waiter.
            ~awaiter() {
                if (self->m_waiter == &wait) self->m_waiter = nullptr;
            }

            bool await_ready() const noexcept { return self->m_running == 0; }
            void await_suspend(std::coroutine_handle<> h) {
                self->m_waiter = &wait;
                wait.arm(h, any_executor(*loop), token, &withdraw, self);
            }
            void await_resume() {
                if (wait.finish()) throw operation_cancelled();
            }
            static void withdraw(void* context) noexcept {
                static_cast<cluster_drain*>(context)->m_waiter = nullptr;
            }
        };
        return awaiter(this, &loop, std::move(token));
    }

private:
    std::size_t m_running = 0;
    loop_wait* m_waiter = nullptr;
};

/// What `serve` shares with the handlers it starts, which may outlive it (when it is
/// cancelled).
struct cluster_serving {
    std::function<task<void>(tcp_stream)> handler;
    cluster_drain drain;
};

/// Runs one connection's handler. An exception ends that connection only, and is reported to
/// the primary (an `error` event) rather than lost.
inline task<void> cluster_serve_one(std::shared_ptr<cluster_serving> serving, tcp_stream s) {
    try {
        co_await serving->handler(std::move(s));
    } catch (...) {
        cluster_report_error("connection handler: " + cluster_describe(std::current_exception()));
    }
    serving->drain.end();
}

} // namespace conflux::detail
