// Included before the fragments of the documentation (see cmake/doc_snippets.cmake): what a
// fragment takes for granted. The placeholders stand for the reader's own code; fragments are
// compiled, never linked, so they need declarations only.
#pragma once

#include <conflux/conflux.hpp>

#include <cassert>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <span>
#include <string>
#include <vector>

using namespace std::chrono_literals;

std::string sha256(std::span<const std::byte> data);
void use(const std::string& line);
conflux::task<std::string> read_reply();
int count_primes(int limit);

struct job {
    int id = 0;
};
void handle(const job& j);
