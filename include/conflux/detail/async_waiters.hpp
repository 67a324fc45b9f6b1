#pragma once

#include <conflux/detail/memfd.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <unordered_map>

namespace conflux::detail {

/// The memory an async waiter waits on: the file and the byte offset in it, so that two
/// mappings of the same memfd in one process meet at the same key (as futexes do).
struct wait_key {
    memfd_mapping::file_identity file;
    std::uint64_t offset = 0;
    friend bool operator==(const wait_key&, const wait_key&) = default;
};

struct wait_key_hash {
    std::size_t operator()(const wait_key& k) const noexcept {
        std::uint64_t h = k.file.inode * 0x9E3779B97F4A7C15ull;
        h ^= k.file.device + 0x7F4A7C159E3779B9ull + (h << 6) + (h >> 2);
        h ^= k.offset + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2);
        return static_cast<std::size_t>(h);
    }
};

/// A `wait_async` in progress, linked into the registry while it waits. Whoever unlinks it
/// (a notify, its timer, its stop token) owns its completion; nobody else touches it after.
struct async_waiter_node {
    async_waiter_node* prev = nullptr;
    async_waiter_node* next = nullptr;
    wait_key key;
    bool linked = false;
    /// Called by `notify`, under the registry lock, on the notifying thread, for a node it
    /// has just unlinked; must only queue work (it may not block or resume anything).
    void (*on_notified)(async_waiter_node*) noexcept = nullptr;
};

/// The process-wide FIFO lists of async waiters, by key, that `atomic_view::notify` wakes
/// (in-process counterpart of the kernel's futex queues, which coroutines cannot sleep in).
class async_wait_registry {
public:
    /// The registry; never destroyed, so a waiter torn down during static destruction still
    /// finds it.
    static async_wait_registry& instance() {
        static async_wait_registry* registry = new async_wait_registry;
        return *registry;
    }

    /// Appends `node` under its key if `still_equal()` (evaluated under the lock, so that a
    /// notify cannot slip between the value check and the enqueue) returns true.
    template <class Check>
    bool link(async_waiter_node* node, Check&& still_equal) {
        std::lock_guard lock(m_mutex);
        // seq_cst, before the value check: a notifier that finds the count zero and skips the
        // lock stored its value earlier in the total order, so the check below sees it.
        m_waiting.fetch_add(1, std::memory_order_seq_cst);
        if (!still_equal()) {
            m_waiting.fetch_sub(1, std::memory_order_relaxed);
            return false;
        }
        list* found = nullptr;
        try {
            found = &m_lists[node->key];
        } catch (...) {
            m_waiting.fetch_sub(1, std::memory_order_relaxed);
            throw;
        }
        list& l = *found;
        node->prev = l.tail;
        node->next = nullptr;
        (l.tail ? l.tail->next : l.head) = node;
        l.tail = node;
        node->linked = true;
        return true;
    }

    /// Removes `node` if it is still linked; true when this call took it (and so owns its
    /// completion).
    bool unlink(async_waiter_node* node) noexcept {
        std::lock_guard lock(m_mutex);
        if (!node->linked) return false;
        auto it = m_lists.find(node->key);
        list& l = it->second;
        (node->prev ? node->prev->next : l.head) = node->next;
        (node->next ? node->next->prev : l.tail) = node->prev;
        node->linked = false;
        m_waiting.fetch_sub(1, std::memory_order_relaxed);
        if (!l.head) m_lists.erase(it);
        return true;
    }

    /// Wakes up to `count` waiters on `key`, oldest first; returns how many.
    std::size_t notify(const wait_key& key, std::size_t count) noexcept {
        // seq_cst: pairs with the increment in link (see there).
        if (count == 0 || m_waiting.load(std::memory_order_seq_cst) == 0) return 0;
        std::size_t n = 0;
        std::lock_guard lock(m_mutex);
        auto it = m_lists.find(key);
        if (it == m_lists.end()) return 0;
        list& l = it->second;
        while (l.head && n < count) {
            async_waiter_node* node = l.head;
            l.head = node->next;
            if (l.head) l.head->prev = nullptr;
            node->linked = false;
            // Under the lock: a waiter whose frame is being destroyed (its loop is going away)
            // unlinks under this lock too, so it cannot vanish while we queue its resumption.
            // The callback only queues a work item; no coroutine runs here.
            node->on_notified(node);
            ++n;
        }
        if (!l.head) {
            l.tail = nullptr;
            m_lists.erase(it);
        }
        m_waiting.fetch_sub(n, std::memory_order_relaxed);
        return n;
    }

    /// Async waiters currently linked (all keys).
    std::size_t waiting() const noexcept { return m_waiting.load(std::memory_order_relaxed); }

private:
    struct list {
        async_waiter_node* head = nullptr;
        async_waiter_node* tail = nullptr;
    };

    std::mutex m_mutex;
    std::atomic<std::size_t> m_waiting{0};
    std::unordered_map<wait_key, list, wait_key_hash> m_lists;
};

} // namespace conflux::detail
