#pragma once

#include <conflux/detail/cpp20.hpp>

#if !CONFLUX_HAS_FORK_IPC
#error "conflux/file_descriptor.hpp: descriptors are not supported on Windows yet"
#include <conflux/detail/compilation_stopped_by_the_error_above>
#endif

#include <conflux/detail/platform.hpp>
#include <conflux/detail/unique_fd.hpp>

#include <cerrno>
#include <string>
#include <system_error>

namespace conflux {

/// An owned file descriptor that travels inside an IPC message as a descriptor (SCM_RIGHTS),
/// not as bytes: the receiver gets its own descriptor (close-on-exec) for the same open file.
/// Move-only; closes what it holds.
class file_descriptor {
public:
    file_descriptor() noexcept = default;
    /// Takes ownership of `fd`.
    explicit file_descriptor(conflux::native_handle fd) noexcept : m_fd(fd) {}
    /// A close-on-exec duplicate of `fd`, which stays the caller's. Throws `std::system_error`.
    static file_descriptor duplicate(conflux::native_handle fd) {
        const conflux::native_handle d = detail::duplicate_fd(fd);
        if (d < 0) throw_errno_dup(fd);
        return file_descriptor(d);
    }

    conflux::native_handle get() const noexcept { return m_fd.get(); }
    explicit operator bool() const noexcept { return static_cast<bool>(m_fd); }
    /// Gives up ownership; the caller closes the result.
    conflux::native_handle release() noexcept { return m_fd.release(); }
    void reset(conflux::native_handle fd = -1) noexcept { m_fd.reset(fd); }

private:
    [[noreturn, gnu::cold]] static void throw_errno_dup(conflux::native_handle fd) {
        throw std::system_error(errno, std::system_category(),
                                "dup descriptor " + std::to_string(fd) + " for a message");
    }

    detail::unique_fd m_fd;
};

} // namespace conflux
