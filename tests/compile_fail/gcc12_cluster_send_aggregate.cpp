// expect: aggregate written inside a co_await expression twice: name the message first
// GCC 12 destroys an aggregate message written inside co_await twice: refused there, in a
// primary's send to a worker and in a worker's send to the primary alike.
#include <conflux/cluster.hpp>

#include <string>

struct message {
    int id = 0;
    std::string text;
};

conflux::task<> primary(conflux::cluster& c) {
    co_await c.send(1, message{1, "a text too long for the small-string buffer"});
}

conflux::task<> worker() {
    co_await conflux::cluster::send_to_primary(message{2, "another text, long enough too"});
}

int main() {}
