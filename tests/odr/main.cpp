// Linked from a.cpp, b.cpp and this file, each including the whole library: a definition in a
// header that is not inline fails the link, and a thread-local or static that is duplicated
// per TU shows up as a wrong result at run time.
#include <conflux/conflux.hpp>

int odr_a();
int odr_b();

int main() {
    int here = conflux::run([]() -> conflux::task<int> { co_return 3; }());
    return odr_a() == 1 && odr_b() == 2 && here == 3 ? 0 : 1;
}
