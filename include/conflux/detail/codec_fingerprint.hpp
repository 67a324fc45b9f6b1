#pragma once

// The fingerprint of a message type: a 64-bit hash of its codec schema, computed at compile
// time, that travels in front of every binary-mode IPC message so that a receive of the wrong
// type is refused instead of decoding garbage.
//
// What is hashed is the shape of the encoding, never a compiler's spelling of a type:
//   - scalars by kind (signed, unsigned, floating, bool, std::byte) and size;
//   - containers by shape (string of a character type, sequence, fixed array of N, optional,
//     variant of alternatives in order, ordered or unordered map), duration by its rep and
//     period, time point by its clock (system, steady, other) and duration;
//   - records (plain aggregates, std::pair, std::tuple) by their fields' fingerprints, in
//     order: the type's name is not part of it, so two aggregates with the same fields in the
//     same order have the same fingerprint (and decode as each other, which is sound);
//   - a type met again inside itself (a recursive aggregate) by how many levels up it is;
//   - a user codec by the `schema` string it declares, else by its type's name (see
//     `portable_type_name`).
// Integers are mixed with FNV-1a byte by byte, so the value depends on nothing but these
// rules: the same on every compiler and in every build of the same source. The rules and the
// kind numbers below are part of the wire format: changing them is a new frame version.
//
// A leaf: it names `conflux::codec` (declared here) and the aggregate helpers only.

#include <conflux/detail/codec_aggregate.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <ratio>
#include <string_view>
#include <type_traits>

namespace conflux {
template <class T>
struct codec;
} // namespace conflux

namespace conflux::detail {

inline constexpr std::uint64_t fnv_basis = 0xcbf29ce484222325ull;

/// Mixes the 8 bytes of `v`, least significant first, into `h` (FNV-1a).
constexpr std::uint64_t fp_mix(std::uint64_t h, std::uint64_t v) noexcept {
    for (int i = 0; i < 8; ++i) {
        h ^= (v >> (8 * i)) & 0xff;
        h *= 0x100000001b3ull;
    }
    return h;
}

/// What a schema node is; the numbers are on the wire (through the hash).
enum class fp_kind : std::uint64_t {
    signed_int = 1,
    unsigned_int = 2,
    floating = 3,
    boolean = 4,
    byte = 5,
    enumeration = 6,
    text = 7,
    sequence = 8,
    array = 9,
    optional = 10,
    variant = 11,
    ordered_map = 12,
    unordered_map = 13,
    record = 14,
    unit = 15,
    duration = 16,
    time_point = 17,
    descriptor = 18,
    back_reference = 19,
    named = 20,     ///< a user codec's declared `schema`
    type_name = 21, ///< a user codec without one: its type's name
};

constexpr std::uint64_t fp_start(fp_kind k) noexcept {
    return fp_mix(fnv_basis, static_cast<std::uint64_t>(k));
}

/// FNV-1a of a string (length first, so that concatenations cannot collide).
constexpr std::uint64_t fp_string(std::uint64_t h, std::string_view s) noexcept {
    h = fp_mix(h, s.size());
    for (char c : s) {
        h ^= static_cast<unsigned char>(c);
        h *= 0x100000001b3ull;
    }
    return h;
}

/// `T` as the compiler spells it, for messages. Not portable: GCC and Clang differ.
template <class T>
constexpr std::string_view type_name() noexcept {
    std::string_view s = __PRETTY_FUNCTION__;
#if defined(__clang__)
    constexpr std::string_view from = "[T = ";
#else
    constexpr std::string_view from = "[with T = ";
#endif
    const std::size_t at = s.find(from);
    if (at == std::string_view::npos) return s;
    s.remove_prefix(at + from.size());
    const std::size_t end = s.find_first_of(";]");
    return end == std::string_view::npos ? s : s.substr(0, end);
}

/// The hash of `type_name<T>()` with the spellings GCC and Clang (with libstdc++ or libc++)
/// are known to differ in made the same: "{anonymous}" is "(anonymous namespace)", and the
/// standard library's inline namespaces (`std::__cxx11::`, `std::__1::`) are left out. The
/// same for a class, or a class template over classes and integers, in any namespace; other
/// template arguments may still be spelled differently (GCC's `long unsigned int` is Clang's
/// `unsigned long`): such a user codec declares `schema`.
template <class T>
constexpr std::uint64_t portable_type_name_hash() noexcept {
    constexpr std::string_view name = type_name<T>();
    constexpr std::string_view anonymous_gcc = "{anonymous}";
    constexpr std::string_view anonymous = "(anonymous namespace)";
    constexpr std::string_view dropped[] = {"__cxx11::", "__1::"};
    std::uint64_t h = fp_start(fp_kind::type_name);
    for (std::size_t i = 0; i < name.size();) {
        const std::string_view rest = name.substr(i);
        if (rest.starts_with(anonymous_gcc)) {
            for (char c : anonymous) h = (h ^ static_cast<unsigned char>(c)) * 0x100000001b3ull;
            i += anonymous_gcc.size();
            continue;
        }
        bool skipped = false;
        for (std::string_view d : dropped) {
            if (rest.starts_with(d)) {
                i += d.size();
                skipped = true;
                break;
            }
        }
        if (skipped) continue;
        h = (h ^ static_cast<unsigned char>(name[i])) * 0x100000001b3ull;
        ++i;
    }
    return h;
}

template <class... T>
struct type_list {};

template <class T, class... Seen>
constexpr std::uint64_t schema_hash() noexcept;

/// Which of `Seen` (innermost first) is `T`, counting from 1; 0 when none.
template <class T, class... Seen>
constexpr std::size_t seen_depth() noexcept {
    std::size_t depth = 0, i = 0;
    ((++i, depth = (depth == 0 && std::is_same_v<T, Seen>) ? i : depth), ...);
    return depth;
}

/// The schema nodes the library's codecs declare as `wire_schema`. `hash<Self, Seen...>()`:
/// `Self` is the type being hashed, `Seen` the types around it, innermost first.
namespace schema {

template <fp_kind Kind, std::size_t Size>
struct scalar {
    template <class Self, class... Seen>
    static constexpr std::uint64_t hash() noexcept {
        return fp_mix(fp_start(Kind), Size);
    }
};

template <class T>
constexpr fp_kind arithmetic_kind = std::is_same_v<T, bool>       ? fp_kind::boolean
                                    : std::is_floating_point_v<T> ? fp_kind::floating
                                    : std::is_signed_v<T>         ? fp_kind::signed_int
                                                                  : fp_kind::unsigned_int;

template <class T>
using arithmetic = scalar<arithmetic_kind<T>, sizeof(T)>;

/// A node of `Kind` over the fingerprints of `T...` in order, plus `Extra` numbers.
template <fp_kind Kind, class Types, std::uint64_t... Extra>
struct node;

template <fp_kind Kind, class... T, std::uint64_t... Extra>
struct node<Kind, type_list<T...>, Extra...> {
    template <class Self, class... Seen>
    static constexpr std::uint64_t hash() noexcept {
        std::uint64_t h = fp_mix(fp_start(Kind), sizeof...(T));
        ((h = fp_mix(h, Extra)), ...);
        ((h = fp_mix(h, schema_hash<T, Self, Seen...>())), ...);
        return h;
    }
};

template <class... T>
using record = node<fp_kind::record, type_list<T...>>;

/// An aggregate's fields, found only when hashed (a recursive aggregate is incomplete where
/// its codec is instantiated).
template <class T>
struct aggregate {
    template <class Self, class... Seen>
    static constexpr std::uint64_t hash() noexcept {
        using fields = decltype(apply_fields(std::declval<T&>(), [](auto&... f) {
            return node<fp_kind::record, type_list<std::remove_cvref_t<decltype(f)>...>>{};
        }));
        return fields::template hash<Self, Seen...>();
    }
};

template <class Clock>
constexpr std::uint64_t clock_id = std::is_same_v<Clock, std::chrono::system_clock>   ? 1
                                   : std::is_same_v<Clock, std::chrono::steady_clock> ? 2
                                                                                      : 0;

} // namespace schema

template <class T, class... Seen>
constexpr std::uint64_t schema_hash() noexcept {
    if constexpr (constexpr std::size_t depth = seen_depth<T, Seen...>(); depth != 0) {
        return fp_mix(fp_start(fp_kind::back_reference), depth);
    } else if constexpr (requires { typename codec<T>::wire_schema; }) {
        return codec<T>::wire_schema::template hash<T, Seen...>();
    } else if constexpr (requires { std::string_view(codec<T>::schema); }) {
        return fp_string(fp_start(fp_kind::named), std::string_view(codec<T>::schema));
    } else {
        return portable_type_name_hash<T>();
    }
}

template <class T>
inline constexpr std::uint64_t fingerprint_v = schema_hash<T>();

} // namespace conflux::detail
