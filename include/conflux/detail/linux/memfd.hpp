#pragma once

#include <conflux/detail/linux/futex.hpp>
#include <conflux/detail/posix/unique_fd.hpp>
#include <conflux/detail/system_error.hpp>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
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
          m_size(std::exchange(other.m_size, 0)), m_mapped(std::exchange(other.m_mapped, 0)),
          m_wake(std::exchange(other.m_wake, nullptr)), m_file_id(other.m_file_id) {}
    memfd_mapping& operator=(memfd_mapping&& other) noexcept {
        if (this != &other) {
            unmap();
            m_fd = std::move(other.m_fd);
            m_data = std::exchange(other.m_data, nullptr);
            m_size = std::exchange(other.m_size, 0);
            m_mapped = std::exchange(other.m_mapped, 0);
            m_wake = std::exchange(other.m_wake, nullptr);
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
    ///
    /// With `with_wake_words`, the file goes on past `size` (rounded up to 64) with a 64-byte
    /// trailer holding `wake_words`, which `wake()` returns; `size()` is still `size`.
    /// `import` finds that trailer again in another process.
    static memfd_mapping create(std::size_t size, const char* name = "conflux",
                                bool with_wake_words = false) {
        check_size(size, "conflux: memfd_mapping::create");
        unique_fd fd(::memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
        if (!fd) throw_errno("memfd_create", name);
        const std::size_t file_size = with_wake_words ? trailer_offset(size) + trailer_bytes : size;
        if (::ftruncate(fd.get(), static_cast<off_t>(file_size)) != 0) {
            throw_errno("ftruncate memfd", name);
        }
        if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
            throw_errno("seal memfd", name);
        }
        memfd_mapping out = map(std::move(fd), size, file_size, name);
        if (with_wake_words) {
            // Written before the descriptor can reach anyone: plain stores suffice.
            auto* t = reinterpret_cast<trailer*>(out.m_data + trailer_offset(size));
            t->magic = trailer_magic;
            t->data_size = size;
            out.m_wake = &t->words;
        }
        return out;
    }

    /// Maps `size` bytes of the sealed file behind `fd`, which stays owned by the caller (the
    /// mapping keeps a close-on-exec duplicate). Throws `std::invalid_argument` when the file
    /// is not sealed against shrinking (F_SEAL_SHRINK) or is smaller than `size`, or `size` is
    /// 0; `std::system_error` when `fd` is not open or cannot be mapped read-write (for example
    /// because it is sealed against writing).
    ///
    /// With `find_wake_words`, a file made by `create(..., true)` is recognised by its trailer
    /// (mapped too, and refused as "fewer bytes" when `size` would reach into it), and
    /// `wake()` returns it; any other file gets none.
    static memfd_mapping import(int fd, std::size_t size, bool find_wake_words = false) {
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
        const auto file_size = static_cast<std::uint64_t>(st.st_size);
        // A file of conflux's shape: 64-byte aligned, room for a trailer. (`size` reaching
        // into the trailer is refused below, once the trailer is recognised.)
        const bool may_have_trailer = find_wake_words && file_size % 64 == 0 &&
                                      file_size >= trailer_bytes &&
                                      file_size <= max_size() + trailer_bytes + 64;
        unique_fd own(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
        if (!own) throw_errno("dup memfd", std::to_string(fd));
        if (!may_have_trailer) return map(std::move(own), size, size, "imported");
        memfd_mapping out =
            map(std::move(own), size, static_cast<std::size_t>(file_size), "imported");
        auto* t = reinterpret_cast<trailer*>(out.m_data + file_size - trailer_bytes);
        std::uint64_t magic = 0;
        std::uint64_t data_size = 0;
        std::memcpy(&magic, &t->magic, sizeof magic);
        std::memcpy(&data_size, &t->data_size, sizeof data_size);
        if (magic == trailer_magic && data_size <= max_size() &&
            trailer_offset(static_cast<std::size_t>(data_size)) + trailer_bytes == file_size) {
            if (size > data_size) {
                throw std::invalid_argument("conflux: memfd_mapping::import: fd " +
                                            std::to_string(fd) + " holds " +
                                            std::to_string(data_size) + " bytes, fewer than the " +
                                            std::to_string(size) + " claimed");
            }
            out.m_wake = &t->words;
        }
        return out;
    }

    /// `import` of a descriptor this call takes ownership of: it is closed in every case,
    /// the mapping keeping its own duplicate.
    static memfd_mapping adopt(int fd, std::size_t size) {
        unique_fd owned(fd);
        return import(owned.get(), size);
    }

    /// Two words in shared memory that every process mapping a file made with wake words
    /// sees: `async_waiters` counts the pending `wait_async`s of all processes on the file,
    /// `doorbell` is a futex that `notify` bumps and wakes when another process has some.
    /// (detail/async_waiters.hpp has the protocol.)
    struct wake_words {
        std::uint32_t async_waiters;
        std::uint32_t doorbell;
    };

    /// The file's wake words, or null for a file made without them (or by someone else).
    wake_words* wake() const noexcept { return m_wake; }

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

    // The end of a file made with wake words: a magic number, the data size it was made for
    // (so that an importer can tell a trailer from data that happens to match), the words.
    struct trailer {
        std::uint64_t magic;
        std::uint64_t data_size;
        wake_words words;
    };
    static constexpr std::uint64_t trailer_magic = 0x636f6e666c757857ull; // "conflux" + W
    static constexpr std::size_t trailer_bytes = 64;
    static constexpr std::size_t trailer_offset(std::size_t size) noexcept {
        return (size + 63) / 64 * 64;
    }

    static memfd_mapping map(unique_fd fd, std::size_t size, std::size_t mapped, const char* name) {
        void* p = ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
        if (p == MAP_FAILED) throw_errno("mmap memfd", name);
        struct stat st {};
        memfd_mapping out;
        out.m_fd = std::move(fd);
        out.m_data = static_cast<std::byte*>(p);
        out.m_size = size;
        out.m_mapped = mapped;
        if (::fstat(out.m_fd.get(), &st) == 0) {
            out.m_file_id = {static_cast<std::uint64_t>(st.st_dev),
                             static_cast<std::uint64_t>(st.st_ino)};
        }
        return out;
    }

    void unmap() noexcept {
        // Kernels without futex_waitv watch each file's doorbell from a thread of its own,
        // which holds no reference while it sleeps (detail/linux/doorbell_watcher.hpp): ring
        // it so that it sees the memory gone — bumped as well as woken, so that a thread about
        // to sleep finds the word moved. For watchers elsewhere, a ring with nothing to do.
        if (m_wake) {
            std::atomic_ref<std::uint32_t>(m_wake->doorbell)
                .fetch_add(1, std::memory_order_seq_cst);
            futex::wake_all(&m_wake->doorbell, false);
        }
        if (m_data) ::munmap(m_data, m_mapped);
        m_data = nullptr;
        m_size = 0;
        m_mapped = 0;
        m_wake = nullptr;
    }

    unique_fd m_fd;
    std::byte* m_data = nullptr;
    std::size_t m_size = 0;
    std::size_t m_mapped = 0; // m_size, plus the trailer when there is one
    wake_words* m_wake = nullptr;
    file_identity m_file_id;
};

} // namespace conflux::detail
