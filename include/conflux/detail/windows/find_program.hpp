#pragma once

// Finding the file a program name stands for, before CreateProcessW is given its full path.
// CreateProcessW's own search looks in the application's folder and the current directory
// before PATH, so a file dropped into the working directory ("git.exe" in a cloned repository)
// would run in place of the real one. conflux searches PATH alone, as Go's os/exec does.

#include <conflux/detail/windows/win32.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace conflux::detail::windows {

namespace find_program_detail {

inline bool is_separator(wchar_t c) { return c == L'\\' || c == L'/'; }

inline bool is_drive_letter(wchar_t c) {
    return (c >= L'a' && c <= L'z') || (c >= L'A' && c <= L'Z');
}

// "C:foo" names foo in drive C's current directory: a location, like a path with a separator.
inline bool names_a_location(std::wstring_view name) {
    if (name.find_first_of(L"\\/") != std::wstring_view::npos) return true;
    return name.size() >= 2 && is_drive_letter(name[0]) && name[1] == L':';
}

// "C:\dir", "C:/dir" and "\\server\share": an entry that does not depend on the current
// directory or drive. Others ("bin", ".", "\tools", "C:tools") are skipped: they would make the
// search depend on the current directory, which it never does implicitly.
inline bool is_absolute(std::wstring_view dir) {
    if (dir.size() >= 3 && is_drive_letter(dir[0]) && dir[1] == L':' && is_separator(dir[2])) {
        return true;
    }
    return dir.size() >= 2 && is_separator(dir[0]) && is_separator(dir[1]);
}

// Splits a ';'-separated list as Windows tools read PATH: a quoted part may hold ';' (a folder
// named "a;b"), and the quotes themselves are not part of the entry. Empty entries are dropped:
// an empty PATH entry would otherwise mean the current directory.
inline std::vector<std::wstring> split_list(std::wstring_view list) {
    std::vector<std::wstring> entries;
    std::wstring current;
    bool quoted = false;
    for (const wchar_t c : list) {
        if (c == L'"') {
            quoted = !quoted;
        } else if (c == L';' && !quoted) {
            if (!current.empty()) entries.push_back(std::move(current));
            current.clear();
        } else {
            current += c;
        }
    }
    if (!current.empty()) entries.push_back(std::move(current));
    return entries;
}

inline std::vector<std::wstring> extensions(std::wstring_view pathext) {
    std::vector<std::wstring> result = split_list(pathext);
    if (result.empty()) result = split_list(L".COM;.EXE;.BAT;.CMD");
    for (std::wstring& ext : result) {
        if (ext.front() != L'.') ext.insert(ext.begin(), L'.');
    }
    return result;
}

inline bool has_extension(std::wstring_view name) {
    const std::size_t dot = name.find_last_of(L'.');
    return dot != std::wstring_view::npos &&
           name.find_first_of(L"\\/", dot) == std::wstring_view::npos;
}

inline bool is_file(const std::wstring& path) {
    const DWORD attributes = ::GetFileAttributesW(path.c_str());
    return attributes != INVALID_FILE_ATTRIBUTES && (attributes & FILE_ATTRIBUTE_DIRECTORY) == 0;
}

// A name with an extension is tried as it is, then with each PATHEXT extension added ("app.v2"
// may be "app.v2.exe"). A name without one is tried only with the extensions: the bare file
// is nothing CreateProcessW can run, and where it exists it is usually a Unix shell script
// beside the real launcher (npm installs "tool" and "tool.cmd" side by side).
inline std::optional<std::wstring> first_candidate(const std::wstring& base,
                                                   const std::vector<std::wstring>& exts) {
    if (has_extension(base) && is_file(base)) return base;
    for (const std::wstring& ext : exts) {
        std::wstring candidate = base + ext;
        if (is_file(candidate)) return candidate;
    }
    return std::nullopt;
}

} // namespace find_program_detail

/// The file that `name` stands for, or `std::nullopt` when there is none. A name with a path
/// separator (\ or /) or a drive ("C:tool") is used as given, relative to the current
/// directory if it is relative. Any other name is searched in each folder of `path`
/// (';'-separated, quotes allowed around an entry, empty and relative entries skipped) and never
/// in the current directory. In each place, a name with an extension is tried first as it is;
/// then the name with each extension of `pathext` (".COM;.EXE;.BAT;.CMD" when it is empty) in
/// its order. The extension is appended as PATHEXT spells it. Directories never match.
inline std::optional<std::wstring> find_program(std::wstring_view name, std::wstring_view path,
                                                std::wstring_view pathext) {
    using namespace find_program_detail;
    if (name.empty() || name.find(L'\0') != std::wstring_view::npos) return std::nullopt;
    const std::vector<std::wstring> exts = extensions(pathext);
    if (names_a_location(name)) return first_candidate(std::wstring(name), exts);
    for (std::wstring dir : split_list(path)) {
        if (!is_absolute(dir)) continue;
        if (!is_separator(dir.back())) dir += L'\\';
        if (auto found = first_candidate(dir + std::wstring(name), exts)) return found;
    }
    return std::nullopt;
}

} // namespace conflux::detail::windows
