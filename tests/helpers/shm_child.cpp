// Child side of the cross-process shared_buffer / atomic_view tests.
//
//   conflux_shm_child <mode> <fd> <bytes> [n]
//
// <fd> is an inherited descriptor of the parent's shared_buffer, <bytes> its size. Layout the
// modes agree on: int32 cell 0 (protocol word), int32 cell 1 (ready flag), uint32 at byte 8,
// uint64 at byte 16.
//   count n   add 1 n times to the uint32 at byte 8 and to the uint64 at byte 16
//   pong n    n rounds: wait for cell 0 == 2k+1, store 2k+2, notify
//   pong64 n  the same on the uint64 at byte 16 with values k << 32 (only the high half moves)
//   wait      block in wait(cell 0, 0); exit 0 if it returned ok
//   die       set cell 1, notify it, then exit with status 7 without touching cell 0
//   apong n   pong with a coroutine in wait_async (each wait bounded by 2 s: exit 4 if not)
//   lanes n   one thread per int32 cell from byte 64 to the end, each ponging n rounds on it
//   poke      set cell 1, notify cell 0 without changing it, wait for cell 1 == 2, exit

#include <conflux/run.hpp>
#include <conflux/shared_buffer.hpp>
#include <conflux/task.hpp>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

namespace {

conflux::task<int> async_pong(conflux::atomic_view<std::int32_t> cells, std::uint64_t n) {
    for (std::int32_t k = 0; k < static_cast<std::int32_t>(n); ++k) {
        while (cells.load(0) != 2 * k + 1) {
            const conflux::wait_result r =
                co_await cells.wait_async(0, 2 * k, std::chrono::seconds(2));
            if (r == conflux::wait_result::timed_out && cells.load(0) != 2 * k + 1) co_return 4;
        }
        cells.store(0, 2 * k + 2);
        cells.notify(0);
    }
    co_return 0;
}

} // namespace

int main(int argc, char** argv) try {
    if (argc < 4) {
        std::fprintf(stderr, "usage: %s mode fd bytes [n]\n", argv[0]);
        return 2;
    }
    const std::string mode = argv[1];
    const int fd = std::atoi(argv[2]);
    const auto bytes = static_cast<std::size_t>(std::strtoull(argv[3], nullptr, 10));
    const std::uint64_t n = argc > 4 ? std::strtoull(argv[4], nullptr, 10) : 0;

    const conflux::shared_buffer memory = conflux::shared_buffer::from_fd(fd, bytes);
    ::close(fd);
    const auto cells = memory.view<std::int32_t>(0, 2);
    const auto counter32 = memory.view<std::uint32_t>(8, 1);
    const auto word64 = memory.view<std::uint64_t>(16, 1);

    if (mode == "count") {
        for (std::uint64_t k = 0; k < n; ++k) {
            counter32.add(0, 1);
            word64.add(0, 1);
        }
        return 0;
    }
    if (mode == "pong") {
        for (std::int32_t k = 0; k < static_cast<std::int32_t>(n); ++k) {
            while (cells.load(0) != 2 * k + 1) cells.wait(0, 2 * k);
            cells.store(0, 2 * k + 2);
            cells.notify(0);
        }
        return 0;
    }
    if (mode == "pong64") {
        for (std::uint64_t k = 0; k < n; ++k) {
            while (word64.load(0) != (2 * k + 1) << 32) word64.wait(0, (2 * k) << 32);
            word64.store(0, (2 * k + 2) << 32);
            word64.notify(0);
        }
        return 0;
    }
    if (mode == "wait") {
        return cells.wait(0, 0) == conflux::wait_result::ok ? 0 : 1;
    }
    if (mode == "die") {
        cells.store(1, 1);
        cells.notify(1);
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        std::_Exit(7); // mid-protocol: cell 0 is never written
    }
    if (mode == "apong") {
        return conflux::run(async_pong(cells, n));
    }
    if (mode == "lanes") {
        const auto lanes = memory.view<std::int32_t>(64, (bytes - 64) / 4);
        std::vector<std::thread> threads;
        for (std::size_t j = 0; j < lanes.size(); ++j) {
            threads.emplace_back([&, j] {
                for (std::int32_t k = 0; k < static_cast<std::int32_t>(n); ++k) {
                    while (lanes.load(j) != 2 * k + 1) lanes.wait(j, 2 * k);
                    lanes.store(j, 2 * k + 2);
                    lanes.notify(j);
                }
            });
        }
        for (auto& t : threads) t.join();
        return 0;
    }
    if (mode == "poke") {
        cells.store(1, 1);
        cells.notify(1);
        cells.notify(0); // cell 0 unchanged
        while (cells.load(1) != 2) cells.wait(1, 1);
        return 0;
    }
    std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
    return 2;
} catch (const std::exception& e) {
    std::fprintf(stderr, "conflux_shm_child: %s\n", e.what());
    return 3;
}
