#pragma once

// Selects the platform's threads with a name and a stack size: pthread_create
// (detail/posix/native_thread.hpp on POSIX systems), _beginthreadex
// (detail/windows/native_thread.hpp on Windows). A header that needs it includes this one, never
// the backend's; docs/internals.md describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_POSIX
#include <conflux/detail/posix/native_thread.hpp>
#elif CONFLUX_PLATFORM_WINDOWS
#include <conflux/detail/windows/native_thread.hpp>
#endif
