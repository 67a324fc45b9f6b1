#pragma once

#include <cerrno>
#include <string>
#include <string_view>
#include <system_error>

namespace conflux::detail {

/// Throws `std::system_error` for `err` with a message that names the operation and, when
/// given, the object: `spawn "nosuchprog": No such file or directory`.
[[noreturn]] inline void throw_system_error(int err, std::string_view operation,
                                            std::string_view object = {}) {
    std::string what(operation);
    if (!object.empty()) {
        what += " \"";
        what += object;
        what += '"';
    }
    throw std::system_error(err, std::system_category(), what);
}

/// Same, with the current `errno`.
[[noreturn]] inline void throw_errno(std::string_view operation, std::string_view object = {}) {
    throw_system_error(errno, operation, object);
}

} // namespace conflux::detail
