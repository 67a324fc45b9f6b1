#pragma once

// Selects the platform's keeping SIGPIPE blocked on loop threads (detail/posix/sigpipe.hpp on
// POSIX systems; nothing on Windows, which has no SIGPIPE: detail/windows/sigpipe.hpp). A header
// that needs it includes this one, never the backend's; docs/internals.md describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_POSIX
#include <conflux/detail/posix/sigpipe.hpp>
#elif CONFLUX_PLATFORM_WINDOWS
#include <conflux/detail/windows/sigpipe.hpp>
#endif
