#pragma once

// A running child on Windows: its exit delivered to the loop's completion port without a
// thread per child (RegisterWaitForSingleObject: the system's thread pool waits on many
// handles per thread and posts one packet when the process ends), and the ways to end it
// (TerminateProcess; TerminateJobObject for the whole tree).

#include <conflux/detail/windows/iocp.hpp>
#include <conflux/detail/windows/win32.hpp>

#include <atomic>
#include <mutex>
#include <optional>
#include <vector>

namespace conflux::detail {

/// Watches one process handle; `on_exit(context)` runs on the loop's thread when the packet
/// comes. Owned by the child's state until `stop`; freed by `stop` or, when the packet is
/// already on its way, by the packet.
class exit_watch : private iocp_operation {
public:
    using callback = void (*)(void* context) noexcept;

    /// Starts the wait; throws `std::system_error` when the thread pool refuses it.
    static exit_watch* start(HANDLE process, HANDLE port, callback on_exit, void* context) {
        auto* w = new exit_watch(port, on_exit, context);
        if (!::RegisterWaitForSingleObject(&w->m_wait, process, &signalled, w, INFINITE,
                                           WT_EXECUTEONLYONCE | WT_EXECUTEINWAITTHREAD)) {
            delete w;
            throw_last_error("RegisterWaitForSingleObject");
        }
        return w;
    }

    /// The owner goes: no callback after this returns. Blocks only while the pool's thread is
    /// inside `signalled` (a post to the port).
    void stop() noexcept {
        ::UnregisterWaitEx(m_wait, INVALID_HANDLE_VALUE);
        m_on_exit = nullptr;
        // acquire: pairs with the release in `signalled`; a packet posted is still to come
        // unless it already came (then `m_delivered`), and it frees this.
        if (m_posted.load(std::memory_order_acquire) && !m_delivered) return;
        delete this;
    }

private:
    exit_watch(HANDLE port, callback on_exit, void* context) noexcept
        : m_port(port), m_on_exit(on_exit), m_context(context) {
        on_complete = &completed;
    }

    // On a thread of the system's pool.
    static void CALLBACK signalled(void* self, BOOLEAN) {
        auto* w = static_cast<exit_watch*>(self);
        w->m_posted.store(true, std::memory_order_release);
        if (!iocp_reactor::post(w->m_port, w)) w->m_posted.store(false, std::memory_order_release);
    }

    // On the loop's thread.
    static void completed(iocp_operation* op, DWORD) noexcept {
        auto* w = static_cast<exit_watch*>(op);
        w->m_delivered = true;
        if (w->m_on_exit == nullptr) {
            delete w; // the owner stopped before the packet came
            return;
        }
        w->m_on_exit(w->m_context);
    }

    HANDLE m_port;
    HANDLE m_wait = nullptr;
    callback m_on_exit;
    void* m_context;
    std::atomic<bool> m_posted{false};
    bool m_delivered = false;
};

/// The exit code of an ended process, or empty while it runs.
inline std::optional<DWORD> process_exit_code(HANDLE process) noexcept {
    if (::WaitForSingleObject(process, 0) != WAIT_OBJECT_0) return std::nullopt;
    DWORD code = 0;
    if (!::GetExitCodeProcess(process, &code)) return std::nullopt;
    return code;
}

/// Ends `process` with exit code `code`; 0 or the error (ERROR_ACCESS_DENIED once it ended).
inline DWORD terminate_process(HANDLE process, unsigned code) noexcept {
    return ::TerminateProcess(process, code) ? 0 : ::GetLastError();
}

/// Ends every process of `job`; 0 or the error.
inline DWORD terminate_job(HANDLE job, unsigned code) noexcept {
    return ::TerminateJobObject(job, code) ? 0 : ::GetLastError();
}

/// Closes a handle (the process or job handles a child's state keeps).
inline void close_handle(HANDLE h) noexcept {
    if (h != nullptr) ::CloseHandle(h);
}

/// Blocks until `process` has ended (after a kill: short).
inline void wait_for_process(HANDLE process) noexcept { ::WaitForSingleObject(process, INFINITE); }

/// How many processes `job` still holds (0 when it cannot be asked).
inline DWORD job_active_processes(HANDLE job) noexcept {
    JOBOBJECT_BASIC_ACCOUNTING_INFORMATION info{};
    if (!::QueryInformationJobObject(job, JobObjectBasicAccountingInformation, &info, sizeof info,
                                     nullptr)) {
        return 0;
    }
    return info.ActiveProcesses;
}

/// Jobs let go of while processes of theirs still run (a child left running, or descendants
/// of an exited one without kill_tree): closing the last handle of a job with
/// KILL_ON_JOB_CLOSE would kill them, so they are kept open until they are empty (checked at
/// every spawn) or this process ends, which then kills what is left (`cleanup`).
class kept_jobs {
public:
    static kept_jobs& instance() {
        static kept_jobs* jobs = new kept_jobs; // never destroyed: used until the very end
        return *jobs;
    }

    /// Takes `job`: closed now if it is empty, else kept.
    void keep(HANDLE job) noexcept {
        if (job_active_processes(job) == 0) {
            ::CloseHandle(job);
            return;
        }
        std::lock_guard<std::mutex> lock(m_mutex);
        try {
            m_jobs.push_back(job);
        } catch (...) {
            ::CloseHandle(job); // out of memory: what it holds dies now instead
        }
    }

    /// Closes the kept jobs that have become empty.
    void close_empty() noexcept {
        std::lock_guard<std::mutex> lock(m_mutex);
        std::erase_if(m_jobs, [](HANDLE job) {
            if (job_active_processes(job) != 0) return false;
            ::CloseHandle(job);
            return true;
        });
    }

private:
    std::mutex m_mutex;
    std::vector<HANDLE> m_jobs;
};

} // namespace conflux::detail
