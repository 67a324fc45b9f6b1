#pragma once

// The calling process as Linux sees it: its ids and executable, a watch on its parent's
// exit, leaving at once, and the name of the exception being handled (for the report a
// forked child sends its parent).

#include <conflux/detail/posix/unique_fd.hpp>

#include <cstdlib>
#include <string>
#include <typeinfo>

#include <cxxabi.h>
#include <errno.h> // program_invocation_name
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
