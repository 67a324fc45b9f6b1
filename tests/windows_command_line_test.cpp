// Windows only: the command line, cmd.exe line, environment block and program lookup that
// detail/windows/command_line.hpp builds for CreateProcessW. Each is checked against what
// Windows itself makes of it: CommandLineToArgvW, a child's C runtime, cmd.exe running a batch
// file, a child's environment, the file system.
#include <conflux/detail/windows/command_line.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <shellapi.h>

namespace cw = conflux::detail::windows;
namespace fs = std::filesystem;
using namespace std::string_literals;

namespace {

std::vector<std::wstring> split_with_shell32(const std::wstring& line) {
    int count = 0;
    LPWSTR* parts = ::CommandLineToArgvW(line.c_str(), &count);
    REQUIRE(parts != nullptr);
    std::vector<std::wstring> result(parts, parts + count);
    ::LocalFree(parts);
    return result;
}

std::vector<std::wstring> widened(const std::vector<std::string>& argv) {
    std::vector<std::wstring> result;
    for (const std::string& arg : argv) result.push_back(cw::widen(arg));
    return result;
}

// A printable form of a wide string for failure messages.
std::string shown(const std::wstring& text) { return cw::narrow(text); }

std::string message_of(auto&& f) {
    try {
        f();
    } catch (const std::invalid_argument& e) {
        return e.what();
    }
    return "(nothing thrown)";
}

struct run_result {
    std::string output;
    DWORD exit_code = 0;
};

// Starts `application` with `line` (and `environment`, a block, when given) in `cwd`, with its
// standard output on a pipe, and waits for it.
run_result run(const std::wstring& application, std::wstring line,
               const std::wstring* environment = nullptr, const fs::path& cwd = {}) {
    SECURITY_ATTRIBUTES inheritable{sizeof(SECURITY_ATTRIBUTES), nullptr, TRUE};
    HANDLE read_end = nullptr;
    HANDLE write_end = nullptr;
    REQUIRE(::CreatePipe(&read_end, &write_end, &inheritable, 0));
    REQUIRE(::SetHandleInformation(read_end, HANDLE_FLAG_INHERIT, 0));
    // Standard error goes to NUL, so that nothing but what the child prints on purpose (Wine
    // may write notes of its own on standard error) reaches the output that is checked.
    HANDLE null_device =
        ::CreateFileW(L"NUL", GENERIC_READ | GENERIC_WRITE, FILE_SHARE_READ | FILE_SHARE_WRITE,
                      &inheritable, OPEN_EXISTING, 0, nullptr);
    STARTUPINFOW startup{};
    startup.cb = sizeof(startup);
    startup.dwFlags = STARTF_USESTDHANDLES;
    startup.hStdInput = null_device;
    startup.hStdOutput = write_end;
    startup.hStdError = null_device;
    PROCESS_INFORMATION process{};
    const std::wstring directory = cwd.wstring();
    const BOOL started =
        ::CreateProcessW(application.c_str(), line.data(), nullptr, nullptr, TRUE,
                         CREATE_UNICODE_ENVIRONMENT | CREATE_NO_WINDOW,
                         environment ? const_cast<wchar_t*>(environment->data()) : nullptr,
                         directory.empty() ? nullptr : directory.c_str(), &startup, &process);
    const DWORD error = ::GetLastError();
    ::CloseHandle(write_end);
    if (null_device != INVALID_HANDLE_VALUE) ::CloseHandle(null_device);
    if (!started) {
        ::CloseHandle(read_end);
        FAIL("CreateProcessW " << shown(application) << " failed: " << error);
    }
    run_result result;
    char chunk[4096];
    DWORD got = 0;
    while (::ReadFile(read_end, chunk, sizeof(chunk), &got, nullptr) && got > 0) {
        result.output.append(chunk, got);
    }
    ::CloseHandle(read_end);
    REQUIRE(::WaitForSingleObject(process.hProcess, 60000) == WAIT_OBJECT_0);
    ::GetExitCodeProcess(process.hProcess, &result.exit_code);
    ::CloseHandle(process.hThread);
    ::CloseHandle(process.hProcess);
    return result;
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        if (!line.empty() && line.back() == '\r') line.pop_back();
        lines.push_back(line);
    }
    return lines;
}

// The helper prints each string as 4 hex digits per UTF-16 code unit, one string per line.
std::vector<std::wstring> decode_hex_lines(const std::string& output) {
    std::vector<std::wstring> result;
    for (const std::string& line : lines_of(output)) {
        REQUIRE(line.size() % 4 == 0);
        std::wstring text;
        for (std::size_t i = 0; i < line.size(); i += 4) {
            text += static_cast<wchar_t>(std::stoul(line.substr(i, 4), nullptr, 16));
        }
        result.push_back(text);
    }
    return result;
}

fs::path this_program_dir() {
    std::wstring buffer(32768, L'\0');
    const DWORD length =
        ::GetModuleFileNameW(nullptr, buffer.data(), static_cast<DWORD>(buffer.size()));
    REQUIRE(length > 0);
    buffer.resize(length);
    return fs::path(buffer).parent_path();
}

std::wstring args_echo_path() {
    return (this_program_dir() / L"conflux_windows_args_echo.exe").wstring();
}

std::wstring comspec() {
    wchar_t buffer[MAX_PATH];
    const DWORD length = ::GetEnvironmentVariableW(L"COMSPEC", buffer, MAX_PATH);
    if (length > 0 && length < MAX_PATH) return std::wstring(buffer, length);
    const UINT system = ::GetSystemDirectoryW(buffer, MAX_PATH);
    REQUIRE(system > 0);
    return std::wstring(buffer, system) + L"\\cmd.exe";
}

// A fresh folder under the temporary directory, removed with everything in it at the end.
class temp_dir {
public:
    temp_dir() {
        static int counter = 0;
        // The tick count as well: Wine reuses process ids from run to run, and a folder left
        // by an earlier run (a file still held when it ended) must not be taken over.
        m_path = fs::temp_directory_path() /
                 ("conflux-cmdline-" + std::to_string(::GetCurrentProcessId()) + "-" +
                  std::to_string(::GetTickCount64()) + "-" + std::to_string(++counter));
        REQUIRE(fs::create_directories(m_path));
    }
    temp_dir(const temp_dir&) = delete;
    temp_dir& operator=(const temp_dir&) = delete;
    ~temp_dir() {
        std::error_code ignored;
        fs::remove_all(m_path, ignored);
    }
    const fs::path& path() const { return m_path; }

private:
    fs::path m_path;
};

void write_file(const fs::path& path, std::string_view content) {
    std::ofstream out(path, std::ios::binary);
    out << content;
    REQUIRE(out.good());
}

std::string read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream content;
    content << in.rdbuf();
    return content.str();
}

// Arguments that break naive quoting: separators, quotes, runs of backslashes before a quote
// and at the end, cmd.exe's operators (meaningless to CommandLineToArgvW), line breaks, and
// characters outside ASCII, with and without surrogate pairs.
const std::vector<std::string> hostile_arguments = {
    "",
    " ",
    "a b",
    "\t",
    "tab\there",
    "\"",
    "\"\"",
    "say \"hi\"",
    "\\",
    "\\\\",
    "a\\",
    "a\\\\",
    "a\\\\\\",
    "dir with space\\",
    "C:\\Program Files\\",
    "\\\"",
    "\\\\\"",
    "a\\\"b",
    "a\\\\\"b",
    "\"\\",
    "\\\\server\\share\\",
    "&|<>^%!",
    "%PATH%",
    "!PATH!",
    "^\"&calc.exe",
    "line\nbreak",
    "carriage\rreturn",
    "vertical\vtab",
    "ünïcødé",
    "emoji 😀 and 🎉",
    "中文字符",
    "mixed \"ünï\\\" \\",
    "--flag=\"value with spaces\"",
    "   ",
    "\"a b\" c",
};

// Random argument lists made of pieces rather than bytes, so that most strings are valid UTF-8
// and the hostile characters meet each other often: runs of backslashes before quotes, spaces
// after backslashes, ... argv[0] is drawn from what a program path may hold. Seeded, so that a
// failure reproduces.
class random_argv {
public:
    explicit random_argv(unsigned seed) : m_random(seed) {}

    std::vector<std::string> operator()() {
        std::vector<std::string> argv = {text(program_pieces, 6)};
        // Not the one argv[0] command_line refuses: white space and a trailing backslash.
        const bool has_space = argv[0].find_first_of(" \t") != std::string::npos;
        if (argv[0].empty() || (has_space && argv[0].back() == '\\')) argv[0] += "x";
        const int extra = std::uniform_int_distribution<int>(0, 4)(m_random);
        for (int i = 0; i < extra; ++i) argv.push_back(text(pieces, 10));
        return argv;
    }

private:
    std::string text(const std::vector<std::string>& from, int max_pieces) {
        std::string result;
        const int count = std::uniform_int_distribution<int>(0, max_pieces)(m_random);
        for (int i = 0; i < count; ++i) {
            result +=
                from[std::uniform_int_distribution<std::size_t>(0, from.size() - 1)(m_random)];
        }
        return result;
    }

    inline static const std::vector<std::string> pieces = {
        "a", " ", "\t", "\"", "\\", "\\", "\n", "\v", "&", "%", "^", "ü", "😀", "中", "=", ";", "'"};
    inline static const std::vector<std::string> program_pieces = {"a", " ", "\\", "/",
                                                                   ":", ".", "ü",  "&"};
    std::mt19937 m_random;
};

} // namespace

TEST_CASE("widen and narrow convert UTF-8 and UTF-16 both ways") {
    CHECK(cw::widen("plain") == L"plain");
    CHECK(cw::widen("ünïcødé") == L"\u00fcn\u00efc\u00f8d\u00e9");
    CHECK(cw::widen("中") == L"\u4e2d");
    // U+1F600 needs a surrogate pair in UTF-16.
    CHECK(cw::widen("😀") == std::wstring{wchar_t(0xD83D), wchar_t(0xDE00)});
    CHECK(cw::widen("") == L"");
    for (const std::string& text :
         {"ünïcødé"s, "emoji 😀"s, "中文字符"s, "\x7f"s, "\xf4\x8f\xbf\xbf"s}) {
        CHECK(cw::narrow(cw::widen(text)) == text);
    }
}

TEST_CASE("widen refuses malformed UTF-8, saying where") {
    const std::vector<std::pair<std::string, std::string>> bad = {
        {"\x80", "cannot start a character at byte 0"},
        {"ok\xc3", "truncated sequence at byte 2"},
        {"\xc3(", "missing continuation byte at byte 0"},
        {"\xc0\x80", "cannot start a character"}, // overlong NUL
        {"\xe0\x80\x80", "overlong form"},        // overlong three-byte
        {"\xed\xa0\x80", "surrogate"},            // U+D800 written as UTF-8
        {"\xf4\x90\x80\x80", "past U+10FFFF"},    // U+110000
        {"\xff", "cannot start a character"},
    };
    for (const auto& [text, expected] : bad) {
        const std::string& input = text; // Clang before 16 cannot capture a structured binding
        const std::string message = message_of([&] { (void)cw::widen(input); });
        INFO(message);
        CHECK(message.find("invalid UTF-8") != std::string::npos);
        CHECK(message.find(expected) != std::string::npos);
    }
}

TEST_CASE("widen refuses an embedded NUL, at which Windows would cut the string") {
    const std::string message = message_of([] { (void)cw::widen("a\0b"s); });
    CHECK(message.find("embedded NUL at byte 1") != std::string::npos);
}

TEST_CASE("narrow turns a lone surrogate into U+FFFD") {
    CHECK(cw::narrow(std::wstring{wchar_t(0xD800), L'x'}) == "\xef\xbf\xbdx");
    CHECK(cw::narrow(std::wstring{L'x', wchar_t(0xDC00)}) == "x\xef\xbf\xbd");
    CHECK(cw::narrow(std::wstring{wchar_t(0xDE00), wchar_t(0xD83D)}) == "\xef\xbf\xbd\xef\xbf\xbd");
}

TEST_CASE("command_line quotes only what needs it, by the MSVC rules") {
    const std::vector<std::string> argv = {"C:\\tools\\app.exe", "plain",   "a b",
                                           "a\\\\\"b",           "end\\\\", ""};
    CHECK(cw::command_line(argv) ==
          L"C:\\tools\\app.exe plain \"a b\" \"a\\\\\\\\\\\"b\" end\\\\ \"\"");
    const std::vector<std::string> trailing = {"p", "dir with space\\"};
    CHECK(cw::command_line(trailing) == L"p \"dir with space\\\\\"");
    const std::vector<std::string> spaced = {"C:\\Program Files\\app.exe"};
    CHECK(cw::command_line(spaced) == L"\"C:\\Program Files\\app.exe\"");
}

TEST_CASE("command_line round-trips hostile arguments through CommandLineToArgvW") {
    std::vector<std::string> argv = {"C:\\Program Files\\app dir\\app.exe"};
    argv.insert(argv.end(), hostile_arguments.begin(), hostile_arguments.end());
    const std::wstring line = cw::command_line(argv);
    INFO(shown(line));
    CHECK(split_with_shell32(line) == widened(argv));

    // Each alone as well, where an empty or quote-only argument is also the last one.
    for (const std::string& arg : hostile_arguments) {
        const std::vector<std::string> one = {"app", arg};
        INFO(arg);
        CHECK(split_with_shell32(cw::command_line(one)) == widened(one));
    }
}

TEST_CASE("command_line round-trips thousands of random hostile argument lists") {
    random_argv make_argv(20240409);
    int checked = 0;
    for (int round = 0; round < 3000; ++round) {
        const std::vector<std::string> argv = make_argv();
        const std::wstring line = cw::command_line(argv);
        const auto parsed = split_with_shell32(line);
        if (parsed != widened(argv)) {
            FAIL("round " << round << ": " << shown(line));
        }
        ++checked;
    }
    CHECK(checked == 3000);
}

TEST_CASE("command_line refuses what no command line can carry") {
    const std::vector<std::string> quoted_program = {"C:\\odd\"name.exe", "x"};
    CHECK(message_of([&] {
              (void)cw::command_line(quoted_program);
          }).find("argv[0] contains '\"'") != std::string::npos);

    const std::vector<std::string> nul_argument = {"app", "ok", "a\0b"s};
    const std::string nul = message_of([&] { (void)cw::command_line(nul_argument); });
    CHECK(nul.find("argv[2]") != std::string::npos);
    CHECK(nul.find("NUL") != std::string::npos);

    const std::vector<std::string> bad_utf8 = {"app", "caf\xe9"};
    const std::string utf8 = message_of([&] { (void)cw::command_line(bad_utf8); });
    CHECK(utf8.find("argv[1]: invalid UTF-8") != std::string::npos);

    const std::vector<std::string> nothing;
    CHECK_THROWS_AS((void)cw::command_line(nothing), std::invalid_argument);
}

TEST_CASE("command_line: argv[0] with spaces, tabs or nothing at all stays one argument") {
    for (const std::string& program :
         {""s, " "s, "\t"s, "C:\\ab\\"s, "\\\\"s, "a\\b c"s, "ünï 😀"s, "a\tb c"s}) {
        const std::vector<std::string> argv = {program, "x"};
        INFO(program);
        CHECK(split_with_shell32(cw::command_line(argv)) == widened(argv));
    }
}

TEST_CASE("command_line refuses an argv[0] with white space and a trailing backslash") {
    // Windows reads "C:\a b\" x as C:\a b\ then x, Wine's msvcrt takes \" for an escaped
    // quote and reads on: no spelling is read back the same by both, so it is refused.
    for (const std::string& program : {"C:\\a b\\"s, " \\"s, "\t\\\\"s}) {
        const std::vector<std::string> argv = {program, "x"};
        INFO(program);
        CHECK(message_of([&] { (void)cw::command_line(argv); }).find("ends with a backslash") !=
              std::string::npos);
    }
}

TEST_CASE("command lines longer than CreateProcessW takes are refused, saying so") {
    const std::vector<std::string> fits = {"p", std::string(32766 - 2, 'a')};
    CHECK(cw::command_line(fits).size() == 32766);
    const std::vector<std::string> too_long = {"p", std::string(32766 - 1, 'a')};
    CHECK(message_of([&] { (void)cw::command_line(too_long); }).find("32767 characters long") !=
          std::string::npos);
    CHECK_THROWS_AS((void)cw::shell_command_line(std::string(40000, 'a'), L"cmd.exe"),
                    std::invalid_argument);
    const std::vector<std::string> args = {std::string(40000, 'a')};
    CHECK_THROWS_AS((void)cw::batch_command_line(L"x.bat", args, L"cmd.exe"),
                    std::invalid_argument);
}

TEST_CASE("a child started with command_line receives exactly its arguments") {
    // The helper's argv comes from its C runtime (msvcrt here: MinGW-w64 links it, and Wine
    // supplies its own). The UCRT of current Windows applies the same rules to everything
    // command_line writes: it never writes "" inside quotes, where the runtimes differ (before
    // 2008 a doubled quote ended the quoted part; after, it stays inside).
    const std::wstring helper = args_echo_path();
    std::vector<std::string> argv = {cw::narrow(helper)};
    argv.insert(argv.end(), hostile_arguments.begin(), hostile_arguments.end());
    const run_result result = run(helper, cw::command_line(argv));
    CHECK(result.exit_code == 0);
    const auto received = decode_hex_lines(result.output);
    const auto expected = widened(argv);
    REQUIRE(received.size() == expected.size());
    for (std::size_t i = 0; i < expected.size(); ++i) {
        INFO("argument " << i << ": " << argv[i]);
        CHECK(received[i] == expected[i]);
    }
}

TEST_CASE("a child's C runtime splits random hostile argument lists back exactly") {
    // The runtime's parser is not shell32's: each list, argv[0] included, goes through a real
    // child. argv[0] need not name the file; lpApplicationName does.
    const std::wstring helper = args_echo_path();
    random_argv make_argv(20240411);
    for (int round = 0; round < 25; ++round) {
        const std::vector<std::string> argv = make_argv();
        const std::wstring line = cw::command_line(argv);
        INFO("round " << round << ": " << shown(line));
        CHECK(decode_hex_lines(run(helper, line).output) == widened(argv));
    }
}

TEST_CASE("a program path with spaces stays one argv[0], and its arguments follow") {
    temp_dir dir;
    const fs::path spaced = dir.path() / L"with space & ünï";
    fs::create_directories(spaced);
    const fs::path copy = spaced / L"echo args.exe";
    fs::copy_file(args_echo_path(), copy);
    const std::vector<std::string> argv = {cw::narrow(copy.wstring()), "one", "two words"};
    const run_result result = run(copy.wstring(), cw::command_line(argv));
    CHECK(decode_hex_lines(result.output) == widened(argv));
}

TEST_CASE("is_batch_file sees .bat and .cmd in any case, past trailing dots and spaces") {
    for (const std::wstring_view path :
         {L"run.bat", L"RUN.CMD", L"C:\\dir\\Run.Bat", L"run.bat.", L"run.bat...", L"run.bat ",
          L"run.cmd . .", L"run.bat::$DATA", L"run.BAT::$data", L"run.bat::$DATA. ",
          L"C:/a b/run.cmd"}) {
        INFO(shown(std::wstring(path)));
        CHECK(cw::is_batch_file(path));
    }
    for (const std::wstring_view path :
         {L"run.exe", L"run.bat.exe", L"run.batx", L"runbat", L"bat", L".bat\\run.exe",
          L"run.cmdline", L"run.bat:stream", L""}) {
        INFO(shown(std::wstring(path)));
        CHECK_FALSE(cw::is_batch_file(path));
    }
}

TEST_CASE("shell_command_line hands the whole command to cmd.exe with /d /s /c") {
    const std::wstring shell = comspec();
    CHECK(cw::shell_command_line("echo one& echo two", L"C:\\Windows\\System32\\cmd.exe") ==
          L"C:\\Windows\\System32\\cmd.exe /d /s /c \"echo one& echo two\"");
    const run_result result = run(shell, cw::shell_command_line("echo one& echo \"two\"", shell));
    const auto lines = lines_of(result.output);
    REQUIRE(lines.size() >= 2);
    CHECK(lines[0] == "one");
    CHECK(lines[1] == "\"two\"");

    // A shell command is the user's: %VARIABLE% expands, as it would typed at the prompt.
    const run_result expanded = run(shell, cw::shell_command_line("echo [%OS%]", shell));
    CHECK(lines_of(expanded.output).at(0) == "[Windows_NT]");

    CHECK(message_of([] {
              (void)cw::shell_command_line("echo a\necho b", L"cmd.exe");
          }).find("line break") != std::string::npos);
    CHECK_THROWS_AS((void)cw::shell_command_line("echo\0"s, L"cmd.exe"), std::invalid_argument);
    CHECK_THROWS_AS((void)cw::shell_command_line("echo", L"c:\\odd\"cmd.exe"),
                    std::invalid_argument);
}

namespace {

// A batch file that writes its first nine arguments (%~1 .. %~9: outer quotes removed) to
// out.txt in the current directory, one per line as "[value]". The value stands inside quotes,
// where the batch file itself does not act on & | < > ^ in it (a bare echo %~1 would: that is
// the batch file's own injection, not the launcher's). No delayed expansion: Wine 8's cmd.exe
// expands !name! again inside a value read with !var!, which Windows never does.
constexpr std::string_view echo_batch = "@echo off\r\n"
                                        "setlocal DisableDelayedExpansion\r\n"
                                        "echo \"[%~1]\">out.txt\r\n"
                                        "echo \"[%~2]\">>out.txt\r\n"
                                        "echo \"[%~3]\">>out.txt\r\n"
                                        "echo \"[%~4]\">>out.txt\r\n"
                                        "echo \"[%~5]\">>out.txt\r\n"
                                        "echo \"[%~6]\">>out.txt\r\n"
                                        "echo \"[%~7]\">>out.txt\r\n"
                                        "echo \"[%~8]\">>out.txt\r\n"
                                        "echo \"[%~9]\">>out.txt\r\n";

struct batch_fixture {
    temp_dir dir;
    fs::path script;
    std::wstring shell = comspec();

    batch_fixture() {
        // A folder name that cmd.exe would act on unquoted.
        const fs::path folder = dir.path() / L"bat dir & (x) ^";
        fs::create_directories(folder);
        script = folder / L"echo args.bat";
        write_file(script, echo_batch);
    }

    // The arguments as the batch file saw them, 9 of them. Each run writes in a folder of its
    // own, so that no run reads or removes a file another one's cmd.exe may still hold.
    std::vector<std::string> run_with(const std::vector<std::string>& args) {
        const fs::path cwd = dir.path() / ("run" + std::to_string(++m_runs));
        fs::create_directories(cwd);
        const std::wstring line = cw::batch_command_line(script.wstring(), args, shell);
        INFO(shown(line));
        (void)run(shell, line, nullptr, cwd);
        std::vector<std::string> seen;
        for (const std::string& line : lines_of(read_file(cwd / "out.txt"))) {
            REQUIRE(line.size() >= 4);
            seen.push_back(line.substr(2, line.size() - 4));
        }
        return seen;
    }

    bool injected() const {
        for (const auto& entry : fs::recursive_directory_iterator(dir.path())) {
            if (entry.path().filename() == "marker.txt") return true;
        }
        return false;
    }

private:
    int m_runs = 0;
};

} // namespace

TEST_CASE("batch_command_line: a batch file receives plain and quoted arguments as given") {
    batch_fixture batch;
    const std::vector<std::string> args = {"plain", "two words", "", "C:\\dir\\", "-x=1,2;3"};
    auto seen = batch.run_with(args);
    REQUIRE(seen.size() == 9);
    for (std::size_t i = 0; i < args.size(); ++i) {
        INFO("args[" << i << "]");
        CHECK(seen[i] == args[i]);
    }
    CHECK(seen[5].empty()); // nothing was split into more arguments
}

TEST_CASE("batch_command_line: cmd.exe operators in arguments arrive literally and run nothing") {
    batch_fixture batch;
    const std::vector<std::string> args = {
        "&echo injected>marker.txt",
        "|echo injected>marker.txt",
        "^&echo injected>marker.txt",
        ")&(echo injected>marker.txt)",
        "<nul >marker.txt",
        "a^b^^c",
        "!PATH! & !a1!",
        "dir with space\\",
        "trailing\\\\",
    };
    auto seen = batch.run_with(args);
    REQUIRE(seen.size() == 9);
    for (std::size_t i = 0; i < args.size(); ++i) {
        INFO("args[" << i << "]");
        CHECK(seen[i] == args[i]);
    }
    CHECK_FALSE(batch.injected());
}

TEST_CASE("batch_command_line: arguments outside ASCII arrive as given") {
    // chcp 65001 makes echo write UTF-8 to the file rather than the OEM code page.
    batch_fixture batch;
    write_file(batch.script, "@echo off\r\nchcp 65001 >nul\r\n"s + std::string(echo_batch));
    const std::vector<std::string> args = {"ünïcødé", "中文 字符", "😀"};
    auto seen = batch.run_with(args);
    REQUIRE(seen.size() == 9);
    for (std::size_t i = 0; i < args.size(); ++i) {
        INFO("args[" << i << "]");
        CHECK(seen[i] == args[i]);
    }
}

TEST_CASE("batch_command_line: random hostile arguments arrive as given or are refused") {
    // Pieces that cmd.exe acts on outside quotes, with payloads that would leave a marker file
    // if any of them ever ran, and the characters that must be refused.
    const std::vector<std::string> pieces = {"a",
                                             " ",
                                             "\t",
                                             "\\",
                                             "&",
                                             "|",
                                             "<",
                                             ">",
                                             "^",
                                             "(",
                                             ")",
                                             "!",
                                             ",",
                                             ";",
                                             "=",
                                             "@",
                                             "ü",
                                             "😀",
                                             "&echo injected>marker.txt",
                                             "\"",
                                             "%",
                                             "%OS%",
                                             "\n",
                                             "\r",
                                             "\x1a"};
    batch_fixture batch;
    std::mt19937 random(20240410);
    int delivered = 0;
    int refused = 0;
    for (int round = 0; round < 18; ++round) {
        std::vector<std::string> args;
        for (int i = 0; i < 9; ++i) {
            std::string arg;
            const int count = std::uniform_int_distribution<int>(0, 6)(random);
            for (int k = 0; k < count; ++k) {
                arg += pieces[std::uniform_int_distribution<std::size_t>(0, pieces.size() -
                                                                                1)(random)];
            }
            const std::string_view refusable = "\"%\n\r\x1a";
            // Most rounds keep to what may pass, so that many arguments reach the batch file.
            if (round % 3 != 0 && arg.find_first_of(refusable) != std::string::npos) arg = "x";
            args.push_back(arg);
        }
        const bool must_refuse = std::any_of(args.begin(), args.end(), [](const std::string& a) {
            return a.find_first_of("\"%\n\r\x1a") != std::string::npos;
        });
        if (must_refuse) {
            CHECK_THROWS_AS((void)cw::batch_command_line(batch.script.wstring(), args, batch.shell),
                            std::invalid_argument);
            ++refused;
            continue;
        }
        write_file(batch.script, "@echo off\r\nchcp 65001 >nul\r\n"s + std::string(echo_batch));
        const auto seen = batch.run_with(args);
        REQUIRE(seen.size() == 9);
        for (std::size_t i = 0; i < args.size(); ++i) {
            INFO("round " << round << " args[" << i << "]: " << args[i]);
            CHECK(seen[i] == args[i]);
        }
        ++delivered;
    }
    CHECK(delivered >= 8);
    CHECK(refused >= 2);
    CHECK_FALSE(batch.injected());
}

TEST_CASE("batch_command_line refuses what cmd.exe acts on inside quotes, naming the argument") {
    const std::vector<std::pair<std::string, std::string>> refused = {
        {"\"&calc.exe", "'\"'"},
        {"\" & echo injected>marker.txt & \"", "'\"'"},
        {"say \"hi\"", "'\"'"},
        {"%PATH%", "'%'"},
        {"100%", "'%'"},
        {"%=ExitCode%", "'%'"},
        {"line\nbreak&echo injected>marker.txt", "line break"},
        {"carriage\rreturn", "line break"},
        {"ctrl-z \x1a", "control character"},
        {"esc \x1b[0m", "control character"},
        {"caf\xe9", "invalid UTF-8"},
        {"a\0b"s, "NUL"},
    };
    batch_fixture batch;
    for (const auto& [arg, reason] : refused) {
        const std::vector<std::string> args = {"fine", arg};
        const std::string message = message_of(
            [&] { (void)cw::batch_command_line(batch.script.wstring(), args, batch.shell); });
        INFO(message);
        CHECK(message.find("args[1]") != std::string::npos);
        CHECK(message.find(reason) != std::string::npos);
    }
    CHECK_THROWS_AS((void)cw::batch_command_line(L"C:\\100%\\x.bat", {}, batch.shell),
                    std::invalid_argument);
    CHECK_THROWS_AS((void)cw::batch_command_line(L"C:\\x\".bat", {}, batch.shell),
                    std::invalid_argument);
    CHECK_THROWS_AS((void)cw::batch_command_line(L"x.bat", {}, L"C:\\odd\"cmd.exe"),
                    std::invalid_argument);
    CHECK_FALSE(batch.injected());
}

TEST_CASE("batch_command_line: the line has the documented shape") {
    const std::vector<std::string> args = {"a", "b c", ""};
    CHECK(cw::batch_command_line(L"C:\\x y\\run.cmd", args, L"C:\\Windows\\System32\\cmd.exe") ==
          L"C:\\Windows\\System32\\cmd.exe /d /e:ON /v:OFF /s /c "
          L"\"\"C:\\x y\\run.cmd\" a \"b c\" \"\"\"");
}

TEST_CASE("environment_block sorts by upper-cased name and lets a later entry win") {
    const std::vector<std::pair<std::string, std::string>> variables = {
        {"b", "1"},          {"a_b", "2"},           {"AB", "3"}, {"Path", "old"}, {"PATH", "new"},
        {"=C:", "C:\\work"}, {"x", "v=with=equals"}, {"ü", "ä"},
    };
    const std::wstring block = cw::environment_block(variables);
    // Upper-cased, "AB" comes before "A_B" ('B' is 0x42, '_' 0x5F); compared lower-cased it
    // would be the other way round. "=C:" sorts before letters ('=' is 0x3D).
    const std::wstring expected = L"=C:=C:\\work"s + L'\0' + L"AB=3" + L'\0' + L"a_b=2" + L'\0' +
                                  L"b=1" + L'\0' + L"PATH=new" + L'\0' + L"x=v=with=equals" +
                                  L'\0' + L"\u00fc=\u00e4" + L'\0' + L'\0';
    CHECK(block == expected);
    CHECK(cw::environment_block({}) == std::wstring(2, L'\0'));
}

TEST_CASE("environment_block refuses bad names and NULs, naming the entry") {
    const std::vector<std::pair<std::pair<std::string, std::string>, std::string>> refused = {
        {{"", "x"}, "empty or contains '='"},      {{"A=B", "x"}, "empty or contains '='"},
        {{"=", "x"}, "empty or contains '='"},     {{"=C:=", "x"}, "empty or contains '='"},
        {{"A\0B"s, "x"}, "(name): embedded NUL"},  {{"A", "x\0y"s}, "(value): embedded NUL"},
        {{"A", "\xff"}, "(value): invalid UTF-8"},
    };
    for (const auto& [variable, reason] : refused) {
        const std::vector<std::pair<std::string, std::string>> variables = {{"OK", "1"}, variable};
        const std::string message = message_of([&] { (void)cw::environment_block(variables); });
        INFO(message);
        CHECK(message.find("environment variable 1") != std::string::npos);
        CHECK(message.find(reason) != std::string::npos);
    }
}

TEST_CASE("a child started with an environment_block sees the variables, case-insensitively") {
    // The child gets this process's environment plus the probes: under Wine a child also needs
    // the variables Wine itself reads (WINEPREFIX, ...), and a real launch inherits them too.
    std::vector<std::pair<std::string, std::string>> variables;
    wchar_t* strings = ::GetEnvironmentStringsW();
    REQUIRE(strings != nullptr);
    for (const wchar_t* p = strings; *p != L'\0'; p += std::wcslen(p) + 1) {
        const std::wstring_view entry(p);
        const std::size_t equals = entry.find(L'=', 1); // past a hidden "=C:" name's own '='
        if (equals == std::wstring_view::npos) continue;
        variables.emplace_back(cw::narrow(entry.substr(0, equals)),
                               cw::narrow(entry.substr(equals + 1)));
    }
    ::FreeEnvironmentStringsW(strings);
    variables.emplace_back("conflux_probe", "first");
    variables.emplace_back("CONFLUX_PROBE", "välue with = and 😀");
    const std::wstring block = cw::environment_block(variables);

    const std::wstring helper = args_echo_path();
    const std::vector<std::string> argv = {cw::narrow(helper), "--env", "Conflux_Probe"};
    const run_result result = run(helper, cw::command_line(argv), &block);
    const auto values = decode_hex_lines(result.output);
    REQUIRE(values.size() == 1);
    CHECK(values[0] == cw::widen("välue with = and 😀"));
}

namespace {

void touch(const fs::path& path) { write_file(path, ""); }

// Makes the current directory `dir` for its lifetime.
class current_directory {
public:
    explicit current_directory(const fs::path& dir) : m_previous(fs::current_path()) {
        fs::current_path(dir);
    }
    current_directory(const current_directory&) = delete;
    current_directory& operator=(const current_directory&) = delete;
    ~current_directory() {
        std::error_code ignored;
        fs::current_path(m_previous, ignored);
    }

private:
    fs::path m_previous;
};

} // namespace

TEST_CASE("find_program searches PATH in order, trying PATHEXT in its order") {
    temp_dir root;
    const fs::path a = root.path() / "a";
    const fs::path b = root.path() / "b";
    fs::create_directories(a);
    fs::create_directories(b);
    touch(a / "foo.exe");
    touch(a / "foo.bat");
    touch(a / "foo");
    touch(b / "foo.exe");
    touch(b / "bar.cmd");
    touch(b / "tool"); // a bare file without extension: never what runs
    touch(b / "tool.cmd");
    touch(b / "app.v2.exe");
    touch(b / "data.txt");
    fs::create_directories(b / "dir.exe"); // a folder never matches
    const std::wstring path = a.wstring() + L";" + b.wstring();

    CHECK(cw::find_program(L"foo", path, L".EXE;.BAT") == a.wstring() + L"\\foo.EXE");
    CHECK(cw::find_program(L"foo", path, L".BAT;.EXE") == a.wstring() + L"\\foo.BAT");
    CHECK(cw::find_program(L"foo", path, L"") == a.wstring() + L"\\foo.EXE"); // default list
    CHECK(cw::find_program(L"foo", path, L";.bat;") == a.wstring() + L"\\foo.bat");
    CHECK(cw::find_program(L"foo", path, L"bat") == a.wstring() + L"\\foo.bat"); // dot added
    CHECK(cw::find_program(L"bar", path, L"") == b.wstring() + L"\\bar.CMD");
    CHECK(cw::find_program(L"tool", path, L"") == b.wstring() + L"\\tool.CMD");
    CHECK(cw::find_program(L"foo.bat", path, L"") == a.wstring() + L"\\foo.bat");
    CHECK(cw::find_program(L"app.v2", path, L"") == b.wstring() + L"\\app.v2.EXE");
    CHECK(cw::find_program(L"data.txt", path, L"") == b.wstring() + L"\\data.txt");
    CHECK(cw::find_program(L"dir", path, L"") == std::nullopt);
    CHECK(cw::find_program(L"missing", path, L"") == std::nullopt);
    CHECK(cw::find_program(L"", path, L"") == std::nullopt);
    CHECK(cw::find_program(L"foo", L"", L"") == std::nullopt);
    // Later directories are reached when earlier ones lack the name; b's foo.exe is shadowed.
    CHECK(cw::find_program(L"foo", b.wstring() + L";" + a.wstring(), L".EXE") ==
          b.wstring() + L"\\foo.EXE");
    // A trailing separator on an entry is not doubled.
    CHECK(cw::find_program(L"bar", b.wstring() + L"\\", L"") == b.wstring() + L"\\bar.CMD");
}

TEST_CASE("find_program takes quoted PATH entries, which may hold ';'") {
    temp_dir root;
    const fs::path odd = root.path() / "semi;colon dir";
    fs::create_directories(odd);
    touch(odd / "baz.exe");
    const std::wstring path = L"C:\\nowhere;\"" + odd.wstring() + L"\";C:\\nowhere2";
    CHECK(cw::find_program(L"baz", path, L".EXE") == odd.wstring() + L"\\baz.EXE");
    // Unquoted, the ';' splits the folder and nothing is found.
    CHECK(cw::find_program(L"baz", odd.wstring(), L".EXE") == std::nullopt);
}

TEST_CASE("find_program never looks in the current directory unless told to") {
    temp_dir root;
    touch(root.path() / "local.exe");
    current_directory here(root.path());
    CHECK(cw::find_program(L"local", L"", L"") == std::nullopt);
    CHECK(cw::find_program(L"local", L"C:\\nowhere", L"") == std::nullopt);
    // Relative PATH entries are skipped: they mean the current directory, or one below it.
    CHECK(cw::find_program(L"local", L".;.\\;sub", L"") == std::nullopt);
    // A separator says where: used as given, relative to the current directory.
    CHECK(cw::find_program(L".\\local", L"", L"") == L".\\local.EXE");
    CHECK(cw::find_program(L"./local.exe", L"", L"") == L"./local.exe");
    const std::wstring absolute = (root.path() / "local").wstring();
    CHECK(cw::find_program(absolute, L"C:\\nowhere", L".EXE") == absolute + L".EXE");
    CHECK(cw::find_program(absolute + L".exe", L"", L"") == absolute + L".exe");
    CHECK(cw::find_program(absolute + L"-missing", L"", L"") == std::nullopt);
    // So does a drive: "C:local" is local in drive C's current directory, and PATH is not
    // searched for it.
    const std::wstring drive = root.path().wstring().substr(0, 2);
    REQUIRE(drive[1] == L':');
    CHECK(cw::find_program(drive + L"local", L"", L"") == drive + L"local.EXE");
    touch(root.path() / "elsewhere.exe");
    fs::create_directories(root.path() / "sub");
    current_directory below(root.path() / "sub");
    CHECK(cw::find_program(drive + L"elsewhere", root.path().wstring(), L"") == std::nullopt);
    CHECK(cw::find_program(L"elsewhere", root.path().wstring(), L"") ==
          root.path().wstring() + L"\\elsewhere.EXE");
}

TEST_CASE("plan_launch finds the program and builds its line; a batch file goes through cmd.exe") {
    temp_dir root;
    const fs::path tools = root.path() / "tools dir";
    fs::create_directories(tools);
    fs::copy_file(args_echo_path(), tools / "probe.exe");
    write_file(tools / "probe2.bat", echo_batch);
    const std::wstring path = L"C:\\nowhere;" + tools.wstring();
    const std::wstring shell = comspec();

    const std::vector<std::string> args = {"a b", "\"quoted\"", "tail\\"};
    const auto program = cw::plan_launch("probe", args, path, L"", shell);
    REQUIRE(program.has_value());
    CHECK(program->application == tools.wstring() + L"\\probe.EXE");
    const std::vector<std::string> expected = {"probe", "a b", "\"quoted\"", "tail\\"};
    CHECK(decode_hex_lines(run(program->application, program->command_line).output) ==
          widened(expected));

    const std::vector<std::string> batch_args = {"x y", "&echo injected>marker.txt"};
    const auto batch = cw::plan_launch("probe2", batch_args, path, L"", shell);
    REQUIRE(batch.has_value());
    CHECK(batch->application == shell);
    (void)run(batch->application, batch->command_line, nullptr, root.path());
    const auto seen = lines_of(read_file(root.path() / "out.txt"));
    REQUIRE(seen.size() == 9);
    CHECK(seen[0] == "\"[x y]\"");
    CHECK(seen[1] == "\"[&echo injected>marker.txt]\"");
    CHECK_FALSE(fs::exists(root.path() / "marker.txt"));

    const std::vector<std::string> expanding = {"%OS%"};
    CHECK_THROWS_AS((void)cw::plan_launch("probe2", expanding, path, L"", shell),
                    std::invalid_argument);
    CHECK(cw::plan_launch("missing", args, path, L"", shell) == std::nullopt);
    current_directory here(tools);
    CHECK(cw::plan_launch("probe", args, L"", L"", shell) == std::nullopt);
    CHECK(cw::plan_launch(".\\probe", args, L"", L"", shell).has_value());
}
