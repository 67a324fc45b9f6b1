#pragma once

// Selects the platform's non-blocking reads and writes on a descriptor (detail/posix/fd_io.hpp on
// POSIX systems; overlapped pipe I/O on the completion port, detail/windows/pipe_io.hpp, on
// Windows). A header that needs it includes this one, never the backend's; docs/internals.md
// describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_POSIX
#include <conflux/detail/posix/fd_io.hpp>
#elif CONFLUX_PLATFORM_WINDOWS
#include <conflux/detail/windows/pipe_io.hpp>
#endif
