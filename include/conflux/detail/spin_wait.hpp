#pragma once

// Selects the platform's short spin, then a sleep on a word: a futex (detail/linux/spin_wait.hpp
// on Linux), WaitOnAddress (detail/windows/spin_wait.hpp on Windows). A header that needs it
// includes this one, never the backend's; docs/internals.md describes the seam.

#include <conflux/detail/platform.hpp>

#if CONFLUX_PLATFORM_LINUX
#include <conflux/detail/linux/spin_wait.hpp>
#elif CONFLUX_PLATFORM_WINDOWS
#include <conflux/detail/windows/spin_wait.hpp>
#endif
