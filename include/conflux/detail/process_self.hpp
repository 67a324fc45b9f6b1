#pragma once

// Selects what the calling process knows of itself on this platform: its ids and
// executable, a watch on its parent's exit, leaving at once (detail/linux/process_self.hpp
// on Linux). A header that needs it includes this one, never the backend's;
// docs/internals.md describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_LINUX
#include <conflux/detail/linux/process_self.hpp>
#endif
