#pragma once

// Selects the platform's the event loop's reactor: epoll, with an eventfd to wake it
// (detail/linux/epoll.hpp on Linux). A header that needs it includes this one, never the
// backend's; docs/internals.md describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_LINUX
#include <conflux/detail/linux/epoll.hpp>

namespace conflux::detail {

/// The reactor an `event_loop` runs on this platform.
using io_reactor = epoll_reactor;

} // namespace conflux::detail
#endif
