// expect: lambda with captures.*conflux::spawn_thread\(fn\)
// GCC 12 destroys a lambda with a non-trivial capture written inside co_await twice.
#include <conflux/spawn_thread.hpp>

#include <string>
#include <vector>

conflux::task<> f() {
    std::vector<std::string> words{"a", "b"};
    auto n = co_await conflux::spawn_thread([words] { return words.size(); });
    (void)n;
}

int main() {}
