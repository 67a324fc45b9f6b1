#pragma once

// The one place conflux decides which platform it is built for, and the native vocabulary
// types that differ between platforms. Every other header asks the macros below instead of
// testing __linux__ or _WIN32 itself; platform code lives in detail/posix/ (what any POSIX
// system has), detail/linux/ (epoll, futex, memfd, clone, pidfd, signalfd), detail/windows/
// (an I/O completion port, WaitOnAddress, sections) and, later, detail/bsd/.
// docs/internals.md describes the seam.
//
// An unsupported platform stops here, at the first conflux header, with one error that says
// so, instead of pages of errors from the system calls further on. As in cpp20.hpp, the
// include of a header that does not exist makes the #error fatal.

#if defined(__linux__)
#define CONFLUX_PLATFORM_LINUX 1
#define CONFLUX_PLATFORM_POSIX 1
#elif defined(_WIN32)
#define CONFLUX_PLATFORM_WINDOWS 1
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__)
#error                                                                                             \
    "conflux does not support macOS or the BSDs yet: it needs Linux >= 5.3 or Windows (kqueue is planned)"
#include <conflux/detail/compilation_stopped_by_the_error_above>
#else
#error "conflux supports Linux >= 5.3 and Windows only: this platform has no backend"
#include <conflux/detail/compilation_stopped_by_the_error_above>
#endif

#if CONFLUX_PLATFORM_WINDOWS
#include <conflux/detail/windows/toolchain.hpp>
#endif

#ifndef CONFLUX_PLATFORM_LINUX
#define CONFLUX_PLATFORM_LINUX 0
#endif
#ifndef CONFLUX_PLATFORM_POSIX
#define CONFLUX_PLATFORM_POSIX 0
#endif
#ifndef CONFLUX_PLATFORM_WINDOWS
#define CONFLUX_PLATFORM_WINDOWS 0
#endif

// What of conflux this platform has. The core, threads, channels, buffers and shared memory
// within one process exist everywhere; a public header of a facility this platform lacks stops
// at its first lines with one #error naming it (docs/install.md lists them).
/// Child processes: spawn, exec, streams on pipes.
#define CONFLUX_HAS_PROCESSES 1
/// Pipelines of child processes joined by pipes of their own.
#define CONFLUX_HAS_PIPELINES CONFLUX_PLATFORM_POSIX
/// fork with an IPC channel, descriptors in messages, clusters, process-backed pools.
#define CONFLUX_HAS_FORK_IPC CONFLUX_PLATFORM_POSIX
/// TCP and Unix-domain sockets.
#define CONFLUX_HAS_NET CONFLUX_PLATFORM_POSIX

namespace conflux {

#if CONFLUX_PLATFORM_WINDOWS
/// What the operating system calls an open file, pipe or socket: a `HANDLE` on Windows (a file
/// descriptor on POSIX systems). What `native_handle()` returns throughout conflux.
using native_handle = void*;

/// A process id, as `child_process::pid()` returns it (a `DWORD` process id on Windows,
/// `pid_t` on POSIX systems).
using pid_type = unsigned long;
#else
/// What the operating system calls an open file, pipe or socket: a file descriptor on POSIX
/// systems (a `HANDLE` on Windows). What `native_handle()` returns throughout conflux.
using native_handle = int;

/// A process id, as `child_process::pid()` returns it (`pid_t` on POSIX systems, a `DWORD`
/// process id on Windows).
using pid_type = int;
#endif

} // namespace conflux
