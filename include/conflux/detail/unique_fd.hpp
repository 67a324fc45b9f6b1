#pragma once

// Selects the platform's an owned file descriptor (detail/posix/unique_fd.hpp on POSIX systems). A
// header that needs it includes this one, never the backend's; docs/internals.md describes the
// seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_POSIX
#include <conflux/detail/posix/unique_fd.hpp>
#endif
