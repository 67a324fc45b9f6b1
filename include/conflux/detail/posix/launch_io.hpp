#pragma once

// The POSIX system calls that preparing a child needs before it is started: the parent's
// environment, the PATH lookup, pipes, the null device and files opened for the child's
// stdio. Every descriptor is opened close-on-exec: the child gets copies only at the numbers
// it asked for.

#include <conflux/detail/posix/unique_fd.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

extern char** environ; // NOLINT: POSIX declares it nowhere in a header

namespace conflux::detail {

/// This process's environment as (name, value) pairs; malformed entries (no '=', or an empty
/// name) are left out.
inline std::vector<std::pair<std::string, std::string>> inherited_environment() {
    std::vector<std::pair<std::string, std::string>> vars;
    for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
        const char* eq = std::strchr(*e, '=');
        if (eq == nullptr || eq == *e) continue;
        vars.emplace_back(std::string(*e, static_cast<std::size_t>(eq - *e)), std::string(eq + 1));
    }
    return vars;
}

/// Looks `program` up in `path_value` the way execvp does, except that empty and relative
/// entries (".", "", "bin") are skipped: a lookup never finds a file in the current
/// directory by accident. A program containing '/' is used as it is. Returns the path, or
/// an errno (ENOENT, EACCES) in `err`.
inline std::string find_program(std::string_view program, std::string_view path_value, int& err) {
    err = 0;
    if (program.empty()) {
        err = ENOENT;
        return {};
    }
    if (program.find('/') != std::string_view::npos) return std::string(program);
    int found_err = ENOENT;
    std::size_t start = 0;
    while (start <= path_value.size()) {
        std::size_t end = path_value.find(':', start);
        if (end == std::string_view::npos) end = path_value.size();
        const std::string_view dir = path_value.substr(start, end - start);
        start = end + 1;
        if (dir.empty() || dir.front() != '/') continue;
        std::string candidate(dir);
        if (candidate.back() != '/') candidate += '/';
        candidate += program;
        struct stat st {};
        if (::stat(candidate.c_str(), &st) != 0) continue;
        if (!S_ISREG(st.st_mode)) {
            found_err = EACCES;
            continue;
        }
        if (::access(candidate.c_str(), X_OK) == 0) return candidate;
        found_err = EACCES;
    }
    err = found_err;
    return {};
}

/// A pipe as (read end, write end); both empty, with errno set, on failure.
inline std::pair<unique_fd, unique_fd> open_pipe() noexcept {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) return {};
    return {unique_fd(p[0]), unique_fd(p[1])};
}

/// The null device, for reading and writing; empty, with errno set, on failure.
inline unique_fd open_null_device() noexcept {
    return unique_fd(::open("/dev/null", O_RDWR | O_CLOEXEC));
}

/// `path` opened for a child's stdio entry with `flags` (-1: read-only for stdin, else
/// write, create and truncate); empty, with errno set, on failure.
inline unique_fd open_stdio_file(const std::filesystem::path& path, int flags, mode_t mode,
                                 bool is_stdin) noexcept {
    if (flags == -1) flags = is_stdin ? O_RDONLY : (O_WRONLY | O_CREAT | O_TRUNC);
    return unique_fd(::open(path.c_str(), flags | O_CLOEXEC, mode));
}

} // namespace conflux::detail
