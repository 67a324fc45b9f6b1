#include <conflux/codec.hpp>

#include <doctest/doctest.h>

#include "support/test_support.hpp"

#include <array>
#include <chrono>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <unordered_map>
#include <variant>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

using namespace std::chrono_literals;

namespace {

enum class colour : std::uint8_t { red = 1, green = 2 };
enum plain_enum { first = -5, second = 70000 };

struct point {
    int x = 0;
    int y = 0;
    friend bool operator==(const point&, const point&) = default;
};

struct record {
    std::string name;
    std::optional<int> age;
    std::vector<point> path;
    std::map<std::string, double> scores;
    std::variant<int, std::string, point> tag;
    std::array<std::uint16_t, 3> triple{};
    std::pair<bool, char> flags;
    std::tuple<int, std::string, colour> extra;
    std::chrono::milliseconds timeout{};
    colour c = colour::red;
    friend bool operator==(const record&, const record&) = default;
};

struct sixteen {
    int a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15;
    std::string a16;
    friend bool operator==(const sixteen&, const sixteen&) = default;
};

struct empty_aggregate {
    friend bool operator==(const empty_aggregate&, const empty_aggregate&) = default;
};

struct tree {
    int value = 0;
    std::vector<tree> children;
    friend bool operator==(const tree&, const tree&) = default;
};

// A user type with its own codec (not an aggregate: private members).
class money {
public:
    money() = default;
    money(std::int64_t cents, std::string currency) : m_cents(cents), m_cur(std::move(currency)) {}
    std::int64_t cents() const { return m_cents; }
    const std::string& currency() const { return m_cur; }
    friend bool operator==(const money&, const money&) = default;

private:
    std::int64_t m_cents = 0;
    std::string m_cur;
};

// The same fields in the same order as `point`, under another name.
struct other_point {
    int a = 0;
    int b = 0;
};

struct two_longs {
    std::int64_t a = 0;
    std::int64_t b = 0;
};

// A user type whose codec names its schema.
struct celsius {
    double degrees = 0;
};

template <class T>
T round_trip(const T& v) {
    return conflux::decode<T>(conflux::encode(v));
}

record sample_record() {
    return record{
        .name = "grace",
        .age = 85,
        .path = {{1, 2}, {3, 4}, {-5, 6}},
        .scores = {{"a", 1.5}, {"b", -2.25}},
        .tag = point{7, 8},
        .triple = {1, 2, 65535},
        .flags = {true, 'x'},
        .extra = {42, "answer", colour::green},
        .timeout = 1500ms,
        .c = colour::green,
    };
}

// Every proper prefix of a valid encoding must be rejected with ipc_error, never crash.
template <class T>
void check_every_truncation(const T& v) {
    const auto bytes = conflux::encode(v);
    for (std::size_t n = 0; n < bytes.size(); ++n) {
        CAPTURE(n);
        CHECK_THROWS_AS(conflux::decode<T>(std::span(bytes.data(), n)), conflux::ipc_error);
    }
    CHECK(conflux::decode<T>(bytes) == v);
}

} // namespace

template <>
struct conflux::codec<money> {
    static constexpr std::size_t min_size = 9;
    static void encode(byte_writer& w, const money& m) {
        encode_value(w, m.cents());
        encode_value(w, m.currency());
    }
    static money decode(byte_reader& r) {
        auto cents = decode_value<std::int64_t>(r);
        auto cur = decode_value<std::string>(r);
        if (cur.size() != 3) byte_reader::fail("currency code is not 3 letters");
        return money(cents, std::move(cur));
    }
};

TEST_CASE("arithmetic types and enums round trip, including their extremes") {
    CHECK(round_trip(true) == true);
    CHECK(round_trip(false) == false);
    CHECK(round_trip('z') == 'z');
    CHECK(round_trip(std::numeric_limits<std::int64_t>::min()) ==
          std::numeric_limits<std::int64_t>::min());
    CHECK(round_trip(std::numeric_limits<std::uint64_t>::max()) ==
          std::numeric_limits<std::uint64_t>::max());
    CHECK(round_trip(std::int8_t(-128)) == -128);
    CHECK(round_trip(3.25f) == 3.25f);
    CHECK(round_trip(-1e300) == -1e300);
    CHECK(round_trip(std::numeric_limits<double>::infinity()) ==
          std::numeric_limits<double>::infinity());
    CHECK(round_trip(colour::green) == colour::green);
    CHECK(round_trip(second) == second);
    CHECK(round_trip(first) == first);
    CHECK(round_trip(std::byte{0xab}) == std::byte{0xab});
    CHECK(conflux::encode(std::uint32_t(7)).size() == 4);
}

TEST_CASE("strings, vectors, arrays, optionals, variants, maps, pairs, tuples, durations") {
    CHECK(round_trip(std::string()).empty());
    CHECK(round_trip(std::string("héllo\0world", 12)) == std::string("héllo\0world", 12));
    CHECK(round_trip(std::u32string(U"wide")) == U"wide");
    CHECK(round_trip(std::vector<int>{}).empty());
    CHECK(round_trip(std::vector<int>{1, -2, 3}) == std::vector<int>{1, -2, 3});
    CHECK(round_trip(std::vector<bool>{true, false, true}) == std::vector<bool>{true, false, true});
    CHECK(round_trip(std::vector<std::string>{"a", "", "ccc"}) ==
          std::vector<std::string>{"a", "", "ccc"});
    CHECK(round_trip(std::array<double, 2>{1.5, 2.5}) == std::array<double, 2>{1.5, 2.5});
    CHECK(round_trip(std::array<std::string, 0>{}).empty());
    CHECK(round_trip(std::optional<std::string>()) == std::nullopt);
    CHECK(round_trip(std::optional<std::string>("x")) == "x");
    using var = std::variant<std::monostate, int, std::string>;
    CHECK(round_trip(var()) == var());
    CHECK(round_trip(var(5)) == var(5));
    CHECK(round_trip(var("five")) == var("five"));
    std::map<int, std::string> m{{1, "one"}, {2, "two"}};
    CHECK(round_trip(m) == m);
    std::unordered_map<std::string, std::vector<int>> um{{"a", {1}}, {"b", {}}};
    CHECK(round_trip(um) == um);
    CHECK(round_trip(std::pair<int, std::string>(1, "p")) == std::pair<int, std::string>(1, "p"));
    CHECK(round_trip(std::tuple<>()) == std::tuple<>());
    CHECK(round_trip(std::tuple<int, double, std::string>(1, 2.0, "3")) ==
          std::tuple<int, double, std::string>(1, 2.0, "3"));
    CHECK(round_trip(std::chrono::nanoseconds(-123)) == std::chrono::nanoseconds(-123));
    CHECK(round_trip(std::chrono::duration<double>(0.5)) == std::chrono::duration<double>(0.5));
    const auto now = std::chrono::system_clock::now();
    CHECK(round_trip(now) == now);
}

TEST_CASE("plain aggregates need no macro: nested, 16 fields, empty, recursive") {
    static_assert(conflux::detail::field_count_v<record> == 10);
    static_assert(conflux::detail::field_count_v<sixteen> == 16);
    static_assert(conflux::detail::field_count_v<empty_aggregate> == 0);
    static_assert(conflux::codec<point>::min_size == 8);
    CHECK(round_trip(point{3, -4}) == point{3, -4});
    CHECK(round_trip(sample_record()) == sample_record());
    sixteen s{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, "sixteen"};
    CHECK(round_trip(s) == s);
    CHECK(round_trip(empty_aggregate{}) == empty_aggregate{});
    tree t{1, {{2, {}}, {3, {{4, {}}}}}};
    CHECK(round_trip(t) == t);
    CHECK(round_trip(std::vector<record>{sample_record(), record{}}) ==
          std::vector<record>{sample_record(), record{}});
}

TEST_CASE("a user codec specialisation is used, and its own checks apply") {
    CHECK(round_trip(money(1999, "EUR")) == money(1999, "EUR"));
    CHECK(round_trip(std::vector<money>{money(1, "USD")}) == std::vector<money>{money(1, "USD")});
    CHECK_THROWS_AS(round_trip(money(1, "EURO")), conflux::ipc_error);
}

template <>
struct conflux::codec<celsius> {
    static constexpr std::string_view schema = "test.celsius/1";
    static void encode(byte_writer& w, const celsius& c) { encode_value(w, c.degrees); }
    static celsius decode(byte_reader& r) { return {decode_value<double>(r)}; }
};

namespace {
using conflux::fingerprint_of;

template <class A, class B>
constexpr bool same_fingerprint = fingerprint_of<A>() == fingerprint_of<B>();
} // namespace

TEST_CASE("fingerprints: equal for the same encoding shape, different otherwise") {
    // Computed at compile time.
    static_assert(fingerprint_of<std::int64_t>() != 0);
    // Scalars: kind and size, not the spelling.
    static_assert(same_fingerprint<std::int64_t, long long>);
    static_assert(!same_fingerprint<std::int64_t, double>);
    static_assert(!same_fingerprint<std::int64_t, std::uint64_t>);
    static_assert(!same_fingerprint<std::int32_t, std::int64_t>);
    static_assert(!same_fingerprint<float, double>);
    static_assert(!same_fingerprint<bool, std::uint8_t>);
    static_assert(!same_fingerprint<std::byte, std::uint8_t>);
    static_assert(!same_fingerprint<colour, std::uint8_t>);
    // Containers by shape.
    static_assert(!same_fingerprint<std::vector<int>, std::vector<long>>);
    static_assert(!same_fingerprint<std::vector<char>, std::string>);
    static_assert(!same_fingerprint<std::string, std::u32string>);
    static_assert(!same_fingerprint<std::vector<int>, std::optional<int>>);
    static_assert(!same_fingerprint<std::array<int, 2>, std::array<int, 3>>);
    static_assert(!same_fingerprint<std::map<int, int>, std::unordered_map<int, int>>);
    static_assert(!same_fingerprint<std::map<int, long>, std::map<long, int>>);
    static_assert(!same_fingerprint<std::variant<int, double>, std::variant<double, int>>);
    static_assert(!same_fingerprint<std::chrono::seconds, std::chrono::milliseconds>);
    static_assert(!same_fingerprint<std::chrono::system_clock::time_point,
                                    std::chrono::steady_clock::time_point>);
    // Nested containers.
    static_assert(same_fingerprint<std::vector<std::vector<int>>, std::vector<std::vector<int>>>);
    static_assert(!same_fingerprint<std::vector<std::vector<int>>, std::vector<int>>);
    static_assert(!same_fingerprint<std::vector<std::vector<int>>,
                                    std::vector<std::vector<std::vector<int>>>>);
    static_assert(
        !same_fingerprint<std::vector<std::optional<int>>, std::optional<std::vector<int>>>);
    static_assert(!same_fingerprint<std::map<std::string, std::vector<int>>,
                                    std::map<std::string, std::vector<unsigned>>>);
    // Records: fields in order, not the type's name.
    static_assert(same_fingerprint<point, other_point>);
    static_assert(same_fingerprint<point, std::pair<int, int>>);
    static_assert(same_fingerprint<point, std::tuple<int, int>>);
    static_assert(!same_fingerprint<two_longs, std::int64_t>);
    static_assert(!same_fingerprint<point, std::int64_t>); // the same 8 bytes
    static_assert(!same_fingerprint<std::tuple<int, double>, std::tuple<double, int>>);
    static_assert(!same_fingerprint<record, sixteen>);
    static_assert(!same_fingerprint<std::vector<point>, std::vector<two_longs>>);
    // Recursive aggregates are fingerprinted too.
    static_assert(!same_fingerprint<tree, point>);
    static_assert(!same_fingerprint<tree, std::vector<tree>>);
    // User codecs: their declared schema, else their name.
    static_assert(!same_fingerprint<celsius, double>);
    static_assert(!same_fingerprint<money, std::pair<std::int64_t, std::string>>);
    static_assert(!same_fingerprint<money, celsius>);
    static_assert(
        fingerprint_of<celsius>() ==
        conflux::detail::fp_string(conflux::detail::fp_start(conflux::detail::fp_kind::named),
                                   "test.celsius/1"));
    static_assert(!same_fingerprint<std::vector<money>, std::vector<celsius>>);
    CHECK(fingerprint_of<money>() == fingerprint_of<money>());
}

TEST_CASE("fingerprints are the same with every compiler and build: pinned values") {
    // These numbers are part of the wire format (GCC, Clang and libc++ builds must all agree;
    // CI builds this test with each): changing one is a protocol change.
    CHECK(fingerprint_of<std::int64_t>() == 0x30f84239a5649d2cull);
    CHECK(fingerprint_of<double>() == 0xcef46dc9cb8ecdaeull);
    CHECK(fingerprint_of<point>() == 0x4a8d5e6627146045ull);
    CHECK(fingerprint_of<std::map<std::string, std::vector<std::optional<double>>>>() ==
          0x42bc9c422ed94daaull);
    CHECK(fingerprint_of<tree>() == 0x166a3eebd9e46ee0ull);
    CHECK(fingerprint_of<record>() == 0xfa2e00dbd682aab1ull);
    // A user codec without `schema`: its name, "(anonymous namespace)::money" under both GCC
    // ("{anonymous}::money") and Clang.
    CHECK(fingerprint_of<money>() == 0x5a204e46510c7563ull);
}

TEST_CASE("every truncation of a valid encoding is an ipc_error") {
    check_every_truncation(sample_record());
    check_every_truncation(tree{1, {{2, {}}, {3, {{4, {}}}}}});
    check_every_truncation(std::map<std::string, std::vector<int>>{{"k", {1, 2}}, {"", {}}});
    check_every_truncation(std::string(300, 'q')); // two-byte length
}

TEST_CASE("trailing bytes, bad bools, bad optionals and bad variant indices are rejected") {
    auto bytes = conflux::encode(7);
    bytes.push_back(std::byte{0});
    CHECK_THROWS_AS(conflux::decode<int>(bytes), conflux::ipc_error);
    const std::byte two[] = {std::byte{2}};
    CHECK_THROWS_AS(conflux::decode<bool>(two), conflux::ipc_error);
    CHECK_THROWS_AS(conflux::decode<std::optional<std::uint8_t>>(std::span(two, 1)),
                    conflux::ipc_error);
    const std::byte idx[] = {std::byte{3}, std::byte{0}, std::byte{0}, std::byte{0}, std::byte{0}};
    CHECK_THROWS_AS((conflux::decode<std::variant<int, float>>(idx)), conflux::ipc_error);
    // A duplicate map key is not silently dropped.
    std::vector<std::byte> dup;
    conflux::byte_writer w(dup);
    w.write_size(2);
    for (int i = 0; i < 2; ++i) {
        conflux::encode_value(w, 1);
        conflux::encode_value(w, 2);
    }
    CHECK_THROWS_AS((conflux::decode<std::map<int, int>>(dup)), conflux::ipc_error);
}

TEST_CASE("lying lengths are rejected before anything is allocated") {
    for (const std::uint64_t lie :
         {std::uint64_t(5), std::uint64_t(1) << 40, std::numeric_limits<std::uint64_t>::max()}) {
        CAPTURE(lie);
        std::vector<std::byte> bytes;
        conflux::byte_writer w(bytes);
        w.write_size(lie);
        w.write("abcd", 4);
        CHECK_THROWS_AS(conflux::decode<std::string>(bytes), conflux::ipc_error);
        CHECK_THROWS_AS(conflux::decode<std::vector<std::uint32_t>>(bytes), conflux::ipc_error);
        CHECK_THROWS_AS(conflux::decode<std::vector<std::string>>(bytes), conflux::ipc_error);
        CHECK_THROWS_AS((conflux::decode<std::map<int, int>>(bytes)), conflux::ipc_error);
        CHECK_THROWS_AS(conflux::decode<std::vector<point>>(bytes), conflux::ipc_error);
    }
    // An over-long varint.
    std::vector<std::byte> varint(11, std::byte{0xff});
    CHECK_THROWS_AS(conflux::decode<std::string>(varint), conflux::ipc_error);
    // A frame larger than the limit is refused up front.
    std::vector<std::byte> big(1024);
    CHECK_THROWS_AS(conflux::decode<std::vector<std::byte>>(big, {.max_message_size = 512}),
                    conflux::ipc_error);
}

TEST_CASE("nesting deeper than the limit is refused on both sides") {
    tree t;
    tree* leaf = &t;
    for (int i = 0; i < 100; ++i) {
        leaf->children.push_back(tree{i, {}});
        leaf = &leaf->children.back();
    }
    CHECK_THROWS_AS(conflux::encode(t), conflux::ipc_error);

    // A depth bomb crafted by hand: each level says "one child" — 100000 levels deep.
    std::vector<std::byte> bomb;
    conflux::byte_writer w(bomb);
    for (int i = 0; i < 100000; ++i) {
        conflux::encode_value(w, 0);
        w.write_size(1);
    }
    CHECK_THROWS_AS(conflux::decode<tree>(bomb), conflux::ipc_error);

    // Within the limit it is fine, and the limit is configurable.
    tree shallow{0, {tree{1, {tree{2, {}}}}}};
    auto bytes = conflux::encode(shallow);
    CHECK(conflux::decode<tree>(bytes) == shallow);
    CHECK_THROWS_AS(conflux::decode<tree>(bytes, {.max_depth = 3}), conflux::ipc_error);
}

TEST_CASE("a descriptor outside an IPC channel is an error; inside a writer it is duplicated") {
    int p[2];
    REQUIRE(::pipe(p) == 0);
    conflux::file_descriptor a(p[0]);
    conflux::file_descriptor b(p[1]);
    CHECK_THROWS_AS(conflux::encode(a), conflux::ipc_error);

    std::vector<std::byte> bytes;
    std::vector<conflux::file_descriptor> fds;
    conflux::byte_writer w(bytes, &fds);
    conflux::encode_value(w, a);
    conflux::encode_value(w, conflux::file_descriptor());
    REQUIRE(fds.size() == 1);
    CHECK(fds[0].get() != a.get());
    struct stat s1 {};
    struct stat s2 {};
    REQUIRE(::fstat(fds[0].get(), &s1) == 0);
    REQUIRE(::fstat(a.get(), &s2) == 0);
    CHECK(s1.st_ino == s2.st_ino);

    conflux::byte_reader r(bytes, {}, fds);
    auto got = conflux::decode_value<conflux::file_descriptor>(r);
    CHECK(got.get() >= 0);
    CHECK(!conflux::decode_value<conflux::file_descriptor>(r));
    CHECK(!fds[0]); // taken, not copied
    // Taking the same index twice is refused.
    conflux::byte_reader again(bytes, {}, fds);
    CHECK_THROWS_AS(conflux::decode_value<conflux::file_descriptor>(again), conflux::ipc_error);
}
