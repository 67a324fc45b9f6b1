#pragma once

// Selects the platform's a short spin, then a futex sleep (detail/linux/spin_wait.hpp on Linux). A
// header that needs it includes this one, never the backend's; docs/internals.md describes the
// seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_LINUX
#include <conflux/detail/linux/spin_wait.hpp>
#endif
