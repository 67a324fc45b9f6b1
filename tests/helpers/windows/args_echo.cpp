// Prints the arguments this program received from the C runtime, one per line, each as the
// hexadecimal UTF-16 code units of the argument (4 digits each; an empty argument is an empty
// line), so the test reads back exactly what the runtime made of the command line, whatever
// the console code page. Built with -municode (MinGW-w64), so argv is the runtime's own wide
// split of GetCommandLineW(): msvcrt's under MinGW-w64 and Wine, the UCRT's with MSVC.
//
//   conflux_windows_args_echo --env NAME    prints the variable NAME the same way, or "unset".
#include <cstdio>
#include <cstdlib>
#include <cwchar>

namespace {

void print_hex(const wchar_t* text) {
    for (const wchar_t* p = text; *p != L'\0'; ++p) {
        std::printf("%04x", static_cast<unsigned>(static_cast<unsigned short>(*p)));
    }
    std::printf("\n");
}

} // namespace

int wmain(int argc, wchar_t** argv) {
    if (argc == 3 && std::wcscmp(argv[1], L"--env") == 0) {
        const wchar_t* value = _wgetenv(argv[2]);
        if (value == nullptr) {
            std::printf("unset\n");
        } else {
            print_hex(value);
        }
        return 0;
    }
    for (int i = 0; i < argc; ++i) print_hex(argv[i]);
    return 0;
}
