#pragma once

// The child side of a `process_pool` (process_pool.hpp): the table of registered functions and
// the entry point each child runs, serving requests from its pool until it disconnects.

#include <conflux/detail/cpp20.hpp>

#include <conflux/fork.hpp>
#include <conflux/ipc.hpp>
#include <conflux/task.hpp>

#include <functional>
#include <map>
#include <string>

namespace conflux {

namespace detail {

/// The entry point (see `register_entry`) that the children of a `process_pool` run.
inline constexpr const char* process_pool_entry = "conflux.process_pool";

/// A task's exception, as a child reports it to its pool.
struct pool_failure {
    std::string type;
    std::string message;
};

/// Serves one request in a child: receives the arguments, runs the function, sends the reply.
using pool_server = std::function<task<void>(ipc_channel&)>;

inline std::map<std::string, pool_server, std::less<>>& pool_functions() {
    static std::map<std::string, pool_server, std::less<>> table;
    return table;
}

/// A child's life: a request is the function's name, then its arguments; the reply is the
/// result or the exception. Ends when the pool disconnects.
inline task<int> process_pool_child() {
    ipc_channel& parent_channel = parent();
    while (auto name = co_await parent_channel.receive<std::string>()) {
        auto it = pool_functions().find(*name);
        // Cannot happen with pool_function (parent and child are the same program): the
        // parent sees this worker die and says so.
        if (it == pool_functions().end()) co_return 3;
        co_await it->second(parent_channel);
    }
    co_return 0;
}

inline void register_process_pool_entry() {
    [[maybe_unused]] static const bool registered =
        register_entry(process_pool_entry, process_pool_child);
}

} // namespace detail

} // namespace conflux
