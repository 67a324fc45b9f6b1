#pragma once

// Selects the platform's waiting and waking on an address: futex (detail/linux/futex.hpp on
// Linux). A header that needs it includes this one, never the backend's; docs/internals.md
// describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_LINUX
#include <conflux/detail/linux/futex.hpp>
#endif
