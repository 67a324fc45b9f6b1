#pragma once

// Advice to the kernel about memory the library fills in bulk: a large capture buffer (exec's
// stdout and stderr) is backed by transparent huge pages where the system allows them on
// request (/sys/kernel/mm/transparent_hugepage/enabled = madvise), so that filling 64 MiB
// costs 32 page faults instead of 16,384.

#include <cstddef>
#include <cstdint>

#include <sys/mman.h>

namespace conflux::detail {

/// The size of a transparent huge page on x86-64 and (with 4 KiB base pages) arm64.
inline constexpr std::size_t huge_page_size = std::size_t(2) << 20;

/// Asks for huge pages on the 2 MiB-aligned interior of `[data, data + size)`: the pages only
/// partly inside the range are left alone, so memory beside it (the allocator's, another
/// object's) keeps its own advice. Best effort: a kernel without THP, or THP set to `never`,
/// refuses and nothing changes.
inline void advise_huge_pages(void* data, std::size_t size) noexcept {
    const auto begin = reinterpret_cast<std::uintptr_t>(data);
    const std::uintptr_t first = (begin + huge_page_size - 1) & ~(huge_page_size - 1);
    const std::uintptr_t last = (begin + size) & ~(huge_page_size - 1);
    if (last <= first) return;
    (void)::madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
}

} // namespace conflux::detail
