// The child program the Windows process tests start (the counterpart of helpers/child.cpp,
// which is POSIX): standard C++ and a few Win32 calls, so the tests depend on nothing installed.
// Usage: conflux_win_child <command> [arguments]; see the table in main().

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <string>
#include <thread>

#ifndef NOMINMAX
#define NOMINMAX
#endif
#define WIN32_LEAN_AND_MEAN
#include <windows.h>

#include <shellapi.h>

namespace {

void write_fully(HANDLE h, const char* data, std::size_t size) {
    while (size > 0) {
        DWORD n = 0;
        if (!WriteFile(h, data, static_cast<DWORD>(size), &n, nullptr)) std::_Exit(3);
        data += n;
        size -= n;
    }
}

void say(HANDLE h, const std::string& s) { write_fully(h, s.data(), s.size()); }

HANDLE out() { return GetStdHandle(STD_OUTPUT_HANDLE); }

// Starts this program again with `args`, its standard handles inherited, and does not wait:
// the grandchild then holds this child's pipes.
void start_self(const std::string& args) {
    wchar_t self[MAX_PATH];
    GetModuleFileNameW(nullptr, self, MAX_PATH);
    std::wstring line = L"\"" + std::wstring(self) + L"\" ";
    line += std::wstring(args.begin(), args.end());
    for (DWORD which : {STD_INPUT_HANDLE, STD_OUTPUT_HANDLE, STD_ERROR_HANDLE}) {
        HANDLE h = GetStdHandle(which);
        if (h != nullptr && h != INVALID_HANDLE_VALUE) {
            SetHandleInformation(h, HANDLE_FLAG_INHERIT, HANDLE_FLAG_INHERIT);
        }
    }
    STARTUPINFOW si{};
    si.cb = sizeof si;
    si.dwFlags = STARTF_USESTDHANDLES;
    si.hStdInput = GetStdHandle(STD_INPUT_HANDLE);
    si.hStdOutput = GetStdHandle(STD_OUTPUT_HANDLE);
    si.hStdError = GetStdHandle(STD_ERROR_HANDLE);
    PROCESS_INFORMATION pi{};
    if (!CreateProcessW(self, line.data(), nullptr, nullptr, TRUE, 0, nullptr, nullptr, &si, &pi)) {
        std::_Exit(4);
    }
    say(out(), "grandchild " + std::to_string(pi.dwProcessId) + "\n");
    CloseHandle(pi.hThread);
    CloseHandle(pi.hProcess);
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) return 2;
    const std::string cmd = argv[1];
    if (cmd == "echo") { // each argument on a line of its own, exactly, in UTF-8
        // argv is in the ANSI code page; the wide command line has every character.
        int wide_argc = 0;
        wchar_t** wide = CommandLineToArgvW(GetCommandLineW(), &wide_argc);
        for (int i = 2; i < wide_argc; ++i) {
            char utf8[4096];
            const int n =
                WideCharToMultiByte(CP_UTF8, 0, wide[i], -1, utf8, sizeof utf8, nullptr, nullptr);
            say(out(), std::string(utf8, n > 0 ? static_cast<std::size_t>(n - 1) : 0) + "\n");
        }
        LocalFree(wide);
        return 0;
    }
    if (cmd == "argv0") { // the program name as the child sees it
        say(out(), std::string(argv[0]) + "\n");
        return 0;
    }
    if (cmd == "cat") { // stdin to stdout until end of file
        char buf[4096];
        DWORD n = 0;
        while (ReadFile(GetStdHandle(STD_INPUT_HANDLE), buf, sizeof buf, &n, nullptr) && n > 0) {
            write_fully(out(), buf, n);
        }
        return 0;
    }
    if (cmd == "exit") return std::atoi(argv[2]);
    if (cmd == "reset-event") { // resets the event at this handle value: 0 when there was one
        const auto value = static_cast<std::uintptr_t>(std::strtoull(argv[2], nullptr, 10));
        return ResetEvent(reinterpret_cast<HANDLE>(value)) ? 0 : 1;
    }
    if (cmd == "stderr") { // its argument to stderr, then exit code 1
        say(GetStdHandle(STD_ERROR_HANDLE), std::string(argv[2]) + "\n");
        return 1;
    }
    if (cmd == "sleep") { // milliseconds
        std::this_thread::sleep_for(std::chrono::milliseconds(std::atol(argv[2])));
        return 0;
    }
    if (cmd == "env") { // the variable's value, or <unset>
        const char* v = std::getenv(argv[2]);
        say(out(), std::string(v ? v : "<unset>") + "\n");
        return 0;
    }
    if (cmd == "cwd") {
        wchar_t dir[MAX_PATH];
        const DWORD n = GetCurrentDirectoryW(MAX_PATH, dir);
        char narrow[4 * MAX_PATH];
        const int m = WideCharToMultiByte(CP_UTF8, 0, dir, static_cast<int>(n), narrow,
                                          sizeof narrow, nullptr, nullptr);
        say(out(), std::string(narrow, static_cast<std::size_t>(m)) + "\n");
        return 0;
    }
    if (cmd == "spew") { // that many bytes of 'x' to stdout
        const std::size_t total = std::strtoull(argv[2], nullptr, 10);
        const std::string chunk(64 * 1024, 'x');
        for (std::size_t done = 0; done < total;) {
            const std::size_t n = std::min(chunk.size(), total - done);
            write_fully(out(), chunk.data(), n);
            done += n;
        }
        return 0;
    }
    if (cmd == "grandchild") { // a grandchild sleeping argv[2] ms holds the pipes; then argv[3] ms
        start_self("sleep " + std::string(argv[2]));
        if (argc > 3) std::this_thread::sleep_for(std::chrono::milliseconds(std::atol(argv[3])));
        return 0;
    }
    return 2;
}
