// expect: satisf
// any_executor wraps only types that satisfy conflux::executor.
#include <conflux/executor.hpp>

struct only_posts {
    void post(void (*)()) {}
};

int main() {
    only_posts e;
    conflux::any_executor wrapped(e);
    (void)wrapped;
}
