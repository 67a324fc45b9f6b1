#pragma once

// Selects the platform's watcher of doorbell words, which carries a `notify` made in another
// process to this process's `wait_async` waiters (detail/linux/doorbell_watcher.hpp on Linux;
// on Windows, where shared memory stays within one process for now, a watcher with nothing to
// watch: detail/windows/doorbell_watcher.hpp). A header that needs it includes this one, never
// the backend's; docs/internals.md describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_LINUX
#include <conflux/detail/linux/doorbell_watcher.hpp>
#elif CONFLUX_PLATFORM_WINDOWS
#include <conflux/detail/windows/doorbell_watcher.hpp>
#endif
