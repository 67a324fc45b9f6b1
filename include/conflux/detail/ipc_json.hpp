#pragma once

// Node.js's `serialization: 'json'` IPC framing and its incremental decoder, free of any I/O
// so that it can be fuzzed (tests/fuzz/json_decoder_fuzz.cpp).
//
// A message is one JSON text (RFC 8259, UTF-8) followed by '\n'; JSON text cannot hold a raw
// line feed, so the line feed alone separates messages. Node parses each line with
// JSON.parse; conflux hands the text to the user, who brings a JSON library, so it checks
// the grammar here: a peer that is no Node.js gets an `ipc_error` for a line that is not JSON
// text, never a string that the user's parser must survive. Nesting is bounded by
// `codec_limits::max_depth`, so that a recursive parser meets no line deeper than that.
// Blank lines are skipped, as are Node's own internal messages ({"cmd":"NODE_...}).

#include <conflux/codec.hpp>
#include <conflux/detail/ipc_frame.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace conflux::detail {

/// What `check_json_text` found wrong; `what` is null for valid text.
struct json_text_fault {
    const char* what = nullptr;
    std::size_t at = 0;    // byte offset of the fault
    bool too_deep = false; // the text is well-formed so far but nests deeper than allowed
    explicit operator bool() const noexcept { return what != nullptr; }
};

namespace json_grammar {

inline bool is_space(unsigned char c) noexcept {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}
inline bool is_digit(unsigned char c) noexcept { return c >= '0' && c <= '9'; }
inline bool is_hex(unsigned char c) noexcept {
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/// Length of the well-formed UTF-8 sequence of 2..4 bytes starting at `s[i]` (a byte >= 0x80),
/// or 0: no overlong forms, no surrogates, nothing above U+10FFFF (RFC 3629).
inline std::size_t utf8_sequence(std::string_view s, std::size_t i) noexcept {
    const auto b0 = static_cast<unsigned char>(s[i]);
    std::size_t n = 0;
    unsigned char lo = 0x80, hi = 0xbf; // the range of the second byte
    if (b0 >= 0xc2 && b0 <= 0xdf) {
        n = 2;
    } else if (b0 >= 0xe0 && b0 <= 0xef) {
        n = 3;
        if (b0 == 0xe0) lo = 0xa0; // overlong below U+0800
        if (b0 == 0xed) hi = 0x9f; // U+D800..U+DFFF, the surrogates
    } else if (b0 >= 0xf0 && b0 <= 0xf4) {
        n = 4;
        if (b0 == 0xf0) lo = 0x90; // overlong below U+10000
        if (b0 == 0xf4) hi = 0x8f; // above U+10FFFF
    } else {
        return 0;
    }
    if (s.size() - i < n) return 0;
    const auto b1 = static_cast<unsigned char>(s[i + 1]);
    if (b1 < lo || b1 > hi) return 0;
    for (std::size_t k = 2; k < n; ++k) {
        const auto b = static_cast<unsigned char>(s[i + k]);
        if (b < 0x80 || b > 0xbf) return 0;
    }
    return n;
}

} // namespace json_grammar

/// Checks that `text` is exactly one JSON text (RFC 8259: one value, optional whitespace
/// around it, UTF-8) whose arrays and objects nest at most `max_depth` deep. Iterative: the
/// only memory it takes is one byte per open array or object.
inline json_text_fault check_json_text(std::string_view text, std::size_t max_depth) {
    using namespace json_grammar;
    const std::size_t n = text.size();
    std::size_t p = 0;
    std::string open; // '[' or '{' per level
    auto at = [&](std::size_t i) { return static_cast<unsigned char>(text[i]); };
    auto skip_space = [&] {
        while (p < n && is_space(at(p))) ++p;
    };
    auto fault = [&](const char* what) { return json_text_fault{what, p, false}; };

    // A string starting at p (the opening quote); p ends after the closing quote.
    auto string = [&]() -> const char* {
        ++p;
        while (p < n) {
            const unsigned char c = at(p);
            if (c == '"') {
                ++p;
                return nullptr;
            }
            if (c == '\\') {
                if (p + 1 >= n) return "unterminated escape";
                const unsigned char e = at(p + 1);
                if (e == 'u') {
                    if (n - p < 6) return "truncated \\u escape";
                    for (std::size_t k = 2; k < 6; ++k) {
                        if (!is_hex(at(p + k))) return "bad \\u escape";
                    }
                    p += 6;
                } else if (e == '"' || e == '\\' || e == '/' || e == 'b' || e == 'f' || e == 'n' ||
                           e == 'r' || e == 't') {
                    p += 2;
                } else {
                    return "bad escape";
                }
            } else if (c < 0x20) {
                return "control character in a string";
            } else if (c < 0x80) {
                ++p;
            } else {
                const std::size_t len = utf8_sequence(text, p);
                if (len == 0) return "invalid UTF-8";
                p += len;
            }
        }
        return "unterminated string";
    };

    auto number = [&]() -> const char* {
        if (at(p) == '-') ++p;
        if (p >= n || !is_digit(at(p))) return "bad number";
        if (at(p) == '0') {
            ++p;
        } else {
            while (p < n && is_digit(at(p))) ++p;
        }
        if (p < n && at(p) == '.') {
            ++p;
            if (p >= n || !is_digit(at(p))) return "bad number";
            while (p < n && is_digit(at(p))) ++p;
        }
        if (p < n && (at(p) == 'e' || at(p) == 'E')) {
            ++p;
            if (p < n && (at(p) == '+' || at(p) == '-')) ++p;
            if (p >= n || !is_digit(at(p))) return "bad number";
            while (p < n && is_digit(at(p))) ++p;
        }
        return nullptr;
    };

    auto literal = [&](std::string_view word) -> const char* {
        if (text.substr(p, word.size()) != word) return "unexpected character";
        p += word.size();
        return nullptr;
    };

    // An object member's key and colon; p at the key's opening quote (or whatever is there).
    auto key = [&]() -> const char* {
        if (p >= n) return "unexpected end";
        if (at(p) != '"') return "expected a string key";
        if (const char* e = string()) return e;
        skip_space();
        if (p >= n || at(p) != ':') return "expected ':'";
        ++p;
        return nullptr;
    };

    skip_space();
    for (;;) {
        // A value is expected at p (after any whitespace).
        skip_space();
        if (p >= n) return fault("unexpected end");
        const unsigned char c = at(p);
        const char* e = nullptr;
        bool value_done = true;
        if (c == '[' || c == '{') {
            if (open.size() >= max_depth) {
                return json_text_fault{"nested deeper than the limit", p, true};
            }
            open.push_back(static_cast<char>(c));
            ++p;
            skip_space();
            const unsigned char close = c == '[' ? ']' : '}';
            if (p < n && at(p) == close) {
                open.pop_back();
                ++p;
            } else if (c == '{') {
                e = key();
                value_done = false;
            } else {
                value_done = false;
            }
        } else if (c == '"') {
            e = string();
        } else if (c == '-' || is_digit(c)) {
            e = number();
        } else if (c == 't') {
            e = literal("true");
        } else if (c == 'f') {
            e = literal("false");
        } else if (c == 'n') {
            e = literal("null");
        } else {
            e = "unexpected character";
        }
        if (e != nullptr) return fault(e);
        if (!value_done) continue;

        // After a value: close containers, or go on to the next element or member.
        for (;;) {
            skip_space();
            if (open.empty()) {
                if (p != n) return fault("characters after the JSON value");
                return {};
            }
            if (p >= n) return fault("unexpected end");
            const unsigned char d = at(p);
            if (d == ',') {
                ++p;
                if (open.back() == '{') {
                    skip_space();
                    if (const char* k = key()) return fault(k);
                }
                break; // a value follows
            }
            if ((d == ']' && open.back() == '[') || (d == '}' && open.back() == '{')) {
                open.pop_back();
                ++p;
                continue;
            }
            return fault(open.back() == '[' ? "expected ',' or ']'" : "expected ',' or '}'");
        }
    }
}

/// Only JSON whitespace (or nothing): a blank line.
inline bool json_blank(std::string_view text) noexcept {
    return std::all_of(text.begin(), text.end(), [](char c) {
        return json_grammar::is_space(static_cast<unsigned char>(c));
    });
}

/// Reassembles json-mode messages from a byte stream delivered in arbitrary pieces. Throws
/// `ipc_error` on a line that is not JSON text or exceeds `max_message_size`; after that the
/// decoder must not be used again. Holds at most one line beyond `max_message_size` plus
/// the bytes of the last `feed`.
class json_line_decoder {
public:
    explicit json_line_decoder(codec_limits limits) noexcept : m_limits(limits) {}

    /// Consumes the bytes of one read. Throws `ipc_error` if the line they leave unfinished
    /// is already longer than `max_message_size`.
    void feed(std::span<const std::byte> bytes) {
        if (m_pos != 0 &&
            (m_pos == m_buf.size() || m_pos >= compact_at || 2 * m_pos >= m_buf.size())) {
            // Consumed lines go, in one move per this many bytes: linear overall.
            m_buf.erase(m_buf.begin(), m_buf.begin() + static_cast<std::ptrdiff_t>(m_pos));
            m_scanned -= m_pos;
            m_tail -= m_pos;
            m_pos = 0;
        }
        m_buf.insert(m_buf.end(), bytes.begin(), bytes.end());
        for (std::size_t i = bytes.size(); i > 0; --i) {
            if (bytes[i - 1] == std::byte{'\n'}) {
                m_tail = m_buf.size() - bytes.size() + i;
                break;
            }
        }
        if (m_buf.size() - m_tail > m_limits.max_message_size) {
            fail("message exceeds max_message_size " + std::to_string(m_limits.max_message_size));
        }
    }

    /// The next message (its JSON text, without the line feed), or empty until a whole line
    /// has arrived. Throws `ipc_error` for a line that is not JSON text.
    std::optional<frame> next() {
        for (;;) {
            if (m_scanned == m_buf.size()) return std::nullopt; // (memchr takes no null)
            const auto* base = reinterpret_cast<const char*>(m_buf.data());
            const char* from = base + m_scanned;
            const char* nl =
                static_cast<const char*>(std::memchr(from, '\n', m_buf.size() - m_scanned));
            if (nl == nullptr) {
                m_scanned = m_buf.size();
                return std::nullopt;
            }
            const std::string_view line(base + m_pos,
                                        static_cast<std::size_t>(nl - (base + m_pos)));
            m_pos = static_cast<std::size_t>(nl - base) + 1;
            m_scanned = m_pos;
            if (line.size() > m_limits.max_message_size) {
                fail("message exceeds max_message_size " +
                     std::to_string(m_limits.max_message_size));
            }
            if (json_blank(line)) continue;
            if (auto f = check_json_text(line, m_limits.max_depth)) {
                fail(std::string("json message: ") + f.what + " at byte " + std::to_string(f.at));
            }
            // Node's own internal messages are not for the user.
            static constexpr std::string_view internal = "{\"cmd\":\"NODE_";
            if (line.substr(0, internal.size()) == internal) continue;
            frame out;
            const auto* bytes = reinterpret_cast<const std::byte*>(line.data());
            out.body.assign(bytes, bytes + line.size());
            return out;
        }
    }

    /// Bytes held: the unfinished line, lines not yet taken, and some already taken.
    std::size_t buffered() const noexcept { return m_buf.size(); }

    /// True when part of a line has arrived but not its line feed.
    bool mid_line() const noexcept { return m_tail != m_buf.size(); }

    [[noreturn]] static void fail(const std::string& why) {
        throw ipc_error("conflux::ipc: protocol error: " + why);
    }

private:
    static constexpr std::size_t compact_at = 64 * 1024;

    codec_limits m_limits;
    std::vector<std::byte> m_buf;
    std::size_t m_pos = 0;     // start of the first line not yet returned
    std::size_t m_scanned = 0; // no line feed in [m_pos, m_scanned)
    std::size_t m_tail = 0;    // after the last line feed in m_buf
};

/// Refuses `text` that cannot be sent as one json-mode message: `std::invalid_argument` for
/// text that is no JSON text on one line, `ipc_error` for text too large or too deep (as
/// binary mode refuses such messages).
inline void check_json_message(std::string_view text, codec_limits limits) {
    if (text.size() > limits.max_message_size) {
        throw ipc_error("conflux::ipc: message exceeds max_message_size");
    }
    if (json_blank(text) || text.find('\n') != std::string_view::npos) {
        throw std::invalid_argument("conflux::ipc_channel: a json message is one non-empty "
                                    "line of JSON text");
    }
    if (auto f = check_json_text(text, limits.max_depth)) {
        if (f.too_deep) {
            throw ipc_error("conflux::ipc: json message nested deeper than " +
                            std::to_string(limits.max_depth) + " levels");
        }
        throw std::invalid_argument(std::string("conflux::ipc_channel: a json message is one "
                                                "line of JSON text: ") +
                                    f.what + " at byte " + std::to_string(f.at));
    }
}

} // namespace conflux::detail
