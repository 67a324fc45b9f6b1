#include <conflux/version.hpp>

#include <doctest/doctest.h>

#include <string>

TEST_CASE("the version macros and constants agree") {
    CHECK(conflux::version_major == CONFLUX_VERSION_MAJOR);
    CHECK(conflux::version_minor == CONFLUX_VERSION_MINOR);
    CHECK(conflux::version_patch == CONFLUX_VERSION_PATCH);
    std::string expected = std::to_string(CONFLUX_VERSION_MAJOR) + "." +
                           std::to_string(CONFLUX_VERSION_MINOR) + "." +
                           std::to_string(CONFLUX_VERSION_PATCH);
    CHECK(std::string(CONFLUX_VERSION_STRING) == expected);
}
