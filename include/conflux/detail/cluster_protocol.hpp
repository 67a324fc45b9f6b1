#pragma once

#include <conflux/codec.hpp>

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
