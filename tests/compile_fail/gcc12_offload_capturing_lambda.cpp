// expect: lambda with captures.*conflux::offload\(fn\)
// GCC 12 destroys a lambda with a non-trivial capture written inside co_await twice.
#include <conflux/spawn_thread.hpp>

#include <string>

conflux::task<> f() {
    std::string text = "abc";
    auto n = co_await conflux::offload([text] { return text.size(); });
    (void)n;
}

int main() {}
