#include <conflux/conflux.hpp>

#include <chrono>

int odr_b() {
    return conflux::run([]() -> conflux::task<int> {
        co_await conflux::sleep_for(std::chrono::milliseconds(1));
        co_return 2;
    }());
}
