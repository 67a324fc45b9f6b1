#pragma once

// Selects what process options name on this platform (detail/posix/process_types.hpp on
// POSIX systems: RLIMIT_* for resource limits). A header that needs it includes this one,
// never the backend's; docs/internals.md describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_POSIX
#include <conflux/detail/posix/process_types.hpp>
#endif
