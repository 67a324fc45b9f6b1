#pragma once

// Selects the platform's view of a running child: its exit read through a pidfd, signals to
// its group (detail/linux/child_exit.hpp on Linux). A header that needs it includes this one,
// never the backend's; docs/internals.md describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_LINUX
#include <conflux/detail/linux/child_exit.hpp>
#endif
