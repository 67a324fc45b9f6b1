#pragma once

#include <conflux/event_loop.hpp>
#include <conflux/task.hpp>

#include <utility>

namespace conflux {

/// Runs `t` to completion on a fresh `event_loop` on the calling thread, and returns its
/// value or rethrows its exception. Detached tasks still suspended when `t` completes are
/// destroyed with the loop.
///
/// ```
/// conflux::task<int> amain() { co_return 0; }
/// int main() { return conflux::run(amain()); }
/// ```
template <class T>
T run(task<T> t) {
    event_loop loop;
    return loop.run_until_complete(std::move(t));
}

} // namespace conflux
