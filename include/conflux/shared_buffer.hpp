#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/atomic_view.hpp>
#include <conflux/detail/memfd.hpp>

#include <cstddef>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>

namespace conflux {

/// Reference-counted shared memory, the counterpart of JavaScript's `SharedArrayBuffer`:
/// copies share the same bytes, and the memory lives until the last copy (and the last
/// `atomic_view` of it) is gone. Thread-safe to copy and to use from any thread.
///
/// On Linux the memory is a memfd, sealed so that its size can never change, mapped shared;
/// `fd()` hands it to another process (an extra descriptor of a spawned child, later an IPC
/// message), which maps the same bytes with `shared_buffer::from_fd`. No operation here
/// suspends or blocks; `atomic_view::wait` and `wait_async` do the waiting.
///
/// ```
/// conflux::shared_buffer memory(4096);
/// auto flags = memory.view<std::int32_t>();      // Int32Array over the buffer
/// flags.store(0, 1);
/// flags.notify(0);
/// ```
class shared_buffer {
public:
    /// An empty buffer: `size() == 0`, `fd() == -1`, no memory.
    shared_buffer() noexcept = default;

    /// `bytes` zero-filled bytes of new shared memory.
    /// Throws `std::invalid_argument` for 0 bytes, `std::length_error` for more than can ever
    /// be mapped, `std::system_error` (naming the call) when the OS refuses the memory.
    explicit shared_buffer(std::size_t bytes)
        : m_mapping(std::make_shared<detail::memfd_mapping>(
              detail::memfd_mapping::create(bytes, "conflux::shared_buffer", true))) {}

    /// Maps the shared memory behind `fd` (received from another process), `bytes` bytes of
    /// it. `fd` stays the caller's to close; the buffer keeps its own duplicate.
    ///
    /// Throws `std::invalid_argument` if the file behind `fd` is not sealed against shrinking
    /// (a peer could truncate it and make this process fault with SIGBUS) or holds fewer than
    /// `bytes` bytes (for a buffer made by `shared_buffer`: its `size()`), or `bytes` is 0;
    /// `std::system_error` if `fd` is not open or cannot be mapped read-write.
    static shared_buffer from_fd(int fd, std::size_t bytes) {
        shared_buffer out;
        out.m_mapping =
            std::make_shared<detail::memfd_mapping>(detail::memfd_mapping::import(fd, bytes, true));
        return out;
    }

    /// The largest size the constructor accepts; actual limits (memory, RLIMIT_AS) are lower.
    static constexpr std::size_t max_size() noexcept { return detail::memfd_mapping::max_size(); }

    /// The bytes. Plain (non-atomic) access: synchronise it yourself, for example with an
    /// `atomic_view` flag.
    std::span<std::byte> bytes() const noexcept {
        return m_mapping ? std::span<std::byte>(m_mapping->data(), m_mapping->size())
                         : std::span<std::byte>();
    }
    std::byte* data() const noexcept { return m_mapping ? m_mapping->data() : nullptr; }
    std::size_t size() const noexcept { return m_mapping ? m_mapping->size() : 0; }
    bool empty() const noexcept { return size() == 0; }

    /// The memfd behind the buffer (close-on-exec; owned by the buffer, do not close it), or
    /// -1 for an empty buffer. To hand the memory to a child, make the child inherit a
    /// duplicate of it (with `conflux::spawn`, `stdio_spec::from_fd(fd())` at the number it
    /// should have) and pass the number and `size()`; the child calls `from_fd`. The file is
    /// a little longer than `size()`: it ends in 64 bytes of conflux's own (the count and
    /// doorbell that carry `notify` to `wait_async` waiters of other processes), which
    /// `from_fd` finds and `bytes()` does not include.
    int fd() const noexcept { return m_mapping ? m_mapping->fd() : -1; }

    /// How many `shared_buffer`s and `atomic_view`s share this memory in this process.
    long use_count() const noexcept { return m_mapping.use_count(); }

    /// Whether both refer to the same memory (copies of one another).
    friend bool operator==(const shared_buffer& a, const shared_buffer& b) noexcept {
        return a.m_mapping == b.m_mapping;
    }

    /// The whole buffer as `T` elements, like `new Int32Array(sab)`. Throws
    /// `std::invalid_argument` if the size is not a multiple of `sizeof(T)` (as a typed array
    /// constructor throws a RangeError).
    template <atomic_element T>
    atomic_view<T> view() const {
        if (size() % sizeof(T) != 0) {
            throw std::invalid_argument("conflux::shared_buffer::view: a buffer of " +
                                        std::to_string(size()) +
                                        " bytes is not a whole number "
                                        "of " +
                                        std::to_string(sizeof(T)) + "-byte elements");
        }
        return make_view<T>(0, size() / sizeof(T));
    }

    /// `length` elements of `T` starting `byte_offset` bytes in, like
    /// `new Int32Array(sab, byteOffset, length)`. Throws `std::invalid_argument` if
    /// `byte_offset` is not a multiple of `T`'s alignment, `std::out_of_range` if the elements
    /// do not fit in the buffer.
    template <atomic_element T>
    atomic_view<T> view(std::size_t byte_offset, std::size_t length) const {
        if (byte_offset % std::atomic_ref<T>::required_alignment != 0) {
            throw std::invalid_argument("conflux::shared_buffer::view: byte offset " +
                                        std::to_string(byte_offset) + " is not aligned to " +
                                        std::to_string(std::atomic_ref<T>::required_alignment));
        }
        if (byte_offset > size() || length > (size() - byte_offset) / sizeof(T)) {
            throw std::out_of_range("conflux::shared_buffer::view: " + std::to_string(length) +
                                    " elements of " + std::to_string(sizeof(T)) +
                                    " bytes at offset " + std::to_string(byte_offset) +
                                    " exceed a buffer of " + std::to_string(size()) + " bytes");
        }
        return make_view<T>(byte_offset, length);
    }

private:
    template <atomic_element T>
    atomic_view<T> make_view(std::size_t byte_offset, std::size_t length) const {
        if (!m_mapping) return atomic_view<T>();
        return atomic_view<T>(m_mapping, byte_offset, length);
    }

    std::shared_ptr<detail::memfd_mapping> m_mapping;
};

} // namespace conflux
