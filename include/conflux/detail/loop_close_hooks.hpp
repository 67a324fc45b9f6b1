#pragma once

#include <conflux/detail/cpp20.hpp>

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

/// The loop's intrusive list of close hooks: O(1) link and unlink, no allocation. Not
/// thread-safe (the loop's thread only).
class loop_close_hooks {
public:
    void link(loop_close_hook* hook) noexcept {
        hook->prev = nullptr;
        hook->next = m_head;
        if (m_head) m_head->prev = hook;
        m_head = hook;
        hook->linked = true;
    }

    /// Unlinking a hook that is not linked (already taken, or never linked) does nothing.
    void unlink(loop_close_hook* hook) noexcept {
        if (!hook->linked) return;
        if (hook->prev) {
            hook->prev->next = hook->next;
        } else {
            m_head = hook->next;
        }
        if (hook->next) hook->next->prev = hook->prev;
        hook->prev = hook->next = nullptr;
        hook->linked = false;
    }

    /// Unlinks and returns the first hook, or nullptr when none is left.
    loop_close_hook* take_first() noexcept {
        loop_close_hook* hook = m_head;
        if (hook) unlink(hook);
        return hook;
    }

private:
    loop_close_hook* m_head = nullptr;
};

} // namespace conflux::detail
