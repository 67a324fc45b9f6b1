// expect: deleted
// A task owns its frame: it can be moved, never copied.
#include <conflux/task.hpp>

conflux::task<int> make() { co_return 1; }

int main() {
    conflux::task<int> a = make();
    conflux::task<int> b = a;
    (void)b;
}
