// expect: name the options first: .conflux::exec_options o
// GCC 12 destroys options written inside a co_await expression twice: refused there.
#include <conflux/process.hpp>

conflux::task<> f() {
    auto r = co_await conflux::exec("pwd", {.cwd = "/tmp"});
    (void)r;
}

int main() {}
