#pragma once

// Selects the platform's waiting and waking on an address: futex (detail/linux/futex.hpp on
// Linux); WaitOnAddress behind queues of sleepers kept by conflux, within one process
// (detail/windows/futex.hpp on Windows). A header that needs it includes this one, never the
// backend's; docs/internals.md describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_LINUX
#include <conflux/detail/linux/futex.hpp>
#elif CONFLUX_PLATFORM_WINDOWS
#include <conflux/detail/windows/futex.hpp>
#endif
