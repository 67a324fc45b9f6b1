// libFuzzer target: the json-mode IPC decoder (Node.js's `serialization: 'json'` framing),
// which reads whatever a Node.js peer, or anything pretending to be one, writes.
//
// Input: one byte choosing how to split the rest into reads, one choosing the limits, then
// the byte stream a peer sent. Invariants: no crash, no leak, bounded memory (the decoder
// holds at most about one line beyond max_message_size); every line delivered whole or
// rejected with ipc_error; the messages and the verdict do not depend on how the stream was
// split; every message delivered is one line of JSON text within the limits that the
// sending side accepts, and sending the messages again yields the same messages.

#include <conflux/codec.hpp>
#include <conflux/detail/ipc_json.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

namespace {

using conflux::detail::json_line_decoder;

std::vector<std::string> messages_of(std::span<const std::byte> stream, std::size_t step,
                                     conflux::codec_limits limits, bool& failed) {
    json_line_decoder decoder(limits);
    std::vector<std::string> out;
    try {
        if (decoder.next()) std::abort(); // nothing yet: asked before the first read, too
        while (!stream.empty()) {
            const std::size_t n = std::min(step, stream.size());
            decoder.feed(stream.first(n));
            stream = stream.subspan(n);
            // Memory stays bounded whatever the peer sends.
            if (decoder.buffered() > 2 * limits.max_message_size + n + 64 * 1024 + 2) {
                std::abort();
            }
            while (auto f = decoder.next()) {
                out.emplace_back(reinterpret_cast<const char*>(f->body.data()), f->body.size());
            }
        }
    } catch (const conflux::ipc_error&) {
        failed = true;
    }
    return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 2) return 0;
    const std::size_t step = 1 + data[0] % 61;
    static constexpr std::size_t sizes[] = {16, 100, 4096, 64 * 1024};
    const conflux::codec_limits limits{.max_message_size = sizes[data[1] & 3],
                                       .max_depth = std::size_t(1) + (data[1] >> 2) % 64};
    std::span<const std::byte> stream(reinterpret_cast<const std::byte*>(data + 2), size - 2);

    bool failed_split = false;
    bool failed_whole = false;
    auto split = messages_of(stream, step, limits, failed_split);
    auto whole = messages_of(stream, stream.size() + 1, limits, failed_whole);
    // Chunking invariance: the same verdict, and the same messages when both succeed.
    if (failed_split != failed_whole) std::abort();
    if (!failed_whole && split != whole) std::abort();

    std::string again;
    for (const auto& m : split) {
        if (m.empty() || m.size() > limits.max_message_size) std::abort();
        if (m.find('\n') != std::string::npos) std::abort();
        if (conflux::detail::check_json_text(m, limits.max_depth)) std::abort();
        if (m.rfind("{\"cmd\":\"NODE_", 0) == 0) std::abort(); // internal: never delivered
        try {
            conflux::detail::check_json_message(m, limits); // what arrives can be sent
        } catch (...) {
            std::abort();
        }
        again += m;
        again += '\n';
    }
    // Round trip: the messages sent again arrive as they are.
    bool failed_again = false;
    auto back =
        messages_of(std::as_bytes(std::span(again)), again.size() + 1, limits, failed_again);
    if (failed_again || back != split) std::abort();
    return 0;
}
