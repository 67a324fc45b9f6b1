// expect: name the options first: .conflux::spawn_options o
// Inside co_await the options would be destroyed twice; spawn cannot tell, so it refuses
// options written in the call on GCC 12.
#include <conflux/process.hpp>

conflux::task<> f() {
    auto status = co_await conflux::spawn("true", {}, {.cwd = "/tmp"}).wait();
    (void)status;
}

int main() {}
