#pragma once

namespace conflux::detail {

/// Hides a thread-local's address from the optimiser.
///
/// A coroutine can move to another thread at a co_await, yet compilers may reuse a
/// thread-local address (or pthread_self) computed before the suspension: clang 14 does. So
/// every thread-local of conflux is reached through an accessor that is never inlined and
/// passes the address through an opaque, volatile asm: such a call has side effects in the
/// optimiser's eyes, so it is neither merged with an earlier call nor hoisted, and computes
/// the address afresh on the thread that asks.
template <class T>
[[gnu::always_inline]] inline T* opaque_address(T* address) noexcept {
    asm volatile("" : "+r"(address));
    return address;
}

} // namespace conflux::detail

// The hot accessors (the resume loop of task awaits, the frame cache) are inlined where that
// is sound: with GCC, which lowers a coroutine in its front end into a function that each
// resumption calls anew, so that no value computed in the optimiser — a thread-local address
// among them — outlives one resumption: a coroutine that moved thread computes it afresh.
// Clang splits coroutines in its optimiser, after passes that may keep such an address across
// a suspension in the frame: there they stay out of line, behind opaque_address.
#if defined(__GNUC__) && !defined(__clang__)
#define CONFLUX_DETAIL_INLINE_THREAD_LOCALS 1
#define CONFLUX_DETAIL_THREAD_LOCAL_ACCESSOR [[gnu::always_inline]]
#else
#define CONFLUX_DETAIL_INLINE_THREAD_LOCALS 0
#define CONFLUX_DETAIL_THREAD_LOCAL_ACCESSOR [[gnu::noinline]]
#endif

namespace conflux::detail {

/// `address`, a thread-local's, as a hot accessor returns it: unchanged where the accessor is
/// inlined (see above), else through opaque_address.
template <class T>
[[gnu::always_inline]] inline T* hot_thread_local(T* address) noexcept {
#if CONFLUX_DETAIL_INLINE_THREAD_LOCALS
    return address;
#else
    return opaque_address(address);
#endif
}

} // namespace conflux::detail
