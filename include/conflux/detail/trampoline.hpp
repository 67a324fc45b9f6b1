#pragma once

#include <conflux/executor.hpp>
#include <conflux/detail/thread_local.hpp>

#include <coroutine>
#include <cstdint>

namespace conflux::detail {

/// A resume loop on a thread's native stack: what lets a chain of tasks awaiting one another
/// run, and unwind, on a flat stack however deep it is, whatever the compiler makes of
/// symmetric transfer (GCC 12 turns it into a tail call only at -O2 without sanitizers).
///
/// The loop resumes `current`. As that coroutine suspends it may hand over — replace
/// `current` with the coroutine to run next: a task it starts, or the awaiter of a task it
/// completes — and the loop resumes that one in turn, until a coroutine suspends without
/// handing over (it waits for an event): then the loop ends. Only `current` may hand over, as
/// its suspension is what returns control to the loop; a coroutine resumed any other way (by
/// an executor, an event, a foreign awaitable) starts a loop of its own where it needs one.
///
/// Awaiting a task starts it at once, inside the await (`trampoline_start`): a task that
/// completes without suspending hands its awaiter back before the await returns, and the
/// awaiter goes on without having suspended. Such nesting keeps native stack, so it is
/// bounded: past `trampoline_nesting_bytes` above the loop a task is handed to the loop
/// instead, to start once its awaiter has suspended.
///
/// Thread-local by construction: a coroutine that moves to another thread is resumed there
/// by that thread's executor, never by this loop. A task that completes hands its awaiter
/// to the loop only if the loop runs on the awaiter's executor (executor affinity).
struct trampoline {
    std::coroutine_handle<> current;
    std::uintptr_t base = 0; // the native stack address where the loop runs
    // The executor of the thread where the loop runs, as it was when the loop started: also
    // the current executor of whatever runs as `current` (what an awaiter of a task resumes
    // on), read here without a call.
    any_executor executor;
};

/// How much native stack awaits may keep above a loop, each starting a task inside the last:
/// a dozen levels at -O0 under AddressSanitizer, dozens in optimised builds. Beyond it each
/// await costs one more resume, but no more stack.
inline constexpr std::uintptr_t trampoline_nesting_bytes = 16 * 1024;

/// The native stack address of the calling function's frame (a sanitizer's fake stack holds
/// locals, never frames).
[[gnu::always_inline]] inline std::uintptr_t trampoline_stack_address() noexcept {
    return reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
}

/// What the slot holds on a thread that runs no loop: no coroutine is ever its `current`, so
/// nothing writes to it (it is shared by every thread).
inline trampoline trampoline_none{};

/// The innermost loop running on the calling thread, or `trampoline_none`. A coroutine reads
/// this before and after it may have moved thread: inlined only where that is sound (see
/// detail/thread_local.hpp), as every await of a task reads it twice.
CONFLUX_DETAIL_THREAD_LOCAL_ACCESSOR inline trampoline*& trampoline_slot() noexcept {
    static thread_local trampoline* slot = &trampoline_none;
    return *hot_thread_local(&slot);
}

/// Goes on with loop `t` from `h`, its `current`, until a coroutine suspends without handing
/// over (returns false; `current` is that coroutine), or hands over to `host`, which is not
/// resumed (returns true).
[[gnu::noinline]] inline bool trampoline_drain(trampoline& t, std::coroutine_handle<> h,
                                               std::coroutine_handle<> host) noexcept {
    for (;;) {
        h.resume();
        const std::coroutine_handle<> next = t.current;
        if (next == h) return false;
        if (next == host) return true;
        h = next;
    }
}

/// Runs `h` and whatever it hands over in a new loop on this stack, until that work waits
/// for an event (returns false) — or hands over to `host` (returns true; `host` is not
/// resumed).
[[gnu::noinline]] inline bool trampoline_run(std::coroutine_handle<> h,
                                             std::coroutine_handle<> host = {}) noexcept {
    trampoline*& slot = trampoline_slot();
    trampoline* const outer = slot;
    trampoline t{h, trampoline_stack_address(), current_executor()};
    slot = &t;
    const bool host_next = trampoline_drain(t, h, host);
    slot = outer;
    return host_next;
}

/// `trampoline_start` when `host` is not the current coroutine of the innermost loop, or is
/// nested too deep above it.
[[gnu::noinline]] inline bool trampoline_start_slow(trampoline& t, std::coroutine_handle<> first,
                                                    std::coroutine_handle<> host) noexcept {
    if (t.current == host) {
        // Nested too deep: the loop starts `first` once `host` has suspended.
        t.current = first;
        return false;
    }
    // `host` was resumed by an executor, an event or a foreign awaitable: a loop of its own.
    return trampoline_run(first, host);
}

/// `trampoline_start` once `first` returned without handing `host` back.
[[gnu::noinline]] inline bool trampoline_start_drain(trampoline& t, std::coroutine_handle<> first,
                                                     std::coroutine_handle<> next,
                                                     std::coroutine_handle<> host) noexcept {
    if (next != first && trampoline_drain(t, next, host)) return true;
    // The work waits for an event, and `host` suspends: to whatever resumed it, it did so
    // without handing over.
    t.current = host;
    return false;
}

/// Whether `host`, which is about to await a task, may start it nested in its await (see
/// `trampoline_start`): it is the current coroutine of `t`, the innermost loop on this thread
/// (`*trampoline_slot()`), and the awaits nested above that loop keep less than
/// `trampoline_nesting_bytes` of native stack. When it may, `t.executor` is `host`'s executor.
[[gnu::always_inline]] inline bool trampoline_nests(const trampoline& t,
                                                    std::coroutine_handle<> host) noexcept {
    return t.current == host && t.base - trampoline_stack_address() <= trampoline_nesting_bytes;
}

/// `trampoline_start` once `trampoline_nests(t, host)` said yes: `first` runs nested, in
/// `host`'s stead, as `t`'s current coroutine. A task that completes without suspending hands
/// `host` back as it suspends for the last time (`trampoline_hand_over`), which is all the
/// loop sees of it: one store and one load of `t.current` on each side.
[[gnu::always_inline]] inline bool trampoline_start_nested(trampoline& t,
                                                           std::coroutine_handle<> first,
                                                           std::coroutine_handle<> host) noexcept {
    t.current = first;
    first.resume();
    const std::coroutine_handle<> next = t.current;
    if (next == host) [[likely]] {
        return true;
    }
    return trampoline_start_drain(t, first, next, host);
}

/// Starts `first`, a task that `host` awaits, from `host`'s await_suspend, `t` being the
/// innermost loop on this thread (`*trampoline_slot()`): runs `first`, and what
/// it hands over, until that work waits for an event (returns false: `host` must suspend) or
/// hands over to `host` (returns true: `host` goes on without suspending; it was not
/// resumed).
///
/// Nothing here touches `host`'s frame once `first` runs: `host` may be resumed on another
/// thread, even destroyed, before this returns false.
[[gnu::always_inline]] inline bool trampoline_start(trampoline& t, std::coroutine_handle<> first,
                                                    std::coroutine_handle<> host) noexcept {
    if (!trampoline_nests(t, host)) [[unlikely]] {
        return trampoline_start_slow(t, first, host);
    }
    return trampoline_start_nested(t, first, host);
}

/// Called by `self` as it suspends (in its await_suspend): when `self` is the current
/// coroutine of the innermost loop on this thread, and `next` may run on that loop's executor
/// (`next_executor` is that executor, or empty: any will do), hands over to `next` and returns
/// true; `self` then suspends, the loop regains control at once and resumes `next`.
/// Otherwise returns false and changes nothing.
///
/// The executor matters: `self` may be the loop's current coroutine on another executor than
/// the one `next` awaited it on (it moved to a thread pool, say, and the loop there resumed
/// it), and `next` must go back to its own.
[[gnu::always_inline]] inline bool
trampoline_hand_over(std::coroutine_handle<> self, std::coroutine_handle<> next,
                     const any_executor& next_executor) noexcept {
    trampoline& t = *trampoline_slot();
    if (t.current != self || (next_executor && next_executor != t.executor)) return false;
    t.current = next;
    return true;
}

} // namespace conflux::detail
