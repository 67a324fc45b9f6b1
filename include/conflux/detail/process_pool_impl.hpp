#pragma once

// The machinery of `process_pool` (process_pool.hpp) that does not depend on a task's types:
// the children's slots, starting `minimum` children, growth, idle shrinking, replacing a dead
// child, close and destruction. Everything here runs on the pool's loop thread.

#include <conflux/detail/cpp20.hpp>

#include <conflux/channel.hpp>
#include <conflux/event_loop.hpp>
#include <conflux/exit_status.hpp>
#include <conflux/fork.hpp>
#include <conflux/pool.hpp>
#include <conflux/task.hpp>
#include <conflux/detail/loop_close_hooks.hpp>
#include <conflux/detail/pool_histogram.hpp>
#include <conflux/detail/process_pool_child.hpp>
#include <conflux/detail/timer_heap.hpp>

#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <utility>

namespace conflux::detail {

struct process_pool_state;

/// One child of a process pool, or the place for one. Slots are never freed while the pool
/// lives (the idle channel and the timers point at them): an empty one is reused.
struct process_pool_slot {
    std::optional<forked_child> child;
    process_pool_state* pool = nullptr;
    timer_entry idle_timer;
    bool busy = false;
    bool in_idle = false;  // an entry of the idle channel points at it
    bool starting = false; // its child is being forked
    bool leaving = false;  // its idle timer ended it: disconnected, being reaped
};

// Shared with every `run` under way and every detached helper, which may outlive the pool.
struct process_pool_state : std::enable_shared_from_this<process_pool_state> {
    using slot = process_pool_slot;

    worker_pool_options options;
    arguments child_args;
    event_loop* loop = nullptr;
    bool loop_gone = false;
    struct hook : loop_close_hook {
        process_pool_state* owner = nullptr;
    } close_hook;
    std::list<slot> slots;
    channel<slot*> idle{channel<slot*>::unbounded};
    channel<int> room{channel<int>::unbounded};
    channel<int> drained{channel<int>::unbounded};
    std::size_t live = 0;     // children alive or starting, not leaving
    std::size_t leaving = 0;  // children ended by their idle timer, not reaped yet
    std::size_t starting = 0; // forks under way
    std::size_t busy = 0;
    std::size_t queued = 0;
    std::size_t room_waiting = 0;
    std::uint64_t completed = 0;
    bool closed = false;
    bool destroyed = false;
    pool_recorder wait_time; // one writer: the loop's thread
    pool_recorder run_time;

    std::string prefix() const { return "conflux::process_pool \"" + options.name + "\": "; }

    /// Binds the pool to the calling thread's loop the first time, and starts the `minimum`
    /// children there. Throws `std::logic_error` from another loop.
    void bind_loop(const char* operation) {
        event_loop& current = require_loop(operation);
        if (loop == &current) return;
        if (loop != nullptr || loop_gone) {
            throw std::logic_error(prefix() + "used from another event loop than its own");
        }
        loop = &current;
        close_hook.owner = this;
        close_hook.on_close = [](loop_close_hook* h) noexcept {
            static_cast<hook*>(h)->owner->forget_loop();
        };
        loop_access::add_close_hook(current, &close_hook);
        if (live < options.minimum) current.detach(fill(shared_from_this()));
    }

    // The loop is being destroyed: its timers go with it.
    void forget_loop() noexcept {
        for (slot& s : slots) disarm(s);
        loop = nullptr;
        loop_gone = true;
    }

    /// Wakes a `close()` waiting for the pool to drain (it checks again what it waits for).
    void notify_closer() {
        if (closed && !destroyed) drained.try_send(0);
    }

    // The channels are closed once the pool is destroyed: nothing is sent then.
    void signal_room() {
        if (room_waiting > 0 && !destroyed) {
            --room_waiting;
            room.try_send(0);
        }
    }

    slot* new_slot() {
        for (slot& s : slots) {
            if (!s.child && !s.busy && !s.in_idle && !s.starting && !s.leaving) return &s;
        }
        slot& s = slots.emplace_back();
        s.pool = this;
        s.idle_timer.context = &s;
        s.idle_timer.fire = [](timer_entry* e) noexcept {
            auto* sp = static_cast<slot*>(e->context);
            sp->pool->idle_expired(*sp);
        };
        return &s;
    }

    /// Forks the child of `s` (counted in `live` by the caller). Throws what `fork` throws,
    /// and `pool_error` when the pool was destroyed meanwhile (the new child is dropped:
    /// killed and reaped by the loop).
    static task<void> start_child(std::shared_ptr<process_pool_state> st, slot* s) {
        ++st->starting;
        s->starting = true;
        try {
            s->child.emplace(co_await fork(process_pool_entry, st->child_args));
        } catch (...) {
            s->starting = false;
            --st->starting;
            st->notify_closer();
            throw;
        }
        s->starting = false;
        --st->starting;
        if (st->destroyed) {
            s->child.reset();
            --st->live;
            throw pool_error(st->prefix() + "destroyed with the task still queued");
        }
        st->notify_closer();
    }

    /// One more child in a new slot, counted in `live` from before it is forked (so that
    /// concurrent growers stop at the limit); the count is given back when the fork fails.
    static task<slot*> grow(std::shared_ptr<process_pool_state> st) {
        ++st->live;
        slot* s = st->new_slot();
        try {
            co_await start_child(st, s);
        } catch (...) {
            if (!st->destroyed) --st->live; // start_child gave it back itself if destroyed
            throw;
        }
        co_return s;
    }

    // The children of `minimum`, started when the pool first runs on its loop.
    static task<void> fill(std::shared_ptr<process_pool_state> st) {
        while (!st->closed && st->live < st->options.minimum) {
            slot* s = nullptr;
            try {
                s = co_await grow(st);
            } catch (...) {
                // Out of processes, or destroyed: the pool grows on demand instead (and a
                // task then sees the error).
                co_return;
            }
            st->make_idle(*s);
        }
    }

    /// `s` waits for a task: handed to a queued one, or kept idle with its timer armed while
    /// the pool is above its minimum. Armed even when a task waits: `queued` still counts
    /// one that was handed a child and has not resumed yet, so a second child made idle
    /// meanwhile would otherwise stay above the minimum for good; `claim` disarms it.
    void make_idle(slot& s) {
        s.in_idle = true;
        idle.try_send(&s);
        // A timeout beyond a century (milliseconds::max()) is "never": now() + it would
        // overflow the clock.
        constexpr auto never = std::chrono::hours(24 * 365 * 100);
        if (loop != nullptr && !closed && live > options.minimum &&
            options.idle_timeout.count() > 0 && options.idle_timeout < never) {
            disarm(s);
            s.idle_timer.deadline = std::chrono::steady_clock::now() + options.idle_timeout;
            loop_access::add_timer(*loop, &s.idle_timer);
        }
        notify_closer();
    }

    void disarm(slot& s) noexcept {
        if (s.idle_timer.queued() && loop != nullptr)
            loop_access::remove_timer(*loop, &s.idle_timer);
    }

    /// The next idle child, skipping the entries of children that left meanwhile.
    slot* take_idle() {
        while (auto s = idle.try_receive()) {
            if (slot* found = claim(**s)) return found;
        }
        return nullptr;
    }

    /// `s` popped from the idle channel: itself when its child can take a task.
    slot* claim(slot& s) noexcept {
        s.in_idle = false;
        if (!s.child || s.leaving) return nullptr;
        disarm(s);
        return &s;
    }

    // Idle for `idle_timeout`: ends the child unless that leaves the pool below its minimum.
    // A child on its way out no longer counts (`live`), so timers that fire together stop at
    // the minimum.
    void idle_expired(slot& s) noexcept {
        if (!s.in_idle || s.leaving || !s.child || closed || live <= options.minimum) return;
        s.leaving = true;
        --live;
        ++leaving;
        try {
            loop->detach(retire(shared_from_this(), &s));
        } catch (...) {
            // No memory for the reaper: the child stays, idle, and is ended with the pool.
            s.leaving = false;
            ++live;
            --leaving;
        }
    }

    static task<void> retire(std::shared_ptr<process_pool_state> st, slot* s) {
        s->child->disconnect(); // the child's request loop sees end-of-file and returns
        std::stop_source never;
        co_await s->child->wait(never.get_token());
        s->child.reset();
        s->leaving = false;
        --st->leaving;
        st->notify_closer();
    }

    /// A child for one task: an idle one, a new one while below `maximum`, or the first to
    /// become idle.
    static task<slot*> acquire(std::shared_ptr<process_pool_state> st, bool wait,
                               std::stop_token token) {
        for (;;) {
            if (slot* s = st->take_idle()) co_return s;
            if (st->live < st->options.maximum) {
                co_return co_await grow(st);
            }
            if (st->queued >= st->options.max_queue) {
                if (!wait) {
                    throw pool_error(st->prefix() + "the queue is full (max_queue " +
                                     std::to_string(st->options.max_queue) + ")");
                }
                ++st->room_waiting;
                std::optional<int> room;
                try {
                    room = co_await st->room.receive(token);
                } catch (...) {
                    --st->room_waiting;
                    st->notify_closer();
                    throw;
                }
                if (!room) throw pool_error(st->prefix() + "destroyed with the task still queued");
                continue;
            }
            ++st->queued;
            std::optional<slot*> s;
            try {
                s = co_await st->idle.receive(token);
            } catch (...) {
                --st->queued;
                st->signal_room();
                st->notify_closer();
                throw;
            }
            --st->queued;
            st->signal_room();
            if (!s || st->destroyed) {
                throw pool_error(st->prefix() + "destroyed with the task still queued");
            }
            if (slot* found = st->claim(**s)) co_return found;
            // Its idle timer ended it just before the hand-over: look again.
        }
    }

    /// Back to the idle children after a task.
    void release(slot& s) {
        s.busy = false;
        --busy;
        if (destroyed) {
            s.child.reset();
            --live;
            return;
        }
        make_idle(s);
    }

    /// A child that died or is to die: kills and reaps it, starts its replacement.
    static task<exit_status> reap_and_replace(std::shared_ptr<process_pool_state> st, slot* s) {
        s->child->kill(SIGKILL);
        exit_status status = co_await s->child->wait();
        s->child.reset();
        s->busy = false;
        --st->busy;
        bool replaced = false;
        if (!st->destroyed && (!st->closed || st->queued > 0 || st->room_waiting > 0)) {
            try {
                co_await start_child(st, s);
                replaced = true;
            } catch (...) {
                // No replacement (out of processes): the pool goes on with one child fewer.
            }
        }
        if (replaced) {
            st->make_idle(*s);
        } else if (!st->destroyed) {
            --st->live;
            st->notify_closer();
        }
        co_return status;
    }

    static task<void> close(std::shared_ptr<process_pool_state> st) {
        st->closed = true;
        // A fork under way (a task's, `fill`'s or a replacement) ends as an idle child, and a
        // child leaving is reaped by its own helper: close() returns once both are done.
        for (;;) {
            if (st->destroyed) co_return; // the destructor took over
            if (st->busy > 0 || st->queued > 0 || st->room_waiting > 0 || st->starting > 0) {
                co_await st->drained.receive();
            } else if (slot* s = st->take_idle()) {
                s->child->disconnect();
                co_await s->child->wait();
                s->child.reset();
                --st->live;
            } else if (st->leaving > 0) {
                co_await st->drained.receive();
            } else {
                break;
            }
        }
    }

    /// The destructor's part: fails queued tasks, kills the children running tasks (their
    /// `run`s reap them), drops the idle ones (killed and reaped by the loop).
    void shut_down() noexcept {
        if (destroyed) return;
        destroyed = true;
        closed = true;
        while (auto s = idle.try_receive()) (*s)->in_idle = false;
        idle.close();
        room.close();
        drained.close();
        for (slot& s : slots) disarm(s);
        if (loop != nullptr) loop_access::remove_close_hook(*loop, &close_hook);
        for (slot& s : slots) {
            if (!s.child || s.leaving) continue; // a leaving one is reaped by its helper
            if (s.busy) {
                s.child->kill(SIGKILL); // its run reaps it
            } else {
                s.child.reset();
                --live;
            }
        }
    }
};

} // namespace conflux::detail
