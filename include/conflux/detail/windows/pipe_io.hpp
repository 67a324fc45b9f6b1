#pragma once

// The parent's end of a pipe to a child on Windows: an overlapped handle associated with the
// loop's completion port, one read and one write in flight at most. The operations read
// into and write from buffers of their own, so that a read or write still in the kernel when
// its coroutine goes away (its loop being destroyed) never touches freed memory; the
// control block outlives its owner until the last completion packet has come back.

#include <conflux/detail/windows/iocp.hpp>
#include <conflux/detail/windows/win32.hpp>

#include <algorithm>
#include <cstddef>
#include <cstring>
#include <memory>
#include <string_view>

namespace conflux::detail {

/// How a write is made; pipes have one kind on Windows (sockets are not supported there yet).
enum class write_kind : unsigned char { any, socket };

class overlapped_pipe {
public:
    /// Bytes one read or one write moves at most.
    static constexpr std::size_t buffer_size = 64 * 1024;

    /// One direction's operation: pending from its start until its packet came back.
    struct operation : iocp_operation {
        overlapped_pipe* pipe = nullptr;
        bool pending = false;
        DWORD bytes = 0;
        DWORD error = 0;
        /// Called on the loop's thread when the packet comes back, unless cleared.
        void (*notify)(void* context) noexcept = nullptr;
        void* context = nullptr;
        std::unique_ptr<char[]> buffer;
    };

    /// Takes `handle` (opened with FILE_FLAG_OVERLAPPED) and associates it with `reactor`'s
    /// port. On failure the handle is closed and `std::system_error` names `name`.
    static overlapped_pipe* adopt(HANDLE handle, iocp_reactor& reactor, std::string_view name) {
        std::unique_ptr<overlapped_pipe> p;
        try {
            p.reset(new overlapped_pipe(handle));
            reactor.associate(handle, name);
        } catch (...) {
            ::CloseHandle(handle);
            throw;
        }
        return p.release();
    }

    HANDLE handle() const noexcept { return m_handle; }
    operation& reader() noexcept { return m_read; }
    operation& writer() noexcept { return m_write; }

    /// Starts a read of up to `size` bytes. False when it failed at once (`error` says why;
    /// no packet will come).
    bool start_read(std::size_t size) {
        prepare(m_read);
        const DWORD n = static_cast<DWORD>(std::min(size, buffer_size));
        return issue(m_read,
                     ::ReadFile(m_handle, m_read.buffer.get(), n, nullptr, &m_read.overlapped));
    }

    /// Starts a write of the first (up to buffer_size) bytes of `data`, copied first.
    bool start_write(const void* data, std::size_t size) {
        prepare(m_write);
        const std::size_t n = std::min(size, buffer_size);
        std::memcpy(m_write.buffer.get(), data, n);
        return issue(m_write, ::WriteFile(m_handle, m_write.buffer.get(), static_cast<DWORD>(n),
                                          nullptr, &m_write.overlapped));
    }

    /// Asks the system to end `op` early; its packet still comes (with
    /// ERROR_OPERATION_ABORTED, or with the bytes if it had finished). Any thread.
    void cancel(operation& op) noexcept { ::CancelIoEx(m_handle, &op.overlapped); }

    /// The owner lets go: the handle is closed, which ends what is still in flight, and the
    /// block is freed now or when the last packet comes back.
    void release() noexcept {
        if (m_read.pending) cancel(m_read);
        if (m_write.pending) cancel(m_write);
        m_read.notify = nullptr;
        m_write.notify = nullptr;
        ::CloseHandle(m_handle);
        m_released = true;
        if (!m_read.pending && !m_write.pending) delete this;
    }

private:
    explicit overlapped_pipe(HANDLE handle) noexcept : m_handle(handle) {
        for (operation* op : {&m_read, &m_write}) {
            op->pipe = this;
            op->on_complete = &completed;
        }
    }
    overlapped_pipe(const overlapped_pipe&) = delete;
    overlapped_pipe& operator=(const overlapped_pipe&) = delete;

    void prepare(operation& op) {
        if (!op.buffer) op.buffer = std::make_unique_for_overwrite<char[]>(buffer_size);
        op.overlapped = OVERLAPPED{};
        op.bytes = 0;
        op.error = 0;
    }

    // Without FILE_SKIP_COMPLETION_PORT_ON_SUCCESS a packet comes for an operation that
    // finished at once as well as for a pending one: both wait for it.
    static bool issue(operation& op, BOOL ok) noexcept {
        if (ok || ::GetLastError() == ERROR_IO_PENDING) {
            op.pending = true;
            return true;
        }
        op.error = ::GetLastError();
        return false;
    }

    static void completed(iocp_operation* base, DWORD bytes) noexcept {
        auto* op = static_cast<operation*>(base);
        overlapped_pipe* self = op->pipe;
        op->pending = false;
        op->bytes = bytes;
        // Not waiting: the status is already in the OVERLAPPED, the handle is not used.
        DWORD n = 0;
        op->error = ::GetOverlappedResult(self->m_handle, &op->overlapped, &n, FALSE)
                        ? 0
                        : ::GetLastError();
        if (self->m_released) {
            if (!self->m_read.pending && !self->m_write.pending) delete self;
            return;
        }
        if (op->notify != nullptr) op->notify(op->context);
    }

    HANDLE m_handle;
    operation m_read;
    operation m_write;
    bool m_released = false;
};

} // namespace conflux::detail
