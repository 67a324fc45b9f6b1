#pragma once

// Selects the platform's sealed shared memory: memfd (detail/linux/memfd.hpp on Linux); a
// section, within one process for now (detail/windows/section.hpp on Windows). A header that
// needs it includes this one, never the backend's; docs/internals.md describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_LINUX
#include <conflux/detail/linux/memfd.hpp>
#elif CONFLUX_PLATFORM_WINDOWS
#include <conflux/detail/windows/section.hpp>

namespace conflux::detail {

/// The shared memory behind `buffer::shareable` and `shared_buffer` on this platform.
using memfd_mapping = section_mapping;

} // namespace conflux::detail
#endif
