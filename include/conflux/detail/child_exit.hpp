#pragma once

// Selects the platform's view of a running child: its exit read through a pidfd, signals to
// its group (detail/linux/child_exit.hpp on Linux); the exit posted to the completion port,
// TerminateProcess and Job objects (detail/windows/child_exit.hpp on Windows). A header that needs
// it includes this one, never the backend's; docs/internals.md describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_LINUX
#include <conflux/detail/linux/child_exit.hpp>
#elif CONFLUX_PLATFORM_WINDOWS
#include <conflux/detail/windows/child_exit.hpp>
#endif
