// expect: this awaitable cannot be moved; name it and pass the lvalue
// An rvalue awaitable that cannot move would have to be referred to, and a when_any task
// stored for later would then point at a dead temporary: refused, with what to write instead.
#include <conflux/shared_buffer.hpp>
#include <conflux/sleep.hpp>
#include <conflux/when_any.hpp>

#include <chrono>
#include <cstdint>

conflux::task<> race(conflux::shared_buffer& memory) {
    auto view = memory.view<std::uint32_t>();
    co_await conflux::when_any(view.wait_async(0, 0), conflux::sleep_for(std::chrono::seconds(1)));
}
