#pragma once

#include <conflux/detail/work_item.hpp>

#include <atomic>

namespace conflux::detail {

/// Lock-free multi-producer, single-consumer queue of work items: producers push onto a
/// Treiber stack; the consumer takes the whole stack at once and reverses it into FIFO order.
class mpsc_stack {
public:
    /// Returns true when the stack was empty before this push.
    bool push(work_item* item) noexcept {
        work_item* head = m_head.load(std::memory_order_relaxed);
        do {
            item->next = head;
            // seq_cst: the event loop's sleep protocol pairs this push with its load of
            // `m_head` after announcing that it is going to sleep (a Dekker-style handshake).
        } while (!m_head.compare_exchange_weak(head, item, std::memory_order_seq_cst,
                                               std::memory_order_relaxed));
        return head == nullptr;
    }

    bool empty() const noexcept { return m_head.load(std::memory_order_seq_cst) == nullptr; }

    /// Drops every pushed item without touching it (the items' memory may be gone).
    void forget_all() noexcept { m_head.store(nullptr, std::memory_order_relaxed); }

    /// Moves everything pushed so far into `out`, oldest first.
    void take_into(work_queue& out) noexcept {
        // A plain load first: the loop calls this on every turn, and a locked exchange on an
        // empty queue would cost more than the work it guards.
        if (m_head.load(std::memory_order_relaxed) == nullptr) return;
        // acquire: see the items' contents written before their push.
        work_item* node = m_head.exchange(nullptr, std::memory_order_acquire);
        if (!node) return;
        work_item* reversed = nullptr;
        work_item* last = node;
        while (node) {
            work_item* next = node->next;
            node->next = reversed;
            reversed = node;
            node = next;
        }
        out.push_chain(reversed, last);
    }

private:
    std::atomic<work_item*> m_head{nullptr};
};

} // namespace conflux::detail
