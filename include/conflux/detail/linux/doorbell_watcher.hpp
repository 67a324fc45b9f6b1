#pragma once

#include <conflux/detail/linux/futex.hpp>
#include <conflux/detail/linux/memfd.hpp>
#include <conflux/detail/posix/native_thread.hpp>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <list>
#include <memory>
#include <mutex>
#include <vector>

#include <pthread.h>

namespace conflux::detail {

/// The thread that lets a `notify` made in another process reach this process's
/// `wait_async` waiters: it sleeps on the doorbell word (`memfd_mapping::wake_words`) of every
/// mapping that has pending waiters, and when one rings it calls the handler with that
/// mapping (which resumes the waiters whose element moved; detail/async_waiters.hpp).
///
/// Started lazily by the first `watch`. With futex_waitv (Linux >= 5.16) one thread sleeps on
/// up to 127 doorbells plus a process-private control word (another thread for each further
/// 127, which a program needing them is unlikely to be); before 5.16 a futex wait takes one
/// word, so each watched file gets a thread of its own, which ends when the file's last
/// mapping in this process goes (memfd_mapping wakes it on unmapping).
///
/// The watcher keeps no mapping alive: an entry holds a weak reference, locked only while the
/// doorbell is read, so the memory goes when its last `shared_buffer` and `atomic_view` do
/// (pending waiters hold one). Stopped and joined at exit (atexit); a child made by fork()
/// starts afresh (pthread_atfork), since the parent's threads do not exist there.
class doorbell_watcher {
public:
    /// Called on the watcher's thread, with no lock of the watcher held.
    using ring_handler = void (*)(const memfd_mapping&) noexcept;

    static doorbell_watcher& instance() {
        static const bool registered = [] {
            ::pthread_atfork(nullptr, nullptr, [] { current() = new doorbell_watcher; });
            std::atexit([] { instance().stop(); });
            return true;
        }();
        (void)registered;
        return *current();
    }

    /// Makes sure `mapping`'s doorbell is watched, the handler being `on_ring`. The first
    /// ring is already covered: the watcher calls the handler once after it first reads the
    /// doorbell. Throws `std::system_error` if a thread is needed and cannot be started.
    /// Does nothing once the process is exiting.
    void watch(const std::shared_ptr<memfd_mapping>& mapping, ring_handler on_ring) {
        std::lock_guard lock(m_mutex);
        if (m_stopped || mapping->wake() == nullptr) return;
        m_on_ring = on_ring;
        reap_finished();
        group* room = nullptr;
        for (group& g : m_groups) {
            for (const entry& e : g.entries) {
                if (e.raw == mapping.get() && !e.owner.expired()) return;
            }
            if (!g.single && g.entries.size() < max_per_group()) room = &g;
        }
        if (room != nullptr) {
            room->entries.push_back(entry{mapping, mapping.get(), &mapping->wake()->doorbell});
            // The thread re-reads its entries: bump the control word it sleeps on, then wake.
            std::atomic_ref<std::uint32_t>(room->control).fetch_add(1, std::memory_order_seq_cst);
            futex::wake_all(&room->control, true);
            return;
        }
        m_groups.emplace_back();
        group& g = m_groups.back();
        g.single = futex::wait_any_capacity() < 2;
        g.entries.push_back(entry{mapping, mapping.get(), &mapping->wake()->doorbell});
        try {
            g.thread = native_thread([this, &g] { run(g); }, thread_options{"conflux-watch", 0});
        } catch (...) {
            m_groups.pop_back();
            throw;
        }
    }

    /// Ends and joins every watcher thread; later `watch` calls do nothing.
    void stop() noexcept {
        std::list<group> groups;
        {
            std::lock_guard lock(m_mutex);
            m_stopped = true;
            for (auto it = m_groups.begin(); it != m_groups.end();) {
                group& g = *it;
                if (!g.single) {
                    std::atomic_ref<std::uint32_t>(g.control).fetch_add(1);
                    futex::wake_all(&g.control, true);
                } else if (g.finished) {
                } else if (auto m = g.entries.front().owner.lock()) {
                    futex::wake_all(&m->wake()->doorbell, false);
                } else {
                    // Its memory is gone; the unmapping rang the doorbell, which ends the
                    // thread unless the address was mapped again, to a word that equals the
                    // old one, in the instant before it slept. Not waited for (the process
                    // is exiting), and its group stays allocated for it.
                    g.thread.detach();
                    ++it;
                    continue;
                }
                groups.splice(groups.end(), m_groups, it++);
            }
        }
        for (group& g : groups) g.thread.join();
    }

    /// Watcher threads running now (for tests).
    std::size_t threads() {
        std::lock_guard lock(m_mutex);
        reap_finished();
        return m_groups.size();
    }

private:
    struct entry {
        std::weak_ptr<memfd_mapping> owner;
        const memfd_mapping* raw;
        const std::uint32_t* doorbell;
        std::uint32_t seen = 0;
        bool fresh = true;
    };
    struct group {
        std::vector<entry> entries;
        std::uint32_t control = 0; // process-private futex (futex_waitv groups only)
        bool single = false;       // one doorbell, no control word (kernels before 5.16)
        bool finished = false;
        native_thread thread;
    };

    doorbell_watcher() = default;

    static doorbell_watcher*& current() noexcept {
        // Never destroyed (a waiter torn down during static destruction may still call in);
        // in a forked child replaced, the parent's copy possibly locked by a thread that is
        // not there.
        static doorbell_watcher* watcher = new doorbell_watcher;
        return watcher;
    }

    static std::size_t max_per_group() noexcept { return futex::wait_any_capacity() - 1; }

    void reap_finished() noexcept {
        for (auto it = m_groups.begin(); it != m_groups.end();) {
            if (it->finished) {
                it->thread.join();
                it = m_groups.erase(it);
            } else {
                ++it;
            }
        }
    }

    void run(group& g) noexcept {
        std::vector<futex::watch_entry> words;
        std::vector<std::shared_ptr<memfd_mapping>> to_scan;
        ring_handler on_ring = nullptr;
        for (;;) {
            words.clear();
            {
                std::lock_guard lock(m_mutex);
                if (m_stopped) return;
                on_ring = m_on_ring;
                if (!g.single) {
                    words.push_back(
                        {&g.control, std::atomic_ref<std::uint32_t>(g.control).load(), true});
                }
                for (auto it = g.entries.begin(); it != g.entries.end();) {
                    auto m = it->owner.lock();
                    if (!m) {
                        it = g.entries.erase(it);
                        continue;
                    }
                    // The snapshot comes before the handler reads any element (seq_cst both),
                    // so a ring after it either fails the futex compare or wakes the wait, and
                    // a ring before it is seen by the handler: no ring falls between.
                    const std::uint32_t now =
                        std::atomic_ref<std::uint32_t>(*const_cast<std::uint32_t*>(it->doorbell))
                            .load(std::memory_order_seq_cst);
                    if (it->fresh || now != it->seen) to_scan.push_back(std::move(m));
                    it->seen = now;
                    it->fresh = false;
                    words.push_back({it->doorbell, now, false});
                    ++it;
                }
                if (g.single && g.entries.empty()) {
                    g.finished = true; // joined by the next watch() or stop()
                    return;
                }
            }
            for (const auto& m : to_scan) on_ring(*m);
            // Release the memory before sleeping: a watcher must not keep it mapped. The
            // addresses may be unmapped while the thread sleeps (harmless to the kernel: the
            // futex is keyed by file) or before it sleeps (EFAULT: the entry is found expired
            // on the next turn).
            to_scan.clear();
            futex::wait_any(words.data(), words.size());
        }
    }

    std::mutex m_mutex;
    std::list<group> m_groups;
    ring_handler m_on_ring = nullptr;
    bool m_stopped = false;
};

} // namespace conflux::detail
