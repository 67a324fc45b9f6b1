#pragma once

// Selects the platform's child processes: clone with CLONE_VFORK, exits watched by pidfd
// (detail/linux/spawn.hpp on Linux). A header that needs it includes this one, never the
// backend's; docs/internals.md describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_LINUX
#include <conflux/detail/linux/spawn.hpp>
#endif
