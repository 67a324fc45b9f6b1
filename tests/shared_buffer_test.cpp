#include <conflux/shared_buffer.hpp>

#include <doctest/doctest.h>

#include "support/test_support.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#if !defined(_WIN32)
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

namespace {

#if !defined(_WIN32)
/// A memfd of `size` bytes with the given seals, owned by the test.
int make_memfd(std::size_t size, int seals) {
    const int fd = ::memfd_create("test", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    REQUIRE(fd >= 0);
    REQUIRE(::ftruncate(fd, static_cast<off_t>(size)) == 0);
    if (seals != 0) REQUIRE(::fcntl(fd, F_ADD_SEALS, seals) == 0);
    return fd;
}
#endif

template <class F>
std::string message_of(F&& f) {
    try {
        f();
    } catch (const std::exception& e) {
        return e.what();
    }
    return "(no exception)";
}

} // namespace

TEST_CASE("a new shared_buffer is zero-filled, sized and sealed") {
    conflux::shared_buffer memory(10000);
    REQUIRE(memory.size() == 10000);
    REQUIRE(memory.bytes().size() == 10000);
    REQUIRE(memory.data() == memory.bytes().data());
    for (std::byte b : memory.bytes()) REQUIRE(b == std::byte{0});

#if !defined(_WIN32) // a memfd's seals; on Windows a section's size is fixed at creation
    const int seals = ::fcntl(memory.fd(), F_GET_SEALS);
    CHECK((seals & F_SEAL_SHRINK) != 0);
    CHECK((seals & F_SEAL_GROW) != 0);
    CHECK((seals & F_SEAL_SEAL) != 0);
    // Sealed: nobody holding the fd can change its size.
    CHECK(::ftruncate(memory.fd(), 10) != 0);
    CHECK(::ftruncate(memory.fd(), 1 << 20) != 0);
    CHECK((::fcntl(memory.fd(), F_GETFD) & FD_CLOEXEC) != 0);
#endif
}

TEST_CASE("copies share the memory; the last one releases it") {
    const auto fds_before = conflux_test::open_fds();
    {
        conflux::shared_buffer a(64);
        conflux::shared_buffer b = a;
        CHECK(a == b);
        CHECK(a.use_count() == 2);
        CHECK(b.fd() == a.fd());
        std::memcpy(a.data(), "hello", 5);
        CHECK(std::memcmp(b.data(), "hello", 5) == 0);

        conflux::shared_buffer c(64);
        CHECK_FALSE(a == c);

        conflux::shared_buffer moved = std::move(b);
        CHECK(b.size() == 0); // NOLINT(bugprone-use-after-move): moved-from is empty
        CHECK(b.fd() == -1);
        CHECK(moved.size() == 64);

        // A view keeps the memory alive after every buffer is gone.
        auto view = a.view<std::uint32_t>();
        a = conflux::shared_buffer();
        moved = conflux::shared_buffer();
        view.store(3, 42);
        CHECK(view.load(3) == 42);
    }
    CHECK(conflux_test::open_fds() == fds_before);
}

TEST_CASE("copies are usable from many threads at once") {
    conflux::shared_buffer memory(4096);
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([memory, t] {
            for (int i = 0; i < 1000; ++i) {
                conflux::shared_buffer copy = memory;
                copy.view<std::uint8_t>().add(static_cast<std::size_t>(t), 1);
            }
        });
    }
    for (auto& t : threads) t.join();
    for (std::size_t t = 0; t < 4; ++t) CHECK(memory.view<std::uint8_t>().load(t) == 1000 % 256);
    CHECK(memory.use_count() == 1);
}

TEST_CASE("an empty buffer has no memory") {
    conflux::shared_buffer memory;
    CHECK(memory.size() == 0);
    CHECK(memory.empty());
    CHECK(memory.bytes().empty());
    CHECK(memory.data() == nullptr);
    CHECK(memory.fd() == -1);
    CHECK(memory.view<std::int32_t>().size() == 0);
    CHECK_THROWS_AS(memory.view<std::int32_t>().load(0), std::out_of_range);
}

TEST_CASE("size 0 and unmappable sizes are clear errors") {
    CHECK_THROWS_AS(conflux::shared_buffer(0), std::invalid_argument);
    CHECK(message_of([] { conflux::shared_buffer b(0); }).find("size 0") != std::string::npos);
    CHECK_THROWS_AS(conflux::shared_buffer{conflux::shared_buffer::max_size() + 1},
                    std::length_error);
    CHECK_THROWS_AS(conflux::shared_buffer{static_cast<std::size_t>(-1)}, std::length_error);
    // Within the nominal limit but far beyond the address space: the OS says no.
    const std::string refused =
        message_of([] { conflux::shared_buffer b(conflux::shared_buffer::max_size()); });
#if defined(_WIN32)
    CHECK((refused.find("CreateFileMapping") != std::string::npos ||
           refused.find("MapViewOfFile") != std::string::npos));
#else
    CHECK((refused.find("memfd") != std::string::npos));
#endif
    CHECK_THROWS_AS(conflux::shared_buffer{conflux::shared_buffer::max_size()}, std::system_error);
}

#if defined(_WIN32)
TEST_CASE("Windows: memory from another process is refused with a clear error, for now") {
    // Shared memory stays within one process on Windows until sections are passed to
    // children: from_fd and adopt_memfd say so instead of mapping something else.
    conflux::shared_buffer memory(256);
    CHECK(memory.fd() == -1);
    try {
        (void)conflux::shared_buffer::from_fd(3, 256);
        FAIL("from_fd did not throw");
    } catch (const std::system_error& e) {
        CHECK(e.code() == std::errc::function_not_supported);
        CHECK(std::string(e.what()).find("not supported on Windows yet") != std::string::npos);
    }
}
#else
TEST_CASE("from_fd maps the same memory and leaves the fd to the caller") {
    conflux::shared_buffer memory(256);
    const auto fds_before = conflux_test::open_fds();
    {
        conflux::shared_buffer same = conflux::shared_buffer::from_fd(memory.fd(), 256);
        CHECK_FALSE(same == memory); // another mapping, not a copy
        CHECK(same.fd() != memory.fd());
        CHECK(same.data() != memory.data());
        memory.view<std::uint64_t>().store(5, 0x1122334455667788u);
        CHECK(same.view<std::uint64_t>().load(5) == 0x1122334455667788u);
        same.bytes()[0] = std::byte{9};
        CHECK(memory.bytes()[0] == std::byte{9});

        // A prefix is fine.
        conflux::shared_buffer prefix = conflux::shared_buffer::from_fd(memory.fd(), 16);
        CHECK(prefix.size() == 16);
        CHECK(prefix.bytes()[0] == std::byte{9});
    }
    CHECK(conflux_test::open_fds() == fds_before);
    CHECK(::fcntl(memory.fd(), F_GETFD) >= 0); // still open
}

TEST_CASE("from_fd rejects what could fault this process") {
    SUBCASE("an unsealed memfd") {
        const int fd = make_memfd(4096, 0);
        CHECK_THROWS_AS(conflux::shared_buffer::from_fd(fd, 4096), std::invalid_argument);
        CHECK(message_of([&] {
                  conflux::shared_buffer::from_fd(fd, 4096);
              }).find("F_SEAL_SHRINK") != std::string::npos);
        ::close(fd);
    }
    SUBCASE("a memfd sealed against growing only") {
        const int fd = make_memfd(4096, F_SEAL_GROW);
        CHECK_THROWS_AS(conflux::shared_buffer::from_fd(fd, 4096), std::invalid_argument);
        ::close(fd);
    }
    SUBCASE("a memfd sealed against shrinking is accepted") {
        const int fd = make_memfd(4096, F_SEAL_SHRINK);
        auto memory = conflux::shared_buffer::from_fd(fd, 4096);
        CHECK(memory.size() == 4096);
        ::close(fd);
    }
    SUBCASE("a file smaller than claimed") {
        const int fd = make_memfd(4096, F_SEAL_SHRINK | F_SEAL_GROW);
        CHECK_THROWS_AS(conflux::shared_buffer::from_fd(fd, 4097), std::invalid_argument);
        CHECK(message_of([&] { conflux::shared_buffer::from_fd(fd, 8192); }).find("fewer than") !=
              std::string::npos);
        ::close(fd);
    }
    SUBCASE("size 0") {
        const int fd = make_memfd(4096, F_SEAL_SHRINK);
        CHECK_THROWS_AS(conflux::shared_buffer::from_fd(fd, 0), std::invalid_argument);
        ::close(fd);
    }
    SUBCASE("a pipe, which cannot be sealed") {
        int p[2];
        REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
        CHECK_THROWS_AS(conflux::shared_buffer::from_fd(p[0], 16), std::invalid_argument);
        ::close(p[0]);
        ::close(p[1]);
    }
    SUBCASE("a closed descriptor") {
        const int fd = make_memfd(64, F_SEAL_SHRINK);
        ::close(fd);
        try {
            conflux::shared_buffer::from_fd(fd, 64);
            FAIL("no exception");
        } catch (const std::system_error& e) {
            CHECK(e.code() == std::errc::bad_file_descriptor);
        }
    }
    SUBCASE("a memfd sealed against writing cannot be mapped writable") {
        const int fd = make_memfd(64, F_SEAL_SHRINK | F_SEAL_WRITE);
        CHECK_THROWS_AS(conflux::shared_buffer::from_fd(fd, 64), std::system_error);
        ::close(fd);
    }
}

#endif

TEST_CASE("views: bounds, alignment and aliasing") {
    conflux::shared_buffer memory(64);
    CHECK(memory.view<std::uint8_t>().size() == 64);
    CHECK(memory.view<std::int16_t>().size() == 32);
    CHECK(memory.view<std::uint32_t>().size() == 16);
    CHECK(memory.view<std::int64_t>().size() == 8);
    CHECK(memory.view<std::uint32_t>(8, 2).size() == 2);
    CHECK(memory.view<std::uint32_t>(64, 0).size() == 0);

    CHECK_THROWS_AS(memory.view<std::uint32_t>(2, 1), std::invalid_argument);
    CHECK_THROWS_AS(memory.view<std::uint64_t>(4, 1), std::invalid_argument);
    CHECK_THROWS_AS(memory.view<std::uint16_t>(1, 1), std::invalid_argument);
    CHECK_THROWS_AS(memory.view<std::uint32_t>(60, 2), std::out_of_range);
    CHECK_THROWS_AS(memory.view<std::uint32_t>(68, 0), std::out_of_range);
    CHECK_THROWS_AS(memory.view<std::uint64_t>(8, static_cast<std::size_t>(-1) / 4),
                    std::out_of_range);

    conflux::shared_buffer odd(10);
    CHECK_THROWS_AS(odd.view<std::uint32_t>(), std::invalid_argument);
    CHECK(odd.view<std::uint16_t>().size() == 5);

    // Views of different widths alias the same bytes, as typed arrays over one buffer do.
    auto words = memory.view<std::uint32_t>(8, 2);
    words.store(1, 0xA0B0C0D0u);
    std::uint32_t raw;
    std::memcpy(&raw, memory.data() + 12, 4);
    CHECK(raw == 0xA0B0C0D0u);
    CHECK(memory.view<std::uint32_t>().load(3) == 0xA0B0C0D0u);
    CHECK_THROWS_AS(words.load(2), std::out_of_range);
}

#if !defined(_WIN32) // from_fd: memory from another process
TEST_CASE("from_fd of a shared_buffer's memfd: no further than its size, trailer excluded") {
    conflux::shared_buffer memory(100);
    struct stat st {};
    REQUIRE(::fstat(memory.fd(), &st) == 0);
    CHECK(static_cast<std::size_t>(st.st_size) > memory.size()); // the wake trailer
    CHECK(memory.bytes().size() == 100);
    auto same = conflux::shared_buffer::from_fd(memory.fd(), 100);
    CHECK(same.size() == 100);
    // Within the file, but past the buffer: refused, so that nobody writes over the trailer.
    CHECK_THROWS_AS(conflux::shared_buffer::from_fd(memory.fd(), 101), std::invalid_argument);
    CHECK(message_of([&] {
              conflux::shared_buffer::from_fd(memory.fd(), static_cast<std::size_t>(st.st_size));
          }).find("fewer than") != std::string::npos);
}
#endif
