// A pipeline of stages joined by channels, each stage on a thread of its own: read -> square
// -> sum. Bounded channels give back-pressure; closing a channel ends the next stage.
#include <conflux/conflux.hpp>
#include <conflux/spawn_thread.hpp>

#include <cstdint>
#include <cstdio>

namespace {

conflux::task<> produce(conflux::channel<std::uint64_t>& out, std::uint64_t n) {
    for (std::uint64_t i = 1; i <= n; ++i) co_await out.send(i);
    out.close();
}

conflux::task<> square(conflux::channel<std::uint64_t>& in, conflux::channel<std::uint64_t>& out) {
    while (auto v = co_await in.receive()) co_await out.send(*v * *v);
    out.close();
}

conflux::task<std::uint64_t> sum(conflux::channel<std::uint64_t>& in) {
    std::uint64_t total = 0;
    while (auto v = co_await in.receive()) total += *v;
    co_return total;
}

conflux::task<int> amain() {
    constexpr std::uint64_t n = 100000;
    conflux::channel<std::uint64_t> numbers(64);
    conflux::channel<std::uint64_t> squares(64);
    // Each stage runs on its own thread with its own event loop; this loop waits for all.
    auto [produced, squared, total] = co_await conflux::when_all(
        conflux::spawn_thread([&]() -> conflux::task<> { co_await produce(numbers, n); }),
        conflux::spawn_thread([&]() -> conflux::task<> { co_await square(numbers, squares); }),
        conflux::spawn_thread(
            [&]() -> conflux::task<std::uint64_t> { co_return co_await sum(squares); }));
    (void)produced;
    (void)squared;
    const std::uint64_t expected = n * (n + 1) * (2 * n + 1) / 6;
    std::printf("sum of squares 1..%llu = %llu (%s)\n", static_cast<unsigned long long>(n),
                static_cast<unsigned long long>(total), total == expected ? "ok" : "WRONG");
    co_return total == expected ? 0 : 1;
}

} // namespace

int main() { return conflux::run(amain()); }
