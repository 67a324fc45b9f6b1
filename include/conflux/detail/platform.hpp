#pragma once

// The one place conflux decides which platform it is built for, and the native vocabulary
// types that differ between platforms. Every other header asks the macros below instead of
// testing __linux__ or _WIN32 itself; platform code lives in detail/posix/ (what any POSIX
// system has), detail/linux/ (epoll, futex, memfd, clone, pidfd, signalfd) and, later,
// detail/windows/ and detail/bsd/. docs/internals.md describes the seam.
//
// An unsupported platform stops here, at the first conflux header, with one error that says
// so, instead of pages of errors from the system calls further on. As in cpp20.hpp, the
// include of a header that does not exist makes the #error fatal.

#if defined(__linux__)
#define CONFLUX_PLATFORM_LINUX 1
#define CONFLUX_PLATFORM_POSIX 1
#elif defined(_WIN32)
#error "conflux does not support Windows yet: the I/O completion port backend is in progress"
#include <conflux/detail/compilation_stopped_by_the_error_above>
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__)
#error "conflux does not support macOS or the BSDs yet: it needs Linux >= 5.3 (kqueue is planned)"
#include <conflux/detail/compilation_stopped_by_the_error_above>
#else
#error "conflux supports Linux >= 5.3 only: this platform has no backend"
#include <conflux/detail/compilation_stopped_by_the_error_above>
#endif

#ifndef CONFLUX_PLATFORM_LINUX
#define CONFLUX_PLATFORM_LINUX 0
#endif
#ifndef CONFLUX_PLATFORM_POSIX
#define CONFLUX_PLATFORM_POSIX 0
#endif

namespace conflux {

/// What the operating system calls an open file, pipe or socket: a file descriptor on POSIX
/// systems (a `HANDLE` on Windows). What `native_handle()` returns throughout conflux.
using native_handle = int;

/// A process id, as `child_process::pid()` returns it (`pid_t` on POSIX systems, a `DWORD`
/// process id on Windows).
using pid_type = int;

} // namespace conflux
