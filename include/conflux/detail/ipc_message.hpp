#pragma once

// A typed message: the 8-byte fingerprint of its type (`fingerprint_of<T>()`, host byte
// order) followed by the value's encoding. The body of every binary-mode user frame, and the
// payload of a cluster message. Free of any I/O so that it can be fuzzed.

#include <conflux/codec.hpp>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace conflux::detail {

inline constexpr std::size_t fingerprint_size = sizeof(std::uint64_t);

inline std::string fingerprint_text(std::uint64_t f) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string s = "0x";
    for (int shift = 60; shift >= 0; shift -= 4) s += digits[(f >> shift) & 0xf];
    return s;
}

template <class T>
std::string describe_type() {
    return std::string(type_name<T>()) + " (fingerprint " + fingerprint_text(fingerprint_of<T>()) +
           ")";
}

/// Starts a message of type `T`: its fingerprint. The value follows with `encode_value`.
template <class T>
void write_fingerprint(byte_writer& w) {
    w.write_raw(fingerprint_of<T>());
}

/// The fingerprint a message starts with; `ipc_error` when it is shorter than that.
inline std::uint64_t read_fingerprint(std::span<const std::byte> body) {
    if (body.size() < fingerprint_size) byte_reader::fail("shorter than a type fingerprint");
    std::uint64_t f;
    std::memcpy(&f, body.data(), sizeof f);
    return f;
}

[[noreturn]] inline void throw_type_mismatch(const std::string& expected, std::uint64_t got) {
    throw ipc_type_mismatch("conflux::ipc: expected " + expected +
                                ", got a message of another type (fingerprint " +
                                fingerprint_text(got) + ")",
                            got);
}

template <class T>
T decode_body(std::span<const std::byte> body, const codec_limits& limits,
              std::span<file_descriptor> fds) {
    byte_reader r(body.subspan(fingerprint_size), limits, fds);
    T v = decode_value<T>(r);
    if (r.remaining() != 0) byte_reader::fail("trailing bytes after the message");
    return v;
}

/// A whole message of type `T`. Throws `ipc_type_mismatch` for a message of another type,
/// `ipc_error` for a malformed one.
template <class T>
T decode_message(std::span<const std::byte> body, const codec_limits& limits = {},
                 std::span<file_descriptor> fds = {}) {
    const std::uint64_t got = read_fingerprint(body);
    if (got != fingerprint_of<T>())
        throw_type_mismatch("a message of type " + describe_type<T>(), got);
    return decode_body<T>(body, limits, fds);
}

template <class... T>
constexpr bool fingerprints_distinct() {
    const std::uint64_t f[] = {fingerprint_of<T>()...};
    for (std::size_t i = 0; i < sizeof...(T); ++i) {
        for (std::size_t j = i + 1; j < sizeof...(T); ++j) {
            if (f[i] == f[j]) return false;
        }
    }
    return true;
}

/// A message of any of the types `T...`, chosen by its fingerprint. Throws
/// `ipc_type_mismatch` when it is none of them, `ipc_error` when malformed.
template <class... T>
std::variant<T...> decode_message_one_of(std::span<const std::byte> body,
                                         const codec_limits& limits = {},
                                         std::span<file_descriptor> fds = {}) {
    static_assert(sizeof...(T) > 0, "conflux: receive_one_of needs at least one type");
    static_assert(fingerprints_distinct<T...>(),
                  "conflux: receive_one_of: two of these types have the same fingerprint (the "
                  "same fields in the same order), so a message cannot tell them apart: make "
                  "them differ, or give one a codec with its own `schema`");
    using result = std::variant<T...>;
    using decoder =
        result (*)(std::span<const std::byte>, const codec_limits&, std::span<file_descriptor>);
    static constexpr std::uint64_t fingerprints[] = {fingerprint_of<T>()...};
    static constexpr decoder decoders[] = {
        [](std::span<const std::byte> b, const codec_limits& l, std::span<file_descriptor> d) {
            return result(std::in_place_type<T>, decode_body<T>(b, l, d));
        }...};
    const std::uint64_t got = read_fingerprint(body);
    for (std::size_t i = 0; i < sizeof...(T); ++i) {
        if (fingerprints[i] == got) return decoders[i](body, limits, fds);
    }
    std::string expected = "one of";
    ((expected += (expected.size() > 6 ? ", " : " ") + describe_type<T>()), ...);
    throw_type_mismatch(expected, got);
}

/// The message of `v` alone (no frame; a descriptor inside throws `ipc_error`).
template <class T>
std::vector<std::byte> encode_message(const T& v) {
    std::vector<std::byte> out;
    byte_writer w(out);
    write_fingerprint<T>(w);
    encode_value(w, v);
    return out;
}

} // namespace conflux::detail
