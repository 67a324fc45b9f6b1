// expect: deleted
// Queued coroutines point into an event loop: it can be neither copied nor moved.
#include <conflux/event_loop.hpp>

#include <utility>

int main() {
    conflux::event_loop a;
    conflux::event_loop b = std::move(a);
    (void)b;
}
