// expect: lambda with captures.*pool.run\(fn\)
// GCC 12 destroys a lambda with a non-trivial capture written inside co_await twice.
#include <conflux/pool.hpp>

#include <string>
#include <vector>

conflux::task<> f(conflux::worker_pool& pool) {
    std::vector<std::string> words{"a", "b"};
    auto n = co_await pool.run([words] { return words.size(); });
    (void)n;
}

int main() {}
