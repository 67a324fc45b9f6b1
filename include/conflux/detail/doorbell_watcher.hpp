#pragma once

// Selects the platform's watcher of doorbell words, which carries a `notify` made in another
// process to this process's `wait_async` waiters (detail/linux/doorbell_watcher.hpp on Linux).
// A header that needs it includes this one, never the backend's; docs/internals.md describes
// the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_LINUX
#include <conflux/detail/linux/doorbell_watcher.hpp>
#endif
