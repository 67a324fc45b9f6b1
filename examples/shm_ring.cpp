// A lock-free single-producer single-consumer ring buffer in a conflux::shared_buffer, shared
// between this process and a child process (this same program, re-run with "consumer").
// Both sides sleep in atomic_view::wait when the ring is empty or full and wake each other
// with notify: the futex behind them is shared, so it works across processes. The parent
// starts the child with conflux::spawn, handing it the memory as its descriptor 3.
//
//   example_shm_ring                 producer: starts the consumer and sends it the numbers
//   example_shm_ring consumer FD N   consumer: maps the ring from FD, sums N numbers

#include <conflux/process.hpp>
#include <conflux/run.hpp>
#include <conflux/shared_buffer.hpp>
#include <conflux/spawn_thread.hpp>
#include <conflux/task.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <unistd.h>

namespace {

constexpr std::size_t capacity = 1024; // slots, a power of two
constexpr std::size_t ring_bytes = 64 + capacity * sizeof(std::uint64_t);

/// The ring's layout in the shared memory: two counters on their own cache lines' worth of
/// offset, then the slots. `head` counts items written, `tail` items read; both only grow
/// (they wrap at 2^32, and the unsigned difference stays right).
struct ring {
    conflux::atomic_view<std::uint32_t> head; // written by the producer only
    conflux::atomic_view<std::uint32_t> tail; // written by the consumer only
    conflux::atomic_view<std::uint64_t> slots;

    explicit ring(const conflux::shared_buffer& memory)
        : head(memory.view<std::uint32_t>(0, 1)), tail(memory.view<std::uint32_t>(32, 1)),
          slots(memory.view<std::uint64_t>(64, capacity)) {}

    void push(std::uint64_t value) const {
        const std::uint32_t h = head.load(0, std::memory_order_relaxed);
        // Full: sleep until the consumer moves tail away from the value we saw.
        for (std::uint32_t t; h - (t = tail.load(0, std::memory_order_acquire)) == capacity;) {
            tail.wait(0, t);
        }
        slots.store(h % capacity, value, std::memory_order_relaxed);
        head.store(0, h + 1, std::memory_order_release); // publishes the slot
        head.notify(0, 1);
    }

    std::uint64_t pop() const {
        const std::uint32_t t = tail.load(0, std::memory_order_relaxed);
        // Empty: sleep until the producer moves head.
        for (std::uint32_t h; (h = head.load(0, std::memory_order_acquire)) == t;) head.wait(0, h);
        const std::uint64_t value = slots.load(t % capacity, std::memory_order_relaxed);
        tail.store(0, t + 1, std::memory_order_release); // frees the slot
        tail.notify(0, 1);
        return value;
    }
};

int consumer(int fd, std::uint64_t n) {
    const auto memory = conflux::shared_buffer::from_fd(fd, ring_bytes);
    ::close(fd);
    const ring r(memory);
    std::uint64_t sum = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
        const std::uint64_t value = r.pop();
        if (value != i * 3) {
            std::fprintf(stderr, "consumer: item %llu is %llu\n",
                         static_cast<unsigned long long>(i),
                         static_cast<unsigned long long>(value));
            return 1;
        }
        sum += value;
    }
    std::printf("consumer: received %llu numbers, sum %llu\n", static_cast<unsigned long long>(n),
                static_cast<unsigned long long>(sum));
    return 0;
}

conflux::task<int> producer(std::uint64_t n) {
    const conflux::shared_buffer memory(ring_bytes);
    const ring r(memory);

    // The buffer's own descriptor is close-on-exec; from_fd gives the child a duplicate of it
    // as its fd 3, and the command line says which fd and how many numbers to expect. The
    // consumer prints to our stdout, so 0-2 are inherited instead of piped.
    using conflux::stdio_spec;
    conflux::spawn_options options{.stdio = {stdio_spec::inherit(), stdio_spec::inherit(),
                                             stdio_spec::inherit(),
                                             stdio_spec::from_fd(memory.fd())}};
    conflux::child_process child = conflux::spawn(std::filesystem::path("/proc/self/exe"),
                                                  {"consumer", "3", std::to_string(n)}, options);

    // push sleeps in atomic_view::wait while the ring is full, which would stall this event
    // loop (and with it the watch on the child's exit): produce on a thread of its own.
    const std::uint64_t sum = co_await conflux::spawn_thread([&r, n] {
        std::uint64_t total = 0;
        for (std::uint64_t i = 0; i < n; ++i) {
            r.push(i * 3);
            total += i * 3;
        }
        return total;
    });
    const conflux::exit_status status = co_await child.wait();
    std::printf("producer: sent %llu numbers, sum %llu; consumer %s\n",
                static_cast<unsigned long long>(n), static_cast<unsigned long long>(sum),
                status.success() ? "agreed" : status.to_string().c_str());
    co_return status.success() ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
    if (argc == 4 && std::string(argv[1]) == "consumer") {
        return consumer(std::atoi(argv[2]), std::strtoull(argv[3], nullptr, 10));
    }
    return conflux::run(producer(200'000));
}
