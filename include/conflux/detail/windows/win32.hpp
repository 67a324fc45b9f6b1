#pragma once

// <windows.h> as every header of detail/windows/ includes it: without the min/max macros
// (which would break std::min and std::numeric_limits<T>::max in the code that follows) and
// without the rarely used parts, and for Windows 8 or later (WaitOnAddress,
// GetQueuedCompletionStatusEx).

#include <conflux/detail/system_error.hpp>

#include <string_view>

#ifndef NOMINMAX
#define NOMINMAX
#endif
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#if !defined(_WIN32_WINNT) || _WIN32_WINNT < 0x0602
#undef _WIN32_WINNT
#define _WIN32_WINNT 0x0602
#endif
#include <windows.h>

namespace conflux::detail {

/// Throws `std::system_error` for `GetLastError()`, naming the operation and the object:
/// `CreateIoCompletionPort: Insufficient system resources exist...`.
[[noreturn]] inline void throw_last_error(std::string_view operation,
                                          std::string_view object = {}) {
    throw_system_error(static_cast<int>(::GetLastError()), operation, object);
}

} // namespace conflux::detail
