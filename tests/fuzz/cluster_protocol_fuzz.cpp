// libFuzzer target: the cluster's primary <-> worker protocol, as each side decodes it: one
// frame's body as a `cluster_envelope`, with the descriptors that came with it, then the
// protocol check of the receiving side (detail/cluster_protocol.hpp).
//
// Input: one byte giving the number of descriptors that arrived with the frame (0-3) and
// the limits, then the frame's body. Invariants: no crash, no leak (of memory or of a
// descriptor), no unbounded allocation; malformed input is an ipc_error; an envelope that
// decodes re-encodes to the same bytes (when it took the first descriptor, or none), and
// decodes again to the same envelope; an envelope a side accepts is one its peer would send.

#include <conflux/codec.hpp>
#include <conflux/file_descriptor.hpp>
#include <conflux/detail/cluster_protocol.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

namespace {

using conflux::detail::cluster_envelope;

bool same(const cluster_envelope& a, const cluster_envelope& b) {
    return a.what == b.what && a.key == b.key && a.host == b.host && a.port == b.port &&
           a.policy == b.policy && a.error == b.error && a.backlog == b.backlog &&
           a.no_delay == b.no_delay && a.text == b.text && a.payload == b.payload &&
           static_cast<bool>(a.fd) == static_cast<bool>(b.fd);
}

int g_null = -1;

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    g_null = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const std::size_t fd_count = data[0] & 3;
    const conflux::codec_limits limits{.max_message_size = 64 * 1024,
                                       .max_depth = std::size_t(1) + ((data[0] >> 2) & 3)};
    std::span<const std::byte> body(reinterpret_cast<const std::byte*>(data + 1), size - 1);
    int numbers[3] = {-1, -1, -1};
    [&] {
        std::vector<conflux::file_descriptor> fds;
        for (std::size_t i = 0; i < fd_count; ++i) {
            fds.push_back(conflux::file_descriptor::duplicate(g_null));
            numbers[i] = fds.back().get();
        }
        cluster_envelope m;
        try {
            // As ipc_channel::receive decodes a frame once its type fingerprint matched:
            // the rest of the body, nothing left over.
            conflux::byte_reader r(body, limits, fds);
            m = conflux::decode_value<cluster_envelope>(r);
            if (r.remaining() != 0) conflux::byte_reader::fail("trailing bytes");
        } catch (const conflux::ipc_error&) {
            return; // malformed: what arrived is closed all the same
        }
        // The descriptor taken, if any, left an empty slot.
        std::size_t taken = fd_count;
        for (std::size_t i = 0; i < fd_count; ++i) {
            if (!fds[i]) taken = i;
        }
        if (static_cast<bool>(m.fd) != (taken != fd_count)) std::abort();

        // Canonical: re-encoding gives the same bytes when the descriptor index was 0.
        std::vector<std::byte> again;
        std::vector<conflux::file_descriptor> sent;
        conflux::byte_writer w(again, &sent, limits.max_depth);
        conflux::encode_value(w, m);
        if (sent.size() != (m.fd ? 1U : 0U)) std::abort();
        const bool same_bytes = std::equal(again.begin(), again.end(), body.begin(), body.end());
        if ((!m.fd || taken == 0) && !same_bytes) std::abort();
        conflux::byte_reader r2(again, limits, sent);
        if (!same(conflux::decode_value<cluster_envelope>(r2), m)) std::abort();

        bool from_primary = true;
        bool from_worker = true;
        try {
            conflux::detail::check_from_primary(m);
        } catch (const conflux::ipc_error&) {
            from_primary = false;
        }
        try {
            conflux::detail::check_from_worker(m);
        } catch (const conflux::ipc_error&) {
            from_worker = false;
        }
        // No kind travels both ways but `user`, and a worker never sends a descriptor.
        if (from_primary && from_worker && m.what != cluster_envelope::user) std::abort();
        if (from_worker && m.fd) std::abort();
        // What a worker acts on: a connection or a shared listener always has its socket.
        if (from_primary && m.what == cluster_envelope::connection && !m.fd) std::abort();
        if (from_primary && m.what == cluster_envelope::listen_reply &&
            m.policy > cluster_envelope::policy_reuse_port) {
            std::abort();
        }
    }();
    // Every descriptor that arrived was closed, taken or not (nothing else opens one here).
    for (int fd : numbers) {
        if (fd >= 0 && ::fcntl(fd, F_GETFD) >= 0) std::abort();
    }
    return 0;
}
