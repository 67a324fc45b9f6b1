// A lock-free single-producer single-consumer ring buffer in a conflux::shared_buffer, shared
// between this process and a child process (this same program, re-run with "consumer").
// Both sides sleep in atomic_view::wait when the ring is empty or full and wake each other
// with notify: the futex behind them is shared, so it works across processes.
//
//   example_shm_ring                 producer: starts the consumer and sends it the numbers
//   example_shm_ring consumer FD N   consumer: maps the ring from FD, sums N numbers

#include <conflux/shared_buffer.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

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

int producer(std::uint64_t n) {
    const conflux::shared_buffer memory(ring_bytes);
    const ring r(memory);

    // The child inherits a duplicate of the memfd (the buffer's own is close-on-exec).
    const int child_fd = memory.fd() == 3 ? 4 : 3;
    const std::string fd_arg = std::to_string(child_fd);
    const std::string n_arg = std::to_string(n);
    char self[] = "/proc/self/exe";
    char role[] = "consumer";
    char* argv[] = {self, role, const_cast<char*>(fd_arg.c_str()), const_cast<char*>(n_arg.c_str()),
                    nullptr};
    posix_spawn_file_actions_t actions;
    ::posix_spawn_file_actions_init(&actions);
    ::posix_spawn_file_actions_adddup2(&actions, memory.fd(), child_fd);
    pid_t child = -1;
    const int err = ::posix_spawn(&child, self, &actions, nullptr, argv, environ);
    ::posix_spawn_file_actions_destroy(&actions);
    if (err != 0) {
        std::fprintf(stderr, "posix_spawn: error %d\n", err);
        return 1;
    }

    std::uint64_t sum = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
        r.push(i * 3);
        sum += i * 3;
    }
    int status = 0;
    ::waitpid(child, &status, 0);
    const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    std::printf("producer: sent %llu numbers, sum %llu; consumer %s\n",
                static_cast<unsigned long long>(n), static_cast<unsigned long long>(sum),
                ok ? "agreed" : "failed");
    return ok ? 0 : 1;
}

} // namespace

int main(int argc, char** argv) {
    if (argc == 4 && std::string(argv[1]) == "consumer") {
        return consumer(std::atoi(argv[2]), std::strtoull(argv[3], nullptr, 10));
    }
    return producer(200'000);
}
