// expect: aggregate written inside a co_await expression twice: name the message first
// GCC 12 destroys an aggregate message written inside co_await twice: refused there.
#include <conflux/ipc.hpp>

#include <string>

struct message {
    int id = 0;
    std::string text;
};

conflux::task<> f(conflux::ipc_channel& ch) {
    co_await ch.send(message{1, "a text too long for the small-string buffer"});
}

int main() {}
