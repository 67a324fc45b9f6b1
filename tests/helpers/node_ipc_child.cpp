// A conflux program that Node.js forks (child_process.fork with serialization 'json', or a
// conflux parent in json mode): answers every JSON message with {"echo": <message>} and
// exits when the channel closes.

#include <conflux/fork.hpp>
#include <conflux/run.hpp>

#include <string>

conflux::task<int> amain() {
    if (!conflux::has_parent()) co_return 2;
    int count = 0;
    while (auto message = co_await conflux::parent().receive<std::string>()) {
        ++count;
        co_await conflux::parent().send("{\"echo\":" + *message +
                                        ",\"n\":" + std::to_string(count) + "}");
    }
    co_return 0;
}

int main() { return conflux::run(amain()); }
