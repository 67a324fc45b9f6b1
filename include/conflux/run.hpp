#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/event_loop.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/fork_hooks.hpp>

#include <type_traits>
#include <utility>

namespace conflux {

/// Runs `t` to completion on a fresh `event_loop` on the calling thread, and returns its
/// value or rethrows its exception. Detached tasks still suspended when `t` completes are
/// destroyed with the loop.
///
/// In a child started by `conflux::fork` this is also where the child finds its way: a
/// named entry point runs instead of `t` (and the process exits with its result), and
/// `conflux::parent()` becomes available.
///
/// ```
/// conflux::task<int> amain() { co_return 0; }
/// int main() { return conflux::run(amain()); }
/// ```
template <class T>
T run(task<T> t) {
    event_loop loop;
    const detail::fork_child_hooks* hooks = detail::fork_hooks();
    if (hooks == nullptr || !hooks->start(loop)) return loop.run_until_complete(std::move(t));
    try {
        if constexpr (std::is_void_v<T>) {
            loop.run_until_complete(std::move(t));
            hooks->finish(loop);
        } else {
            T result = loop.run_until_complete(std::move(t));
            hooks->finish(loop);
            return result;
        }
    } catch (...) {
        hooks->failed(loop);
        throw;
    }
}

} // namespace conflux
