#pragma once

// Selects how a cluster's primary reads SIGTERM and SIGINT on its loop: a signalfd
// (detail/linux/cluster_signals.hpp on Linux). A header that needs it includes this one,
// never the backend's; docs/internals.md describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_LINUX
#include <conflux/detail/linux/cluster_signals.hpp>
#endif
