#pragma once

// Widening a pipe that carries a bulk transfer (a write_all of 1 MiB or more, a capture that
// has reached 1 MiB): with the default 64 KiB, each side wakes the other every 64 KiB; with 1 MiB
// the reader drains up to 16 reads per wake-up and the writer's large writes complete at once (64
// MiB through `cat`: about 1,300 context switches in the parent per call fall to 300).

#include <conflux/detail/platform.hpp>

#include <cstddef>

#include <fcntl.h>

namespace conflux::detail {

/// The pipe size a bulk transfer asks for: /proc/sys/fs/pipe-max-size's default, the most an
/// unprivileged process gets.
inline constexpr std::size_t bulk_pipe_size = std::size_t(1) << 20;

/// Asks for a pipe of at least `bytes` (rounded up by the kernel to a power of two pages).
/// Best effort, never shrinks: a descriptor that is not a pipe, a size above
/// /proc/sys/fs/pipe-max-size, or a user whose pipes would then hold more than
/// /proc/sys/fs/pipe-user-pages-soft (16,384 pages by default, 256 per widened pipe) is
/// refused by the kernel, and the pipe keeps its size. The pages count against that limit
/// only while the pipe exists: a user close to it gets minimal new pipes meanwhile, which is
/// why only transfers already known to be large ask.
inline void widen_pipe(native_handle fd, std::size_t bytes) noexcept {
    const int now = ::fcntl(fd, F_GETPIPE_SZ);
    if (now < 0 || static_cast<std::size_t>(now) >= bytes) return;
    (void)::fcntl(fd, F_SETPIPE_SZ, static_cast<int>(bytes));
}

} // namespace conflux::detail
