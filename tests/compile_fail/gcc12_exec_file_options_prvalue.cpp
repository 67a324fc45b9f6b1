// expect: name the options first: .conflux::exec_options o.*exec_file
// GCC 12 destroys options written inside a co_await expression twice: refused there.
#include <conflux/process.hpp>

conflux::task<> f() {
    auto r = co_await conflux::exec_file("false", {}, conflux::exec_options{.check = false});
    (void)r;
}

int main() {}
