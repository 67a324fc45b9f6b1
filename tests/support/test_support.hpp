#pragma once

// Probes the tests use to prove that nothing leaked: fds, threads, child processes.

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#if defined(_WIN32)
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>

#include <tlhelp32.h>

#include <condition_variable>
#include <cstdio>
#include <mutex>
#else
#include <dirent.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>
#endif

#ifndef CONFLUX_TEST_BINARY_DIR
#error "tests are built with CONFLUX_TEST_BINARY_DIR pointing at the helper programs"
#endif

namespace conflux_test {

#if defined(_WIN32)
/// The handles this process holds, as one line to compare before and after an operation (the
/// counterpart of the descriptor list on Linux). Wine's GetProcessHandleCount answers 0
/// whatever is open, so under Wine this compares equal always; on Windows it counts.
inline std::vector<std::string> open_fds() {
    DWORD count = 0;
    ::GetProcessHandleCount(::GetCurrentProcess(), &count);
    return {"handles: " + std::to_string(count)};
}

/// How many handles this process holds, found by asking each slot of the handle table in
/// turn (the first 16384): unlike GetProcessHandleCount, which Wine answers with 0, this
/// counts under Wine as on Windows.
inline std::size_t open_handle_count() {
    std::size_t n = 0;
    for (std::uintptr_t value = 4; value < 4 * 16384; value += 4) {
        DWORD flags = 0;
        if (::GetHandleInformation(reinterpret_cast<HANDLE>(value), &flags)) ++n;
    }
    return n;
}

/// Threads in this process right now.
inline std::size_t thread_count() {
    HANDLE snapshot = ::CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0);
    if (snapshot == INVALID_HANDLE_VALUE) return 0;
    THREADENTRY32 entry{};
    entry.dwSize = sizeof entry;
    std::size_t n = 0;
    for (BOOL more = ::Thread32First(snapshot, &entry); more;
         more = ::Thread32Next(snapshot, &entry)) {
        if (entry.th32OwnerProcessID == ::GetCurrentProcessId()) ++n;
    }
    ::CloseHandle(snapshot);
    return n;
}

/// Ends a hung test after `factor` times the expected running time (at least 1 s), so a
/// deadlock fails one test quickly instead of waiting for the ctest timeout. Windows has no
/// alarm(): a thread waits out the time and ends the process.
class watchdog {
public:
    explicit watchdog(std::chrono::milliseconds expected, unsigned factor = 5)
        : m_limit(std::max<long long>(1000, expected.count() * static_cast<long long>(factor))),
          m_thread([this] {
              std::unique_lock lock(m_mutex);
              if (!m_done.wait_for(lock, m_limit, [this] { return m_cancelled; })) {
                  std::fputs("watchdog: the test hung\n", stderr);
                  std::fflush(stderr);
                  ::TerminateProcess(::GetCurrentProcess(), 14);
              }
          }) {}
    watchdog(const watchdog&) = delete;
    watchdog& operator=(const watchdog&) = delete;
    ~watchdog() {
        {
            std::lock_guard lock(m_mutex);
            m_cancelled = true;
        }
        m_done.notify_one();
        m_thread.join();
    }

private:
    std::chrono::milliseconds m_limit;
    std::mutex m_mutex;
    std::condition_variable m_done;
    bool m_cancelled = false;
    std::thread m_thread;
};
#else
/// Every open descriptor as "fd -> target", sorted; compare before and after an operation.
inline std::vector<std::string> open_fds() {
    std::vector<std::string> out;
    DIR* dir = ::opendir("/proc/self/fd");
    if (dir == nullptr) return out;
    // The listing itself holds an fd; leave it out so two calls compare equal.
    const int own = ::dirfd(dir);
    while (const dirent* entry = ::readdir(dir)) {
        const std::string name = entry->d_name;
        if (name == "." || name == ".." || name == std::to_string(own)) continue;
        char target[4096];
        const std::string link = "/proc/self/fd/" + name;
        const ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
        out.push_back(name + " -> " + (n < 0 ? std::string("?") : std::string(target, n)));
    }
    ::closedir(dir);
    std::sort(out.begin(), out.end());
    return out;
}

/// Threads in this process right now.
inline std::size_t thread_count() {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& entry :
         std::filesystem::directory_iterator("/proc/self/task")) {
        ++n;
    }
    return n;
}

/// Pids of this process's children (ppid == getpid()) whose state is `Z` (exited, not reaped)
/// when `zombies_only`, or any state otherwise.
inline std::vector<int> child_pids(bool zombies_only) {
    std::vector<int> out;
    const pid_t self = ::getpid();
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/proc", ec)) {
        const std::string name = entry.path().filename().string();
        if (name.empty() || !std::all_of(name.begin(), name.end(),
                                         [](unsigned char c) { return std::isdigit(c) != 0; }))
            continue;
        std::ifstream stat(entry.path() / "stat");
        std::string line;
        if (!std::getline(stat, line)) continue; // the process went away meanwhile
        // The command name may contain spaces and parentheses: fields start after the last ')'.
        const auto close = line.rfind(')');
        if (close == std::string::npos || close + 4 >= line.size()) continue;
        const char state = line[close + 2];
        const int ppid = std::atoi(line.c_str() + close + 4);
        if (ppid == self && (state == 'Z' || !zombies_only)) out.push_back(std::stoi(name));
    }
    std::sort(out.begin(), out.end());
    return out;
}

/// Pids of this process's children that have exited but were not reaped.
inline std::vector<int> zombie_children() { return child_pids(true); }

/// Pids of this process's children, running or not (zombies included), from /proc.
inline std::vector<int> all_children() { return child_pids(false); }

/// True when this process has no children at all, reaped or not; valid only in a test process
/// that starts no children of its own outside the library.
inline bool no_children_left() { return ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD; }

/// Kills a hung test with SIGALRM after `factor` times the expected running time (at least 1 s),
/// so a deadlock fails one test quickly instead of waiting for the ctest timeout.
class watchdog {
public:
    explicit watchdog(std::chrono::milliseconds expected, unsigned factor = 5) {
        const auto ms = expected.count() * static_cast<long long>(factor);
        ::alarm(static_cast<unsigned>(std::max(1LL, (ms + 999) / 1000)));
    }
    watchdog(const watchdog&) = delete;
    watchdog& operator=(const watchdog&) = delete;
    ~watchdog() { ::alarm(0); }
};

#endif

/// Multiplier for iteration counts; sanitizer runs set CONFLUX_STRESS_SCALE below 1.
inline double stress_scale() {
    const char* value = std::getenv("CONFLUX_STRESS_SCALE");
    if (value == nullptr || *value == '\0') return 1.0;
    char* end = nullptr;
    const double scale = std::strtod(value, &end);
    return end != value && scale > 0 ? scale : 1.0;
}

/// Where the helper child programs (tests/helpers/*.cpp) are built.
inline std::filesystem::path helper_dir() { return CONFLUX_TEST_BINARY_DIR; }

#if !defined(_WIN32)
/// The arguments of process `pid` as the kernel shows them (/proc/<pid>/cmdline), argv[0]
/// first; empty once it is gone.
inline std::vector<std::string> process_cmdline(int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
    std::vector<std::string> out;
    std::string arg;
    while (std::getline(in, arg, '\0')) out.push_back(arg);
    return out;
}

/// The name of process `pid` as `ps -o comm` shows it (/proc/<pid>/comm).
inline std::string process_comm(int pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/comm");
    std::string name;
    std::getline(in, name);
    return name;
}

#endif

/// The calling thread's id, computed afresh on every call: never inlined and opaque to the
/// optimiser, so a coroutine that moved threads at a co_await does not see an id computed
/// before the suspension (clang 14 reuses pthread_self across one).
[[gnu::noinline]] inline std::thread::id thread_id() {
    std::thread::id id = std::this_thread::get_id();
    asm volatile("" : : "r"(&id) : "memory");
    return id;
}

/// Call before filling the descriptor table on purpose. UBSan's vptr check probes an object's
/// memory through a pipe of its own the first time it meets a dynamic type; with no
/// descriptor left it cannot, and reports a false "invalid vptr". This meets, with
/// descriptors to spare, the types that error paths under EMFILE use: std::system_error
/// and its category (and conflux's own exceptions, through `also`).
template <class... Also>
void meet_error_types_before_emfile(Also&&... also) {
    try {
        throw std::system_error(EMFILE, std::system_category(), "primer");
    } catch (const std::system_error& e) {
        (void)e.code().message();
        (void)e.code().category().name();
        (void)e.what();
    }
    (also(), ...);
}

#if !defined(_WIN32)
/// A `thread_local` of this type makes its thread slow to end: its destructor runs after the
/// thread's function has returned (and a joiner may have been woken), sleeps 200 ms, far
/// longer than a join yields before it blocks, then sets `ended`. Lets a test check that a
/// join waits for the whole exit. Not on Windows, where a join does not yield first and
/// MinGW-w64 corrupts the heap when a thread with a `thread_local` that has a destructor
/// ends (tests/CMakeLists.txt).
struct slow_thread_exit {
    static inline std::atomic<bool> ended{false};
    int touched = 0;
    ~slow_thread_exit() {
        std::this_thread::sleep_for(std::chrono::milliseconds(200));
        ended.store(true, std::memory_order_release);
    }
};
#endif

/// The thread count to compare against later: sanitizer runtimes (GCC's TSan) start a helper
/// thread of their own along with the first thread a test creates, so one is started and
/// joined first, and counted only once it is gone (see `settled_thread_count`).
inline std::size_t thread_baseline() {
#if defined(_WIN32)
    std::thread([] {}).join();
#else
    pid_t tid = 0;
    std::thread([&tid] { tid = ::gettid(); }).join();
    const std::string listed = "/proc/self/task/" + std::to_string(tid);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    std::error_code ec;
    while (std::filesystem::exists(listed, ec) && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
#endif
    return thread_count();
}

/// The thread count, given up to `limit` to come down to `expected`. A joined thread can
/// still be listed for a moment after the join returns: Linux wakes the joiner when it
/// clears the thread's id, before it removes the thread from /proc/self/task. A thread that
/// was really left running is still counted after the wait, so a leak still fails.
inline std::size_t settled_thread_count(std::size_t expected,
                                        std::chrono::milliseconds limit = std::chrono::seconds(5)) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    std::size_t n = thread_count();
    while (n != expected && std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        n = thread_count();
    }
    return n;
}

} // namespace conflux_test
