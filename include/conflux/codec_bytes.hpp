#pragma once

// The byte-level side of `codec<T>`: the writer an encoder appends to, the reader a decoder
// checks every read against, the limits decoding enforces and the error it throws. Included
// by <conflux/codec.hpp>; a `codec` specialisation needs nothing else.

#include <conflux/detail/cpp20.hpp>

#if !CONFLUX_HAS_FORK_IPC
#error "conflux/codec_bytes.hpp: IPC codecs are not supported on Windows yet"
#include <conflux/detail/compilation_stopped_by_the_error_above>
#endif

#include <conflux/error.hpp>
#include <conflux/file_descriptor.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

namespace conflux {

/// Malformed, truncated, oversized or otherwise untrustworthy IPC input, or a message that
/// cannot be encoded. On a channel it closes that channel; the process keeps running.
class ipc_error : public error {
public:
    using error::error;
};

/// A well-formed message of another type than the receive asked for (its fingerprint, see
/// `fingerprint_of`, is not the one expected). The message is consumed, descriptors in it
/// closed; the channel stays open and the next receive works.
class ipc_type_mismatch : public ipc_error {
public:
    ipc_type_mismatch(const std::string& what, std::uint64_t received)
        : ipc_error(what), m_received(received) {}
    /// The fingerprint the message carried.
    std::uint64_t received_fingerprint() const noexcept { return m_received; }

private:
    std::uint64_t m_received;
};

/// Bounds that decoding enforces before trusting anything it reads.
struct codec_limits {
    /// Largest frame (encoded message) accepted: checked against the frame header before
    /// anything of that size is allocated. Default 64 MiB.
    std::size_t max_message_size = std::size_t(64) << 20;
    /// Deepest nesting of containers, optionals, variants and aggregates.
    std::size_t max_depth = 64;
};

/// Where `codec<T>::encode` writes: bytes, plus descriptors that travel beside them.
class byte_writer {
public:
    /// Appends to `out`; without `fds` any descriptor in the message is an `ipc_error`.
    explicit byte_writer(std::vector<std::byte>& out, std::vector<file_descriptor>* fds = nullptr,
                         std::size_t max_depth = codec_limits{}.max_depth) noexcept
        : m_out(&out), m_fds(fds), m_max_depth(max_depth) {}

    void write(const void* data, std::size_t n) {
        if (n == 0) return;
        const std::size_t at = m_out->size();
        m_out->resize(at + n);
        std::memcpy(m_out->data() + at, data, n);
    }
    void write(std::span<const std::byte> bytes) { write(bytes.data(), bytes.size()); }

    /// The object representation of a trivially copyable value (host byte order: both ends
    /// of a channel run on the same machine).
    template <class T>
    requires std::is_trivially_copyable_v<T>
    void write_raw(const T& v) { write(&v, sizeof(T)); }

    /// A length or count: LEB128, 1 byte below 128.
    void write_size(std::uint64_t n) {
        std::byte buf[10];
        std::size_t len = 0;
        do {
            auto b = static_cast<std::uint8_t>(n & 0x7f);
            n >>= 7;
            if (n != 0) b |= 0x80;
            buf[len++] = std::byte{b};
        } while (n != 0);
        write(buf, len);
    }

    /// Attaches a duplicate of `fd` to the message and writes its index. Throws `ipc_error`
    /// when this writer carries no descriptors (plain `encode`), `std::system_error` when
    /// `fd` is not open.
    void write_fd(int fd) {
        if (m_fds == nullptr) {
            throw ipc_error("conflux::codec: a descriptor can only travel over an IPC channel");
        }
        m_fds->push_back(file_descriptor::duplicate(fd));
        write_size(m_fds->size() - 1);
    }

    /// Counts one level of nesting for the scope of the returned guard.
    [[nodiscard]] auto nest() {
        if (++m_depth > m_max_depth) {
            --m_depth;
            throw ipc_error("conflux::codec: message nested deeper than " +
                            std::to_string(m_max_depth) + " levels");
        }
        struct guard {
            std::size_t* depth;
            ~guard() { --*depth; }
        };
        return guard{&m_depth};
    }

    std::size_t size() const noexcept { return m_out->size(); }

private:
    std::vector<std::byte>* m_out;
    std::vector<file_descriptor>* m_fds;
    std::size_t m_max_depth;
    std::size_t m_depth = 0;
};

/// Where `codec<T>::decode` reads from: one frame's bytes and descriptors. Every read is
/// checked against what is left of the frame; nothing read is trusted.
class byte_reader {
public:
    explicit byte_reader(std::span<const std::byte> data, codec_limits limits = {},
                         std::span<file_descriptor> fds = {}) noexcept
        : m_data(data), m_fds(fds), m_limits(limits) {}

    std::size_t remaining() const noexcept { return m_data.size() - m_pos; }
    const codec_limits& limits() const noexcept { return m_limits; }

    /// The next `n` bytes; `ipc_error` when the frame holds fewer.
    std::span<const std::byte> read(std::size_t n) {
        if (n > remaining()) fail("truncated message");
        auto out = m_data.subspan(m_pos, n);
        m_pos += n;
        return out;
    }

    template <class T>
    requires std::is_trivially_copyable_v<T> T read_raw() {
        T v;
        std::memcpy(&v, read(sizeof(T)).data(), sizeof(T));
        return v;
    }

    std::uint64_t read_size() {
        std::uint64_t v = 0;
        for (unsigned shift = 0; shift < 64; shift += 7) {
            const auto b = std::to_integer<std::uint8_t>(read(1)[0]);
            if (shift == 63 && (b & 0x7e) != 0) fail("length overflows 64 bits");
            v |= std::uint64_t(b & 0x7f) << shift;
            if ((b & 0x80) == 0) {
                // One encoding per value: a final zero byte would be a longer spelling.
                if (b == 0 && shift != 0) fail("non-minimal length");
                return v;
            }
        }
        fail("length overflows 64 bits");
    }

    /// A count of elements each encoded in at least `min_element_size` bytes, checked
    /// against the rest of the frame so that a lying count cannot make anything allocate.
    std::size_t read_count(std::size_t min_element_size) {
        const std::uint64_t n = read_size();
        const std::size_t bound =
            min_element_size == 0 ? m_limits.max_message_size : remaining() / min_element_size;
        if (n > bound) fail("element count " + std::to_string(n) + " exceeds the message");
        return static_cast<std::size_t>(n);
    }

    /// Takes the descriptor whose index comes next. `ipc_error` for an index out of range or
    /// a descriptor taken twice.
    file_descriptor read_fd() {
        const std::uint64_t i = read_size();
        if (i >= m_fds.size() || !m_fds[i]) fail("bad descriptor index");
        return std::move(m_fds[i]);
    }

    [[nodiscard]] auto nest() {
        if (++m_depth > m_limits.max_depth) {
            --m_depth;
            fail("nested deeper than " + std::to_string(m_limits.max_depth) + " levels");
        }
        struct guard {
            std::size_t* depth;
            ~guard() { --*depth; }
        };
        return guard{&m_depth};
    }

    [[noreturn]] static void fail(const std::string& why) {
        throw ipc_error("conflux::codec: malformed message: " + why);
    }

private:
    std::span<const std::byte> m_data;
    std::size_t m_pos = 0;
    std::span<file_descriptor> m_fds;
    codec_limits m_limits;
    std::size_t m_depth = 0;
};

} // namespace conflux
