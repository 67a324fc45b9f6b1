#pragma once

#include <conflux/detail/windows/win32.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include <process.h>

namespace conflux::detail {

/// How to start a thread: its name (shown by debuggers and Process Explorer) and its stack
/// size (0: the executable's default, usually 1 MiB reserved).
struct thread_options {
    std::string name;
    std::size_t stack_size = 0;
};

/// Names the calling thread with SetThreadDescription (Windows 10 1607 and later; looked up
/// at run time so that older systems and Wine versions without it still run).
inline void set_thread_name(const std::string& name) noexcept {
    if (name.empty()) return;
    using set_fn = HRESULT(WINAPI*)(HANDLE, PCWSTR);
    static const set_fn set = [] {
        HMODULE kernel = ::GetModuleHandleW(L"kernel32.dll");
        FARPROC p = kernel ? ::GetProcAddress(kernel, "SetThreadDescription") : nullptr;
        // The cast through void* to a function pointer type is what GetProcAddress is for.
        return reinterpret_cast<set_fn>(reinterpret_cast<void*>(p));
    }();
    if (set == nullptr) return;
    wchar_t wide[64] = {};
    const int n =
        ::MultiByteToWideChar(CP_UTF8, 0, name.data(), static_cast<int>(name.size()), wide, 63);
    if (n <= 0) return;
    set(::GetCurrentThread(), wide);
}

/// A joinable Windows thread with a name and a stack size, which std::thread cannot set.
/// Started with _beginthreadex, so the C runtime's per-thread state is set up and freed.
/// Joined on destruction.
class native_thread {
public:
    native_thread() noexcept = default;

    /// Starts `f` on a new thread. Throws `std::system_error` naming `_beginthreadex` and the
    /// thread's name (EAGAIN when the system is out of threads or memory).
    template <class F>
    native_thread(F&& f, const thread_options& options) {
        using fn_t = std::decay_t<F>;
        struct start_block {
            fn_t fn;
            std::string name;
        };
        auto block =
            std::make_unique<start_block>(start_block{fn_t(std::forward<F>(f)), options.name});
        auto entry = [](void* p) -> unsigned {
            std::unique_ptr<start_block> b(static_cast<start_block*>(p));
            set_thread_name(b->name);
            b->fn();
            return 0;
        };
        // The size reserves address space; committing it all up front (without the flag)
        // would charge the whole stack against the commit limit at once.
        const unsigned stack = options.stack_size > 0xffffffffu
                                   ? 0xffffffffu
                                   : static_cast<unsigned>(options.stack_size);
        const std::uintptr_t h = ::_beginthreadex(
            nullptr, stack, +entry, block.get(),
            options.stack_size != 0 ? STACK_SIZE_PARAM_IS_A_RESERVATION : 0u, nullptr);
        if (h == 0) throw_errno("_beginthreadex", options.name);
        block.release();
        m_thread = reinterpret_cast<HANDLE>(h);
    }

    native_thread(native_thread&& other) noexcept
        : m_thread(std::exchange(other.m_thread, nullptr)) {}
    native_thread& operator=(native_thread&& other) noexcept {
        if (this != &other) {
            join();
            m_thread = std::exchange(other.m_thread, nullptr);
        }
        return *this;
    }
    native_thread(const native_thread&) = delete;
    native_thread& operator=(const native_thread&) = delete;
    ~native_thread() { join(); }

    bool joinable() const noexcept { return m_thread != nullptr; }

    /// Lets the thread run on its own (no-op if not joinable).
    void detach() noexcept {
        if (m_thread == nullptr) return;
        ::CloseHandle(std::exchange(m_thread, nullptr));
    }

    /// Waits for the thread to end (no-op if not joinable).
    void join() noexcept {
        if (m_thread == nullptr) return;
        HANDLE h = std::exchange(m_thread, nullptr);
        ::WaitForSingleObject(h, INFINITE);
        ::CloseHandle(h);
    }

    /// Joins a thread that has announced that it is about to end; the POSIX backend yields
    /// for up to `budget` first, to spare a second sleep. Here it is `join()`: not measured on
    /// Windows yet.
    void join_exiting(std::chrono::nanoseconds /*budget*/) noexcept { join(); }

private:
    HANDLE m_thread = nullptr;
};

} // namespace conflux::detail
