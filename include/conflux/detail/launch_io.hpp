#pragma once

// Selects the platform's calls for preparing a child: the environment, the PATH lookup,
// pipes and stdio files (detail/posix/launch_io.hpp on POSIX systems). A header that needs
// them includes this one, never the backend's; docs/internals.md describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_POSIX
#include <conflux/detail/posix/launch_io.hpp>
#endif
