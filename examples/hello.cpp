// Timers and when_all: three greetings that wait different times, run concurrently.
#include <conflux/conflux.hpp>

#include <chrono>
#include <cstdio>
#include <string>

using namespace std::chrono_literals;

conflux::task<std::string> greet(std::string name, std::chrono::milliseconds delay) {
    co_await conflux::sleep_for(delay);
    std::printf("hello, %s (after %lld ms)\n", name.c_str(), static_cast<long long>(delay.count()));
    co_return name;
}

conflux::task<int> amain() {
    auto start = std::chrono::steady_clock::now();
    auto [a, b, c] = co_await conflux::when_all(greet("world", 30ms), greet("conflux", 10ms),
                                                greet("coroutines", 20ms));
    auto took = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - start);
    std::printf("%s, %s and %s greeted in %lld ms, not 60\n", a.c_str(), b.c_str(), c.c_str(),
                static_cast<long long>(took.count()));

    // The first to finish wins; the other is cancelled.
    auto first = co_await conflux::when_any(greet("fast", 5ms), greet("slow", 10s));
    std::printf("when_any picked task %zu\n", first.index());
    co_return 0;
}

int main() { return conflux::run(amain()); }
