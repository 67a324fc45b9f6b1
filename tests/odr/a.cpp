#include <conflux/conflux.hpp>

int odr_a() {
    return conflux::run([]() -> conflux::task<int> { co_return 1; }());
}
