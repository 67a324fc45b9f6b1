#pragma once

// What a Windows child is started from: UTF-16 text, one command line (which the child's C
// runtime splits again), one environment block, and the program found by conflux itself.
// A plain version: the quoting follows the rules of the Microsoft C runtime's argument
// parser, cmd.exe gets its /d /s /c line with the command verbatim, and the search for a
// program never looks in the current directory unless the name says so.

#include <conflux/detail/windows/win32.hpp>

#include <algorithm>
#include <cwctype>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace conflux::detail::windows {

/// UTF-8 to UTF-16; invalid sequences become U+FFFD.
inline std::wstring widen(std::string_view utf8) {
    if (utf8.empty()) return {};
    const int n =
        ::MultiByteToWideChar(CP_UTF8, 0, utf8.data(), static_cast<int>(utf8.size()), nullptr, 0);
    if (n <= 0) throw_last_error("MultiByteToWideChar");
    std::wstring out(static_cast<std::size_t>(n), L'\0');
    ::MultiByteToWideChar(CP_UTF8, 0, utf8.data(), static_cast<int>(utf8.size()), out.data(), n);
    return out;
}

/// UTF-16 to UTF-8; unpaired surrogates become U+FFFD.
inline std::string narrow(std::wstring_view wide) {
    if (wide.empty()) return {};
    const int n = ::WideCharToMultiByte(CP_UTF8, 0, wide.data(), static_cast<int>(wide.size()),
                                        nullptr, 0, nullptr, nullptr);
    if (n <= 0) throw_last_error("WideCharToMultiByte");
    std::string out(static_cast<std::size_t>(n), '\0');
    ::WideCharToMultiByte(CP_UTF8, 0, wide.data(), static_cast<int>(wide.size()), out.data(), n,
                          nullptr, nullptr);
    return out;
}

namespace command_line_detail {

// One argument as the C runtime's parser reads it back: quoted when it is empty or holds
// blanks or quotes; backslashes double only where a quote follows them.
inline void append_quoted(std::wstring& out, std::wstring_view arg) {
    if (!arg.empty() && arg.find_first_of(L" \t\n\v\"") == std::wstring_view::npos) {
        out += arg;
        return;
    }
    out += L'"';
    std::size_t backslashes = 0;
    for (wchar_t c : arg) {
        if (c == L'\\') {
            ++backslashes;
            continue;
        }
        if (c == L'"')
            out.append(backslashes * 2 + 1, L'\\');
        else
            out.append(backslashes, L'\\');
        backslashes = 0;
        out += c;
    }
    out.append(backslashes * 2, L'\\');
    out += L'"';
}

inline bool ends_with_icase(std::wstring_view s, std::wstring_view tail) {
    if (s.size() < tail.size()) return false;
    s = s.substr(s.size() - tail.size());
    for (std::size_t i = 0; i < tail.size(); ++i) {
        if (::towlower(s[i]) != ::towlower(tail[i])) return false;
    }
    return true;
}

inline bool is_file(const std::wstring& path) {
    const DWORD a = ::GetFileAttributesW(path.c_str());
    return a != INVALID_FILE_ATTRIBUTES && (a & FILE_ATTRIBUTE_DIRECTORY) == 0;
}

} // namespace command_line_detail

/// The command line of `argv` (argv[0] first), each argument quoted for the C runtime.
inline std::wstring command_line(std::span<const std::string> argv) {
    std::wstring out;
    for (std::size_t i = 0; i < argv.size(); ++i) {
        if (i != 0) out += L' ';
        command_line_detail::append_quoted(out, widen(argv[i]));
    }
    return out;
}

/// `comspec /d /s /c "command"`: /s makes cmd.exe take everything between the outer quotes
/// verbatim, so the command reaches it as the caller wrote it.
inline std::wstring shell_command_line(std::string_view command, std::wstring_view comspec) {
    std::wstring out;
    command_line_detail::append_quoted(out, comspec);
    out += L" /d /s /c \"";
    out += widen(command);
    out += L'"';
    return out;
}

/// True for a program that only cmd.exe can run: a .bat or .cmd file.
inline bool is_batch_file(std::wstring_view program_path) {
    return command_line_detail::ends_with_icase(program_path, L".bat") ||
           command_line_detail::ends_with_icase(program_path, L".cmd");
}

/// The cmd.exe line that runs a batch file with `args`. Arguments are quoted for the C
/// runtime; cmd.exe's own metacharacters in them are not escaped by this plain version, so
/// arguments holding `&|<>^%` are refused.
inline std::wstring batch_command_line(std::wstring_view batch_path,
                                       std::span<const std::string> args,
                                       std::wstring_view comspec) {
    std::wstring inner;
    command_line_detail::append_quoted(inner, batch_path);
    for (const auto& a : args) {
        if (a.find_first_of("&|<>^%\"\r\n") != std::string::npos) {
            throw std::invalid_argument("conflux::spawn: an argument of a batch file holds a "
                                        "character cmd.exe would interpret: " +
                                        a);
        }
        inner += L' ';
        command_line_detail::append_quoted(inner, widen(a));
    }
    std::wstring out;
    command_line_detail::append_quoted(out, comspec);
    out += L" /d /s /c \"";
    out += inner;
    out += L'"';
    return out;
}

/// The environment block CreateProcessW takes with CREATE_UNICODE_ENVIRONMENT: "NAME=value"
/// strings sorted by name without regard to case (as Windows keeps them), each ended by a
/// NUL, and one more NUL at the end.
inline std::wstring
environment_block(const std::vector<std::pair<std::string, std::string>>& variables) {
    std::vector<std::pair<std::wstring, std::wstring>> wide;
    wide.reserve(variables.size());
    for (const auto& [name, value] : variables) wide.emplace_back(widen(name), widen(value));
    std::stable_sort(wide.begin(), wide.end(), [](const auto& a, const auto& b) {
        return ::CompareStringOrdinal(a.first.data(), static_cast<int>(a.first.size()),
                                      b.first.data(), static_cast<int>(b.first.size()),
                                      TRUE) == CSTR_LESS_THAN;
    });
    std::wstring out;
    for (const auto& [name, value] : wide) {
        out += name;
        out += L'=';
        out += value;
        out += L'\0';
    }
    if (wide.empty()) out += L'\0';
    out += L'\0';
    return out;
}

/// The file that `name` starts: a name with a directory part is taken as it is (relative
/// names are the caller's to resolve); a bare name is looked for in each directory of
/// `path` (';'-separated), never in the current directory. A name without an extension
/// is tried with each of `pathext` (";.COM;.EXE;..."), then as it is.
inline std::optional<std::wstring> find_program(std::wstring_view name, std::wstring_view path,
                                                std::wstring_view pathext) {
    using command_line_detail::is_file;
    const bool has_dir = name.find_first_of(L"\\/:") != std::wstring_view::npos;
    const auto slash = name.find_last_of(L"\\/:");
    const std::wstring_view base = slash == std::wstring_view::npos ? name : name.substr(slash + 1);
    const bool has_ext = base.find(L'.') != std::wstring_view::npos;

    auto try_in = [&](std::wstring candidate) -> std::optional<std::wstring> {
        if (!has_ext) {
            std::wstring_view exts = pathext;
            while (!exts.empty()) {
                const auto semi = exts.find(L';');
                const std::wstring_view ext = exts.substr(0, semi);
                exts =
                    semi == std::wstring_view::npos ? std::wstring_view{} : exts.substr(semi + 1);
                if (ext.empty()) continue;
                std::wstring with = candidate + std::wstring(ext);
                if (is_file(with)) return with;
            }
        }
        if (is_file(candidate)) return candidate;
        return std::nullopt;
    };

    if (has_dir) return try_in(std::wstring(name));
    std::wstring_view dirs = path;
    while (!dirs.empty()) {
        const auto semi = dirs.find(L';');
        std::wstring_view dir = dirs.substr(0, semi);
        dirs = semi == std::wstring_view::npos ? std::wstring_view{} : dirs.substr(semi + 1);
        if (dir.size() >= 2 && dir.front() == L'"' && dir.back() == L'"') {
            dir = dir.substr(1, dir.size() - 2);
        }
        if (dir.empty()) continue;
        std::wstring candidate(dir);
        if (candidate.back() != L'\\' && candidate.back() != L'/') candidate += L'\\';
        candidate += name;
        if (auto found = try_in(std::move(candidate))) return found;
    }
    return std::nullopt;
}

} // namespace conflux::detail::windows
