#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/detail/async_waiters.hpp>
#include <conflux/detail/atomic_wait.hpp>
#include <conflux/detail/memfd.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <type_traits>
#include <utility>

namespace conflux {

class shared_buffer;

/// The element types of `atomic_view`: the integers Node's integer typed arrays hold
/// (`Int8Array` ... `BigUint64Array`), under any of their standard names — every standard
/// signed or unsigned integer type of 1, 2, 4 or 8 bytes, so `long long` and `long` are both
/// accepted where `std::int64_t` names only one of them. Not `bool`, and not the character
/// types (`char`, `wchar_t`, `char8_t`, `char16_t`, `char32_t`): they hold text, not numbers
/// (plain `char` does not even fix its signedness); use `signed char` / `unsigned char`
/// (`std::int8_t` / `std::uint8_t`) for bytes. cv-qualified types are not elements either.
template <class T>
concept atomic_element = std::same_as<T, signed char> || std::same_as<T, unsigned char> ||
    std::same_as<T, short> || std::same_as<T, unsigned short> || std::same_as<T, int> ||
    std::same_as<T, unsigned int> || std::same_as<T, long> || std::same_as<T, unsigned long> ||
    std::same_as<T, long long> || std::same_as<T, unsigned long long>;

/// A typed window of `T` elements onto a `shared_buffer`, with the operations of JavaScript's
/// `Atomics` per index — `Atomics.add(ta, i, v)` is `view.add(i, v)`. Thread-safe, and
/// process-safe on memory shared with another process (`shared_buffer::fd`).
///
/// Made by `shared_buffer::view<T>()`. A view is a cheap handle: copies refer to the same
/// elements, and every view keeps its buffer's memory alive.
///
/// Every operation is `std::atomic_ref<T>` on the element (the same instructions), after a
/// bounds check that throws `std::out_of_range`. The read-modify-write operations return the
/// previous value, as `Atomics` does; the default memory order is `seq_cst`, as in `Atomics`.
///
/// ```
/// conflux::shared_buffer memory(64);
/// auto counters = memory.view<std::uint32_t>();
/// counters.add(0, 1);                       // from any thread, or another process
/// ```
template <atomic_element T>
class atomic_view {
    // The waits take an element to fill 1, 2 or 4 bytes of one 32-bit futex word, or exactly
    // two words (true of every standard integer type on Linux's ABIs).
    static_assert(sizeof(T) == 1 || sizeof(T) == 2 || sizeof(T) == 4 || sizeof(T) == 8,
                  "conflux::atomic_view supports elements of 1, 2, 4 or 8 bytes");
    // Lock-free is what makes the operations safe between processes: a lock would live in
    // this process only.
    static_assert(std::atomic_ref<T>::is_always_lock_free,
                  "conflux::atomic_view needs lock-free atomics of this width");

public:
    using value_type = T;

    /// `notify(i, all)` wakes every waiter.
    static constexpr std::size_t all = std::numeric_limits<std::size_t>::max();

    /// An empty view (`size() == 0`).
    atomic_view() noexcept = default;

    /// The number of elements.
    std::size_t size() const noexcept { return m_length; }
    bool empty() const noexcept { return m_length == 0; }

    /// `Atomics.load`.
    T load(std::size_t i, std::memory_order order = std::memory_order_seq_cst) const {
        return ref(i).load(order);
    }
    /// `Atomics.store`. Returns `value`, as Atomics does.
    T store(std::size_t i, T value, std::memory_order order = std::memory_order_seq_cst) const {
        ref(i).store(value, order);
        return value;
    }
    /// `Atomics.add`: adds (wrapping) and returns the previous value.
    T add(std::size_t i, T value, std::memory_order order = std::memory_order_seq_cst) const {
        return ref(i).fetch_add(value, order);
    }
    /// `Atomics.sub`: subtracts (wrapping) and returns the previous value.
    T sub(std::size_t i, T value, std::memory_order order = std::memory_order_seq_cst) const {
        return ref(i).fetch_sub(value, order);
    }
    /// `Atomics.and`; returns the previous value.
    T bit_and(std::size_t i, T value, std::memory_order order = std::memory_order_seq_cst) const {
        return ref(i).fetch_and(value, order);
    }
    /// `Atomics.or`; returns the previous value.
    T bit_or(std::size_t i, T value, std::memory_order order = std::memory_order_seq_cst) const {
        return ref(i).fetch_or(value, order);
    }
    /// `Atomics.xor`; returns the previous value.
    T bit_xor(std::size_t i, T value, std::memory_order order = std::memory_order_seq_cst) const {
        return ref(i).fetch_xor(value, order);
    }
    /// `Atomics.exchange`: stores `value` and returns the previous value.
    T exchange(std::size_t i, T value, std::memory_order order = std::memory_order_seq_cst) const {
        return ref(i).exchange(value, order);
    }
    /// `Atomics.compareExchange`: stores `desired` if the element equals `expected`, and
    /// returns the previous value either way (so success is `result == expected`).
    T compare_exchange(std::size_t i, T expected, T desired,
                       std::memory_order order = std::memory_order_seq_cst) const {
        ref(i).compare_exchange_strong(expected, desired, order);
        return expected;
    }

    /// `Atomics.wait`: blocks the calling thread while element `i` holds `expected`, until a
    /// `notify` on it (from any thread, or from another process sharing the memory) or until
    /// `timeout` (default: forever).
    ///
    /// Returns `not_equal` at once if the element differs from `expected`, `timed_out` when
    /// the timeout passes (at once for a zero timeout), `ok` when woken. As with any futex,
    /// `ok` can also mean the element changed between the first read and the moment the
    /// kernel queued the thread (or after a signal), so loop on your condition. A wake-up is
    /// never missed: a `notify` that follows a store the wait could not yet see always ends it.
    ///
    /// What is waited on: the kernel's futex is a 32-bit word. An 8-, 16- or 32-bit element
    /// waits on the aligned word containing it, in a wake lane of its own byte address, so
    /// `notify` on one element never wakes (or spends its count on) a waiter of a neighbour
    /// in the same word. A 64-bit element compares its full value; the thread sleeps on both
    /// halves with futex_waitv (Linux >= 5.16), which sees a change to either half and any
    /// notify; on older kernels it sleeps on the first half and re-checks the full value every
    /// 2 ms, so a change confined to the second half that is notified in the instant before
    /// the thread sleeps costs at most that much latency.
    ///
    /// Do not call it on an event loop's thread (it would stall the loop): use `wait_async`.
    /// Throws `std::out_of_range` for a bad index; nothing else.
    wait_result wait(std::size_t i, T expected,
                     std::chrono::nanoseconds timeout = std::chrono::nanoseconds::max()) const {
        return detail::wait_element(&ref_check(i), expected, timeout);
    }

    /// `Atomics.notify`: wakes up to `count` waiters (default: all) of element `i` and
    /// returns how many it woke. Waiters of this process's `wait_async` on that element are
    /// woken first (oldest first), then threads blocked in `wait` here or in other processes
    /// (oldest first among threads of equal scheduling priority, as the kernel queues them).
    /// When other processes have `wait_async` pending on this buffer, it also rings their
    /// doorbell: those whose element no longer holds their expected value resume (see
    /// `wait_async`), outside `count` and not counted in the result.
    /// Never blocks; throws `std::out_of_range` for a bad index.
    std::size_t notify(std::size_t i, std::size_t count = all) const {
        T& element = ref_check(i);
        return detail::notify_element(&element, key_of(i), count, m_owner->wake());
    }

    /// `Atomics.waitAsync`: `co_await view.wait_async(i, expected, timeout)` suspends the
    /// calling coroutine (never the loop's thread) while element `i` holds `expected`, until a
    /// `notify` on that element — made in this process, or made in another process after a
    /// store to the element — or the timeout.
    ///
    /// Resumes on the event loop it was awaited on (it must be awaited on an event loop's
    /// thread; otherwise throws `std::logic_error`), with `not_equal` without suspending if
    /// the element differs, `timed_out` without suspending for a zero timeout. Cancelled by
    /// `token` — or, when none is given, by the awaiting task's inherited stop token — with
    /// `operation_cancelled`. Throws `std::out_of_range` for a bad index.
    ///
    /// Waking: no thread is started per wait. Pending async waits sit in a process-wide
    /// registry keyed by the memory (file and offset, so every mapping of the same buffer in
    /// this process meets there) that `notify` consults before the kernel. Across processes,
    /// each buffer's memory ends in a count of pending async waits and a doorbell word; a
    /// `notify` that sees waiters of another process rings it, and one watcher thread per
    /// process (started by the first wait, sleeping in the kernel on the doorbells) resumes
    /// the waiters whose element moved — so a store followed by `notify` in another process
    /// always resumes the waiter, while a `notify` with no store does not. Needs a buffer
    /// made by `shared_buffer` (any memfd passed to `from_fd` otherwise waits for this
    /// process's notifies only). docs/shared_buffer.md has the details and the kernels.
    [[nodiscard]] detail::wait_async_awaiter<T>
    wait_async(std::size_t i, T expected,
               std::chrono::nanoseconds timeout = std::chrono::nanoseconds::max(),
               std::stop_token token = {}) const {
        T& element = ref_check(i);
        return detail::wait_async_awaiter<T>(&element, expected, key_of(i), timeout,
                                             std::move(token), m_owner);
    }

    /// The `std::atomic_ref` of element `i`, for operations `Atomics` has no name for.
    std::atomic_ref<T> ref(std::size_t i) const { return std::atomic_ref<T>(ref_check(i)); }

private:
    friend class shared_buffer;

    atomic_view(std::shared_ptr<detail::memfd_mapping> owner, std::size_t byte_offset,
                std::size_t length) noexcept
        : m_data(reinterpret_cast<T*>(owner->data() + byte_offset)), m_length(length),
          m_byte_offset(byte_offset), m_owner(std::move(owner)) {}

    T& ref_check(std::size_t i) const {
        if (i >= m_length) [[unlikely]]
            throw_index(i, m_length);
        return m_data[i];
    }

    [[noreturn, gnu::cold, gnu::noinline]] static void throw_index(std::size_t i,
                                                                   std::size_t length) {
        throw std::out_of_range("conflux::atomic_view: index " + std::to_string(i) +
                                " out of range for a view of " + std::to_string(length) +
                                " elements");
    }

    detail::wait_key key_of(std::size_t i) const noexcept {
        return {m_owner->file_id(), m_byte_offset + i * sizeof(T)};
    }

    T* m_data = nullptr;
    std::size_t m_length = 0;
    std::size_t m_byte_offset = 0;
    std::shared_ptr<detail::memfd_mapping> m_owner;
};

} // namespace conflux
