#pragma once

// GCC before 13 (PR c++/100611, c++/101367, c++/103871) mishandles a temporary of a class
// without a user-declared constructor inside a co_await full-expression: it is built in one
// slot of the coroutine frame, bit-copied into a second slot that no constructor ran on, and
// both are destroyed. With a non-trivial destructor that is a double free. Aggregates (an
// options struct written `{.cwd = d}`) and lambdas with captures are such classes.
//
// Where a public entry point is naturally called with such a temporary and cannot be made
// safe, it gains, on those compilers only, an overload taking the temporary that stops the
// build with a static_assert saying what to write instead. Nothing of this exists for Clang
// or GCC >= 13.

#include <type_traits>

#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
#define CONFLUX_DETAIL_GCC12_TEMPORARIES 1
#else
#define CONFLUX_DETAIL_GCC12_TEMPORARIES 0
#endif

namespace conflux::detail {

/// False, but only once `T` is known: a static_assert on it fires when the template holding
/// it is used, never merely because it is declared.
template <class...>
inline constexpr bool refused_temporary = false;

/// How an entry point takes its options: by value where temporaries are sound (it moves from
/// them), by `const&` on GCC 12 so that an overload taking `Options&&` catches `{...}`.
#if CONFLUX_DETAIL_GCC12_TEMPORARIES
template <class T>
using options_arg = const T&;
#else
template <class T>
using options_arg = T;
#endif

/// True when an argument deduced as `T&&` is an object GCC 12 would destroy twice if it is a
/// temporary inside a co_await expression: an rvalue (a prvalue or a moved-from name; the
/// two cannot be told apart) of a class with a non-trivial destructor that is an aggregate or
/// cannot be assigned, which is what a lambda with captures is.
template <class T>
inline constexpr bool gcc12_unsafe_rvalue = [] {
    using U = std::remove_cvref_t<T>;
    if constexpr (std::is_lvalue_reference_v<T> || !std::is_class_v<U> ||
                  std::is_trivially_destructible_v<U>) {
        return false;
    } else {
        return std::is_aggregate_v<U> || !std::is_move_assignable_v<U>;
    }
}();

/// True when a message deduced as `T&&` is one GCC 12 would destroy twice if it is written
/// inside a co_await expression (`send(P{1, s})`, `send({1, s})`, `send({.id = 1})`): an
/// rvalue of an aggregate with a non-trivial destructor. Only copyable ones count: a named
/// copy is the safe spelling to suggest, and a move-only message has no spelling but
/// `std::move(v)`, which is sound (GCC 12 errs only on the braced temporary) and cannot be
/// told apart from one.
template <class T>
inline constexpr bool gcc12_unsafe_message = [] {
    using U = std::remove_cvref_t<T>;
    if constexpr (std::is_lvalue_reference_v<T> || !std::is_class_v<U> ||
                  std::is_trivially_destructible_v<U>) {
        return false;
    } else {
        return std::is_aggregate_v<U> && std::is_copy_constructible_v<U>;
    }
}();

} // namespace conflux::detail
