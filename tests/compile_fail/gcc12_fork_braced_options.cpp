// expect: name the options first: .conflux::spawn_options o.*conflux::fork
// GCC 12 destroys options written inside a co_await expression twice: refused there.
#include <conflux/fork.hpp>

conflux::task<> f() {
    auto child = co_await conflux::fork("worker", {}, {.cwd = "/tmp"});
    (void)child;
}

int main() {}
