#pragma once

// The environment of a child as CreateProcessW takes it with CREATE_UNICODE_ENVIRONMENT.

#include <conflux/detail/windows/utf16.hpp>
#include <conflux/detail/windows/win32.hpp>

#include <algorithm>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace conflux::detail::windows {

namespace environment_detail {

// Windows compares variable names without case by upper-casing them with the system's own
// table (not a locale's), which CompareStringOrdinal with bIgnoreCase does; GetEnvironmentVariable
// finds "Path" under "PATH" that way, and the block must be sorted the same way.
inline int compare_names(std::wstring_view a, std::wstring_view b) {
    const int result = ::CompareStringOrdinal(a.data(), static_cast<int>(a.size()), b.data(),
                                              static_cast<int>(b.size()), TRUE);
    if (result == 0) throw_last_error("CompareStringOrdinal");
    return result - CSTR_EQUAL;
}

// A name may not contain '=' (it ends the name in NAME=VALUE), except as the first character of
// the hidden per-drive working directories ("=C:=C:\\work") that cmd.exe keeps there.
inline void check_name(std::wstring_view name, std::size_t index) {
    const std::wstring_view rest = !name.empty() && name.front() == L'=' ? name.substr(1) : name;
    if (rest.empty() || rest.find(L'=') != std::wstring_view::npos) {
        throw std::invalid_argument("environment variable " + std::to_string(index) +
                                    ": the name \"" + narrow(name) +
                                    "\" is empty or contains '=' after its first character");
    }
}

inline std::wstring widen_part(std::string_view utf8, std::size_t index, const char* part) {
    try {
        return widen(utf8);
    } catch (const std::invalid_argument& error) {
        throw std::invalid_argument("environment variable " + std::to_string(index) + " (" + part +
                                    "): " + error.what());
    }
}

struct entry {
    std::wstring name;
    std::wstring value;
};

} // namespace environment_detail

/// The UTF-16 environment block for `CreateProcessW(..., CREATE_UNICODE_ENVIRONMENT, ...)`:
/// `NAME=VALUE\0NAME=VALUE\0\0`, the returned string holding every one of those NULs (so
/// `data()` is the block and `size()` its length in wchar_t); for no variables, two NULs.
/// Names are case-insensitive as on Windows: a later entry replaces an earlier one whatever the
/// case of either (the later spelling is kept). Entries are sorted by their upper-cased names:
/// CreateProcess's documentation asks for a block sorted without case, in Unicode order and
/// regardless of locale.
/// Throws `std::invalid_argument` naming the entry by index for an empty name, a '=' in a name
/// past its first character (a leading '=' is allowed for the hidden "=C:" variables), invalid
/// UTF-8 or a NUL in a name or value.
inline std::wstring
environment_block(const std::vector<std::pair<std::string, std::string>>& variables) {
    using namespace environment_detail;
    std::vector<entry> entries;
    entries.reserve(variables.size());
    for (std::size_t i = 0; i < variables.size(); ++i) {
        entry e{widen_part(variables[i].first, i, "name"),
                widen_part(variables[i].second, i, "value")};
        check_name(e.name, i);
        entries.push_back(std::move(e));
    }
    // Stable, so that among names equal but for case the last one given is the last of its run.
    std::stable_sort(entries.begin(), entries.end(), [](const entry& a, const entry& b) {
        return compare_names(a.name, b.name) < 0;
    });
    std::wstring block;
    for (std::size_t i = 0; i < entries.size(); ++i) {
        const bool replaced_later =
            i + 1 < entries.size() && compare_names(entries[i].name, entries[i + 1].name) == 0;
        if (replaced_later) continue;
        block += entries[i].name;
        block += L'=';
        block += entries[i].value;
        block += L'\0';
    }
    // The block ends with an empty string; with no variables that still makes two NULs, the
    // shortest block CreateProcessW accepts.
    if (block.empty()) block += L'\0';
    block += L'\0';
    return block;
}

} // namespace conflux::detail::windows
