#pragma once

// The calling process as Linux sees it: its ids, executable and name, a watch on its
// parent's exit, leaving at once, and the name of the exception being handled (for the
// report a forked child sends its parent).

#include <conflux/detail/posix/unique_fd.hpp>

#include <cstdlib>
#include <string>
#include <typeinfo>

#include <cxxabi.h>
#include <errno.h> // program_invocation_name, program_invocation_short_name
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace conflux::detail {

inline int current_process_id() noexcept { return static_cast<int>(::getpid()); }
inline int parent_process_id() noexcept { return static_cast<int>(::getppid()); }

/// A descriptor that becomes readable once process `pid` has exited (a pidfd); empty if it
/// cannot be opened (no such process).
inline unique_fd watch_process_exit(long pid) noexcept {
    return unique_fd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
}

/// Ends the process now, without running destructors or atexit handlers.
[[noreturn]] inline void exit_now(int code) noexcept { ::_exit(code); }

inline void unset_environment(const char* name) noexcept { ::unsetenv(name); }

/// A path that starts this very executable again.
inline const char* self_executable() noexcept { return "/proc/self/exe"; }

/// argv[0] as this process was started with.
inline const char* program_name() noexcept { return program_invocation_name; }

/// The last path component of argv[0].
inline const char* program_short_name() noexcept { return program_invocation_short_name; }

/// Renames the process as `ps -o comm`, `top` and /proc/<pid>/comm show it (the calling
/// thread's name: call it on the main thread, before starting others, which inherit it).
/// The kernel keeps the first 15 bytes.
inline void set_process_name(const char* name) noexcept { ::prctl(PR_SET_NAME, name, 0, 0, 0); }

/// The calling thread's name as the kernel has it (at most 15 bytes).
inline std::string process_name() {
    char name[17] = {};
    ::prctl(PR_GET_NAME, name, 0, 0, 0);
    return name;
}

/// The demangled type of the exception being handled, or "unknown".
inline std::string current_exception_type_name() {
    const std::type_info* type = abi::__cxa_current_exception_type();
    if (type == nullptr) return "unknown";
    int status = 0;
    char* name = abi::__cxa_demangle(type->name(), nullptr, nullptr, &status);
    std::string out = status == 0 && name != nullptr ? name : type->name();
    std::free(name);
    return out;
}

} // namespace conflux::detail
