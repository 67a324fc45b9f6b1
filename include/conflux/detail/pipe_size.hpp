#pragma once

// Selects the platform's way to widen a pipe for a bulk transfer (detail/linux/pipe_size.hpp
// on Linux); elsewhere a pipe keeps the size it was made with. A header that needs it includes
// this one, never the backend's; docs/internals.md describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_LINUX
#include <conflux/detail/linux/pipe_size.hpp>
#else
#include <cstddef>

namespace conflux::detail {

/// The pipe size a bulk transfer asks for.
inline constexpr std::size_t bulk_pipe_size = std::size_t(1) << 20;

/// No way to resize a pipe on this platform.
inline void widen_pipe(native_handle, std::size_t) noexcept {}

} // namespace conflux::detail
#endif
