#include <conflux/event_loop.hpp>
#include <conflux/executor.hpp>
#include <conflux/run.hpp>
#include <conflux/thread_pool.hpp>

#include <doctest/doctest.h>

#include <atomic>
#include <coroutine>
#include <deque>
#include <functional>
#include <thread>

namespace {

// A user's own executor: runs posted work when drained by hand.
class manual_executor {
public:
    template <class F>
    void post(F&& f) {
        m_work.emplace_back(std::forward<F>(f));
    }
    struct schedule_awaiter {
        manual_executor& target;
        bool await_ready() const noexcept { return false; }
        void await_suspend(std::coroutine_handle<> h) {
            target.post([h] { h.resume(); });
        }
        void await_resume() const noexcept {}
    };
    schedule_awaiter schedule() { return {*this}; }
    bool running_in_this_thread() const noexcept { return m_draining; }
    void drain() {
        m_draining = true;
        while (!m_work.empty()) {
            auto f = std::move(m_work.front());
            m_work.pop_front();
            f();
        }
        m_draining = false;
    }

private:
    std::deque<std::function<void()>> m_work;
    bool m_draining = false;
};

struct not_an_executor {
    void post(int) {}
};

} // namespace

static_assert(conflux::executor<conflux::event_loop>);
static_assert(conflux::executor<conflux::thread_pool>);
static_assert(conflux::executor<conflux::any_executor>);
static_assert(conflux::executor<manual_executor>);
static_assert(!conflux::executor<not_an_executor>);
static_assert(!conflux::executor<int>);
static_assert(sizeof(conflux::any_executor) == 2 * sizeof(void*));

TEST_CASE("current_executor is the loop inside run, empty outside") {
    CHECK_FALSE(conflux::current_executor());
    auto body = []() -> conflux::task<bool> {
        auto e = conflux::current_executor();
        co_return (e && e.context() == conflux::event_loop::current() &&
                   e.running_in_this_thread());
    };
    CHECK(conflux::run(body()));
    CHECK_FALSE(conflux::current_executor());
}

TEST_CASE("any_executor compares by identity and posts to what it wraps") {
    conflux::thread_pool a(1);
    conflux::thread_pool b(1);
    conflux::any_executor ea(a);
    conflux::any_executor ea2(a);
    conflux::any_executor eb(b);
    CHECK(ea == ea2);
    CHECK_FALSE(ea == eb);
    CHECK_FALSE(ea.running_in_this_thread());

    std::atomic<bool> on_a{false};
    std::atomic<bool> done{false};
    ea.post([&] {
        on_a = a.running_in_this_thread();
        done = true;
    });
    while (!done) std::this_thread::yield();
    CHECK(on_a);
}

TEST_CASE("a user-defined executor works through any_executor") {
    manual_executor manual;
    conflux::any_executor e(manual);
    int ran = 0;
    e.post([&] { ++ran; });
    CHECK(ran == 0);
    manual.drain();
    CHECK(ran == 1);
}
