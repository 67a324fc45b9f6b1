#pragma once

#include <conflux/detail/epoll.hpp>
#include <conflux/detail/spin_wait.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

namespace conflux::detail {

/// The sleep of an event loop that has nothing to run, and its wake-up from other threads.
///
/// A loop that watches no descriptor sleeps on a word of its own (a futex on Linux): a
/// wake-up then costs one futex wake and the sleep one futex wait, where the reactor's costs
/// an eventfd write, an epoll_pwait2 and an eventfd read. A loop that watches descriptors
/// sleeps in its reactor, which wakes for them too. The choice is made at each sleep by the
/// loop's thread, which is the only one to register descriptors: no descriptor can be added
/// while the loop sleeps on the word, and the first sleep after one was added is the
/// reactor's. Both sleeps end at the loop's next timer.
///
/// The state word also tells a waker whether the loop sleeps at all: one that finds it awake
/// makes no system call.
class loop_sleep {
public:
    using deadline_t = std::optional<std::chrono::steady_clock::time_point>;

    /// On the loop's thread: announces the sleep, asks `more_work()` once more, and unless it
    /// says yes sleeps until `wake()`, `deadline` (none: no limit), a signal or a spurious
    /// wake-up. `reactor` is the loop's reactor if it has one (it is slept in, and dispatches
    /// its events, when it watches a descriptor). Throws what the reactor's wait throws.
    template <class MoreWork>
    void sleep(io_reactor* reactor, const deadline_t& deadline, MoreWork&& more_work) {
        const bool in_reactor = reactor != nullptr && reactor->watching();
        const std::uint32_t where = in_reactor ? asleep_in_reactor : asleep_on_word;
        std::optional<std::chrono::nanoseconds> timeout;
        if (in_reactor && deadline) timeout = *deadline - std::chrono::steady_clock::now();
        // relaxed: the seq_cst store below (a release) publishes it to the waker whose
        // exchange reads `asleep_in_reactor`.
        m_reactor.store(reactor, std::memory_order_relaxed);
        // A seq_cst store, then the re-check; wake() makes its work visible, then exchanges
        // (seq_cst). In the single order of the two, either the re-check sees the work or the
        // exchange sees the loop asleep and wakes it: no wake-up is lost.
        m_state.store(where, std::memory_order_seq_cst);
        if (more_work()) {
            m_state.store(awake, std::memory_order_relaxed);
            return;
        }
        struct wake_on_exit {
            std::atomic<std::uint32_t>& state;
            // relaxed: a waker that already exchanged has woken us (or will, harmlessly: the
            // next sleep then wakes once for nothing); one that comes after this store makes
            // no system call, and the loop finds its work before it sleeps again.
            ~wake_on_exit() { state.store(awake, std::memory_order_relaxed); }
        } guard{m_state};
        if (in_reactor) {
            reactor->wait(timeout);
        } else {
            futex_wait_private_until(m_state, where, deadline);
        }
    }

    /// From any thread, once the work the loop will look for (or a stop request) is visible:
    /// wakes the loop if it sleeps, with no system call if it does not. Thread-safe.
    void wake() noexcept {
        switch (m_state.exchange(awake, std::memory_order_seq_cst)) {
        case asleep_on_word:
            futex_wake_private(&m_state, 1);
            break;
        case asleep_in_reactor:
            m_reactor.load(std::memory_order_relaxed)->wake();
            break;
        default:
            break;
        }
    }

private:
    enum : std::uint32_t { awake, asleep_on_word, asleep_in_reactor };

    std::atomic<std::uint32_t> m_state{awake};
    // The reactor of the last sleep; never changes once the loop has one.
    std::atomic<io_reactor*> m_reactor{nullptr};
};

} // namespace conflux::detail
