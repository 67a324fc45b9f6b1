// The child program the process tests start, so they depend on nothing installed.
// Usage: conflux_child <command> [arguments]; see the table in main().

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <dirent.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace {

void write_fully(int fd, const char* data, std::size_t size) {
    while (size > 0) {
        const ssize_t n = ::write(fd, data, size);
        if (n < 0) {
            if (errno == EINTR) continue;
            std::_Exit(3);
        }
        data += n;
        size -= static_cast<std::size_t>(n);
    }
}

void say(const std::string& s) { write_fully(1, s.data(), s.size()); }

// One line per argument with the bytes escaped, so a test can compare argv exactly.
std::string escape(std::string_view s) {
    std::string out;
    for (unsigned char c : s) {
        if (c == '\\') {
            out += "\\\\";
        } else if (c < 0x20 || c >= 0x7f) {
            char hex[8];
            std::snprintf(hex, sizeof hex, "\\x%02x", c);
            out += hex;
        } else {
            out += static_cast<char>(c);
        }
    }
    return out;
}

void sleep_ms(long ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// A pattern byte for position i, so streamed data can be checked without storing it.
char pattern(std::size_t i) { return static_cast<char>('a' + (i * 7 + i / 4096) % 26); }

int write_bytes(int fd, std::size_t n) {
    std::string chunk(64 * 1024, '\0');
    std::size_t done = 0;
    while (done < n) {
        const std::size_t len = std::min(chunk.size(), n - done);
        for (std::size_t i = 0; i < len; ++i) chunk[i] = pattern(done + i);
        write_fully(fd, chunk.data(), len);
        done += len;
    }
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: conflux_child <command> [args]\n");
        return 2;
    }
    const std::string_view cmd = argv[1];
    const auto num = [&](int i, long fallback = 0) {
        return i < argc ? std::strtol(argv[i], nullptr, 10) : fallback;
    };

    if (cmd == "exit") return static_cast<int>(num(2));
    if (cmd == "args") { // argv[0] then every argument, one escaped line each
        for (int i = 0; i < argc; ++i) {
            if (i == 1) continue;
            say(escape(argv[i]) + "\n");
        }
        return 0;
    }
    if (cmd == "env") {
        for (char** e = environ; *e != nullptr; ++e) say(escape(*e) + "\n");
        return 0;
    }
    if (cmd == "cwd") {
        char buf[4096];
        if (::getcwd(buf, sizeof buf) == nullptr) return 4;
        say(std::string(buf) + "\n");
        return 0;
    }
    if (cmd == "exe") {
        char buf[4096];
        const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
        if (n < 0) return 4;
        say(std::string(buf, static_cast<std::size_t>(n)) + "\n");
        return 0;
    }
    if (cmd == "fds") { // "N -> target" for every open descriptor
        DIR* dir = ::opendir("/proc/self/fd");
        if (dir == nullptr) return 4;
        const int own = ::dirfd(dir);
        std::vector<std::string> lines;
        while (const dirent* e = ::readdir(dir)) {
            const std::string name = e->d_name;
            if (name == "." || name == ".." || name == std::to_string(own)) continue;
            char target[4096];
            const ssize_t n =
                ::readlink(("/proc/self/fd/" + name).c_str(), target, sizeof target - 1);
            lines.push_back(name + " -> " +
                            (n < 0 ? "?" : std::string(target, static_cast<std::size_t>(n))));
        }
        ::closedir(dir);
        for (const auto& l : lines) say(l + "\n");
        return 0;
    }
    if (cmd == "cat") {
        char buf[64 * 1024];
        for (;;) {
            const ssize_t n = ::read(0, buf, sizeof buf);
            if (n == 0) return 0;
            if (n < 0) {
                if (errno == EINTR) continue;
                return 4;
            }
            write_fully(1, buf, static_cast<std::size_t>(n));
        }
    }
    if (cmd == "out") return write_bytes(1, static_cast<std::size_t>(num(2)));
    if (cmd == "err") return write_bytes(2, static_cast<std::size_t>(num(2)));
    if (cmd == "both") { // N bytes to each of stdout and stderr, interleaved in 4 KiB pieces
        const auto n = static_cast<std::size_t>(num(2));
        std::string chunk(4096, 'x');
        for (std::size_t done = 0; done < n; done += chunk.size()) {
            const std::size_t len = std::min(chunk.size(), n - done);
            write_fully(2, chunk.data(), len);
            write_fully(1, chunk.data(), len);
        }
        return 0;
    }
    if (cmd == "lines") { // N numbered lines, then exit at once
        for (long i = 0; i < num(2); ++i) say("line " + std::to_string(i) + "\n");
        return 0;
    }
    if (cmd == "sleep") {
        sleep_ms(num(2));
        return 0;
    }
    if (cmd == "ignore-term") { // ignore SIGTERM, say so, then sleep
        std::signal(SIGTERM, SIG_IGN);
        say("ready\n");
        sleep_ms(num(2, 60000));
        return 0;
    }
    if (cmd == "grandchildren") { // N children sleeping MS each; prints their pids
        const long n = num(2);
        for (long i = 0; i < n; ++i) {
            const pid_t pid = ::fork();
            if (pid == 0) {
                sleep_ms(num(3, 60000));
                std::_Exit(0);
            }
            say(std::to_string(pid) + "\n");
        }
        while (::wait(nullptr) > 0) {
        }
        return 0;
    }
    if (cmd == "segv") {
        std::signal(SIGSEGV, SIG_DFL);
        ::raise(SIGSEGV);
        return 5;
    }
    if (cmd == "signals") { // the blocked and ignored signal masks as the kernel reports them
        std::ifstream status("/proc/self/status");
        std::string line;
        while (std::getline(status, line)) {
            if (line.rfind("SigBlk:", 0) == 0 || line.rfind("SigIgn:", 0) == 0) say(line + "\n");
        }
        return 0;
    }
    if (cmd == "ids") {
        say(std::to_string(::getuid()) + " " + std::to_string(::getgid()) + "\n");
        return 0;
    }
    if (cmd == "pgid") {
        say(std::to_string(::getpid()) + " " + std::to_string(::getpgid(0)) + " " +
            std::to_string(::getsid(0)) + "\n");
        return 0;
    }
    if (cmd == "nofile") {
        rlimit r{};
        ::getrlimit(RLIMIT_NOFILE, &r);
        say(std::to_string(r.rlim_cur) + " " + std::to_string(r.rlim_max) + "\n");
        return 0;
    }
    if (cmd == "write-fd") { // write-fd FD TEXT
        const std::string text = argc > 3 ? argv[3] : "";
        write_fully(static_cast<int>(num(2)), text.data(), text.size());
        return 0;
    }
    if (cmd == "read-fd") { // read-fd FD: copies FD to stdout until EOF
        char buf[4096];
        const int fd = static_cast<int>(num(2));
        for (;;) {
            const ssize_t n = ::read(fd, buf, sizeof buf);
            if (n <= 0) return n == 0 ? 0 : 4;
            write_fully(1, buf, static_cast<std::size_t>(n));
        }
    }
    std::fprintf(stderr, "conflux_child: unknown command %s\n", argv[1]);
    return 2;
}
