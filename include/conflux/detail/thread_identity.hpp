#pragma once

#include <conflux/detail/platform.hpp>
#include <conflux/detail/thread_local.hpp>

#include <cstdint>

namespace conflux::detail {

// Reached out of line: see opaque_address.
[[gnu::noinline]] inline std::uintptr_t thread_identity_slow() noexcept {
    static thread_local char marker = 0;
    return reinterpret_cast<std::uintptr_t>(opaque_address(&marker));
}

/// A number unique to the calling thread among the threads alive, never 0: the thread
/// pointer where one instruction reads it, else the address of a thread-local.
///
/// Read afresh at every call, also after a co_await that moved the coroutine to another
/// thread (the asm is volatile, so the compiler neither caches nor hoists it): this is what
/// executors compare on their hottest path to tell their own thread from another.
[[gnu::always_inline]] inline std::uintptr_t thread_identity() noexcept {
#if CONFLUX_PLATFORM_WINDOWS && defined(__x86_64__)
    // Windows x64 keeps the thread's TEB in gs; its NT_TIB.Self field (offset 0x30) is the
    // TEB's own address. fs is not the thread pointer there.
    std::uintptr_t tp;
    asm volatile("mov %%gs:0x30, %0" : "=r"(tp));
    return tp;
#elif CONFLUX_PLATFORM_WINDOWS
    return thread_identity_slow();
#elif defined(__x86_64__)
    std::uintptr_t tp;
    asm volatile("mov %%fs:0, %0" : "=r"(tp));
    return tp;
#elif defined(__aarch64__)
    std::uintptr_t tp;
    asm volatile("mrs %0, tpidr_el0" : "=r"(tp));
    return tp;
#else
    return thread_identity_slow();
#endif
}

} // namespace conflux::detail
