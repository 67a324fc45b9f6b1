#include <conflux/buffer.hpp>

#include <doctest/doctest.h>

#include "support/test_support.hpp"

#include <cstring>
#include <stdexcept>
#include <utility>

#if !defined(_WIN32)
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#endif

TEST_CASE("buffer: zeroed bytes of the requested size") {
    conflux::buffer b(100);
    CHECK(b.size() == 100);
    CHECK_FALSE(b.detached());
    CHECK(b.bytes().size() == 100);
    for (std::byte x : b.bytes()) CHECK(x == std::byte{0});
    conflux::buffer empty(0);
    CHECK(empty.size() == 0);
    CHECK_FALSE(empty.detached());
    conflux::buffer none;
    CHECK(none.detached());
}

TEST_CASE("buffer: moving hands over the memory and detaches the source (R53)") {
    conflux::buffer a(64);
    a.bytes()[3] = std::byte{9};
    std::byte* address = a.data();
    conflux::buffer b(std::move(a));
    CHECK(a.detached());
    CHECK(a.size() == 0);
    CHECK(a.data() == nullptr);
    CHECK(b.data() == address);
    CHECK(b.bytes()[3] == std::byte{9});
    conflux::buffer c(8);
    c = std::move(b);
    CHECK(c.data() == address);
    CHECK(b.detached());
    c.reset();
    CHECK(c.detached());
}

TEST_CASE("buffer: slice and split share the memory without copying") {
    conflux::buffer b(10);
    for (std::size_t i = 0; i < 10; ++i) b.bytes()[i] = std::byte(i);
    std::byte* base = b.data();
    conflux::buffer head = b.split(4);
    CHECK(head.size() == 4);
    CHECK(head.data() == base);
    CHECK(b.size() == 6);
    CHECK(b.data() == base + 4);
    conflux::buffer mid = std::move(b).slice(1, 2);
    CHECK(b.detached());
    CHECK(mid.size() == 2);
    CHECK(mid.bytes()[0] == std::byte{5});
    head.reset(); // the memory stays alive for `mid`
    CHECK(mid.bytes()[1] == std::byte{6});
    CHECK_THROWS_AS((void)std::move(mid).slice(1, 5), std::out_of_range);
    CHECK(mid.size() == 2); // untouched by the failed slice
    CHECK_THROWS_AS((void)mid.split(3), std::out_of_range);
    conflux::buffer detached;
    CHECK_THROWS_AS((void)detached.split(0), std::logic_error);
}

TEST_CASE("buffer: clone copies") {
    conflux::buffer b(3);
    b.bytes()[0] = std::byte{1};
    conflux::buffer c = b.clone();
    CHECK(c.data() != b.data());
    CHECK(c.bytes()[0] == std::byte{1});
    CHECK(conflux::buffer{}.clone().detached());
}

#if defined(_WIN32)
TEST_CASE("Windows: a shareable buffer is a section of this process; adopting one is refused") {
    conflux::buffer b = conflux::buffer::shareable(4096);
    CHECK(b.is_shareable());
    CHECK(b.size() == 4096);
    CHECK(b.memfd() == -1); // no descriptor: the memory cannot reach a child yet
    b.bytes()[4095] = std::byte{7};
    conflux::buffer tail = b.split(1024);
    CHECK(b.bytes()[3071] == std::byte{7});
    CHECK_THROWS_AS((void)conflux::buffer::adopt_memfd(3, 4096), std::system_error);
}
#else
TEST_CASE("buffer::shareable lives in a sealed memfd that another mapping sees") {
    const auto fds_before = conflux_test::open_fds();
    {
        conflux::buffer b = conflux::buffer::shareable(4096);
        CHECK(b.is_shareable());
        REQUIRE(b.memfd() >= 0);
        CHECK(b.memfd_offset() == 0);
        std::memcpy(b.data(), "hello", 5);
        const int seals = ::fcntl(b.memfd(), F_GET_SEALS);
        CHECK((seals & F_SEAL_SHRINK) != 0);
        // A second, independent mapping (what another process would get) sees the bytes.
        conflux::buffer other = conflux::buffer::adopt_memfd(::dup(b.memfd()), 4096);
        CHECK(other.data() != b.data());
        CHECK(std::memcmp(other.data(), "hello", 5) == 0);
        other.bytes()[0] = std::byte{'J'};
        CHECK(static_cast<char>(b.bytes()[0]) == 'J');
        conflux::buffer tail = b.split(1024);
        CHECK(b.memfd_offset() == 1024);
        CHECK_FALSE(conflux::buffer(8).is_shareable());
        CHECK(conflux::buffer(8).memfd() == -1);
    }
    CHECK(conflux_test::open_fds() == fds_before);
}

TEST_CASE("buffer::adopt_memfd refuses an unsealed or short memfd") {
    const auto fds_before = conflux_test::open_fds();
    int plain = ::memfd_create("plain", MFD_CLOEXEC);
    REQUIRE(plain >= 0);
    REQUIRE(::ftruncate(plain, 4096) == 0);
    CHECK_THROWS_AS((void)conflux::buffer::adopt_memfd(plain, 4096), std::invalid_argument);
    conflux::buffer b = conflux::buffer::shareable(100);
    CHECK_THROWS_AS((void)conflux::buffer::adopt_memfd(::dup(b.memfd()), 1 << 20),
                    std::invalid_argument);
    b.reset();
    CHECK_THROWS_AS((void)conflux::buffer::shareable(0), std::invalid_argument);
    CHECK(conflux_test::open_fds() == fds_before);
}
#endif
