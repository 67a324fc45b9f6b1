#pragma once

#include <conflux/detail/cpp20.hpp>

#include <conflux/detail/intrusive_list.hpp>

namespace conflux::detail {

/// Something that lives on a loop's thread and must let go of the loop before it is
/// destroyed (a child process's pidfd watch, timers and pipes): the loop calls `on_close`
/// once, in its destructor, after the frames of its detached tasks are gone and while its
/// reactor and timer heap still exist. Linked and unlinked on the loop's thread only.
struct loop_close_hook {
    void (*on_close)(loop_close_hook* self) noexcept = nullptr;
    loop_close_hook* prev = nullptr;
    loop_close_hook* next = nullptr;
    bool linked = false;
};

/// The loop's list of close hooks. Not thread-safe (the loop's thread only).
using loop_close_hooks = intrusive_list<loop_close_hook>;

} // namespace conflux::detail
