#include <conflux/file_descriptor.hpp>

#include <doctest/doctest.h>

#include "support/test_support.hpp"

#include <cerrno>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

#include <fcntl.h>
#include <unistd.h>

namespace {

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

} // namespace

TEST_CASE("file_descriptor owns, moves, releases and resets a descriptor") {
    static_assert(!std::is_copy_constructible_v<conflux::file_descriptor>);
    static_assert(std::is_nothrow_move_constructible_v<conflux::file_descriptor>);
    const auto before = conflux_test::open_fds();
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    {
        conflux::file_descriptor read_end(p[0]);
        conflux::file_descriptor write_end(p[1]);
        CHECK(read_end);
        CHECK(read_end.get() == p[0]);

        conflux::file_descriptor moved(std::move(read_end));
        CHECK_FALSE(read_end);
        CHECK(read_end.get() == -1);
        CHECK(moved.get() == p[0]);

        const int raw = write_end.release();
        CHECK_FALSE(write_end);
        CHECK(is_open(raw));
        write_end.reset(raw); // owned again, closed with the rest
        CHECK(write_end.get() == raw);
    }
    CHECK_FALSE(is_open(p[0]));
    CHECK_FALSE(is_open(p[1]));
    CHECK(conflux_test::open_fds() == before);
}

TEST_CASE("file_descriptor::duplicate gives a close-on-exec copy and leaves the original") {
    int p[2];
    REQUIRE(::pipe(p) == 0); // without O_CLOEXEC: the copy must have it anyway
    conflux::file_descriptor read_end(p[0]);
    conflux::file_descriptor write_end(p[1]);
    {
        auto copy = conflux::file_descriptor::duplicate(write_end.get());
        REQUIRE(copy);
        CHECK(copy.get() != write_end.get());
        CHECK((::fcntl(copy.get(), F_GETFD) & FD_CLOEXEC) != 0);
        CHECK(::write(copy.get(), "x", 1) == 1);
    }
    CHECK(is_open(write_end.get()));
    char c = 0;
    CHECK(::read(read_end.get(), &c, 1) == 1);
    CHECK(c == 'x');
}

TEST_CASE("file_descriptor::duplicate of a closed descriptor throws, naming it") {
    int p[2];
    REQUIRE(::pipe2(p, O_CLOEXEC) == 0);
    ::close(p[0]);
    ::close(p[1]);
    const auto before = conflux_test::open_fds();
    try {
        (void)conflux::file_descriptor::duplicate(p[0]);
        FAIL("no exception");
    } catch (const std::system_error& e) {
        CHECK(e.code().value() == EBADF);
        CHECK(std::string(e.what()).find("dup descriptor " + std::to_string(p[0])) !=
              std::string::npos);
    }
    CHECK(conflux_test::open_fds() == before);
}
