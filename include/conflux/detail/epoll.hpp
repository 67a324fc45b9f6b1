#pragma once

// Selects the platform's the event loop's reactor: epoll, with an eventfd to wake it
// (detail/linux/epoll.hpp on Linux); an I/O completion port (detail/windows/iocp.hpp on
// Windows). A header that needs it includes this one, never the backend's; docs/internals.md
// describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_LINUX
#include <conflux/detail/linux/epoll.hpp>

namespace conflux::detail {

/// The reactor an `event_loop` runs on this platform.
using io_reactor = epoll_reactor;

} // namespace conflux::detail
#elif CONFLUX_PLATFORM_WINDOWS
#include <conflux/detail/windows/iocp.hpp>

namespace conflux::detail {

/// The reactor an `event_loop` runs on this platform.
using io_reactor = iocp_reactor;

} // namespace conflux::detail
#endif
