#pragma once

#include <conflux/detail/posix/sigpipe.hpp>
#include <conflux/detail/system_error.hpp>

#include <cerrno>

#include <fcntl.h>
#include <unistd.h>

namespace conflux::detail {

/// Sets O_NONBLOCK on `fd` (the parent's end of a pipe; the child's end stays blocking).
inline void set_nonblocking(int fd, const char* what) {
    const int flags = ::fcntl(fd, F_GETFL);
    if (flags < 0 || ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) throw_errno("fcntl", what);
}

} // namespace conflux::detail
