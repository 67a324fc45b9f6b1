#pragma once

// Selects the platform's IPC transport: bytes plus descriptors over a connected Unix stream
// socket (detail/posix/ipc_transport.hpp on POSIX systems). A header that needs it includes
// this one, never the backend's; docs/internals.md describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_POSIX
#include <conflux/detail/posix/ipc_transport.hpp>
#endif
