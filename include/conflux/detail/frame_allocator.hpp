#pragma once

#include <conflux/detail/platform.hpp>
#include <conflux/detail/thread_local.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <new>

// Sanitizers must see every frame freed and allocated: a recycled frame would hide a
// use-after-free from AddressSanitizer, and ThreadSanitizer would see two threads touch the
// same memory with no malloc/free between them to order them.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CONFLUX_DETAIL_FRAME_RECYCLING 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) ||                         \
    __has_feature(memory_sanitizer)
#define CONFLUX_DETAIL_FRAME_RECYCLING 0
#endif
#endif
// On Windows the cache stays off for now: it hands its blocks back from a thread_local's
// destructor, and MinGW-w64's GCC 12 runtime corrupts the heap when a thread whose
// thread_locals have destructors exits (see tests/CMakeLists.txt).
#if !defined(CONFLUX_DETAIL_FRAME_RECYCLING) && CONFLUX_PLATFORM_WINDOWS
#define CONFLUX_DETAIL_FRAME_RECYCLING 0
#endif
#ifndef CONFLUX_DETAIL_FRAME_RECYCLING
#define CONFLUX_DETAIL_FRAME_RECYCLING 1
#endif

namespace conflux::detail {

/// Whether task frames go through the per-thread cache (off in sanitizer builds).
inline constexpr bool frame_recycling = CONFLUX_DETAIL_FRAME_RECYCLING != 0;

/// Frames are cached by size class: multiples of `frame_granule` bytes up to
/// `frame_cache_largest`. Larger frames always go to the global allocator.
inline constexpr std::size_t frame_granule = 64;
inline constexpr std::size_t frame_classes = 16;
inline constexpr std::size_t frame_cache_largest = frame_granule * frame_classes;
/// The most bytes of free frames one thread keeps: past it, freed frames go back to the
/// global allocator.
inline constexpr std::size_t frame_cache_budget = 64 * 1024;

/// Gives a block of `n` bytes back to the global allocator (sized when the compiler offers it:
/// Clang does only with -fsized-deallocation).
inline void frame_free(void* p, [[maybe_unused]] std::size_t n) noexcept {
#if defined(__cpp_sized_deallocation)
    ::operator delete(p, n);
#else
    ::operator delete(p);
#endif
}

/// Blocks handed back to the global allocator by caches of exiting threads (for tests).
inline std::atomic<std::size_t> frame_cache_blocks_released{0};

/// A thread's free frames: one singly linked list per size class, bounded in bytes.
///
/// A frame freed on another thread than the one that allocated it simply joins the freeing
/// thread's cache: every block came from the global allocator at its class's size, so any
/// thread may reuse it or give it back. Trivially constructible and destructible, so that the
/// thread-local one is reached without an initialisation guard; its blocks are given back at
/// thread exit by a `frame_cache_reaper`, registered when the thread first keeps a block.
struct frame_cache {
    enum class state : std::uint8_t { unused, live, gone };
    struct block {
        block* next;
    };

    block* heads[frame_classes];
    std::size_t held_bytes;
    state status;

    static constexpr std::size_t class_of(std::size_t n) noexcept {
        return (n - 1) / frame_granule;
    }
    static constexpr std::size_t class_bytes(std::size_t c) noexcept {
        return (c + 1) * frame_granule;
    }

    /// A block for a frame of `n` bytes, from the cache when it holds one of that class.
    /// Small enough to inline: a cached block is two loads and two stores.
    void* allocate(std::size_t n) {
        // One comparison for both ends: n == 0 wraps around.
        if (n - 1 >= frame_cache_largest) [[unlikely]] {
            return ::operator new(n);
        }
        const std::size_t c = class_of(n);
        if (block* b = heads[c]) [[likely]] {
            heads[c] = b->next;
            held_bytes -= class_bytes(c);
            return b;
        }
        // The class's full size, so that the block may serve any frame of its class later.
        return ::operator new(class_bytes(c));
    }

    /// Takes back the block of a frame of `n` bytes, or gives it to the global allocator when
    /// it is too big, the cache is full, or the thread's cache is already released.
    void deallocate(void* p, std::size_t n) noexcept {
        if (n - 1 < frame_cache_largest && status == state::live &&
            held_bytes + class_bytes(class_of(n)) <= frame_cache_budget) [[likely]] {
            keep(p, class_of(n));
            return;
        }
        deallocate_slow(p, n);
    }

    /// Gives every cached block back to the global allocator; the number given.
    std::size_t release() noexcept {
        std::size_t count = 0;
        for (std::size_t c = 0; c < frame_classes; ++c) {
            while (block* b = heads[c]) {
                heads[c] = b->next;
                frame_free(static_cast<void*>(b), class_bytes(c));
                ++count;
            }
        }
        held_bytes = 0;
        return count;
    }

    /// The number of blocks held.
    std::size_t held() const noexcept {
        std::size_t count = 0;
        for (const block* head : heads) {
            for (const block* b = head; b; b = b->next) ++count;
        }
        return count;
    }

private:
    void keep(void* p, std::size_t c) noexcept {
        auto* b = static_cast<block*>(p);
        b->next = heads[c];
        heads[c] = b;
        held_bytes += class_bytes(c);
    }

    // `deallocate` when the cache does not simply keep the block.
    [[gnu::noinline]] void deallocate_slow(void* p, std::size_t n) noexcept {
        if (n == 0 || n > frame_cache_largest) {
            frame_free(p, n);
            return;
        }
        const std::size_t c = class_of(n);
        if (status == state::unused && held_bytes + class_bytes(c) <= frame_cache_budget &&
            register_reaper()) {
            keep(p, c);
            return;
        }
        frame_free(p, class_bytes(c));
    }

    // Out of line: see the definition below.
    bool register_reaper() noexcept;
};

/// The calling thread's frame cache. Read only inside the accessors below, inlined only where
/// that is sound (see detail/thread_local.hpp: a frame may be freed on another thread than the
/// one where the coroutine that frees it started).
inline constinit thread_local frame_cache this_thread_frame_cache_storage{};

/// The calling thread's frame cache, out of line.
[[gnu::noinline]] inline frame_cache& this_thread_frame_cache() noexcept {
    return *opaque_address(&this_thread_frame_cache_storage);
}

/// Gives the thread's cached blocks back when the thread exits. Its destructor runs among the
/// thread's other thread-local destructors; frames freed by those that run later go straight
/// to the global allocator (the cache is then `gone`).
struct frame_cache_reaper {
    frame_cache_reaper() noexcept { this_thread_frame_cache().status = frame_cache::state::live; }
    ~frame_cache_reaper() {
        frame_cache& cache = this_thread_frame_cache();
        cache.status = frame_cache::state::gone;
        frame_cache_blocks_released.fetch_add(cache.release(), std::memory_order_relaxed);
    }
};

[[gnu::noinline]] inline bool frame_cache::register_reaper() noexcept {
    // Only the thread's own cache registers (a cache made elsewhere, as in tests, stays
    // unregistered and gives its blocks back itself).
    if (this != &this_thread_frame_cache()) return false;
    static thread_local frame_cache_reaper reaper;
    (void)reaper;
    return status == state::live;
}

/// Allocates a coroutine frame of `n` bytes: from the thread's cache when recycling is on.
CONFLUX_DETAIL_THREAD_LOCAL_ACCESSOR inline void* frame_allocate(std::size_t n) {
    if constexpr (frame_recycling) {
        return hot_thread_local(&this_thread_frame_cache_storage)->allocate(n);
    } else {
        return ::operator new(n);
    }
}

/// Frees a frame of `n` bytes allocated by `frame_allocate`, on any thread.
CONFLUX_DETAIL_THREAD_LOCAL_ACCESSOR inline void frame_deallocate(void* p, std::size_t n) noexcept {
    if constexpr (frame_recycling) {
        hot_thread_local(&this_thread_frame_cache_storage)->deallocate(p, n);
    } else {
        frame_free(p, n);
    }
}

} // namespace conflux::detail
