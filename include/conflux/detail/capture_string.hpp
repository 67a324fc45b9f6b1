#pragma once

// How a stream's bytes are appended to a std::string in bulk (readable_stream::read_into, and
// through it exec's capture of stdout and stderr): each read goes straight into the string's
// spare capacity, and the string grows ahead of the bytes, into memory advised for huge pages
// once it is large. Measured in bench/process_bench.cpp ("exec_file captured vs spawn streams").

#include <conflux/detail/memory_advice.hpp>

#include <algorithm>
#include <cstddef>
#include <string>
#include <type_traits>

namespace conflux::detail {

/// True when `append_in_place` hands the string's spare capacity over as it is; false when it
/// must zero-fill it first (std::string::resize), which makes a large window cost a memset.
#if defined(__cpp_lib_string_resize_and_overwrite)
inline constexpr bool appends_without_zeroing = true;
#else
inline constexpr bool appends_without_zeroing = false;
#endif

/// Calls `fill(at, room)`, which writes up to `room` bytes at `at`, the end of `s`, and returns
/// how many it wrote; `s` keeps exactly those. `fill` must not throw. `s` should have `room`
/// bytes of spare capacity, or this reallocates.
template <class Fill>
std::size_t append_in_place(std::string& s, std::size_t room, Fill&& fill) {
    static_assert(std::is_nothrow_invocable_r_v<std::size_t, Fill&, char*, std::size_t>,
                  "append_in_place: fill(char*, std::size_t) must be noexcept");
    const std::size_t old = s.size();
    std::size_t got = 0;
#if defined(__cpp_lib_string_resize_and_overwrite)
    s.resize_and_overwrite(old + room, [&](char* data, std::size_t) noexcept {
        got = std::min(fill(data + old, room), room);
        return old + got;
    });
#else
    s.resize(old + room);
    got = std::min(fill(s.data() + old, room), room);
    s.resize(old + got);
#endif
    return got;
}

/// Gives `s` a capacity of at least `capacity` bytes, keeping its contents. A new buffer of
/// two huge pages or more is advised for huge pages before the old contents are copied in, so
/// that the copy and the reads that follow fault it in 2 MiB at a time.
inline void reserve_for_capture(std::string& s, std::size_t capacity) {
    if (capacity <= s.capacity()) return;
    if (capacity < 2 * huge_page_size) {
        s.reserve(capacity);
        return;
    }
    std::string next;
    next.reserve(capacity);
    advise_huge_pages(next.data(), next.capacity());
    next.append(s);
    s.swap(next);
}

/// The capacity a capture holding `size` bytes grows to when it is full: doubling up to 1 MiB,
/// then fourfold (at most 1 GiB at a time), since pages not yet written cost address space
/// rather than memory while each growth copies all read so far; never beyond `cap` (the limit
/// plus the one byte that tells an overflow from an exact fit), never below `size + need`.
inline std::size_t capture_growth(std::size_t size, std::size_t need, std::size_t cap) noexcept {
    constexpr std::size_t grow_fast_from = std::size_t(1) << 20;
    std::size_t next = size < grow_fast_from ? std::max(size * 2, std::size_t(64) << 10)
                                             : size + std::min(size * 3, std::size_t(1) << 30);
    next = std::min(next, cap);
    return std::max(next, size + need);
}

} // namespace conflux::detail
