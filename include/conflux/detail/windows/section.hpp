#pragma once

#include <conflux/detail/windows/win32.hpp>

#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>

namespace conflux::detail {

/// Shared memory on Windows: a section backed by the paging file, mapped read-write into
/// this process. Owns the section handle and the view; move-only. The counterpart of the
/// Linux memfd_mapping, with the same members, for memory used within one process: handing a
/// section to another process (a duplicated handle, and the doorbell across processes) is
/// not done yet, so `import` and `adopt` refuse, `fd()` is -1 and `wake()` is null.
class section_mapping {
public:
    section_mapping() noexcept = default;
    section_mapping(section_mapping&& other) noexcept
        : m_section(std::exchange(other.m_section, nullptr)),
          m_data(std::exchange(other.m_data, nullptr)), m_size(std::exchange(other.m_size, 0)) {}
    section_mapping& operator=(section_mapping&& other) noexcept {
        if (this != &other) {
            unmap();
            m_section = std::exchange(other.m_section, nullptr);
            m_data = std::exchange(other.m_data, nullptr);
            m_size = std::exchange(other.m_size, 0);
        }
        return *this;
    }
    section_mapping(const section_mapping&) = delete;
    section_mapping& operator=(const section_mapping&) = delete;
    ~section_mapping() { unmap(); }

    /// The largest size `create` accepts (what a span can hold).
    static constexpr std::size_t max_size() noexcept {
        return static_cast<std::size_t>(std::numeric_limits<std::ptrdiff_t>::max()) / 2;
    }

    /// A new zero-filled section of `size` bytes, mapped. `name` names it in errors only
    /// (a named section would be visible to every process of the session). Throws
    /// `std::invalid_argument` for size 0, `std::length_error` beyond `max_size()`,
    /// `std::system_error` naming the call when the system refuses (out of commit charge).
    static section_mapping create(std::size_t size, const char* name = "conflux",
                                  bool /*with_wake_words*/ = false) {
        check_size(size, "conflux: section_mapping::create");
        const auto wide = static_cast<std::uint64_t>(size);
        section_mapping out;
        out.m_section = ::CreateFileMappingW(INVALID_HANDLE_VALUE, nullptr, PAGE_READWRITE,
                                             static_cast<DWORD>(wide >> 32),
                                             static_cast<DWORD>(wide & 0xffffffffu), nullptr);
        if (out.m_section == nullptr) throw_last_error("CreateFileMapping", name);
        void* p = ::MapViewOfFile(out.m_section, FILE_MAP_ALL_ACCESS, 0, 0, size);
        if (p == nullptr) throw_last_error("MapViewOfFile", name);
        out.m_data = static_cast<std::byte*>(p);
        out.m_size = size;
        return out;
    }

    /// Memory from another process: not supported on Windows yet.
    [[noreturn]] static section_mapping import(int, std::size_t, bool = false) {
        throw_across_processes("shared_buffer::from_fd");
    }

    /// Memory from another process: not supported on Windows yet.
    [[noreturn]] static section_mapping adopt(int, std::size_t) {
        throw_across_processes("buffer::adopt_memfd");
    }

    /// The words that carry notify across processes on Linux; none here.
    struct wake_words {
        std::uint32_t async_waiters;
        std::uint32_t doorbell;
    };
    wake_words* wake() const noexcept { return nullptr; }

    std::byte* data() const noexcept { return m_data; }
    std::size_t size() const noexcept { return m_size; }
    /// No descriptor: -1.
    int fd() const noexcept { return -1; }
    explicit operator bool() const noexcept { return m_data != nullptr; }

    /// Identifies the memory: its address, since each section is mapped once in this process.
    struct file_identity {
        std::uint64_t device = 0;
        std::uint64_t inode = 0;
        friend bool operator==(const file_identity&, const file_identity&) = default;
    };
    file_identity file_id() const noexcept {
        return {0, static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(m_data))};
    }

private:
    static void check_size(std::size_t size, const char* what) {
        if (size == 0) {
            throw std::invalid_argument(std::string(what) +
                                        ": size 0 (a mapping needs at least one byte)");
        }
        if (size > max_size()) {
            throw std::length_error(std::string(what) + ": size " + std::to_string(size) +
                                    " is beyond what can be mapped");
        }
    }

    [[noreturn]] static void throw_across_processes(const char* what) {
        throw std::system_error(std::make_error_code(std::errc::function_not_supported),
                                std::string("conflux::") + what +
                                    ": memory shared with another process is not supported "
                                    "on Windows yet");
    }

    void unmap() noexcept {
        if (m_data) ::UnmapViewOfFile(m_data);
        if (m_section) ::CloseHandle(m_section);
        m_section = nullptr;
        m_data = nullptr;
        m_size = 0;
    }

    HANDLE m_section = nullptr;
    std::byte* m_data = nullptr;
    std::size_t m_size = 0;
};

} // namespace conflux::detail
