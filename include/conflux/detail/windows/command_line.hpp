#pragma once

// What launching a program on Windows needs before CreateProcessW: the one command line string
// the child splits back into argv (Windows passes a string, not an array), the same through
// cmd.exe for shell commands and batch files, the environment block, and the program lookup.
// Pure functions over strings, apart from find_program, which asks the file system. The launch
// includes this header alone: it brings environment_block, find_program, widen and narrow.

#include <conflux/detail/windows/environment_block.hpp>
#include <conflux/detail/windows/find_program.hpp>
#include <conflux/detail/windows/utf16.hpp>

#include <algorithm>
#include <cstddef>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace conflux::detail::windows {

namespace command_line_detail {

// widen(), with the refusal saying which string it was about.
inline std::wstring widen_named(std::string_view utf8, const std::string& what) {
    try {
        return widen(utf8);
    } catch (const std::invalid_argument& e) {
        throw std::invalid_argument(what + ": " + e.what());
    }
}

// The MSVC runtime and CommandLineToArgvW split arguments at spaces and tabs outside quotes.
// Newline and vertical tab do not split there, but other parsers (older runtimes, scripts
// that re-split the line) treat them as white space, so they are quoted too, as libuv and Go do.
inline bool needs_quotes(std::wstring_view arg) {
    return arg.empty() || arg.find_first_of(L" \t\n\v\"") != std::wstring_view::npos;
}

// One argument after argv[0], by the MSVC rules: backslashes are literal unless a quote follows
// them; n backslashes before a quote are written 2n+1 (each pair gives one backslash, the last
// one makes the quote literal); n backslashes before the closing quote are written 2n so that
// the closing quote stays a delimiter.
inline void append_argument(std::wstring& out, std::wstring_view arg) {
    if (!needs_quotes(arg)) {
        out += arg;
        return;
    }
    out += L'"';
    std::size_t backslashes = 0;
    for (const wchar_t c : arg) {
        if (c == L'\\') {
            ++backslashes;
            continue;
        }
        if (c == L'"') {
            out.append(2 * backslashes + 1, L'\\');
        } else {
            out.append(backslashes, L'\\');
        }
        out += c;
        backslashes = 0;
    }
    out.append(2 * backslashes, L'\\');
    out += L'"';
}

// argv[0] follows other rules: CommandLineToArgvW and the runtimes of Windows (msvcrt, UCRT)
// read it unquoted up to the first space or tab, quoted up to the next quote, and never take a
// backslash as an escape. So a quote in it cannot be written at all (Windows file names cannot
// hold one either), and it is quoted only when it must be. Wine 8's msvcrt, though, reads
// argv[0] like the other arguments, where "\" before the closing quote is an escaped quote: a
// quoted argv[0] that ends in a backslash splits differently there, and is refused rather than
// written for one of the two. Unquoted, a backslash is literal to every parser.
inline void append_program(std::wstring& out, std::wstring_view program, const char* what) {
    if (program.find(L'"') != std::wstring_view::npos) {
        throw std::invalid_argument(std::string(what) +
                                    " contains '\"', which the program name of a Windows "
                                    "command line cannot hold (no escape exists there)");
    }
    const bool quoted = program.empty() || std::any_of(program.begin(), program.end(),
                                                       [](wchar_t c) { return c <= L' '; });
    if (quoted && program.back() == L'\\') {
        throw std::invalid_argument(std::string(what) +
                                    " has white space and ends with a backslash, which C "
                                    "runtimes read differently there (an escaped quote, or not)");
    }
    if (quoted) out += L'"';
    out += program;
    if (quoted) out += L'"';
}

inline bool is_control(wchar_t c) { return (c < 0x20 && c != L'\t') || (c >= 0x7F && c <= 0x9F); }

// Characters that mean nothing to cmd.exe, nor to a batch file's splitting of %1 %2 ... (which
// also splits at ',', ';' and '='). An argument made only of these is passed bare; any other is
// quoted, so that %1 holds the quotes and %~1 the argument itself.
inline bool is_plain_for_cmd(wchar_t c) {
    return (c >= L'a' && c <= L'z') || (c >= L'A' && c <= L'Z') || (c >= L'0' && c <= L'9') ||
           std::wstring_view(L"#$*+-./:?@\\_").find(c) != std::wstring_view::npos;
}

// Why `text` cannot go onto a cmd.exe line inside quotes, or nullptr when it can. Inside quotes
// cmd.exe takes & | < > ( ) ^ and spaces literally; what it still acts on is refused:
//  - '"' ends the quoted part, after which & | < > run commands. cmd.exe has no escape for a
//    quote inside quotes (^ is literal there), and a doubled quote reaches the batch file
//    doubled, so the argument could not arrive as given anyway.
//  - '%' expands %VARIABLE% even inside quotes, and in a /c command line (unlike a batch file)
//    "%%" is no escape. ^ is literal inside quotes; outside them "%^NAME%" stays unexpanded
//    only while no variable is named "^NAME", which would be guessing.
//  - a line feed ends the command (what follows is lost) and a carriage return is dropped; other
//    control characters are refused rather than trusted to be inert.
// '!' is safe because the line is read with /v:OFF (no delayed expansion).
inline const char* cmd_refusal(std::wstring_view text) {
    for (const wchar_t c : text) {
        if (c == L'"') return "contains '\"', which cmd.exe cannot take inside quotes";
        if (c == L'%') {
            return "contains '%', which cmd.exe expands as %VARIABLE% even inside quotes";
        }
        if (c == L'\n' || c == L'\r') {
            return "contains a line break, at which cmd.exe ends the command";
        }
        if (is_control(c)) return "contains a control character";
    }
    return nullptr;
}

inline wchar_t ascii_lower(wchar_t c) {
    return c >= L'A' && c <= L'Z' ? static_cast<wchar_t>(c - L'A' + L'a') : c;
}

inline bool ends_with_ignoring_case(std::wstring_view text, std::wstring_view suffix) {
    if (text.size() < suffix.size()) return false;
    const auto tail = text.substr(text.size() - suffix.size());
    return std::equal(tail.begin(), tail.end(), suffix.begin(),
                      [](wchar_t a, wchar_t b) { return ascii_lower(a) == ascii_lower(b); });
}

// CreateProcessW takes at most 32767 characters including the terminating NUL, and fails
// with a bare ERROR_INVALID_PARAMETER past that; saying so here names the cause. (cmd.exe reads
// at most 8191 of them, and says "The command line is too long.")
inline constexpr std::size_t max_command_line = 32766;

inline std::wstring checked_length(std::wstring line, const char* what) {
    if (line.size() > max_command_line) {
        throw std::invalid_argument(std::string(what) + " is " + std::to_string(line.size()) +
                                    " characters long; Windows takes at most " +
                                    std::to_string(max_command_line));
    }
    return line;
}

} // namespace command_line_detail

/// The `lpCommandLine` for `CreateProcessW` that CommandLineToArgvW and the MSVC runtime (UCRT,
/// and msvcrt) split back into exactly `argv`. `argv[0]` is the program as given; it may not
/// contain '"', nor end with a backslash when it holds white space. Arguments are quoted only
/// when they need it. Throws `std::invalid_argument` for an empty argv, such an argv[0],
/// invalid UTF-8 or a NUL, naming the argument (`command line argv[2]: invalid UTF-8:
/// truncated sequence at byte 3`), and for a line longer than CreateProcessW takes (32766
/// characters).
inline std::wstring command_line(std::span<const std::string> argv) {
    using namespace command_line_detail;
    if (argv.empty()) throw std::invalid_argument("command line: argv is empty");
    std::wstring out;
    append_program(out, widen_named(argv[0], "command line argv[0]"), "command line argv[0]");
    for (std::size_t i = 1; i < argv.size(); ++i) {
        out += L' ';
        append_argument(out, widen_named(argv[i], "command line argv[" + std::to_string(i) + "]"));
    }
    return checked_length(std::move(out), "command line");
}

/// The command line that runs `command` through cmd.exe, for `exec(command)` and the `shell`
/// option, as Node does: `<comspec> /d /s /c "<command>"`, comspec written as argv[0] is (in
/// quotes when it holds white space; it may not contain '"'). The command is passed through
/// unchanged and cmd.exe reads it as a shell command: %VARIABLE% expands, & | < > ^ and quotes
/// act. /d skips the AutoRun commands of the registry; /s makes cmd.exe remove exactly the
/// first and the last quote after /c, so the command is never re-quoted by cmd's older
/// heuristics. Throws `std::invalid_argument` for a '"' in comspec, invalid UTF-8, a NUL, a
/// line break in the command (cmd.exe ends the command at a line feed and drops a carriage
/// return; join commands with & instead), or a line longer than CreateProcessW takes.
inline std::wstring shell_command_line(std::string_view command, std::wstring_view comspec) {
    using namespace command_line_detail;
    const std::wstring wide = widen_named(command, "shell command");
    if (wide.find_first_of(L"\r\n") != std::wstring::npos) {
        throw std::invalid_argument(
            "shell command contains a line break, at which cmd.exe ends the command");
    }
    std::wstring out;
    append_program(out, comspec, "comspec");
    out += L" /d /s /c \"";
    out += wide;
    out += L'"';
    return checked_length(std::move(out), "shell command line");
}

/// Whether `program_path` names cmd.exe (any directory, any case), the one shell whose command
/// line shell_command_line builds.
inline bool is_cmd_exe(std::wstring_view program_path) {
    const std::size_t slash = program_path.find_last_of(L"\\/");
    const std::wstring_view name =
        slash == std::wstring_view::npos ? program_path : program_path.substr(slash + 1);
    return name.size() == 7 && command_line_detail::ends_with_ignoring_case(name, L"cmd.exe");
}

/// True when CreateProcessW would run `program_path` through cmd.exe: its file name ends in
/// .bat or .cmd, in any case. Windows drops trailing dots and spaces from a file name, and
/// "name::$DATA" names the file's own contents, so "run.bat. ", "RUN.CMD..." and
/// "run.bat::$DATA" are batch files too (missing those reopened CVE-2024-24576 as
/// CVE-2024-43402).
inline bool is_batch_file(std::wstring_view program_path) {
    using namespace command_line_detail;
    std::wstring_view name = program_path;
    for (;;) {
        const std::size_t before = name.size();
        while (!name.empty() && (name.back() == L'.' || name.back() == L' ')) name.remove_suffix(1);
        if (ends_with_ignoring_case(name, L"::$DATA")) name.remove_suffix(7);
        if (name.size() == before) break;
    }
    return ends_with_ignoring_case(name, L".bat") || ends_with_ignoring_case(name, L".cmd");
}

/// The command line that runs the batch file `batch_path` with `args` through cmd.exe:
/// `<comspec> /d /e:ON /v:OFF /s /c ""<batch_path>" <arg> ..."`, comspec written as argv[0]
/// is. /e:ON and /v:OFF fix command extensions on and delayed expansion off whatever the
/// registry says; /s strips the outer quotes and nothing else.
///
/// Each argument arrives in the batch file as `%~N` exactly as given: one made of letters,
/// digits and `#$*+-./:?@\_` is passed bare (so `%N` is the same), any other is quoted (`%N`
/// then holds the quotes). An argument that cmd.exe would act on even inside quotes is refused
/// with `std::invalid_argument` naming it (`batch file args[1] contains '%', ...`): a '"', a
/// '%', a line break or another control character, invalid UTF-8 or a NUL. The same holds for
/// the batch path; comspec may not contain '"'; the line may not be longer than CreateProcessW
/// takes. What the batch file then does with its arguments (an unquoted %1 in a command,
/// `call`, delayed expansion it enables) is its own. Give `batch_path` in full (as
/// find_program returns it): cmd.exe looks a bare name up in the current directory first.
inline std::wstring batch_command_line(std::wstring_view batch_path,
                                       std::span<const std::string> args,
                                       std::wstring_view comspec) {
    using namespace command_line_detail;
    if (const char* why = cmd_refusal(batch_path)) {
        throw std::invalid_argument(std::string("batch file path ") + why);
    }
    std::wstring out;
    append_program(out, comspec, "comspec");
    out += L" /d /e:ON /v:OFF /s /c \"\"";
    out += batch_path;
    out += L'"';
    for (std::size_t i = 0; i < args.size(); ++i) {
        const std::string name = "batch file args[" + std::to_string(i) + "]";
        const std::wstring arg = widen_named(args[i], name);
        if (const char* why = cmd_refusal(arg)) throw std::invalid_argument(name + " " + why);
        out += L' ';
        const bool plain = !arg.empty() && std::all_of(arg.begin(), arg.end(), is_plain_for_cmd);
        if (!plain) out += L'"';
        out += arg;
        if (!plain) out += L'"';
    }
    out += L'"';
    return checked_length(std::move(out), "batch command line");
}

/// What to hand CreateProcessW to run a program: `lpApplicationName` (the file found, or
/// comspec for a batch file) and `lpCommandLine`.
struct launch_line {
    std::wstring application;
    std::wstring command_line;
};

/// The pieces above put together for `spawn(program, args)`: finds `program` with find_program
/// (never in the current directory unless it names one), and builds the line the child will
/// split, with `program` as given for argv[0] (as Node and libuv do). A batch file runs through
/// `comspec` with batch_command_line, so its arguments are checked for cmd.exe. Returns
/// `std::nullopt` when the program is not found; throws `std::invalid_argument` as the builders
/// do.
inline std::optional<launch_line> plan_launch(std::string_view program,
                                              std::span<const std::string> args,
                                              std::wstring_view path, std::wstring_view pathext,
                                              std::wstring_view comspec) {
    using namespace command_line_detail;
    auto found = find_program(widen_named(program, "program"), path, pathext);
    if (!found) return std::nullopt;
    if (is_batch_file(*found)) {
        return launch_line{std::wstring(comspec), batch_command_line(*found, args, comspec)};
    }
    std::vector<std::string> argv;
    argv.reserve(args.size() + 1);
    argv.emplace_back(program);
    argv.insert(argv.end(), args.begin(), args.end());
    return launch_line{std::move(*found), command_line(argv)};
}

} // namespace conflux::detail::windows
