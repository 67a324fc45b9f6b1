// libFuzzer target: the IPC frame decoder and the message decoder behind it.
//
// Input: one byte choosing how to split the rest into reads, then the byte stream a peer
// sent. Invariants: no crash, no leak, no unbounded allocation; every frame decoded whole or
// rejected with ipc_error; the frames produced do not depend on how the stream was split; a
// message that decodes re-encodes to the same bytes.

#include <conflux/codec.hpp>
#include <conflux/detail/ipc_frame.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

namespace {

struct node {
    int value = 0;
    std::vector<node> children;
};

struct record {
    std::string name;
    std::optional<std::uint32_t> id;
    std::map<std::string, std::vector<double>> table;
    std::variant<std::monostate, std::int64_t, std::string, node> tag;
};

using message = std::variant<record, node, std::vector<std::string>, std::string>;

std::vector<std::vector<std::byte>> frames_of(std::span<const std::byte> stream, std::size_t step,
                                              bool& failed) {
    conflux::detail::frame_decoder decoder(64 * 1024);
    std::vector<std::vector<std::byte>> out;
    try {
        while (!stream.empty()) {
            const std::size_t n = std::min(step, stream.size());
            decoder.feed(stream.first(n));
            stream = stream.subspan(n);
            while (decoder.has_frame()) out.push_back(decoder.pop().body);
        }
    } catch (const conflux::ipc_error&) {
        failed = true;
    }
    return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    const std::size_t step = 1 + data[0] % 37;
    std::span<const std::byte> stream(reinterpret_cast<const std::byte*>(data + 1), size - 1);

    bool failed_split = false;
    bool failed_whole = false;
    auto split = frames_of(stream, step, failed_split);
    auto whole = frames_of(stream, stream.size() + 1, failed_whole);
    // Chunking invariance: the same frames come out, and the same verdict.
    if (!failed_split && !failed_whole && split != whole) std::abort();
    if (failed_split != failed_whole) std::abort();

    for (const auto& body : whole) {
        try {
            auto m =
                conflux::decode<message>(body, {.max_message_size = 64 * 1024, .max_depth = 32});
            if (conflux::encode(m) != body) std::abort(); // the encoding is canonical
        } catch (const conflux::ipc_error&) {
        }
    }
    return 0;
}
