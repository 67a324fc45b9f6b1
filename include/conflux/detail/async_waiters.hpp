#pragma once

#include <conflux/detail/doorbell_watcher.hpp>
#include <conflux/detail/futex.hpp>
#include <conflux/detail/memfd.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <memory>
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
    std::size_t operator()(const memfd_mapping::file_identity& f) const noexcept {
        std::uint64_t h = f.inode * 0x9E3779B97F4A7C15ull;
        h ^= f.device + 0x7F4A7C159E3779B9ull + (h << 6) + (h >> 2);
        return static_cast<std::size_t>(h);
    }
    std::size_t operator()(const wait_key& k) const noexcept {
        std::uint64_t h = (*this)(k.file);
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
    /// Called by `notify` (or by the doorbell watcher), under the registry lock, on the
    /// notifying thread, for a node it has just unlinked; must only queue work (it may not
    /// block or resume anything).
    void (*on_notified)(async_waiter_node*) noexcept = nullptr;
    /// Whether the element still holds the expected value (read seq_cst).
    bool (*unchanged)(const async_waiter_node*) noexcept = nullptr;
    /// The memory's count of async waiters in every process (`memfd_mapping::wake_words`),
    /// or null when the memory has none (then only this process's notify wakes the node).
    std::uint32_t* shared_count = nullptr;
};

// Across processes. A coroutine cannot sleep in the kernel's futex queue, so a notify made in
// another process reaches this process's async waiters through a doorbell: each shared_buffer
// carries two words in its shared memory, `async_waiters` (pending wait_async of all
// processes on the buffer) and `doorbell`. The protocol, for a waiter W in process B and a
// `store` + `notify` by process A on the same element:
//
//   B, link (under the registry lock):  async_waiters += 1 (seq_cst);  read element == expected?
//   A, notify:                          (store was seq_cst) ... read async_waiters (seq_cst);
//                                       if it counts waiters beyond A's own on this buffer:
//                                       doorbell += 1 (seq_cst); FUTEX_WAKE(doorbell, all)
//   B's watcher thread, each turn:      s = read doorbell (seq_cst); for the buffers whose
//                                       doorbell moved: resume every waiter whose element no
//                                       longer holds its expected value; sleep while doorbell == s
//
// Store-buffering on (element, async_waiters) is ruled out by seq_cst: either B's read sees
// A's store (W completes `not_equal` and never links) or A's read sees B's increment (A
// rings). A ring after the watcher's snapshot fails its futex compare or wakes it; a ring
// before it is followed by the watcher's scan, which (the ring being after A's store) sees
// the new value — and the scan takes the registry lock, so it also sees W linked: W's check
// happened before A's store, which happened before the ring and the scan. So a notify that
// follows a store W could not see always resumes W. A `notify` with no store (the element
// unchanged) does not resume a waiter of another process; nor does its count cover them.
//
// "Beyond A's own": A reads its own count of waiters on the buffer under the registry lock,
// where links and unlinks change both counts together, so the difference is exact; a process
// whose waiters are all its own never rings, and notify in a process with no async waiter at
// all pays one load of `async_waiters` (and, rarely, a ring).

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

    /// Appends `node` under its key if `node->unchanged(node)` (evaluated under the lock, so
    /// that a notify cannot slip between the value check and the enqueue) returns true. With
    /// `node->shared_count`, the node is also counted there and `owner`'s doorbell watched.
    /// Throws `std::bad_alloc`, or `std::system_error` when the watcher thread cannot start;
    /// nothing is left linked or counted then.
    bool link(async_waiter_node* node, const std::shared_ptr<memfd_mapping>& owner) {
        std::lock_guard lock(m_mutex);
        // seq_cst, before the value check: a notifier that finds the count zero and skips the
        // lock stored its value earlier in the total order, so the check below sees it. The
        // same holds for the shared count and a notifier in another process.
        m_waiting.fetch_add(1, std::memory_order_seq_cst);
        if (node->shared_count) {
            std::atomic_ref<std::uint32_t>(*node->shared_count)
                .fetch_add(1, std::memory_order_seq_cst);
        }
        auto undo = [&] {
            if (node->shared_count) {
                std::atomic_ref<std::uint32_t>(*node->shared_count)
                    .fetch_sub(1, std::memory_order_seq_cst);
            }
            m_waiting.fetch_sub(1, std::memory_order_relaxed);
        };
        if (!node->unchanged(node)) {
            undo();
            return false;
        }
        list* found = nullptr;
        std::size_t* own = nullptr;
        try {
            found = &m_lists[node->key];
            if (node->shared_count) {
                own = &m_own[node->key.file];
                doorbell_watcher::instance().watch(owner, &on_ring);
            }
        } catch (...) {
            if (found && !found->head) m_lists.erase(node->key);
            if (own && *own == 0) m_own.erase(node->key.file);
            undo();
            throw;
        }
        if (own) ++*own;
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
        uncount(node);
        if (!l.head) m_lists.erase(it);
        return true;
    }

    /// Wakes up to `count` waiters on `key`, oldest first, and returns how many; then, when
    /// `wake` (the memory's shared words, or null) counts async waiters of other processes,
    /// rings its doorbell for them (see the protocol above; they are not counted).
    std::size_t notify(const wait_key& key, std::size_t count,
                       memfd_mapping::wake_words* wake) noexcept {
        if (count == 0) return 0;
        // seq_cst: pairs with the increments in link (see there).
        if (m_waiting.load(std::memory_order_seq_cst) == 0) {
            if (wake && shared_count_of(wake) != 0) ring(wake);
            return 0;
        }
        std::size_t n = 0;
        bool others = false;
        {
            std::lock_guard lock(m_mutex);
            auto it = m_lists.find(key);
            if (it != m_lists.end()) {
                list& l = it->second;
                while (l.head && n < count) {
                    async_waiter_node* node = l.head;
                    l.head = node->next;
                    if (l.head) l.head->prev = nullptr;
                    node->linked = false;
                    uncount(node);
                    // Under the lock: a waiter whose frame is being destroyed (its loop is
                    // going away) unlinks under this lock too, so it cannot vanish while we
                    // queue its resumption. The callback only queues a work item; no
                    // coroutine runs here.
                    node->on_notified(node);
                    ++n;
                }
                if (!l.head) {
                    l.tail = nullptr;
                    m_lists.erase(it);
                }
            }
            if (wake) {
                const auto own = m_own.find(key.file);
                others = shared_count_of(wake) > (own == m_own.end() ? 0 : own->second);
            }
        }
        if (others) ring(wake); // outside the lock: a system call
        return n;
    }

    /// Resumes (as notified) every waiter of this process on `file` whose element no longer
    /// holds its expected value: the doorbell watcher's answer to a ring.
    void scan(const memfd_mapping::file_identity& file) noexcept {
        std::lock_guard lock(m_mutex);
        if (m_own.find(file) == m_own.end()) return;
        for (auto it = m_lists.begin(); it != m_lists.end();) {
            if (!(it->first.file == file)) {
                ++it;
                continue;
            }
            list& l = it->second;
            for (async_waiter_node* node = l.head; node != nullptr;) {
                async_waiter_node* next = node->next;
                if (!node->unchanged(node)) {
                    (node->prev ? node->prev->next : l.head) = node->next;
                    (node->next ? node->next->prev : l.tail) = node->prev;
                    node->linked = false;
                    uncount(node);
                    node->on_notified(node);
                }
                node = next;
            }
            it = l.head ? std::next(it) : m_lists.erase(it);
        }
    }

    /// Async waiters currently linked (all keys).
    std::size_t waiting() const noexcept { return m_waiting.load(std::memory_order_relaxed); }

private:
    static std::uint32_t shared_count_of(memfd_mapping::wake_words* wake) noexcept {
        return std::atomic_ref<std::uint32_t>(wake->async_waiters).load(std::memory_order_seq_cst);
    }

    static void ring(memfd_mapping::wake_words* wake) noexcept {
        // seq_cst: after the notifier's store in the total order, so a watcher that sees the
        // new doorbell value also sees the store.
        std::atomic_ref<std::uint32_t>(wake->doorbell).fetch_add(1, std::memory_order_seq_cst);
        futex::wake_all(&wake->doorbell, false);
    }

    static void on_ring(const memfd_mapping& mapping) noexcept {
        instance().scan(mapping.file_id());
    }

    // A node leaving the lists (under the lock).
    void uncount(async_waiter_node* node) noexcept {
        m_waiting.fetch_sub(1, std::memory_order_relaxed);
        if (!node->shared_count) return;
        std::atomic_ref<std::uint32_t>(*node->shared_count).fetch_sub(1, std::memory_order_seq_cst);
        const auto own = m_own.find(node->key.file);
        if (--own->second == 0) m_own.erase(own);
    }

    struct list {
        async_waiter_node* head = nullptr;
        async_waiter_node* tail = nullptr;
    };

    std::mutex m_mutex;
    std::atomic<std::size_t> m_waiting{0};
    std::unordered_map<wait_key, list, wait_key_hash> m_lists;
    // This process's linked waiters per memory with shared words: its share of their count.
    std::unordered_map<memfd_mapping::file_identity, std::size_t, wait_key_hash> m_own;
};

} // namespace conflux::detail
