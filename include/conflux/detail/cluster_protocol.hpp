#pragma once

#include <conflux/codec.hpp>
#include <conflux/detail/process_name.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

namespace conflux::detail {

/// The environment variables that put a re-run program in the worker role.
inline constexpr const char* cluster_worker_env = "CONFLUX_CLUSTER_WORKER";
/// The worker's end of its IPC socket.
inline constexpr int cluster_ipc_fd = 3;

/// What primary and workers say to each other over the IPC channel: one envelope type, so a
/// single receive loop on each side sees everything in order.
struct cluster_envelope {
    enum kind : std::uint8_t {
        online = 1,       // worker → primary: up and talking
        listen = 2,       // worker → primary: key, host, port, options
        listen_reply = 3, // primary → worker: key; error + text, or port + listening fd
        listening = 4,    // worker → primary: key, the address now served
        connection = 5,   // primary → worker: key, an accepted socket (round_robin)
        user = 6,         // both ways: payload encoded by codec<T>
        disconnect = 7,   // primary → worker: stop accepting, finish, exit
        failure = 8,      // worker → primary: text, a failure the worker survived
    };
    /// `policy` on the wire: the values of `conflux::scheduling`.
    enum policy_kind : std::uint8_t {
        policy_round_robin = 0,
        policy_shared = 1,
        policy_reuse_port = 2,
    };
    std::uint8_t what = 0;
    std::uint32_t key = 0;
    std::string host;
    std::uint16_t port = 0;
    std::uint8_t policy = 0;
    std::int32_t error = 0;
    std::int32_t backlog = 0;
    std::uint8_t no_delay = 0;
    std::string text;
    std::vector<std::byte> payload;
    file_descriptor fd;
};

/// Refuses what no primary sends: an envelope the worker could not act on safely (a
/// listening socket or a connection without its descriptor, an unknown policy) is malformed
/// input, `ipc_error`, like bytes that do not decode.
inline void check_from_primary(const cluster_envelope& m) {
    auto fail = [](const std::string& why) {
        throw ipc_error("conflux::cluster: protocol error from the primary: " + why);
    };
    bool needs_fd = false;
    switch (m.what) {
    case cluster_envelope::listen_reply:
        if (m.policy > cluster_envelope::policy_reuse_port) {
            fail("unknown scheduling policy " + std::to_string(m.policy));
        }
        needs_fd = m.error == 0 && m.policy == cluster_envelope::policy_shared;
        break;
    case cluster_envelope::connection:
        needs_fd = true;
        break;
    case cluster_envelope::user:
    case cluster_envelope::disconnect:
        break;
    default:
        fail("unexpected message kind " + std::to_string(m.what));
    }
    if (needs_fd && !m.fd)
        fail("message kind " + std::to_string(m.what) + " without its descriptor");
    if (!needs_fd && m.fd) fail("a descriptor on message kind " + std::to_string(m.what));
}

/// Refuses what no worker sends: kinds only the primary sends, and descriptors (a worker
/// never passes one). `ipc_error`.
inline void check_from_worker(const cluster_envelope& m) {
    auto fail = [](const std::string& why) {
        throw ipc_error("conflux::cluster: protocol error from a worker: " + why);
    };
    switch (m.what) {
    case cluster_envelope::online:
    case cluster_envelope::listen:
    case cluster_envelope::listening:
    case cluster_envelope::user:
    case cluster_envelope::failure:
        break;
    default:
        fail("unexpected message kind " + std::to_string(m.what));
    }
    if (m.fd) fail("a descriptor on message kind " + std::to_string(m.what));
}

/// This process's arguments after argv[0], as the kernel recorded them.
inline std::vector<std::string> own_arguments() {
    std::ifstream in("/proc/self/cmdline", std::ios::binary);
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::string> out;
    std::size_t start = 0;
    while (start < all.size()) {
        std::size_t end = all.find('\0', start);
        if (end == std::string::npos) end = all.size();
        out.emplace_back(all.substr(start, end - start));
        start = end + 1;
    }
    if (!out.empty()) out.erase(out.begin());
    return out;
}

} // namespace conflux::detail
