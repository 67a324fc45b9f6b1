#pragma once

// UTF-8 <-> UTF-16 for the wide Win32 calls (CreateProcessW, environment blocks, paths).
// Written out rather than through MultiByteToWideChar so that every refusal is the same on every
// Windows version and under Wine, and says where the input went wrong.

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace conflux::detail::windows {

namespace utf16_detail {

[[noreturn]] inline void refuse_utf8(std::string_view why, std::size_t offset) {
    throw std::invalid_argument("invalid UTF-8: " + std::string(why) + " at byte " +
                                std::to_string(offset));
}

// The sequences RFC 3629 allows, by lead byte: how many continuation bytes follow, and the
// range the first of them must fall in. The narrow ranges after E0, ED, F0 and F4 are what
// refuses overlong forms, UTF-16 surrogates written as UTF-8 (CESU-8) and code points past
// U+10FFFF.
struct utf8_lead {
    unsigned continuation_bytes;
    unsigned first_min;
    unsigned first_max;
    char32_t bits;
};

// False for a byte that cannot start a sequence: a continuation byte, C0 and C1 (which could
// only start overlong forms), F5 to FF (past U+10FFFF).
inline bool decode_lead(unsigned char byte, utf8_lead& lead) {
    if (byte < 0xC2 || byte > 0xF4) return false;
    if (byte <= 0xDF) {
        lead = {1, 0x80, 0xBF, char32_t(byte & 0x1F)};
    } else if (byte <= 0xEF) {
        lead = {2, byte == 0xE0 ? 0xA0u : 0x80u, byte == 0xED ? 0x9Fu : 0xBFu,
                char32_t(byte & 0x0F)};
    } else {
        lead = {3, byte == 0xF0 ? 0x90u : 0x80u, byte == 0xF4 ? 0x8Fu : 0xBFu,
                char32_t(byte & 0x07)};
    }
    return true;
}

inline void append_utf16(std::wstring& out, char32_t code_point) {
    if (code_point < 0x10000) {
        out += static_cast<wchar_t>(code_point);
        return;
    }
    code_point -= 0x10000;
    out += static_cast<wchar_t>(0xD800 + (code_point >> 10));
    out += static_cast<wchar_t>(0xDC00 + (code_point & 0x3FF));
}

inline void append_utf8(std::string& out, char32_t code_point) {
    if (code_point < 0x80) {
        out += static_cast<char>(code_point);
    } else if (code_point < 0x800) {
        out += static_cast<char>(0xC0 | (code_point >> 6));
        out += static_cast<char>(0x80 | (code_point & 0x3F));
    } else if (code_point < 0x10000) {
        out += static_cast<char>(0xE0 | (code_point >> 12));
        out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (code_point & 0x3F));
    } else {
        out += static_cast<char>(0xF0 | (code_point >> 18));
        out += static_cast<char>(0x80 | ((code_point >> 12) & 0x3F));
        out += static_cast<char>(0x80 | ((code_point >> 6) & 0x3F));
        out += static_cast<char>(0x80 | (code_point & 0x3F));
    }
}

} // namespace utf16_detail

static_assert(sizeof(wchar_t) == 2, "detail/windows/utf16.hpp: wchar_t is UTF-16 on Windows");

/// UTF-8 to UTF-16. Throws `std::invalid_argument` ("invalid UTF-8: ... at byte N") on a
/// malformed, truncated or overlong sequence, an encoded surrogate or a code point past
/// U+10FFFF, and ("embedded NUL at byte N") on a NUL, at which every wide Win32 string would
/// silently end.
inline std::wstring widen(std::string_view utf8) {
    using namespace utf16_detail;
    std::wstring out;
    out.reserve(utf8.size());
    std::size_t i = 0;
    while (i < utf8.size()) {
        const auto byte = static_cast<unsigned char>(utf8[i]);
        if (byte == 0) {
            throw std::invalid_argument("embedded NUL at byte " + std::to_string(i) +
                                        " (a Windows string ends at its first NUL)");
        }
        if (byte < 0x80) {
            out += static_cast<wchar_t>(byte);
            ++i;
            continue;
        }
        utf8_lead lead{};
        if (!decode_lead(byte, lead)) refuse_utf8("byte that cannot start a character", i);
        char32_t code_point = lead.bits;
        for (std::size_t k = 1; k <= lead.continuation_bytes; ++k) {
            if (i + k >= utf8.size()) refuse_utf8("truncated sequence", i);
            const auto next = static_cast<unsigned char>(utf8[i + k]);
            const unsigned min = k == 1 ? lead.first_min : 0x80u;
            const unsigned max = k == 1 ? lead.first_max : 0xBFu;
            if (next < min || next > max) {
                refuse_utf8(k == 1 && next >= 0x80 && next <= 0xBF
                                ? "overlong form, surrogate or code point past U+10FFFF"
                                : "missing continuation byte",
                            i);
            }
            code_point = (code_point << 6) | (next & 0x3F);
        }
        append_utf16(out, code_point);
        i += lead.continuation_bytes + 1;
    }
    return out;
}

/// UTF-16 to UTF-8. Windows strings (file names, environment values, console input) may hold
/// a lone surrogate, which has no UTF-8 form: each one becomes U+FFFD (the replacement
/// character, as `MultiByteToWideChar`'s reverse and Node's `Buffer.toString` do), so reading
/// such a name never fails but does not round-trip. Never throws for content.
inline std::string narrow(std::wstring_view utf16) {
    using namespace utf16_detail;
    std::string out;
    out.reserve(utf16.size());
    for (std::size_t i = 0; i < utf16.size(); ++i) {
        const auto unit = static_cast<char32_t>(static_cast<std::uint16_t>(utf16[i]));
        const bool high = unit >= 0xD800 && unit <= 0xDBFF;
        const bool low = unit >= 0xDC00 && unit <= 0xDFFF;
        if (high && i + 1 < utf16.size()) {
            const auto next = static_cast<char32_t>(static_cast<std::uint16_t>(utf16[i + 1]));
            if (next >= 0xDC00 && next <= 0xDFFF) {
                append_utf8(out, 0x10000 + ((unit - 0xD800) << 10) + (next - 0xDC00));
                ++i;
                continue;
            }
        }
        append_utf8(out, high || low ? char32_t{0xFFFD} : unit);
    }
    return out;
}

} // namespace conflux::detail::windows
