#pragma once

#include <conflux/detail/system_error.hpp>
#include <conflux/detail/unique_fd.hpp>

#include <cerrno>
#include <cstddef>
#include <string_view>

#if !defined(__linux__)
#error "conflux/detail/buffer_memfd.hpp: shareable buffers are backed by memfd, which needs Linux"
#endif

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace conflux::detail {

/// A memfd region mapped shared into this process, as a `buffer::shareable` holds it.
struct memfd_region {
    unique_fd fd;
    std::byte* data = nullptr;
    std::size_t size = 0;
};

/// Maps `size` bytes of `fd` shared and read-write (nothing for size 0).
inline std::byte* map_memfd(int fd, std::size_t size, std::string_view what) {
    if (size == 0) return nullptr;
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) throw_errno("mmap", what);
    return static_cast<std::byte*>(p);
}

inline void unmap_memfd(std::byte* data, std::size_t size) noexcept {
    if (data != nullptr && size != 0) ::munmap(data, size);
}

/// A new memfd of `size` bytes, sealed so that no holder of the descriptor can shrink or grow
/// it under another process's mapping, and mapped here.
inline memfd_region create_memfd_region(std::size_t size) {
    memfd_region r;
    r.fd.reset(::memfd_create("conflux-buffer", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (!r.fd) throw_errno("memfd_create", "conflux-buffer");
    if (::ftruncate(r.fd.get(), static_cast<off_t>(size)) != 0) throw_errno("ftruncate", "memfd");
    if (::fcntl(r.fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
        throw_errno("fcntl(F_ADD_SEALS)", "memfd");
    }
    r.data = map_memfd(r.fd.get(), size, "memfd");
    r.size = size;
    return r;
}

/// Maps a memfd received from elsewhere, after checking that it cannot shrink under the
/// mapping and really holds `size` bytes: a peer cannot make this process fault.
inline memfd_region adopt_memfd_region(unique_fd fd, std::size_t size) {
    const int seals = ::fcntl(fd.get(), F_GET_SEALS);
    if (seals < 0) throw_errno("fcntl(F_GET_SEALS)", "memfd");
    if ((seals & F_SEAL_SHRINK) == 0) {
        throw_system_error(EINVAL, "adopt memfd", "not sealed against shrinking");
    }
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw_errno("fstat", "memfd");
    if (static_cast<std::size_t>(st.st_size) < size) {
        throw_system_error(EINVAL, "adopt memfd", "smaller than claimed");
    }
    memfd_region r;
    r.data = map_memfd(fd.get(), size, "memfd");
    r.size = size;
    r.fd = std::move(fd);
    return r;
}

} // namespace conflux::detail
