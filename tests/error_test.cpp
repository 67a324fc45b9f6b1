#include <conflux/error.hpp>

#include <doctest/doctest.h>

#include <stdexcept>
#include <type_traits>

TEST_CASE("conflux errors form one hierarchy") {
    static_assert(std::is_base_of_v<std::runtime_error, conflux::error>);
    static_assert(std::is_base_of_v<conflux::error, conflux::operation_cancelled>);
    conflux::operation_cancelled e;
    CHECK(std::string(e.what()) == "conflux: operation cancelled");
    CHECK(std::string(conflux::operation_cancelled("read cancelled").what()) == "read cancelled");
}
