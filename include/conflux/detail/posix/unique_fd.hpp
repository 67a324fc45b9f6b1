#pragma once

#include <utility>

#include <fcntl.h>
#include <unistd.h>

namespace conflux::detail {

/// Owns a file descriptor; closes it once.
class unique_fd {
public:
    unique_fd() noexcept = default;
    explicit unique_fd(int fd) noexcept : m_fd(fd) {}
    unique_fd(unique_fd&& other) noexcept : m_fd(std::exchange(other.m_fd, -1)) {}
    unique_fd& operator=(unique_fd&& other) noexcept {
        if (this != &other) {
            reset(std::exchange(other.m_fd, -1));
        }
        return *this;
    }
    unique_fd(const unique_fd&) = delete;
    unique_fd& operator=(const unique_fd&) = delete;
    ~unique_fd() { reset(); }

    int get() const noexcept { return m_fd; }
    explicit operator bool() const noexcept { return m_fd >= 0; }
    int release() noexcept { return std::exchange(m_fd, -1); }

    void reset(int fd = -1) noexcept {
        if (m_fd >= 0) {
            // close() is not retried on EINTR: on Linux the descriptor is released anyway and
            // a retry could close a descriptor another thread has just been given.
            ::close(m_fd);
        }
        m_fd = fd;
    }

private:
    int m_fd = -1;
};

/// A close-on-exec duplicate of `fd` (which stays the caller's), or -1 with errno set.
inline int duplicate_fd(int fd) noexcept { return ::fcntl(fd, F_DUPFD_CLOEXEC, 0); }

} // namespace conflux::detail
