// expect: aggregate written inside a co_await expression twice: name the message first
// forked_child::send hands the message on to ipc_channel::send, which refuses it on GCC 12.
#include <conflux/fork.hpp>

#include <string>

struct message {
    int id = 0;
    std::string text;
};

conflux::task<> f(conflux::forked_child& child) {
    co_await child.send(message{1, "a text too long for the small-string buffer"});
}

int main() {}
