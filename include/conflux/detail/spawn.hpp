#pragma once

// Selects the platform's child processes: clone with CLONE_VFORK, exits watched by pidfd
// (detail/linux/spawn.hpp on Linux); CreateProcessW with a Job object, stdio on overlapped
// named pipes (detail/windows/spawn.hpp on Windows). A header that needs it includes this one,
// never the backend's; docs/internals.md describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_LINUX
#include <conflux/detail/linux/spawn.hpp>
#elif CONFLUX_PLATFORM_WINDOWS
#include <conflux/detail/windows/spawn.hpp>
#endif
