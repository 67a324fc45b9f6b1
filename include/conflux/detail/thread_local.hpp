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
