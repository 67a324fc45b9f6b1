#pragma once

#include <conflux/detail/posix/unique_fd.hpp>
#include <conflux/detail/system_error.hpp>

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace conflux::detail {

/// A sealed memfd of a fixed size, mapped shared and read-write into this process. Owns both
/// the descriptor (close-on-exec) and the mapping; move-only.
///
/// `create` makes a new one sealed against shrinking and growing (and against further seal
/// changes), so no process holding the descriptor can truncate the file under another's
/// mapping (which would turn every access past the new end into SIGBUS).
/// `import` maps a descriptor received from elsewhere, after checking that it is sealed
/// against shrinking and at least as large as claimed: a peer cannot make us fault.
class memfd_mapping {
public:
    memfd_mapping() noexcept = default;
    memfd_mapping(memfd_mapping&& other) noexcept
        : m_fd(std::move(other.m_fd)), m_data(std::exchange(other.m_data, nullptr)),
          m_size(std::exchange(other.m_size, 0)), m_file_id(other.m_file_id) {}
    memfd_mapping& operator=(memfd_mapping&& other) noexcept {
        if (this != &other) {
            unmap();
            m_fd = std::move(other.m_fd);
            m_data = std::exchange(other.m_data, nullptr);
            m_size = std::exchange(other.m_size, 0);
            m_file_id = other.m_file_id;
        }
        return *this;
    }
    memfd_mapping(const memfd_mapping&) = delete;
    memfd_mapping& operator=(const memfd_mapping&) = delete;
    ~memfd_mapping() { unmap(); }

    /// The largest size `create` and `import` accept (what a span and an `off_t` can hold).
    static constexpr std::size_t max_size() noexcept {
        return static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max()) / 2;
    }

    /// A new zero-filled memfd of `size` bytes named `name` (visible in /proc/<pid>/fd),
    /// sealed with F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL and mapped shared.
    /// Throws `std::invalid_argument` for size 0, `std::length_error` beyond `max_size()`,
    /// `std::system_error` naming the call when the OS refuses (ENOMEM, EMFILE...).
    static memfd_mapping create(std::size_t size, const char* name = "conflux") {
        check_size(size, "conflux: memfd_mapping::create");
        unique_fd fd(::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
        if (!fd) throw_errno("memfd_create", name);
        if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0) {
            throw_errno("ftruncate memfd", name);
        }
        if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
            throw_errno("seal memfd", name);
        }
        return map(std::move(fd), size, name);
    }

    /// Maps `size` bytes of the sealed file behind `fd`, which stays owned by the caller (the
    /// mapping keeps a close-on-exec duplicate). Throws `std::invalid_argument` when the file
    /// is not sealed against shrinking (F_SEAL_SHRINK) or is smaller than `size`, or `size` is
    /// 0; `std::system_error` when `fd` is not open or cannot be mapped read-write (for example
    /// because it is sealed against writing).
    static memfd_mapping import(int fd, std::size_t size) {
        check_size(size, "conflux: memfd_mapping::import");
        const int seals = ::fcntl(fd, F_GET_SEALS);
        if (seals < 0 && errno == EBADF) throw_errno("import memfd", std::to_string(fd));
        // EINVAL: a file type that does not support seals at all (a pipe, a regular file).
        if (seals < 0 || (seals & F_SEAL_SHRINK) == 0) {
            throw std::invalid_argument("conflux: memfd_mapping::import: fd " + std::to_string(fd) +
                                        " is not sealed against shrinking (F_SEAL_SHRINK); a "
                                        "peer could truncate it and fault this process");
        }
        struct stat st {};
        if (::fstat(fd, &st) != 0) throw_errno("fstat memfd", std::to_string(fd));
        if (st.st_size < 0 || static_cast<std::uint64_t>(st.st_size) < size) {
            throw std::invalid_argument("conflux: memfd_mapping::import: fd " + std::to_string(fd) +
                                        " holds " + std::to_string(st.st_size) +
                                        " bytes, fewer than the " + std::to_string(size) +
                                        " claimed");
        }
        unique_fd own(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
        if (!own) throw_errno("dup memfd", std::to_string(fd));
        return map(std::move(own), size, "imported");
    }

    std::byte* data() const noexcept { return m_data; }
    std::size_t size() const noexcept { return m_size; }
    int fd() const noexcept { return m_fd.get(); }
    explicit operator bool() const noexcept { return m_data != nullptr; }

    /// Identifies the file behind a mapping: equal for every mapping of the same memfd in
    /// this process, so in-process structures can be keyed by memory rather than by address.
    struct file_identity {
        std::uint64_t device = 0;
        std::uint64_t inode = 0;
        friend bool operator==(const file_identity&, const file_identity&) = default;
    };

    file_identity file_id() const noexcept { return m_file_id; }

private:
    static void check_size(std::size_t size, const char* what) {
        if (size == 0) {
            throw std::invalid_argument(std::string(what) + ": size 0 (a mapping needs at "
                                                            "least one byte)");
        }
        if (size > max_size()) {
            throw std::length_error(std::string(what) + ": size " + std::to_string(size) +
                                    " is beyond what can be mapped");
        }
    }

    static memfd_mapping map(unique_fd fd, std::size_t size, const char* name) {
        void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
        if (p == MAP_FAILED) throw_errno("mmap memfd", name);
        struct stat st {};
        memfd_mapping out;
        out.m_fd = std::move(fd);
        out.m_data = static_cast<std::byte*>(p);
        out.m_size = size;
        if (::fstat(out.m_fd.get(), &st) == 0) {
            out.m_file_id = {static_cast<std::uint64_t>(st.st_dev),
                             static_cast<std::uint64_t>(st.st_ino)};
        }
        return out;
    }

    void unmap() noexcept {
        if (m_data) ::munmap(m_data, m_size);
        m_data = nullptr;
        m_size = 0;
    }

    unique_fd m_fd;
    std::byte* m_data = nullptr;
    std::size_t m_size = 0;
    file_identity m_file_id;
};

} // namespace conflux::detail
