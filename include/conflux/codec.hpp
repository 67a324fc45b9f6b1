#pragma once

#include <conflux/detail/cpp20.hpp>

#if !CONFLUX_HAS_FORK_IPC
#error "conflux/codec.hpp: IPC codecs are not supported on Windows yet"
#include <conflux/detail/compilation_stopped_by_the_error_above>
#endif

#include <conflux/codec_bytes.hpp>
#include <conflux/error.hpp>
#include <conflux/file_descriptor.hpp>
#include <conflux/detail/codec_aggregate.hpp>
#include <conflux/detail/codec_fingerprint.hpp>

#include <array>
#include <bit>
#include <chrono>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <variant>
#include <vector>

namespace conflux {

/// How values of `T` are encoded into a message and decoded from one: specialise it for
/// your types, as `fmt::formatter`.
///
/// ```
/// template <> struct conflux::codec<point> {
///     static constexpr std::size_t min_size = 8;   // optional: fewest bytes of an encoding
///     static void encode(conflux::byte_writer& w, const point& p) {
///         conflux::encode_value(w, p.x); conflux::encode_value(w, p.y);
///     }
///     static point decode(conflux::byte_reader& r) {
///         return {conflux::decode_value<int>(r), conflux::decode_value<int>(r)};
///     }
/// };
/// ```
/// Built in: arithmetic types, enums, `std::string`, `std::vector`, `std::array`,
/// `std::optional`, `std::variant`, `std::map`, `std::unordered_map`, `std::pair`,
/// `std::tuple`, `std::chrono::duration`/`time_point`, `file_descriptor`, and plain aggregates
/// of up to 16 public fields (no macro). `decode` throws `ipc_error` on malformed input.
///
/// A specialisation may declare `static constexpr std::string_view schema = "money/1";`:
/// its `fingerprint_of` is then the hash of that text. Without it, the hash of the type's
/// name (the same with GCC and Clang for a class or a class template over classes and
/// integers, but not in general: declare `schema` where both ends are built differently).
template <class T>
struct codec;

/// Types `codec` can encode and decode.
template <class T>
concept encodable = requires(byte_writer& w, byte_reader& r, const T& v) {
    codec<T>::encode(w, v);
    { codec<T>::decode(r) } -> std::same_as<T>;
};

namespace detail {
template <class T>
constexpr std::size_t min_encoded_size() {
    if constexpr (requires { codec<T>::min_size; }) {
        return codec<T>::min_size;
    } else {
        return 0;
    }
}
} // namespace detail

/// The fingerprint of `T`'s encoding, computed at compile time: a hash of its codec schema
/// (scalar kinds and sizes, container shapes, fields in order; not the type's name, so
/// aggregates with the same fields in the same order share it), the same with every compiler
/// and build. Every binary IPC message carries it; `receive<T>` of another type is refused.
template <class T>
constexpr std::uint64_t fingerprint_of() noexcept {
    static_assert(encodable<T>, "conflux::fingerprint_of: no codec<T> for this type");
    return detail::fingerprint_v<T>;
}

/// Encodes `v` with `codec<T>` (for use inside `codec` specialisations).
template <class T>
void encode_value(byte_writer& w, const T& v) {
    static_assert(encodable<T>, "conflux: no codec<T> for this type: specialise "
                                "conflux::codec<T> (encode/decode), or make it a plain "
                                "aggregate of encodable public fields");
    codec<T>::encode(w, v);
}

/// Decodes a `T` with `codec<T>` (for use inside `codec` specialisations).
template <class T>
T decode_value(byte_reader& r) {
    static_assert(encodable<T>, "conflux: no codec<T> for this type: specialise "
                                "conflux::codec<T> (encode/decode), or make it a plain "
                                "aggregate of encodable public fields");
    return codec<T>::decode(r);
}

/// The encoding of `v` alone (no frame, no descriptors: a descriptor inside throws
/// `ipc_error`).
template <class T>
std::vector<std::byte> encode(const T& v) {
    std::vector<std::byte> out;
    byte_writer w(out);
    encode_value(w, v);
    return out;
}

/// Decodes a whole `T` from `bytes`; `ipc_error` when malformed, truncated, nested too deep
/// or followed by extra bytes.
template <class T>
T decode(std::span<const std::byte> bytes, codec_limits limits = {}) {
    if (bytes.size() > limits.max_message_size) byte_reader::fail("larger than max_message_size");
    byte_reader r(bytes, limits);
    T v = decode_value<T>(r);
    if (r.remaining() != 0) byte_reader::fail("trailing bytes after the value");
    return v;
}

// ---- built-in codecs ---------------------------------------------------------------------

template <>
struct codec<bool> {
    using wire_schema = detail::schema::arithmetic<bool>;
    static constexpr std::size_t min_size = 1;
    static void encode(byte_writer& w, bool v) { w.write_raw(std::uint8_t(v ? 1 : 0)); }
    static bool decode(byte_reader& r) {
        const auto b = r.read_raw<std::uint8_t>();
        if (b > 1) byte_reader::fail("bool is neither 0 nor 1");
        return b == 1;
    }
};

template <class T>
requires(std::is_arithmetic_v<T> && !std::same_as<T, bool>) struct codec<T> {
    using wire_schema = detail::schema::arithmetic<T>;
    static constexpr std::size_t min_size = sizeof(T);
    static void encode(byte_writer& w, T v) { w.write_raw(v); }
    static T decode(byte_reader& r) { return r.read_raw<T>(); }
};

template <class T>
requires std::is_enum_v<T>
struct codec<T> {
    using underlying = std::underlying_type_t<T>;
    using wire_schema =
        detail::schema::node<detail::fp_kind::enumeration, detail::type_list<underlying>>;
    static constexpr std::size_t min_size = sizeof(underlying);
    static void encode(byte_writer& w, T v) { w.write_raw(static_cast<underlying>(v)); }
    static T decode(byte_reader& r) { return static_cast<T>(r.read_raw<underlying>()); }
};

template <>
struct codec<std::byte> {
    using wire_schema = detail::schema::scalar<detail::fp_kind::byte, 1>;
    static constexpr std::size_t min_size = 1;
    static void encode(byte_writer& w, std::byte v) { w.write_raw(v); }
    static std::byte decode(byte_reader& r) { return r.read_raw<std::byte>(); }
};

template <class Char, class Traits, class Alloc>
struct codec<std::basic_string<Char, Traits, Alloc>> {
    using string = std::basic_string<Char, Traits, Alloc>;
    using wire_schema = detail::schema::node<detail::fp_kind::text, detail::type_list<Char>>;
    static constexpr std::size_t min_size = 1;
    static void encode(byte_writer& w, const string& s) {
        w.write_size(s.size());
        w.write(s.data(), s.size() * sizeof(Char));
    }
    static string decode(byte_reader& r) {
        const std::size_t n = r.read_count(sizeof(Char));
        auto bytes = r.read(n * sizeof(Char));
        string s(n, Char());
        if (n != 0) std::memcpy(s.data(), bytes.data(), bytes.size());
        return s;
    }
};

namespace detail {
template <class T>
concept bulk_element =
    (std::is_arithmetic_v<T> && !std::same_as<T, bool>) || std::same_as<T, std::byte>;
}

template <class T, class Alloc>
struct codec<std::vector<T, Alloc>> {
    using wire_schema = detail::schema::node<detail::fp_kind::sequence, detail::type_list<T>>;
    static constexpr std::size_t min_size = 1;
    static void encode(byte_writer& w, const std::vector<T, Alloc>& v) {
        w.write_size(v.size());
        if constexpr (detail::bulk_element<T>) {
            w.write(v.data(), v.size() * sizeof(T));
        } else {
            auto guard = w.nest();
            for (const auto& e : v) encode_value<T>(w, e);
        }
    }
    static std::vector<T, Alloc> decode(byte_reader& r) {
        const std::size_t n = r.read_count(detail::min_encoded_size<T>());
        std::vector<T, Alloc> v;
        if constexpr (detail::bulk_element<T>) {
            auto bytes = r.read(n * sizeof(T));
            v.resize(n);
            if (n != 0) std::memcpy(v.data(), bytes.data(), bytes.size());
        } else {
            auto guard = r.nest();
            // Elements that may encode to nothing cannot be bounded by the frame: grow as
            // they really decode.
            if (detail::min_encoded_size<T>() != 0) v.reserve(n);
            for (std::size_t i = 0; i < n; ++i) v.push_back(decode_value<T>(r));
        }
        return v;
    }
};

template <class T, std::size_t N>
struct codec<std::array<T, N>> {
    using wire_schema = detail::schema::node<detail::fp_kind::array, detail::type_list<T>, N>;
    static constexpr std::size_t min_size = N * detail::min_encoded_size<T>();
    static void encode(byte_writer& w, const std::array<T, N>& a) {
        auto guard = w.nest();
        for (const auto& e : a) encode_value<T>(w, e);
    }
    static std::array<T, N> decode(byte_reader& r) {
        auto guard = r.nest();
        return [&]<std::size_t... I>(std::index_sequence<I...>) {
            // A braced list evaluates its elements left to right.
            return std::array<T, N>{((void)I, decode_value<T>(r))...};
        }
        (std::make_index_sequence<N>{});
    }
};

template <class T>
struct codec<std::optional<T>> {
    using wire_schema = detail::schema::node<detail::fp_kind::optional, detail::type_list<T>>;
    static constexpr std::size_t min_size = 1;
    static void encode(byte_writer& w, const std::optional<T>& o) {
        w.write_raw(std::uint8_t(o ? 1 : 0));
        if (o) {
            auto guard = w.nest();
            encode_value<T>(w, *o);
        }
    }
    static std::optional<T> decode(byte_reader& r) {
        if (!codec<bool>::decode(r)) return std::nullopt;
        auto guard = r.nest();
        return std::optional<T>(decode_value<T>(r));
    }
};

template <class... T>
struct codec<std::variant<T...>> {
    static_assert(sizeof...(T) < 128, "conflux::codec: variants of up to 127 alternatives");
    using variant = std::variant<T...>;
    using wire_schema = detail::schema::node<detail::fp_kind::variant, detail::type_list<T...>>;
    static constexpr std::size_t min_size = 1;
    static void encode(byte_writer& w, const variant& v) {
        if (v.valueless_by_exception()) throw ipc_error("conflux::codec: valueless variant");
        w.write_size(v.index());
        auto guard = w.nest();
        std::visit([&](const auto& alt) { encode_value(w, alt); }, v);
    }
    static variant decode(byte_reader& r) {
        const std::uint64_t index = r.read_size();
        if (index >= sizeof...(T)) byte_reader::fail("variant index out of range");
        auto guard = r.nest();
        using decoder = variant (*)(byte_reader&);
        static constexpr decoder table[] = {&decode_alternative<T>...};
        return table[index](r);
    }

private:
    template <class A>
    static variant decode_alternative(byte_reader& r) {
        return variant(std::in_place_type<A>, decode_value<A>(r));
    }
};

template <>
struct codec<std::monostate> {
    using wire_schema = detail::schema::scalar<detail::fp_kind::unit, 0>;
    static void encode(byte_writer&, std::monostate) {}
    static std::monostate decode(byte_reader&) { return {}; }
};

namespace detail {
template <class Map>
struct map_codec {
    using key = typename Map::key_type;
    using mapped = typename Map::mapped_type;
    using wire_schema =
        detail::schema::node<(requires(const Map& m) { m.key_comp(); }) ? fp_kind::ordered_map
                                                                        : fp_kind::unordered_map,
                             type_list<key, mapped>>;
    static constexpr std::size_t min_size = 1;
    static void encode(byte_writer& w, const Map& m) {
        w.write_size(m.size());
        auto guard = w.nest();
        for (const auto& [k, v] : m) {
            encode_value<key>(w, k);
            encode_value<mapped>(w, v);
        }
    }
    static Map decode(byte_reader& r) {
        const std::size_t n =
            r.read_count(detail::min_encoded_size<key>() + detail::min_encoded_size<mapped>());
        auto guard = r.nest();
        Map m;
        for (std::size_t i = 0; i < n; ++i) {
            key k = decode_value<key>(r);
            mapped v = decode_value<mapped>(r);
            if constexpr (requires { m.key_comp(); }) {
                // Ordered maps are encoded in key order: anything else (a duplicate too) is
                // not what an encoder wrote, and this keeps decoding linear.
                if (!m.empty() && !m.key_comp()(std::prev(m.end())->first, k)) {
                    byte_reader::fail("map keys out of order or duplicated");
                }
                m.emplace_hint(m.end(), std::move(k), std::move(v));
            } else if (!m.emplace(std::move(k), std::move(v)).second) {
                byte_reader::fail("duplicate key");
            }
        }
        return m;
    }
};
} // namespace detail

template <class K, class V, class Compare, class Alloc>
struct codec<std::map<K, V, Compare, Alloc>> : detail::map_codec<std::map<K, V, Compare, Alloc>> {};

template <class K, class V, class Hash, class Eq, class Alloc>
struct codec<std::unordered_map<K, V, Hash, Eq, Alloc>>
    : detail::map_codec<std::unordered_map<K, V, Hash, Eq, Alloc>> {};

template <class A, class B>
struct codec<std::pair<A, B>> {
    using wire_schema = detail::schema::record<A, B>;
    static constexpr std::size_t min_size =
        detail::min_encoded_size<A>() + detail::min_encoded_size<B>();
    static void encode(byte_writer& w, const std::pair<A, B>& p) {
        auto guard = w.nest();
        encode_value<A>(w, p.first);
        encode_value<B>(w, p.second);
    }
    static std::pair<A, B> decode(byte_reader& r) {
        auto guard = r.nest();
        A a = decode_value<A>(r);
        B b = decode_value<B>(r);
        return {std::move(a), std::move(b)};
    }
};

template <class... T>
struct codec<std::tuple<T...>> {
    using wire_schema = detail::schema::record<T...>;
    static constexpr std::size_t min_size = (std::size_t(0) + ... + detail::min_encoded_size<T>());
    static void encode(byte_writer& w, const std::tuple<T...>& t) {
        auto guard = w.nest();
        std::apply([&](const auto&... e) { (encode_value(w, e), ...); }, t);
    }
    static std::tuple<T...> decode(byte_reader& r) {
        auto guard = r.nest();
        return std::tuple<T...>{decode_value<T>(r)...}; // braced: left to right
    }
};

template <class Rep, class Period>
struct codec<std::chrono::duration<Rep, Period>> {
    using duration = std::chrono::duration<Rep, Period>;
    using wire_schema =
        detail::schema::node<detail::fp_kind::duration, detail::type_list<Rep>,
                             std::uint64_t(Period::num), std::uint64_t(Period::den)>;
    static constexpr std::size_t min_size = detail::min_encoded_size<Rep>();
    static void encode(byte_writer& w, duration d) { encode_value<Rep>(w, d.count()); }
    static duration decode(byte_reader& r) { return duration(decode_value<Rep>(r)); }
};

template <class Clock, class Duration>
struct codec<std::chrono::time_point<Clock, Duration>> {
    using time_point = std::chrono::time_point<Clock, Duration>;
    using wire_schema =
        detail::schema::node<detail::fp_kind::time_point, detail::type_list<Duration>,
                             detail::schema::clock_id<Clock>>;
    static constexpr std::size_t min_size = detail::min_encoded_size<Duration>();
    static void encode(byte_writer& w, time_point t) {
        encode_value<Duration>(w, t.time_since_epoch());
    }
    static time_point decode(byte_reader& r) { return time_point(decode_value<Duration>(r)); }
};

template <>
struct codec<file_descriptor> {
    using wire_schema = detail::schema::scalar<detail::fp_kind::descriptor, 0>;
    static constexpr std::size_t min_size = 1;
    static void encode(byte_writer& w, const file_descriptor& fd) {
        w.write_raw(std::uint8_t(fd ? 1 : 0));
        if (fd) w.write_fd(fd.get());
    }
    static file_descriptor decode(byte_reader& r) {
        if (!codec<bool>::decode(r)) return {};
        return r.read_fd();
    }
};

/// Plain aggregates: their public fields in declaration order, no macro needed.
template <class T>
requires(detail::plain_aggregate<T> && !std::is_array_v<T>) struct codec<T> {
    using wire_schema = detail::schema::aggregate<T>;
    static constexpr std::size_t min_size =
        decltype(detail::apply_fields(std::declval<T&>(), [](auto&... f) {
            return std::integral_constant<
                std::size_t, (std::size_t(0) + ... +
                              detail::min_encoded_size<std::remove_cvref_t<decltype(f)>>())>{};
        }))::value;
    static void encode(byte_writer& w, const T& v) {
        auto guard = w.nest();
        detail::apply_fields(v, [&](const auto&... f) { (encode_value(w, f), ...); });
    }
    static T decode(byte_reader& r) {
        auto guard = r.nest();
        T v{};
        detail::apply_fields(
            v, [&](auto&... f) { ((f = decode_value<std::remove_cvref_t<decltype(f)>>(r)), ...); });
        return v;
    }
};

} // namespace conflux
