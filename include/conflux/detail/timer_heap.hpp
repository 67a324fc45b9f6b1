#pragma once

#include <chrono>
#include <cstddef>
#include <vector>

namespace conflux::detail {

/// A timer registered with an event loop. Lives in its owner (usually an awaiter).
struct timer_entry {
    static constexpr std::size_t not_queued = static_cast<std::size_t>(-1);

    std::chrono::steady_clock::time_point deadline{};
    std::size_t heap_index = not_queued;
    /// Called on the loop's thread once the deadline has passed; the entry is already out of
    /// the heap.
    void (*fire)(timer_entry*) noexcept = nullptr;
    /// Whatever `fire` needs to find its owner.
    void* context = nullptr;

    bool queued() const noexcept { return heap_index != not_queued; }
};

/// Binary min-heap of timers by deadline. Each entry knows its slot, so removing a cancelled
/// timer is O(log n), and many pending timers stay cheap.
class timer_heap {
public:
    bool empty() const noexcept { return m_heap.empty(); }
    std::size_t size() const noexcept { return m_heap.size(); }
    timer_entry* top() const noexcept { return m_heap.front(); }

    void push(timer_entry* entry) {
        m_heap.push_back(entry);
        entry->heap_index = m_heap.size() - 1;
        sift_up(entry->heap_index);
    }

    void remove(timer_entry* entry) noexcept {
        if (!entry->queued()) return;
        std::size_t i = entry->heap_index;
        std::size_t last = m_heap.size() - 1;
        if (i != last) {
            place(i, m_heap[last]);
            m_heap.pop_back();
            sift_down(i);
            sift_up(i);
        } else {
            m_heap.pop_back();
        }
        entry->heap_index = timer_entry::not_queued;
    }

    timer_entry* pop() noexcept {
        timer_entry* first = m_heap.front();
        remove(first);
        return first;
    }

    /// Forgets every entry (marking each as not queued) without firing any.
    void clear() noexcept {
        for (timer_entry* e : m_heap) e->heap_index = timer_entry::not_queued;
        m_heap.clear();
    }

private:
    void place(std::size_t i, timer_entry* e) noexcept {
        m_heap[i] = e;
        e->heap_index = i;
    }

    void sift_up(std::size_t i) noexcept {
        timer_entry* e = m_heap[i];
        while (i > 0) {
            std::size_t parent = (i - 1) / 2;
            if (!(e->deadline < m_heap[parent]->deadline)) break;
            place(i, m_heap[parent]);
            i = parent;
        }
        place(i, e);
    }

    void sift_down(std::size_t i) noexcept {
        timer_entry* e = m_heap[i];
        const std::size_t n = m_heap.size();
        for (;;) {
            std::size_t child = 2 * i + 1;
            if (child >= n) break;
            if (child + 1 < n && m_heap[child + 1]->deadline < m_heap[child]->deadline) ++child;
            if (!(m_heap[child]->deadline < e->deadline)) break;
            place(i, m_heap[child]);
            i = child;
        }
        place(i, e);
    }

    std::vector<timer_entry*> m_heap;
};

} // namespace conflux::detail
