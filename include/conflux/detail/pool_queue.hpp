#pragma once

#include <conflux/detail/work_item.hpp>

#include <cstddef>
#include <cstring>
#include <memory>
#include <new>
#include <type_traits>

namespace conflux::detail {

/// One entry of a thread_pool's queue: a small trivially copyable callable stored by value,
/// or an intrusive work item (a coroutine resumption, a heap-held callable) by address.
///
/// A trivially copyable callable is copied into the cell, and out of it again by the thread
/// that pops it, so that a post needs no allocation of its own and a cell is free again as
/// soon as it is popped: nothing of it is touched while the callable runs.
struct pool_cell {
    static constexpr std::size_t payload_size = 3 * sizeof(void*);

    /// Runs what `payload` holds.
    void (*call)(void* payload) noexcept = nullptr;
    alignas(void*) unsigned char payload[payload_size];

    /// True for callables that a cell holds by value.
    template <class F>
    static constexpr bool
        fits = std::is_trivially_copyable_v<F>&& std::is_trivially_destructible_v<F> &&
               sizeof(F) <= payload_size && alignof(F) <= alignof(void*);

    template <class F>
    static void call_inline(void* payload) noexcept {
        // The bytes were copied from an F (trivially copyable): they are an F here too. A
        // posted callable has nowhere to report an exception; escaping it terminates.
        (*std::launder(reinterpret_cast<F*>(payload)))();
    }

    static void call_item(void* payload) noexcept {
        work_item* item;
        std::memcpy(&item, payload, sizeof item);
        resume_item::run(item);
    }

    /// Runs the cell's content. Coroutine resumptions skip the indirect call through `call`.
    void run() noexcept {
        if (call == &call_item) {
            work_item* item;
            std::memcpy(&item, payload, sizeof item);
            resume_item::run(item);
        } else {
            call(payload);
        }
    }

    /// Lets go of the content without running it. Only intrusive items own anything.
    void discard() noexcept {
        if (call == &call_item) {
            work_item* item;
            std::memcpy(&item, payload, sizeof item);
            item->discard();
        }
    }
};

/// Single-threaded FIFO of pool cells in linked blocks of a page, written and read in order
/// like a ring. One emptied block is kept for reuse, so a queue that does not grow past a
/// block allocates nothing in its steady state. The caller serialises every call.
class pool_queue {
public:
    pool_queue() noexcept = default;
    pool_queue(const pool_queue&) = delete;
    pool_queue& operator=(const pool_queue&) = delete;

    ~pool_queue() {
        for (block* b = m_head; b != nullptr;) b = release(b);
        release(m_spare);
    }

    bool empty() const noexcept {
        return m_head == nullptr || (m_head == m_tail && m_read == m_write);
    }

    /// Appends a copy of `f`. False, with the queue unchanged, when a new block is needed
    /// and cannot be had.
    template <class F>
    bool push_inline(const F& f) noexcept {
        static_assert(pool_cell::fits<F>);
        pool_cell* cell = next_free();
        if (cell == nullptr) return false;
        std::memcpy(cell->payload, std::addressof(f), sizeof(F));
        cell->call = &pool_cell::call_inline<F>;
        ++m_write;
        ++m_size;
        return true;
    }

    /// Appends an intrusive item. False, with the queue unchanged, when a new block is needed
    /// and cannot be had.
    bool push_item(work_item* item) noexcept {
        pool_cell* cell = next_free();
        if (cell == nullptr) return false;
        std::memcpy(cell->payload, &item, sizeof item);
        cell->call = &pool_cell::call_item;
        ++m_write;
        ++m_size;
        return true;
    }

    /// Moves the oldest cell into `out`; false when empty. The cell is free again at once.
    /// A block emptied by this is returned to keep or to hand to the caller to delete
    /// outside its lock (`retired`, else nullptr).
    bool pop(pool_cell& out, void*& retired) noexcept {
        retired = nullptr;
        if (empty()) return false;
        if (m_read == cells_per_block) {
            block* done = m_head;
            m_head = done->next;
            m_read = 0;
            retired = keep_or_retire(done);
        }
        std::memcpy(&out, &m_head->cells[m_read++], sizeof out);
        --m_size;
        return true;
    }

    /// Moves up to `max` of the oldest cells into `out` , and returns how many.
    /// The last block this emptied is returned as by `pop`.
    std::size_t pop_some(pool_cell* out, std::size_t max, void*& retired) noexcept {
        retired = nullptr;
        std::size_t n = 0;
        while (n < max && !empty()) {
            void* r;
            pop(out[n], r);
            if (r != nullptr) {
                delete_retired(retired);
                retired = r;
            }
            ++n;
        }
        return n;
    }

    std::size_t size() const noexcept { return m_size; }

    /// Deletes a block that `pop` retired.
    static void delete_retired(void* retired) noexcept { delete static_cast<block*>(retired); }

    void discard_all() noexcept {
        pool_cell cell;
        void* retired;
        while (pop(cell, retired)) {
            delete_retired(retired);
            cell.discard();
        }
    }

private:
    // About a page: the block's cells and its link.
    static constexpr std::size_t cells_per_block = (4096 - sizeof(void*)) / sizeof(pool_cell);

    struct block {
        pool_cell cells[cells_per_block];
        block* next = nullptr;
    };

    // The cell to fill next, or nullptr if a block was needed and none could be had.
    // `m_write` counts the cells written into the tail block.
    pool_cell* next_free() noexcept {
        if (m_head == m_tail && m_read == m_write) {
            // Empty: the one block starts over, so a queue that keeps emptying stays in it.
            m_read = m_write = 0;
        }
        if (m_head == nullptr) {
            block* b = take_block();
            if (b == nullptr) return nullptr;
            m_head = m_tail = b;
            m_read = m_write = 0;
        } else if (m_write == cells_per_block) {
            block* b = take_block();
            if (b == nullptr) return nullptr;
            m_tail->next = b;
            m_tail = b;
            m_write = 0;
        }
        return &m_tail->cells[m_write];
    }

    block* take_block() noexcept {
        block* b = m_spare;
        if (b != nullptr) {
            m_spare = nullptr;
        } else {
            b = new (std::nothrow) block;
            if (b == nullptr) return nullptr;
        }
        b->next = nullptr;
        return b;
    }

    block* keep_or_retire(block* b) noexcept {
        if (m_spare == nullptr) {
            m_spare = b;
            return nullptr;
        }
        return b;
    }

    static block* release(block* b) noexcept {
        if (b == nullptr) return nullptr;
        block* next = b->next;
        delete b;
        return next;
    }

    block* m_head = nullptr;
    block* m_tail = nullptr;
    block* m_spare = nullptr;
    std::size_t m_read = 0;  // cells read from the head block
    std::size_t m_write = 0; // cells written into the tail block
    std::size_t m_size = 0;
};

} // namespace conflux::detail
