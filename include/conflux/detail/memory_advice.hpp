#pragma once

// Selects the platform's advice about bulk memory (detail/linux/memory_advice.hpp on Linux);
// elsewhere the advice is a no-op. A header that needs it includes this one, never the
// backend's; docs/internals.md describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_LINUX
#include <conflux/detail/linux/memory_advice.hpp>
#else
#include <cstddef>

namespace conflux::detail {

inline constexpr std::size_t huge_page_size = std::size_t(2) << 20;

/// No transparent huge pages to ask for on this platform.
inline void advise_huge_pages(void*, std::size_t) noexcept {}

} // namespace conflux::detail
#endif
