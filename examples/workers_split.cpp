// CPU-heavy work split over workers, sharing results through buffers: each worker receives a
// slice of one big buffer (moved, not copied), computes a histogram of its bytes into it,
// and posts the buffer back. The parent sees the very same memory come back.
#include <conflux/conflux.hpp>
#include <conflux/worker.hpp>

#include <array>
#include <cstdint>
#include <cstdio>
#include <vector>

namespace {

struct job {
    conflux::buffer data;                  // the bytes to scan; returned with the result
    std::array<std::uint64_t, 4> counts{}; // bytes per quarter of the range 0..255
};

conflux::task<> scan(conflux::message_port<job>& parent) {
    while (auto j = co_await parent.receive()) {
        for (std::byte b : j->data.bytes()) ++j->counts[std::to_integer<unsigned>(b) / 64];
        parent.post(std::move(*j));
    }
}

conflux::task<int> amain() {
    constexpr std::size_t size = 32 << 20;
    constexpr std::size_t workers = 4;
    conflux::buffer all(size);
    std::uint32_t x = 12345;
    for (std::byte& b : all.bytes()) {
        x = x * 1664525u + 1013904223u; // a small LCG: reproducible input
        b = std::byte(x >> 24);
    }

    std::vector<conflux::worker<job>> pool;
    for (std::size_t i = 0; i < workers; ++i) {
        pool.emplace_back(scan, conflux::worker_options{.name = "scan-" + std::to_string(i)});
    }
    // Split the buffer into one slice per worker: no copy, the slices share the memory.
    std::vector<const std::byte*> sent;
    for (std::size_t i = 0; i < workers; ++i) {
        conflux::buffer part = i + 1 < workers ? all.split(size / workers) : std::move(all);
        sent.push_back(part.data());
        pool[i].post(job{std::move(part), {}});
    }
    std::array<std::uint64_t, 4> total{};
    bool same_memory = true;
    for (std::size_t i = 0; i < workers; ++i) {
        auto done = co_await pool[i].receive();
        if (!done) co_return 1;
        same_memory = same_memory && done->data.data() == sent[i];
        for (std::size_t q = 0; q < 4; ++q) total[q] += done->counts[q];
    }
    for (auto& w : pool) w.port().close(); // each scan loop ends
    for (auto& w : pool) co_await w.join();
    std::uint64_t sum = total[0] + total[1] + total[2] + total[3];
    std::printf("%zu workers scanned %llu bytes: %llu %llu %llu %llu per quarter; %s\n", workers,
                static_cast<unsigned long long>(sum), static_cast<unsigned long long>(total[0]),
                static_cast<unsigned long long>(total[1]),
                static_cast<unsigned long long>(total[2]),
                static_cast<unsigned long long>(total[3]),
                same_memory ? "buffers came back without a copy" : "COPIED");
    co_return sum == size&& same_memory ? 0 : 1;
}

} // namespace

int main() { return conflux::run(amain()); }
