// A program that uses conflux the way a user's project would.
#include <conflux/conflux.hpp>

#include <chrono>

conflux::task<int> amain() {
    co_await conflux::sleep_for(std::chrono::milliseconds(1));
    co_return 0;
}

int main() { return conflux::run(amain()); }
