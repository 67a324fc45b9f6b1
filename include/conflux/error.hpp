#pragma once

#include <conflux/detail/cpp20.hpp>

#include <stdexcept>
#include <string>

namespace conflux {

/// Base of every exception type that is specific to conflux. OS failures are reported as
/// `std::system_error` instead, so that `code()` carries the errno.
class error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Thrown from an await that ended because its `std::stop_token` was stopped (directly, or
/// through the stop token a `task` inherits from its awaiter, as `when_any` uses).
class operation_cancelled : public error {
public:
    operation_cancelled() : error("conflux: operation cancelled") {}
    explicit operation_cancelled(const std::string& what) : error(what) {}
};

/// Thrown by a send on a `channel<T>` that is (or becomes, while the sender waits) closed.
class channel_closed : public error {
public:
    channel_closed() : error("conflux::channel: send on a closed channel") {}
};

} // namespace conflux
