#pragma once

// Field counting and field access for plain aggregates, without macros: the number of fields
// is the largest N for which `T{x1, ..., xN}` compiles with placeholders that convert to
// anything; the fields are then reached through a structured binding of that many names.

#include <cstddef>
#include <type_traits>
#include <utility>

namespace conflux::detail {

/// The most fields an aggregate may have to be encoded without a `codec` specialisation.
inline constexpr std::size_t max_aggregate_fields = 16;

/// Converts to any type; only ever used in unevaluated brace initialisations.
struct any_field {
    template <class U>
    operator U() const noexcept; // NOLINT: implicit by design, never defined
};

template <class T, std::size_t... I>
constexpr bool brace_constructible_with(std::index_sequence<I...>) {
    return requires { T{(void(I), any_field{})...}; };
}

template <class T, std::size_t N = 0>
constexpr std::size_t count_fields() {
    if constexpr (N > max_aggregate_fields) {
        return N;
    } else if constexpr (!brace_constructible_with<T>(std::make_index_sequence<N + 1>{})) {
        return N;
    } else {
        return count_fields<T, N + 1>();
    }
}

/// A class aggregate the codec can take apart: public fields, no base classes that hold
/// data, no C arrays (brace elision would count their elements; use std::array), at most
/// `max_aggregate_fields` fields.
template <class T>
concept plain_aggregate = std::is_class_v<T> && std::is_aggregate_v<T> && !std::is_union_v<T> &&
                          (count_fields<T>() <= max_aggregate_fields);

template <class T>
inline constexpr std::size_t field_count_v = count_fields<T>();

/// Calls `f(field0, field1, ...)` with references to the fields of `v` (const or not).
template <class T, class F>
constexpr decltype(auto) apply_fields(T& v, F&& f) {
    constexpr std::size_t n = field_count_v<std::remove_const_t<T>>;
    if constexpr (n == 0) {
        return f();
    } else if constexpr (n == 1) {
        auto& [a] = v;
        return f(a);
    } else if constexpr (n == 2) {
        auto& [a, b] = v;
        return f(a, b);
    } else if constexpr (n == 3) {
        auto& [a, b, c] = v;
        return f(a, b, c);
    } else if constexpr (n == 4) {
        auto& [a, b, c, d] = v;
        return f(a, b, c, d);
    } else if constexpr (n == 5) {
        auto& [a, b, c, d, e] = v;
        return f(a, b, c, d, e);
    } else if constexpr (n == 6) {
        auto& [a, b, c, d, e, g] = v;
        return f(a, b, c, d, e, g);
    } else if constexpr (n == 7) {
        auto& [a, b, c, d, e, g, h] = v;
        return f(a, b, c, d, e, g, h);
    } else if constexpr (n == 8) {
        auto& [a, b, c, d, e, g, h, i] = v;
        return f(a, b, c, d, e, g, h, i);
    } else if constexpr (n == 9) {
        auto& [a, b, c, d, e, g, h, i, j] = v;
        return f(a, b, c, d, e, g, h, i, j);
    } else if constexpr (n == 10) {
        auto& [a, b, c, d, e, g, h, i, j, k] = v;
        return f(a, b, c, d, e, g, h, i, j, k);
    } else if constexpr (n == 11) {
        auto& [a, b, c, d, e, g, h, i, j, k, l] = v;
        return f(a, b, c, d, e, g, h, i, j, k, l);
    } else if constexpr (n == 12) {
        auto& [a, b, c, d, e, g, h, i, j, k, l, m] = v;
        return f(a, b, c, d, e, g, h, i, j, k, l, m);
    } else if constexpr (n == 13) {
        auto& [a, b, c, d, e, g, h, i, j, k, l, m, o] = v;
        return f(a, b, c, d, e, g, h, i, j, k, l, m, o);
    } else if constexpr (n == 14) {
        auto& [a, b, c, d, e, g, h, i, j, k, l, m, o, p] = v;
        return f(a, b, c, d, e, g, h, i, j, k, l, m, o, p);
    } else if constexpr (n == 15) {
        auto& [a, b, c, d, e, g, h, i, j, k, l, m, o, p, q] = v;
        return f(a, b, c, d, e, g, h, i, j, k, l, m, o, p, q);
    } else {
        static_assert(n == 16, "conflux::codec: aggregates of more than 16 fields need a "
                               "codec<T> specialisation");
        auto& [a, b, c, d, e, g, h, i, j, k, l, m, o, p, q, r] = v;
        return f(a, b, c, d, e, g, h, i, j, k, l, m, o, p, q, r);
    }
}

} // namespace conflux::detail
