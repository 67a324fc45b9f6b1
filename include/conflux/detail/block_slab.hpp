#pragma once

#include <cstddef>
#include <cstdint>
#include <new>

namespace conflux::detail {

/// Fixed-size blocks carved in turn from aligned chunks: what holds the small callables
/// posted to a thread_pool. A post takes the next block of the current chunk (one
/// allocation per `blocks_per_chunk` posts, instead of one per post, on the posting thread,
/// freed on another); a chunk goes back to a short spare list, or to the allocator, once every
/// block carved from it was given back and it is no longer the current one.
///
/// Not thread-safe: its owner calls it under its own lock.
class block_slab {
public:
    static constexpr std::size_t block_bytes = 64;
    static constexpr std::size_t chunk_bytes = 4096;
    /// The first block of a chunk holds its header.
    static constexpr std::size_t blocks_per_chunk = chunk_bytes / block_bytes - 1;
    static constexpr std::size_t max_spare_chunks = 4;

    block_slab() = default;
    block_slab(const block_slab&) = delete;
    block_slab& operator=(const block_slab&) = delete;

    /// Frees the chunks: every block must have been given back.
    ~block_slab() {
        if (m_current) free_chunk(m_current);
        while (chunk* c = m_spare) {
            m_spare = c->next_spare;
            free_chunk(c);
        }
    }

    /// A block of `block_bytes`, aligned for any scalar type. Throws std::bad_alloc.
    void* allocate() {
        if (!m_current || m_current->used == blocks_per_chunk) next_chunk();
        chunk* c = m_current;
        ++c->live;
        return reinterpret_cast<std::byte*>(c) + block_bytes * (1 + c->used++);
    }

    /// Gives back a block that `allocate` returned.
    void deallocate(void* block) noexcept {
        chunk* c = chunk_of(block);
        if (--c->live == 0 && c != m_current) retire(c);
    }

    /// The chunks held with no block in use but the current one: it and the spares (tests).
    std::size_t chunks_held() const noexcept {
        std::size_t n = m_current ? 1 : 0;
        for (const chunk* c = m_spare; c; c = c->next_spare) ++n;
        return n;
    }

private:
    struct chunk {
        std::size_t used = 0; // blocks carved so far
        std::size_t live = 0; // of those, not given back yet
        chunk* next_spare = nullptr;
    };
    static_assert(sizeof(chunk) <= block_bytes);

    static chunk* chunk_of(void* block) noexcept {
        const auto address = reinterpret_cast<std::uintptr_t>(block);
        return reinterpret_cast<chunk*>(address & ~std::uintptr_t{chunk_bytes - 1});
    }

    static void free_chunk(chunk* c) noexcept {
        c->~chunk();
        ::operator delete (static_cast<void*>(c), std::align_val_t{chunk_bytes});
    }

    void next_chunk() {
        chunk* c = m_spare;
        if (c) {
            m_spare = c->next_spare;
            --m_spare_count;
            *c = chunk{};
        } else {
            c = ::new (::operator new (chunk_bytes, std::align_val_t{chunk_bytes})) chunk{};
        }
        chunk* old = m_current;
        m_current = c;
        if (old && old->live == 0) retire(old);
    }

    void retire(chunk* c) noexcept {
        if (m_spare_count < max_spare_chunks) {
            c->next_spare = m_spare;
            m_spare = c;
            ++m_spare_count;
        } else {
            free_chunk(c);
        }
    }

    chunk* m_current = nullptr;
    chunk* m_spare = nullptr;
    std::size_t m_spare_count = 0;
};

} // namespace conflux::detail
