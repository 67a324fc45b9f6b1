#pragma once

// Starting a child on Windows: CreateProcessW with a Unicode environment block, its three
// standard handles passed through PROC_THREAD_ATTRIBUTE_HANDLE_LIST (so that no other handle
// of this process reaches it), in a Job object that bounds its descendants. The parent's
// ends of the stdio pipes are overlapped named pipes, completed on the loop's port
// (windows/pipe_io.hpp).

#include <conflux/detail/windows/command_line.hpp>
#include <conflux/detail/windows/win32.hpp>

#include <fcntl.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace conflux::detail {

/// An owned HANDLE; null and INVALID_HANDLE_VALUE both mean none.
class unique_handle {
public:
    unique_handle() noexcept = default;
    explicit unique_handle(HANDLE h) noexcept : m_h(h == INVALID_HANDLE_VALUE ? nullptr : h) {}
    unique_handle(unique_handle&& o) noexcept : m_h(std::exchange(o.m_h, nullptr)) {}
    unique_handle& operator=(unique_handle&& o) noexcept {
        if (this != &o) reset(std::exchange(o.m_h, nullptr));
        return *this;
    }
    unique_handle(const unique_handle&) = delete;
    unique_handle& operator=(const unique_handle&) = delete;
    ~unique_handle() { reset(); }

    HANDLE get() const noexcept { return m_h; }
    HANDLE release() noexcept { return std::exchange(m_h, nullptr); }
    void reset(HANDLE h = nullptr) noexcept {
        if (m_h != nullptr) ::CloseHandle(m_h);
        m_h = h;
    }
    explicit operator bool() const noexcept { return m_h != nullptr; }

private:
    HANDLE m_h = nullptr;
};

/// The two ends of a pipe to a child: the parent's overlapped, the child's synchronous (a
/// child's C runtime expects that), neither inheritable.
struct child_pipe {
    unique_handle parent;
    unique_handle child;
};

/// A pipe whose data flows to the child (`parent_writes`) or from it. Named pipes, since
/// anonymous ones cannot be overlapped; the name is unique per process and pipe, and
/// FILE_FLAG_FIRST_PIPE_INSTANCE makes sure nobody else created it first. Returns the error
/// instead of throwing.
inline DWORD create_child_pipe(bool parent_writes, child_pipe& out) {
    static std::atomic<std::uint64_t> counter{0};
    const std::wstring name = L"\\\\.\\pipe\\conflux-" + std::to_wstring(::GetCurrentProcessId()) +
                              L"-" + std::to_wstring(counter.fetch_add(1)) + L"-" +
                              std::to_wstring(::GetTickCount64());
    const DWORD direction = parent_writes ? PIPE_ACCESS_OUTBOUND : PIPE_ACCESS_INBOUND;
    HANDLE parent = ::CreateNamedPipeW(
        name.c_str(), direction | FILE_FLAG_OVERLAPPED | FILE_FLAG_FIRST_PIPE_INSTANCE,
        PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS, 1, 65536,
        65536, 0, nullptr);
    if (parent == INVALID_HANDLE_VALUE) return ::GetLastError();
    out.parent.reset(parent);
    // The child's end: what it reads when the parent writes, and the other way round. It
    // needs FILE_READ_ATTRIBUTES / FILE_WRITE_ATTRIBUTES too, for the child's runtime to
    // query and set the pipe's state.
    const DWORD access =
        parent_writes ? GENERIC_READ | FILE_WRITE_ATTRIBUTES : GENERIC_WRITE | FILE_READ_ATTRIBUTES;
    HANDLE child = ::CreateFileW(name.c_str(), access, 0, nullptr, OPEN_EXISTING, 0, nullptr);
    if (child == INVALID_HANDLE_VALUE) {
        const DWORD err = ::GetLastError();
        out.parent.reset();
        return err;
    }
    out.child.reset(child);
    return 0;
}

/// The NUL device, for `stdio_spec::ignore`.
inline HANDLE open_null_device(bool for_read) noexcept {
    return ::CreateFileW(L"NUL", for_read ? GENERIC_READ : GENERIC_WRITE | FILE_READ_ATTRIBUTES,
                         FILE_SHARE_READ | FILE_SHARE_WRITE, nullptr, OPEN_EXISTING, 0, nullptr);
}

/// A file for a child's stdio: read (fd 0) or written from its start, created if missing.
inline HANDLE open_stdio_file(const std::filesystem::path& path, int flags,
                              bool for_read) noexcept {
    const DWORD share = FILE_SHARE_READ | FILE_SHARE_WRITE;
    if (flags == -1) {
        if (for_read) {
            return ::CreateFileW(path.c_str(), GENERIC_READ, share, nullptr, OPEN_EXISTING, 0,
                                 nullptr);
        }
        return ::CreateFileW(path.c_str(), GENERIC_WRITE | FILE_READ_ATTRIBUTES, share, nullptr,
                             CREATE_ALWAYS, 0, nullptr);
    }
    // open(2)'s flags, as the C runtime's _open maps them. O_APPEND asks for append-only
    // data access, so every write of the child lands at the end. There are no permission
    // bits to apply: `mode` is not used on Windows.
    const int access = flags & (O_RDONLY | O_WRONLY | O_RDWR);
    DWORD rights = access == O_WRONLY ? GENERIC_WRITE
                   : access == O_RDWR ? GENERIC_READ | GENERIC_WRITE
                                      : GENERIC_READ;
    if ((flags & O_APPEND) != 0 && (rights & GENERIC_WRITE) != 0) {
        rights = (rights & ~DWORD{GENERIC_WRITE}) | FILE_APPEND_DATA | FILE_READ_ATTRIBUTES |
                 SYNCHRONIZE;
    }
    const bool create = (flags & O_CREAT) != 0;
    const bool truncate = (flags & O_TRUNC) != 0;
    const DWORD disposition = create && (flags & O_EXCL) != 0 ? CREATE_NEW
                              : create && truncate            ? CREATE_ALWAYS
                              : create                        ? OPEN_ALWAYS
                              : truncate                      ? TRUNCATE_EXISTING
                                                              : OPEN_EXISTING;
    return ::CreateFileW(path.c_str(), rights, share, nullptr, disposition, 0, nullptr);
}

/// This process's standard handle `fd` (0, 1, 2), not owned; null when it has none.
inline HANDLE standard_handle(int fd) noexcept {
    const DWORD which = fd == 0 ? STD_INPUT_HANDLE : fd == 1 ? STD_OUTPUT_HANDLE : STD_ERROR_HANDLE;
    HANDLE h = ::GetStdHandle(which);
    return h == INVALID_HANDLE_VALUE ? nullptr : h;
}

/// This process's environment, as UTF-16 "NAME=value" strings (the entries cmd.exe keeps
/// for drive letters, "=C:=C:\dir", included: they start with '=').
inline std::vector<std::wstring> inherited_environment_wide() {
    std::vector<std::wstring> out;
    wchar_t* block = ::GetEnvironmentStringsW();
    if (block == nullptr) return out;
    for (const wchar_t* p = block; *p != L'\0';) {
        std::wstring entry(p);
        p += entry.size() + 1;
        out.push_back(std::move(entry));
    }
    ::FreeEnvironmentStringsW(block);
    return out;
}

/// This process's environment as UTF-8 (name, value) pairs.
inline std::vector<std::pair<std::string, std::string>> inherited_environment() {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& entry : inherited_environment_wide()) {
        // Split at the first '=' after the first character: "=C:=C:\dir" is named "=C:".
        const auto eq = entry.find(L'=', 1);
        if (eq == std::wstring::npos) continue;
        out.emplace_back(windows::narrow(std::wstring_view(entry).substr(0, eq)),
                         windows::narrow(std::wstring_view(entry).substr(eq + 1)));
    }
    return out;
}

/// The calling thread's last system error, for callers outside this folder.
inline unsigned long last_error() noexcept { return ::GetLastError(); }

/// The system errors the portable launch code reports itself.
inline constexpr unsigned long error_file_not_found = ERROR_FILE_NOT_FOUND;
inline constexpr unsigned long error_bad_directory = ERROR_DIRECTORY;

/// What `create_child` starts.
struct windows_spawn_plan {
    std::wstring application;                      ///< the program's full path
    std::wstring command_line;                     ///< as the child's runtime will split it
    const std::wstring* environment;               ///< a block from environment_block
    const std::wstring* cwd = nullptr;             ///< null: the parent's
    HANDLE stdio[3] = {nullptr, nullptr, nullptr}; ///< not owned, not inheritable; null: none
    bool job = true;                               ///< put the child in a Job object of its own
    bool kill_on_job_close = true;  ///< the job's last handle closing kills its processes
    bool new_process_group = false; ///< detached: its own console process group
};

/// A started child, or the error and the step that failed.
struct windows_spawned {
    DWORD pid = 0;
    unique_handle process;
    unique_handle job;
    DWORD error = 0;
    const char* step = nullptr; ///< "CreateProcess", "job object", ...
};

namespace spawn_detail {

struct attribute_list {
    std::vector<unsigned char> storage;
    LPPROC_THREAD_ATTRIBUTE_LIST get() noexcept {
        return reinterpret_cast<LPPROC_THREAD_ATTRIBUTE_LIST>(storage.data());
    }
    ~attribute_list() {
        if (!storage.empty()) ::DeleteProcThreadAttributeList(get());
    }
};

} // namespace spawn_detail

/// Starts the child suspended, puts it in its job, then lets it run: no process it starts
/// can escape the job by being quicker than the assignment.
inline windows_spawned create_child(const windows_spawn_plan& plan) {
    windows_spawned out;
    auto fail = [&](const char* step) {
        out.error = ::GetLastError();
        out.step = step;
        return std::move(out);
    };
    if (plan.job) {
        out.job.reset(::CreateJobObjectW(nullptr, nullptr));
        if (!out.job) return fail("job object");
        if (plan.kill_on_job_close) {
            JOBOBJECT_EXTENDED_LIMIT_INFORMATION info{};
            info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
            if (!::SetInformationJobObject(out.job.get(), JobObjectExtendedLimitInformation, &info,
                                           sizeof info)) {
                return fail("job object");
            }
        }
    }

    // Inheritable copies live only from here to CreateProcessW, and the handle list gives
    // them to this child alone. What remains is a child started meanwhile by other code of
    // this process with bInheritHandles and no list (system(), _popen): it inherits every
    // inheritable handle, these copies included.
    unique_handle inheritable[3];
    HANDLE list[3];
    DWORD listed = 0;
    const HANDLE self = ::GetCurrentProcess();
    for (int i = 0; i < 3; ++i) {
        if (plan.stdio[i] == nullptr) continue;
        HANDLE dup = nullptr;
        // A copy per descriptor: the handle list takes each handle once, and 2>&1 gives the
        // same source twice.
        if (!::DuplicateHandle(self, plan.stdio[i], self, &dup, 0, TRUE, DUPLICATE_SAME_ACCESS)) {
            return fail("stdio handle");
        }
        inheritable[i].reset(dup);
        list[listed++] = dup;
    }

    spawn_detail::attribute_list attributes;
    SIZE_T size = 0;
    ::InitializeProcThreadAttributeList(nullptr, 1, 0, &size);
    attributes.storage.resize(size);
    if (!::InitializeProcThreadAttributeList(attributes.get(), 1, 0, &size)) {
        attributes.storage.clear();
        return fail("attribute list");
    }
    if (listed != 0 &&
        !::UpdateProcThreadAttribute(attributes.get(), 0, PROC_THREAD_ATTRIBUTE_HANDLE_LIST, list,
                                     listed * sizeof(HANDLE), nullptr, nullptr)) {
        return fail("attribute list");
    }

    STARTUPINFOEXW si{};
    si.StartupInfo.cb = sizeof si;
    si.StartupInfo.dwFlags = STARTF_USESTDHANDLES;
    si.StartupInfo.hStdInput = inheritable[0].get();
    si.StartupInfo.hStdOutput = inheritable[1].get();
    si.StartupInfo.hStdError = inheritable[2].get();
    si.lpAttributeList = attributes.get();
    DWORD flags = CREATE_UNICODE_ENVIRONMENT | EXTENDED_STARTUPINFO_PRESENT | CREATE_SUSPENDED;
    if (plan.new_process_group) flags |= CREATE_NEW_PROCESS_GROUP;
    std::wstring command_line = plan.command_line; // CreateProcessW may write into it
    PROCESS_INFORMATION pi{};
    if (!::CreateProcessW(plan.application.c_str(), command_line.data(), nullptr, nullptr,
                          listed != 0 ? TRUE : FALSE, flags,
                          const_cast<wchar_t*>(plan.environment->c_str()),
                          plan.cwd != nullptr && !plan.cwd->empty() ? plan.cwd->c_str() : nullptr,
                          &si.StartupInfo, &pi)) {
        return fail("CreateProcess");
    }
    unique_handle thread(pi.hThread);
    out.process.reset(pi.hProcess);
    out.pid = pi.dwProcessId;
    if (out.job && !::AssignProcessToJobObject(out.job.get(), pi.hProcess)) {
        const DWORD err = ::GetLastError();
        ::TerminateProcess(pi.hProcess, 1);
        ::WaitForSingleObject(pi.hProcess, INFINITE);
        out.process.reset();
        ::SetLastError(err);
        return fail("job object");
    }
    ::ResumeThread(pi.hThread);
    return out;
}

} // namespace conflux::detail
