#pragma once

// The IPC wire format and its incremental decoder, free of any I/O so that it can be fuzzed.
//
// A frame is a 16-byte header followed by `length` bytes of body:
//   u32 magic "CFLX" | u8 version | u8 type | u16 descriptor count | u32 length | u32 zero
// in host byte order (both ends run on one machine). The type separates user messages from
// the library's own control messages; a user can only ever produce `user` frames. A user
// frame's body is a typed message: its type's 8-byte fingerprint, then the encoding.
//
// Descriptors (SCM_RIGHTS) travel with the sendmsg that starts exactly at their frame's
// header, and each such sendmsg carries the descriptors of that one frame only. On a Unix
// stream socket the kernel hands them out with the recvmsg that reads the first byte of
// that sendmsg, and a recvmsg returns at most one batch of descriptors, so the decoder can
// hold a peer to it: the descriptors of one read belong to the one frame whose header starts
// in that read, and their number must be exactly what the header declares.

#include <conflux/codec.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <span>
#include <string>
#include <utility>
#include <vector>

namespace conflux::detail {

inline constexpr std::uint32_t frame_magic = 0x584c4643; // "CFLX" read little-endian
/// 2: a user frame's body starts with its type's fingerprint (detail/ipc_message.hpp).
inline constexpr std::uint8_t frame_version = 2;
inline constexpr std::size_t frame_header_size = 16;
/// SCM_MAX_FD: the most descriptors one sendmsg can carry.
inline constexpr std::size_t max_frame_fds = 253;

enum class frame_type : std::uint8_t {
    user = 1,         ///< a message sent with `send`
    remote_error = 2, ///< the peer's uncaught exception: (type name, message)
};

struct frame_header {
    std::uint32_t magic;
    std::uint8_t version;
    std::uint8_t type;
    std::uint16_t fds;
    std::uint32_t length;
    std::uint32_t reserved;
};
static_assert(sizeof(frame_header) == frame_header_size);

inline void write_frame_header(std::byte* at, frame_type type, std::size_t fds,
                               std::size_t length) {
    const frame_header h{frame_magic,
                         frame_version,
                         static_cast<std::uint8_t>(type),
                         static_cast<std::uint16_t>(fds),
                         static_cast<std::uint32_t>(length),
                         0};
    std::memcpy(at, &h, sizeof h);
}

/// One complete frame as received.
struct frame {
    frame_type type = frame_type::user;
    std::vector<std::byte> body;
    std::vector<file_descriptor> fds;
};

/// Reassembles frames from a byte stream delivered in arbitrary pieces, each with the
/// descriptors that arrived with it. Throws `ipc_error` on anything malformed; after that the
/// decoder must not be used again.
class frame_decoder {
public:
    explicit frame_decoder(std::size_t max_message_size) noexcept
        : m_max(max_message_size < 0xffffffffu ? max_message_size : 0xffffffffu) {}

    /// Consumes the bytes (and descriptors) of one read. Complete frames queue up for `next`.
    void feed(std::span<const std::byte> bytes, std::vector<file_descriptor> fds = {}) {
        ++m_batch;
        if (!fds.empty()) {
            if (!m_fds.empty()) fail("descriptors arrived that no frame declared");
            m_fds = std::move(fds);
            m_fds_batch = m_batch;
        }
        while (!bytes.empty()) {
            if (m_have < frame_header_size) {
                if (m_have == 0) m_header_batch = m_batch;
                const std::size_t n = std::min(bytes.size(), frame_header_size - m_have);
                std::memcpy(m_header + m_have, bytes.data(), n);
                m_have += n;
                bytes = bytes.subspan(n);
                if (m_have == frame_header_size) start_body();
                continue;
            }
            const std::size_t n = std::min(bytes.size(), m_current.body.size() - m_body_have);
            std::memcpy(m_current.body.data() + m_body_have, bytes.data(), n);
            m_body_have += n;
            bytes = bytes.subspan(n);
            if (m_body_have == m_current.body.size()) finish_frame();
        }
        // Descriptors may wait only for a header that started in their read.
        if (!m_fds.empty() && !(m_have > 0 && m_have < frame_header_size &&
                                m_header_batch == m_fds_batch && m_fds_batch == m_batch)) {
            fail("descriptors arrived that no frame declared");
        }
    }

    /// Where the rest of the current frame's body goes, for reading straight into it (large
    /// bodies); empty unless a body is in progress. Follow with `commit_direct`.
    std::span<std::byte> direct_space() noexcept {
        if (m_have < frame_header_size) return {};
        return std::span(m_current.body).subspan(m_body_have);
    }

    /// `n` bytes were read into `direct_space()`, with no descriptors.
    void commit_direct(std::size_t n) {
        ++m_batch;
        m_body_have += n;
        if (m_body_have == m_current.body.size()) finish_frame();
    }

    /// Descriptors of the read that went straight into the body: never legitimate there.
    void reject_direct_fds() { fail("descriptors arrived in the middle of a frame"); }

    bool has_frame() const noexcept { return !m_ready.empty(); }

    frame pop() {
        frame f = std::move(m_ready.front());
        m_ready.pop_front();
        return f;
    }

    /// True when part of a frame has arrived but not all of it.
    bool mid_frame() const noexcept { return m_have != 0; }

    [[noreturn]] static void fail(const std::string& why) {
        throw ipc_error("conflux::ipc: protocol error: " + why);
    }

private:
    void start_body() {
        frame_header h;
        std::memcpy(&h, m_header, sizeof h);
        if (h.magic != frame_magic) fail("bad magic");
        if (h.version != frame_version) fail("unsupported version " + std::to_string(h.version));
        if (h.type != static_cast<std::uint8_t>(frame_type::user) &&
            h.type != static_cast<std::uint8_t>(frame_type::remote_error)) {
            fail("unknown frame type " + std::to_string(h.type));
        }
        if (h.reserved != 0) fail("reserved header bits set");
        if (h.length > m_max) {
            fail("frame of " + std::to_string(h.length) + " bytes exceeds max_message_size " +
                 std::to_string(m_max));
        }
        if (h.fds > max_frame_fds) fail("too many descriptors declared");
        m_current = frame{};
        m_current.type = static_cast<frame_type>(h.type);
        if (h.fds != 0) {
            if (m_fds.size() != h.fds || m_fds_batch != m_header_batch) {
                fail("frame declares " + std::to_string(h.fds) + " descriptors, " +
                     std::to_string(m_fds_batch == m_header_batch ? m_fds.size() : 0) +
                     " arrived with it");
            }
            m_current.fds = std::move(m_fds);
            m_fds.clear();
        }
        m_current.body.resize(h.length); // bounded by max_message_size above
        m_body_have = 0;
        if (h.length == 0) finish_frame();
    }

    void finish_frame() {
        m_ready.push_back(std::move(m_current));
        m_current = frame{};
        m_have = 0;
        m_body_have = 0;
    }

    std::size_t m_max;
    std::byte m_header[frame_header_size]{};
    std::size_t m_have = 0; // header bytes so far; == header size while in the body
    std::size_t m_body_have = 0;
    frame m_current;
    std::deque<frame> m_ready;
    std::vector<file_descriptor> m_fds; // arrived, not yet claimed by a header
    std::uint64_t m_batch = 0;
    std::uint64_t m_fds_batch = 0;
    std::uint64_t m_header_batch = 0;
};

} // namespace conflux::detail
