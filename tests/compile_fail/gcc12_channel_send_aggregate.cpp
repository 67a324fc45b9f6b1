// expect: aggregate written inside a co_await expression twice: name it first and send the name
// GCC 12 destroys an aggregate message written inside co_await twice: refused there.
#include <conflux/channel.hpp>

#include <string>

struct message {
    int id = 0;
    std::string text;
};

conflux::task<> f(conflux::channel<message>& ch) {
    co_await ch.send({.id = 1, .text = "a text too long for the small-string buffer"});
}

int main() {}
