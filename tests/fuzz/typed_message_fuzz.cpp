// libFuzzer target: typed messages, the body of every binary IPC frame (an 8-byte type
// fingerprint, then the value) as `receive<T>` and `receive_one_of<T...>` decode them.
//
// Input: one byte choosing whether the fingerprint is the fuzzer's own or one of the known
// types' (so that every decoder is reached), then the body. Invariants: no crash, no leak, no
// unbounded allocation; a body of another type is refused with ipc_type_mismatch, exactly
// when its fingerprint is none of those asked for; a malformed one with ipc_error; the
// single-type and the one-of decoders agree; a message that decodes re-encodes to the same
// bytes.

#include <conflux/codec.hpp>
#include <conflux/detail/ipc_message.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <tuple>
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

struct point {
    int x = 0;
    int y = 0;
};

struct with_fd {
    std::string label;
    conflux::file_descriptor fd; // no descriptors travel here: any index is out of range
};

using types = std::tuple<std::int64_t, double, point, std::string, std::vector<std::string>, node,
                         record, with_fd>;
constexpr std::size_t type_count = std::tuple_size_v<types>;

constexpr conflux::codec_limits limits{.max_message_size = 64 * 1024, .max_depth = 32};

enum class verdict { decoded, mismatch, malformed };

template <class T>
struct outcome {
    verdict v = verdict::malformed;
    std::vector<std::byte> reencoded;
};

template <class T>
outcome<T> decode_one(std::span<const std::byte> body) {
    outcome<T> out;
    try {
        T value = conflux::detail::decode_message<T>(body, limits);
        out.v = verdict::decoded;
        if constexpr (!std::is_same_v<T, with_fd>) {
            out.reencoded = conflux::detail::encode_message(value);
        }
    } catch (const conflux::ipc_type_mismatch&) {
        out.v = verdict::mismatch;
    } catch (const conflux::ipc_error&) {
        out.v = verdict::malformed;
    }
    return out;
}

bool fingerprint_is_known(std::uint64_t f) {
    return [&]<std::size_t... I>(std::index_sequence<I...>) {
        return ((conflux::fingerprint_of<std::tuple_element_t<I, types>>() == f) || ...);
    }
    (std::make_index_sequence<type_count>{});
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size < 1) return 0;
    std::vector<std::byte> body(reinterpret_cast<const std::byte*>(data + 1),
                                reinterpret_cast<const std::byte*>(data + size));
    // Mode k < type_count: the body is the fuzzer's bytes after the fingerprint of type k.
    const std::size_t mode = data[0] % (type_count + 1);
    [&]<std::size_t... I>(std::index_sequence<I...>) {
        const std::uint64_t known[] = {
            conflux::fingerprint_of<std::tuple_element_t<I, types>>()...};
        if (mode < type_count) {
            body.insert(body.begin(), conflux::detail::fingerprint_size, std::byte{0});
            std::memcpy(body.data(), &known[mode], sizeof known[mode]);
        }
    }
    (std::make_index_sequence<type_count>{});

    const bool long_enough = body.size() >= conflux::detail::fingerprint_size;
    std::uint64_t fingerprint = 0;
    if (long_enough) std::memcpy(&fingerprint, body.data(), sizeof fingerprint);

    // receive<T> for each type: a mismatch exactly when the fingerprint is not T's, and a
    // decoded message re-encodes to the same bytes.
    std::size_t decoded_as = type_count;
    [&]<std::size_t... I>(std::index_sequence<I...>) {
        (
            [&] {
                using T = std::tuple_element_t<I, types>;
                auto o = decode_one<T>(body);
                const bool ours = long_enough && fingerprint == conflux::fingerprint_of<T>();
                if ((o.v == verdict::mismatch) != (long_enough && !ours)) std::abort();
                if (o.v == verdict::decoded) {
                    if (decoded_as != type_count) std::abort(); // fingerprints are distinct
                    decoded_as = I;
                    if constexpr (!std::is_same_v<T, with_fd>) {
                        if (o.reencoded != body) std::abort(); // canonical
                    }
                }
            }(),
            ...);
    }
    (std::make_index_sequence<type_count>{});

    // receive_one_of over all of them: the same verdict, the same alternative.
    try {
        auto v = [&]<std::size_t... I>(std::index_sequence<I...>) {
            return conflux::detail::decode_message_one_of<std::tuple_element_t<I, types>...>(
                body, limits);
        }
        (std::make_index_sequence<type_count>{});
        if (v.index() != decoded_as) std::abort();
        std::visit(
            [&](const auto& value) {
                using T = std::decay_t<decltype(value)>;
                if constexpr (!std::is_same_v<T, with_fd>) {
                    if (conflux::detail::encode_message(value) != body) std::abort();
                }
            },
            v);
    } catch (const conflux::ipc_type_mismatch&) {
        if (!long_enough || fingerprint_is_known(fingerprint)) std::abort();
    } catch (const conflux::ipc_error&) {
        if (decoded_as != type_count) std::abort();
        if (long_enough && !fingerprint_is_known(fingerprint)) std::abort();
    }

    // A subset: a fingerprint outside it is a mismatch even when another type would decode.
    try {
        auto v = conflux::detail::decode_message_one_of<point, std::string>(body, limits);
        if (decoded_as != (v.index() == 0 ? 2u : 3u)) std::abort();
    } catch (const conflux::ipc_type_mismatch&) {
        if (!long_enough || fingerprint == conflux::fingerprint_of<point>() ||
            fingerprint == conflux::fingerprint_of<std::string>()) {
            std::abort();
        }
    } catch (const conflux::ipc_error&) {
    }
    return 0;
}
