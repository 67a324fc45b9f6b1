#pragma once

#include <conflux/detail/windows/win32.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string_view>

namespace conflux::detail {

/// An operation that completes through the loop's port: an overlapped read or write, or a
/// child's exit (posted by the thread pool's wait). The port hands the OVERLAPPED back, and
/// the loop calls `on_complete` on its own thread with the bytes transferred. The OVERLAPPED
/// is the first member, so the pointer the port returns is the operation's.
struct iocp_operation {
    OVERLAPPED overlapped{};
    void (*on_complete)(iocp_operation* op, DWORD bytes) noexcept = nullptr;
};

/// The Windows backend of the event loop: an I/O completion port, which other threads wake by
/// posting a packet to it. Overlapped reads and writes on handles associated with the port,
/// and the exits of children, complete on the same port as `iocp_operation`s.
class iocp_reactor {
public:
    /// Packets taken from the port per system call.
    static constexpr unsigned long max_events = 64;

    iocp_reactor() : m_port(::CreateIoCompletionPort(INVALID_HANDLE_VALUE, nullptr, 0, 1)) {
        if (m_port == nullptr) throw_last_error("CreateIoCompletionPort");
    }
    iocp_reactor(const iocp_reactor&) = delete;
    iocp_reactor& operator=(const iocp_reactor&) = delete;
    ~iocp_reactor() { ::CloseHandle(m_port); }

    /// Wakes a thread blocked in wait(). Thread-safe. Wake-ups that come before the loop took
    /// the last one off the port make one packet, as an eventfd counts them into one read.
    void wake() noexcept {
        // acq_rel: a wake after the loop took the packet (and cleared the flag) posts anew.
        if (m_wake_pending.exchange(true, std::memory_order_acq_rel)) return;
        // Fails only when the kernel is out of memory for the packet; the flag then stays set
        // and the loop wakes at its next timer. Nothing better can be done in a noexcept wake.
        ::PostQueuedCompletionStatus(m_port, 0, wake_key, nullptr);
    }

    /// Waits for packets up to `timeout` (none = forever), rounded up to whole milliseconds,
    /// the unit of the port's timeout. Returns the number of packets.
    template <class Rep, class Period>
    int wait(std::optional<std::chrono::duration<Rep, Period>> timeout) {
        using namespace std::chrono;
        DWORD ms = INFINITE;
        if (timeout) {
            const auto t = ceil<milliseconds>(*timeout).count();
            // INFINITE is 0xFFFFFFFF: cap below it, and wait again after a longer timeout.
            ms = t < 0 ? 0 : (t >= 0x7fffffff ? 0x7fffffff : static_cast<DWORD>(t));
        }
        OVERLAPPED_ENTRY entries[max_events];
        ULONG n = 0;
        if (!::GetQueuedCompletionStatusEx(m_port, entries, max_events, &n, ms, FALSE)) {
            const DWORD err = ::GetLastError();
            if (err == WAIT_TIMEOUT) return 0;
            throw_system_error(static_cast<int>(err), "GetQueuedCompletionStatusEx");
        }
        for (ULONG i = 0; i < n; ++i) {
            if (entries[i].lpCompletionKey == wake_key) {
                m_wake_pending.store(false, std::memory_order_release);
            } else if (entries[i].lpOverlapped != nullptr) {
                auto* op = reinterpret_cast<iocp_operation*>(entries[i].lpOverlapped);
                op->on_complete(op, entries[i].dwNumberOfBytesTransferred);
            }
        }
        return static_cast<int>(n);
    }

    /// Whether the loop must sleep in wait() rather than on a word (detail/loop_sleep.hpp):
    /// always, once the port exists. The loop makes it at the first use that completes on it
    /// (a pipe's overlapped I/O, a child's exit notice), and those completions reach only a
    /// thread that waits on the port; a loop with only timers and wake-ups never makes one.
    bool watching() const noexcept { return true; }

    /// The port, for I/O handles to be associated with.
    HANDLE port() const noexcept { return m_port; }

    /// Makes the overlapped operations on `handle` complete on this port.
    void associate(HANDLE handle, std::string_view name) {
        if (::CreateIoCompletionPort(handle, m_port, io_key, 0) == nullptr) {
            throw_last_error("CreateIoCompletionPort", name);
        }
    }

    /// Posts `op` to the port from any thread: the loop completes it with 0 bytes.
    bool post(iocp_operation* op) noexcept { return post(m_port, op); }
    static bool post(HANDLE port, iocp_operation* op) noexcept {
        return ::PostQueuedCompletionStatus(port, 0, io_key, &op->overlapped) != FALSE;
    }

private:
    static constexpr ULONG_PTR wake_key = 1;
    static constexpr ULONG_PTR io_key = 2;

    HANDLE m_port;
    std::atomic<bool> m_wake_pending{false};
};

} // namespace conflux::detail
