#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/detail/memfd.hpp>

#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>

namespace conflux {

namespace detail {

/// The allocation behind one or more buffers (slices of it share it); freed with the last.
struct buffer_block {
    std::atomic<std::size_t> refs{1};
    std::byte* base = nullptr;
    std::size_t size = 0;
    memfd_mapping shared; // set for shareable blocks: `base` is this mapping

    void acquire() noexcept { refs.fetch_add(1, std::memory_order_relaxed); }

    void release() noexcept {
        // acq_rel: the last owner sees every write made through the other slices.
        if (refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
        if (!shared) std::free(base);
        delete this; // unmaps `shared`
    }
};

} // namespace detail

/// Move-only bytes: Node.js's transferable `ArrayBuffer`, without the copy.
///
/// Moving a buffer — into a `channel`, through a worker's port, into a lambda — hands over the
/// very same memory and leaves the source *detached*: `size() == 0`, `data() == nullptr`,
/// `detached() == true`. Sending a detached buffer through a channel or port throws
/// `conflux::error`, like transferring a detached ArrayBuffer in Node.js.
///
/// `slice` and `split` make buffers that share one allocation without copying; it is freed
/// with the last of them. A buffer is not thread-safe in itself: it belongs to whoever holds
/// it, and moving it between threads through a channel is the synchronisation.
///
/// `buffer::shareable(n)` allocates the bytes in a sealed memfd instead of the heap, so that
/// the fork and IPC layers can pass the memory to another process as a descriptor.
///
/// ```
/// conflux::buffer b(1 << 20);
/// std::ranges::fill(b.bytes(), std::byte{1});
/// co_await ch.send(std::move(b));   // b.detached() now; the receiver has the same memory
/// ```
class buffer {
public:
    /// A detached buffer: no memory, size 0.
    buffer() noexcept = default;

    /// `n` zeroed bytes on the heap. Throws `std::bad_alloc`.
    explicit buffer(std::size_t n) : m_block(new detail::buffer_block) {
        if (n != 0) {
            // calloc: large blocks come from fresh zero pages, so zeroing costs nothing.
            m_block->base = static_cast<std::byte*>(std::calloc(n, 1));
            if (m_block->base == nullptr) {
                delete m_block;
                throw std::bad_alloc();
            }
        }
        m_block->size = n;
        m_data = m_block->base;
        m_size = n;
    }

    /// `n` zeroed bytes in a sealed memfd mapped shared: passable to another process as a
    /// descriptor (`memfd()`). Throws `std::invalid_argument` for `n == 0` and
    /// `std::system_error` naming the failing call when the OS refuses.
    [[nodiscard]] static buffer shareable(std::size_t n) {
        return buffer(detail::memfd_mapping::create(n, "conflux-buffer"));
    }

    /// Takes ownership of a memfd (sealed against shrinking, at least `size` bytes long) and
    /// maps it: the receiving end of a shareable buffer sent to another process. The fd is
    /// closed in every case. Throws `std::invalid_argument` for an unsealed or short memfd (a
    /// peer could otherwise make this process fault), `std::system_error` when it cannot be
    /// mapped.
    [[nodiscard]] static buffer adopt_memfd(int fd, std::size_t size) {
        return buffer(detail::memfd_mapping::adopt(fd, size));
    }

    buffer(buffer&& other) noexcept
        : m_block(std::exchange(other.m_block, nullptr)),
          m_data(std::exchange(other.m_data, nullptr)), m_size(std::exchange(other.m_size, 0)) {}

    buffer& operator=(buffer&& other) noexcept {
        if (this != &other) {
            reset();
            m_block = std::exchange(other.m_block, nullptr);
            m_data = std::exchange(other.m_data, nullptr);
            m_size = std::exchange(other.m_size, 0);
        }
        return *this;
    }

    buffer(const buffer&) = delete;
    buffer& operator=(const buffer&) = delete;

    ~buffer() { reset(); }

    /// The bytes (empty when detached).
    std::span<std::byte> bytes() noexcept { return {m_data, m_size}; }
    std::span<const std::byte> bytes() const noexcept { return {m_data, m_size}; }

    std::byte* data() noexcept { return m_data; }
    const std::byte* data() const noexcept { return m_data; }
    std::size_t size() const noexcept { return m_size; }
    bool empty() const noexcept { return m_size == 0; }

    /// True once the buffer was moved from (or default-constructed, or reset).
    bool detached() const noexcept { return m_block == nullptr; }

    /// Frees this buffer's share of the memory and detaches it.
    void reset() noexcept {
        if (m_block) std::exchange(m_block, nullptr)->release();
        m_data = nullptr;
        m_size = 0;
    }

    /// True when the bytes live in a memfd (see `shareable`).
    bool is_shareable() const noexcept {
        return m_block != nullptr && static_cast<bool>(m_block->shared);
    }

    /// The memfd holding the bytes (owned by the buffer), or -1 when not shareable.
    int memfd() const noexcept { return is_shareable() ? m_block->shared.fd() : -1; }

    /// Where this buffer's bytes start within its memfd (non-zero for slices).
    std::size_t memfd_offset() const noexcept {
        return is_shareable() ? static_cast<std::size_t>(m_data - m_block->base) : 0;
    }

    /// Consumes the buffer and returns `count` bytes of it from `offset`, without copying
    /// (the rest is released once no other slice holds it). Throws `std::out_of_range`, and
    /// then leaves the buffer untouched.
    [[nodiscard]] buffer slice(std::size_t offset, std::size_t count) && {
        check_range(offset, count, "conflux::buffer::slice");
        buffer out(std::move(*this));
        out.m_data += offset;
        out.m_size = count;
        return out;
    }

    /// Splits off the first `count` bytes into a new buffer; this one keeps the rest. Both
    /// share the allocation, nothing is copied. Throws `std::out_of_range`; `std::logic_error`
    /// on a detached buffer.
    [[nodiscard]] buffer split(std::size_t count) {
        if (detached()) throw std::logic_error("conflux::buffer::split: the buffer is detached");
        check_range(0, count, "conflux::buffer::split");
        m_block->acquire();
        buffer head;
        head.m_block = m_block;
        head.m_data = m_data;
        head.m_size = count;
        m_data += count;
        m_size -= count;
        return head;
    }

    /// An explicit copy of the bytes into a new heap buffer.
    [[nodiscard]] buffer clone() const {
        if (detached()) return {};
        buffer out(m_size);
        if (m_size != 0) std::memcpy(out.m_data, m_data, m_size);
        return out;
    }

private:
    explicit buffer(detail::memfd_mapping&& mapping) : m_block(new detail::buffer_block) {
        m_block->base = mapping.data();
        m_block->size = mapping.size();
        m_block->shared = std::move(mapping);
        m_data = m_block->base;
        m_size = m_block->size;
    }

    void check_range(std::size_t offset, std::size_t count, const char* what) const {
        if (offset > m_size || count > m_size - offset) {
            throw std::out_of_range(std::string(what) + ": range past the end of the buffer");
        }
    }

    detail::buffer_block* m_block = nullptr;
    std::byte* m_data = nullptr;
    std::size_t m_size = 0;
};

} // namespace conflux
