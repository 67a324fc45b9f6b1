#include <conflux/buffer.hpp>
#include <conflux/ipc.hpp>
#include <conflux/run.hpp>
#include <conflux/shared_buffer.hpp>
#include <conflux/sleep.hpp>
#include <conflux/when_all.hpp>
#include <conflux/when_any.hpp>
#include <conflux/detail/ipc_frame.hpp>
#include <conflux/detail/ipc_json.hpp>

#include <doctest/doctest.h>

#include "support/test_support.hpp"

#include <chrono>
#include <cstdint>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

using namespace std::chrono_literals;
using conflux::ipc_channel;
using conflux::task;

namespace {

struct job {
    int id = 0;
    std::string name;
    std::vector<double> data;
    std::optional<std::map<std::string, int>> extra;
    friend bool operator==(const job&, const job&) = default;
};

// Move-only: a descriptor travels with it. Sent with std::move, which is sound with GCC 12.
struct labelled_fd {
    std::string label;
    conflux::file_descriptor fd;
};

struct point {
    int x = 0;
    int y = 0;
};

// A user codec, checked by the schema it declares.
struct celsius {
    double degrees = 0;
};

// FNV-1a over the bytes: enough to tell a corrupted or reordered payload.
std::uint64_t digest(const std::vector<std::uint8_t>& v) {
    std::uint64_t h = 1469598103934665603ull;
    for (std::uint8_t b : v) h = (h ^ b) * 1099511628211ull;
    return h;
}

std::vector<std::uint8_t> pattern(std::size_t n, std::uint8_t seed) {
    std::vector<std::uint8_t> v(n);
    std::uint32_t x = seed * 2654435761u + 1;
    for (auto& b : v) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b = static_cast<std::uint8_t>(x);
    }
    return v;
}

} // namespace

template <>
struct conflux::codec<celsius> {
    static constexpr std::string_view schema = "test.celsius";
    static void encode(byte_writer& w, const celsius& c) { encode_value(w, c.degrees); }
    static celsius decode(byte_reader& r) { return {decode_value<double>(r)}; }
};

namespace {

// A frame as the library writes it, for the raw peer.
template <class T>
std::vector<std::byte>
frame_of(const T& v, conflux::detail::frame_type type = conflux::detail::frame_type::user,
         std::size_t fds = 0) {
    auto body = conflux::detail::encode_message(v); // the type's fingerprint, then the value
    std::vector<std::byte> out(conflux::detail::frame_header_size);
    conflux::detail::write_frame_header(out.data(), type, fds, body.size());
    out.insert(out.end(), body.begin(), body.end());
    return out;
}

void write_all(int fd, std::span<const std::byte> bytes) {
    while (!bytes.empty()) {
        const ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
        REQUIRE(n > 0);
        bytes = bytes.subspan(static_cast<std::size_t>(n));
    }
}

void send_with_fds(int sock, std::span<const std::byte> bytes, std::vector<int> fds) {
    iovec iov{const_cast<std::byte*>(bytes.data()), bytes.size()};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
    REQUIRE(::sendmsg(sock, &msg, MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size()));
}

// A channel on one end, the raw socket on the other.
std::pair<ipc_channel, conflux::detail::unique_fd> raw_pair(conflux::ipc_options o = {}) {
    auto a_b = conflux::detail::ipc_socketpair();
    auto& a = a_b.first;
    auto& b = a_b.second;
    return {ipc_channel(conflux::file_descriptor(a.release()), o), std::move(b)};
}

ino_t inode_of(int fd) {
    struct stat st {};
    REQUIRE(::fstat(fd, &st) == 0);
    return st.st_ino;
}

// Queues `message` until the peer's socket buffer and then our queue are full.
task<int> fill(ipc_channel& ch, const std::string& message) {
    int queued = 0;
    for (int quiet = 0; quiet < 3;) {
        if (ch.try_send(message)) {
            ++queued;
            quiet = 0;
        } else {
            ++quiet;
            co_await conflux::sleep_for(2ms); // lets the writer move the queue to the socket
        }
    }
    co_return queued;
}

task<void> yield_a_little() {
    for (int i = 0; i < 3; ++i) co_await conflux::sleep_for(0ms);
}

} // namespace

TEST_CASE("typed messages round trip both ways, in order, including empty ones") {
    conflux_test::watchdog dog(10s);
    conflux::run([]() -> task<void> {
        auto a_b = ipc_channel::pair();
        auto& a = a_b.first;
        auto& b = a_b.second;
        job j{7, "seven", {1.5, 2.5}, std::map<std::string, int>{{"k", 1}}};
        co_await a.send(j);
        co_await a.send(std::string());
        co_await a.send(std::tuple<>());
        for (int i = 0; i < 1000; ++i) co_await a.send(i);
        co_await b.send(std::variant<int, std::string>("back"));

        CHECK(co_await b.receive<job>() == j);
        CHECK(co_await b.receive<std::string>() == std::string());
        CHECK(co_await b.receive<std::tuple<>>() == std::tuple<>());
        for (int i = 0; i < 1000; ++i) {
            auto v = co_await b.receive<int>();
            REQUIRE(v);
            if (*v != i) FAIL("out of order: " << *v << " != " << i);
        }
        auto back = co_await a.receive<std::variant<int, std::string>>();
        CHECK(std::get<std::string>(*back) == "back");

        a.disconnect();
        CHECK(!(co_await b.receive<int>()));
        CHECK_THROWS_AS(co_await a.send(1), conflux::ipc_error);
    }());
}

TEST_CASE("4 x 8 MiB messages each way at once arrive intact; 65521-byte messages straddle reads") {
    conflux_test::watchdog dog(30s);
    conflux::run([]() -> task<void> {
        auto a_b = ipc_channel::pair();
        auto& a = a_b.first;
        auto& b = a_b.second;
        auto pump = [](ipc_channel& out, ipc_channel& in, std::uint8_t seed) -> task<void> {
            auto sender = [&]() -> task<void> {
                for (int i = 0; i < 4; ++i) co_await out.send(pattern(8 << 20, seed + i));
                for (int i = 0; i < 10; ++i) co_await out.send(pattern(65521, seed + i));
            };
            auto receiver = [&]() -> task<void> {
                for (int i = 0; i < 4; ++i) {
                    auto m = co_await in.receive<std::vector<std::uint8_t>>();
                    REQUIRE(m);
                    CHECK(m->size() == (8u << 20));
                    CHECK(digest(*m) == digest(pattern(8 << 20, seed + i)));
                }
                for (int i = 0; i < 10; ++i) {
                    auto m = co_await in.receive<std::vector<std::uint8_t>>();
                    REQUIRE(m);
                    CHECK(digest(*m) == digest(pattern(65521, seed + i)));
                }
            };
            co_await conflux::when_all(sender(), receiver());
        };
        co_await conflux::when_all(pump(a, b, 1), pump(b, a, 100));
    }());
}

TEST_CASE("aggregate messages: named in co_await, moved when move-only, temporaries in try_send") {
    conflux_test::watchdog dog(10s);
    conflux::run([]() -> task<void> {
        auto a_b = ipc_channel::pair();
        auto& a = a_b.first;
        auto& b = a_b.second;
        const std::string text = "a text long enough to live outside the small-string buffer";
        job named{1, text, {1.0}, std::nullopt};
        co_await a.send(named);
        CHECK(named.name == text); // sent a copy
        CHECK(a.try_send(job{2, text, {2.0}, std::nullopt}));
        int p[2];
        REQUIRE(::pipe(p) == 0);
        conflux::file_descriptor read_end(p[0]);
        labelled_fd moved{text, conflux::file_descriptor(p[1])};
        co_await a.send(std::move(moved));
        for (int id = 1; id <= 2; ++id) {
            auto j = co_await b.receive<job>();
            REQUIRE(j);
            CHECK(j->id == id);
            CHECK(j->name == text);
        }
        auto l = co_await b.receive<labelled_fd>();
        REQUIRE(l);
        CHECK(l->label == text);
        REQUIRE(::write(l->fd.get(), "x", 1) == 1);
        char c = 0;
        REQUIRE(::read(read_end.get(), &c, 1) == 1);
        CHECK(c == 'x');
    }());
}

TEST_CASE("frames split at every byte boundary are reassembled") {
    conflux_test::watchdog dog(30s);
    std::vector<std::byte> stream;
    for (auto& f : {frame_of(std::string("first")), frame_of(std::vector<int>{1, 2, 3}),
                    frame_of(std::string())}) {
        stream.insert(stream.end(), f.begin(), f.end());
    }
    conflux::run([&]() -> task<void> {
        const std::vector<int> one_two_three{1, 2, 3};
        for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
            CAPTURE(cut);
            auto ch_raw = raw_pair();
            auto& ch = ch_raw.first;
            auto& raw = ch_raw.second;
            write_all(raw.get(), std::span(stream).first(cut));
            co_await yield_a_little();
            write_all(raw.get(), std::span(stream).subspan(cut));
            raw.reset();
            CHECK(co_await ch.receive<std::string>() == std::string("first"));
            CHECK(co_await ch.receive<std::vector<int>>() == one_two_three);
            CHECK(co_await ch.receive<std::string>() == std::string(""));
            CHECK(!(co_await ch.receive<int>()));
        }
    }());
}

TEST_CASE("malformed frames from a raw peer: one ipc_error, then the channel is closed") {
    conflux_test::watchdog dog(20s);
    const auto fds_before = conflux_test::open_fds();
    auto good = frame_of(std::string("ok"));
    auto mutate = [&](std::size_t offset, std::uint8_t value) {
        auto f = good;
        f[offset] = std::byte{value};
        return f;
    };
    std::vector<std::pair<const char*, std::vector<std::byte>>> cases = {
        {"bad magic", mutate(0, 0)},
        {"bad version", mutate(4, 9)},
        {"unknown type", mutate(5, 77)},
        {"control type 0", mutate(5, 0)},
        {"reserved bits", mutate(12, 1)},
        {"declares descriptors it does not send", mutate(6, 1)},
        {"garbage body (lying string length)", mutate(24, 200)},
        {"body shorter than a type fingerprint",
         [] {
             std::vector<std::byte> f(conflux::detail::frame_header_size + 4);
             conflux::detail::write_frame_header(f.data(), conflux::detail::frame_type::user, 0, 4);
             return f;
         }()},
        {"oversized", frame_of(std::string(5000, 'x'))},
    };
    {
        auto truncated = good;
        truncated.resize(truncated.size() - 1);
        cases.emplace_back("truncated then EOF", truncated);
        cases.emplace_back("half a header then EOF",
                           std::vector<std::byte>(good.begin(), good.begin() + 7));
    }
    conflux::run([&]() -> task<void> {
        for (auto& named_case : cases) {
            const char* name = named_case.first;
            auto& bytes = named_case.second;
            CAPTURE(name);
            auto ch_raw = raw_pair({.max_message_size = 4096});
            auto& ch = ch_raw.first;
            auto& raw = ch_raw.second;
            write_all(raw.get(), bytes);
            raw.reset();
            CHECK_THROWS_AS(co_await ch.receive<std::string>(), conflux::ipc_error);
            CHECK(!ch.connected());
            CHECK(!(co_await ch.receive<std::string>()));
        }
        // A good frame received as another type: that is the receiver's mistake, refused by
        // the fingerprint (ipc_type_mismatch), and the channel stays open.
        auto ch_raw = raw_pair();
        auto& ch = ch_raw.first;
        auto& raw = ch_raw.second;
        write_all(raw.get(), frame_of(std::uint64_t(1)));
        write_all(raw.get(), frame_of(std::uint64_t(2)));
        CHECK_THROWS_AS(co_await ch.receive<std::uint32_t>(), conflux::ipc_type_mismatch);
        CHECK(ch.connected());
        CHECK(co_await ch.receive<std::uint64_t>() == std::uint64_t(2));
    }());
    CHECK(conflux_test::open_fds() == fds_before);
}

TEST_CASE(
    "a receive of another type throws ipc_type_mismatch naming both; the channel stays open") {
    conflux_test::watchdog dog(10s);
    conflux::run([]() -> task<void> {
        auto a_b = ipc_channel::pair();
        auto& a = a_b.first;
        auto& b = a_b.second;
        // What a new user tried: 42 sent, received as double; a struct received as int64.
        co_await a.send(std::int64_t{42});
        std::string what;
        std::uint64_t received = 0;
        try {
            (void)co_await b.receive<double>();
        } catch (const conflux::ipc_type_mismatch& e) {
            what = e.what();
            received = e.received_fingerprint();
        }
        const std::string expected = "expected a message of type double (fingerprint 0x";
        const std::string got = "got a message of another type (fingerprint 0x30f84239a5649d2c)";
        CHECK(what.find(expected) != std::string::npos);
        CHECK(what.find(got) != std::string::npos);
        CHECK(received == conflux::fingerprint_of<std::int64_t>());
        CHECK(b.connected());
        point p{1, 2};
        co_await a.send(p);
        CHECK_THROWS_AS(co_await b.receive<std::int64_t>(), conflux::ipc_type_mismatch);
        // A user codec is checked the same way (by its declared schema).
        co_await a.send(celsius{21.5});
        CHECK_THROWS_AS(co_await b.receive<double>(), conflux::ipc_type_mismatch);
        co_await a.send(21.5);
        CHECK_THROWS_AS(co_await b.receive<celsius>(), conflux::ipc_type_mismatch);
        // A mismatch is an ipc_error too, and consumed: the next receive gets the next message.
        const std::vector<int> ints{1, 2}; // named: GCC 12 cannot keep an initializer list
        co_await a.send(ints);             // alive across co_await
        co_await a.send(std::string("next"));
        CHECK_THROWS_AS(co_await b.receive<std::vector<long>>(), conflux::ipc_error);
        CHECK(co_await b.receive<std::string>() == std::string("next"));
        co_await a.send(celsius{-4});
        auto c = co_await b.receive<celsius>();
        REQUIRE(c);
        CHECK(c->degrees == -4);
        // Both ways, and the same fields under another name decode (by design).
        co_await b.send(p);
        auto q = co_await a.receive<std::pair<int, int>>();
        REQUIRE(q);
        CHECK(q->second == 2);
        CHECK(a.connected());
        CHECK(b.connected());
    }());
}

TEST_CASE("descriptors in a message of another type are closed; the channel stays usable") {
    conflux_test::watchdog dog(10s);
    const auto fds_before = conflux_test::open_fds();
    conflux::run([]() -> task<void> {
        auto a_b = ipc_channel::pair();
        auto& a = a_b.first;
        auto& b = a_b.second;
        const auto with_channel = conflux_test::open_fds();
        {
            int p[2];
            REQUIRE(::pipe(p) == 0);
            labelled_fd m{"two ends", conflux::file_descriptor(p[0])};
            co_await a.send(std::move(m));
            std::vector<conflux::file_descriptor> more;
            more.emplace_back(p[1]);
            co_await a.send(std::move(more));
        }
        CHECK_THROWS_AS(co_await b.receive<std::string>(), conflux::ipc_type_mismatch);
        CHECK_THROWS_AS((co_await b.receive_one_of<int, std::string>()),
                        conflux::ipc_type_mismatch);
        // Both descriptors arrived with their messages and were closed with them.
        CHECK(conflux_test::open_fds() == with_channel);
        co_await a.send(std::string("still open"));
        CHECK(co_await b.receive<std::string>() == std::string("still open"));
    }());
    CHECK(conflux_test::open_fds() == fds_before);
}

TEST_CASE("receive_one_of: several message types decoded by fingerprint, no hand-written tag") {
    conflux_test::watchdog dog(10s);
    conflux::run([]() -> task<void> {
        auto a_b = ipc_channel::pair();
        auto& a = a_b.first;
        auto& b = a_b.second;
        job j{3, "three", {}, std::nullopt};
        co_await a.send(j);
        co_await a.send(std::string("text"));
        co_await a.send(point{5, 6});
        co_await a.send(2.5); // none of them
        co_await a.send(std::string("after"));
        // A variant is its own type (with its own index): sent whole, it is received whole.
        co_await a.send(std::variant<std::string, point>(point{7, 8}));

        std::vector<std::size_t> seen;
        for (int i = 0; i < 3; ++i) {
            auto m = co_await b.receive_one_of<job, std::string, point>();
            REQUIRE(m);
            seen.push_back(m->index());
            std::visit(
                [&](const auto& v) {
                    using V = std::decay_t<decltype(v)>;
                    if constexpr (std::is_same_v<V, job>) CHECK(v == j);
                    if constexpr (std::is_same_v<V, std::string>) CHECK(v == "text");
                    if constexpr (std::is_same_v<V, point>) CHECK(v.y == 6);
                },
                *m);
        }
        CHECK(seen == std::vector<std::size_t>{0, 1, 2});
        try {
            (void)co_await b.receive_one_of<job, std::string, point>();
            FAIL("no ipc_type_mismatch");
        } catch (const conflux::ipc_type_mismatch& e) {
            const std::string what = e.what();
            CHECK(what.find("expected one of ") != std::string::npos);
            CHECK(what.find("job (fingerprint 0x") != std::string::npos);
            CHECK(what.find("point (fingerprint 0x") != std::string::npos);
            CHECK(e.received_fingerprint() == conflux::fingerprint_of<double>());
        }
        auto after = co_await b.receive_one_of<job, std::string, point>();
        REQUIRE(after);
        CHECK(std::get<std::string>(*after) == "after");
        CHECK_THROWS_AS((co_await b.receive_one_of<std::string, point>()),
                        conflux::ipc_type_mismatch);
        co_await a.send(std::variant<std::string, point>(point{7, 8}));
        auto whole = co_await b.receive_one_of<int, std::variant<std::string, point>>();
        REQUIRE(whole);
        CHECK(std::get<point>(std::get<1>(*whole)).x == 7);
        // In a race, as receive.
        co_await a.send(point{9, 9});
        auto raced = co_await conflux::when_any(b.receive_one_of<std::string, point>(),
                                                conflux::sleep_for(5s));
        REQUIRE(raced.index() == 0);
        CHECK(std::get<point>(*std::get<0>(raced)).x == 9);
        a.disconnect();
        CHECK(!(co_await b.receive_one_of<std::string, point>()));
        // A json channel carries text only: no types to choose from.
        auto json = ipc_channel::pair({.mode = conflux::ipc_mode::json});
        co_await json.first.send(std::string("{}"));
        CHECK_THROWS_AS((co_await json.second.receive_one_of<std::string, point>()),
                        std::logic_error);
    }());
}

TEST_CASE("a remote error frame becomes remote_error with the type name and message") {
    conflux::run([]() -> task<void> {
        auto a_b = ipc_channel::pair();
        auto& a = a_b.first;
        auto& b = a_b.second;
        a.send_error("std::out_of_range", "index 9 of 3");
        try {
            (void)co_await b.receive<int>();
            FAIL("no exception");
        } catch (const conflux::remote_error& e) {
            CHECK(e.type_name() == "std::out_of_range");
            CHECK(e.message() == "index 9 of 3");
        }
    }());
}

TEST_CASE("descriptors travel as descriptors: same inode, close-on-exec, one per message") {
    conflux_test::watchdog dog(10s);
    const auto fds_before = conflux_test::open_fds();
    conflux::run([]() -> task<void> {
        auto a_b = ipc_channel::pair();
        auto& a = a_b.first;
        auto& b = a_b.second;
        int p1[2];
        int p2[2];
        REQUIRE(::pipe(p1) == 0);
        REQUIRE(::pipe(p2) == 0);
        const ino_t i1 = inode_of(p1[1]);
        const ino_t i2 = inode_of(p2[1]);
        // Two handles in back-to-back messages that coalesce into one write, the second with
        // a large payload; the sender closes its copies before the receiver looks.
        co_await a.send(conflux::file_descriptor(p1[1]));
        co_await a.send(std::make_tuple(std::string(800 * 1024, 'p'),
                                        conflux::file_descriptor(p2[1]),
                                        conflux::file_descriptor()));
        auto f1 = co_await b.receive<conflux::file_descriptor>();
        auto f2 = co_await b.receive<
            std::tuple<std::string, conflux::file_descriptor, conflux::file_descriptor>>();
        REQUIRE(f1);
        REQUIRE(f2);
        CHECK(inode_of(f1->get()) == i1);
        CHECK(inode_of(std::get<1>(*f2).get()) == i2);
        CHECK(!std::get<2>(*f2));
        CHECK((::fcntl(f1->get(), F_GETFD) & FD_CLOEXEC) != 0);
        CHECK((::fcntl(std::get<1>(*f2).get(), F_GETFD) & FD_CLOEXEC) != 0);
        // The received end works: write through it, read from the pipe.
        REQUIRE(::write(f1->get(), "x", 1) == 1);
        char c = 0;
        REQUIRE(::read(p1[0], &c, 1) == 1);
        CHECK(c == 'x');
        ::close(p1[0]);
        ::close(p2[0]);
    }());
    CHECK(conflux_test::open_fds() == fds_before);
}

TEST_CASE("descriptors a frame did not declare, or fewer than declared: ipc_error, all closed") {
    conflux_test::watchdog dog(10s);
    const auto fds_before = conflux_test::open_fds();
    conflux::run([]() -> task<void> {
        int p[2];
        REQUIRE(::pipe(p) == 0);
        {
            auto ch_raw = raw_pair();
            auto& ch = ch_raw.first;
            auto& raw = ch_raw.second;
            send_with_fds(raw.get(), frame_of(std::string("x")), {p[0], p[1]}); // declares 0
            CHECK_THROWS_AS(co_await ch.receive<std::string>(), conflux::ipc_error);
        }
        {
            auto ch_raw = raw_pair();
            auto& ch = ch_raw.first;
            auto& raw = ch_raw.second;
            send_with_fds(raw.get(),
                          frame_of(std::string("x"), conflux::detail::frame_type::user, 3),
                          {p[0], p[1]});
            CHECK_THROWS_AS(co_await ch.receive<std::string>(), conflux::ipc_error);
        }
        {
            // The body names descriptor index 5 of 1.
            auto ch_raw = raw_pair();
            auto& ch = ch_raw.first;
            auto& raw = ch_raw.second;
            std::vector<std::byte> body(conflux::detail::fingerprint_size);
            const auto fp = conflux::fingerprint_of<conflux::file_descriptor>();
            std::memcpy(body.data(), &fp, sizeof fp);
            body.push_back(std::byte{1});
            body.push_back(std::byte{5});
            std::vector<std::byte> f(conflux::detail::frame_header_size);
            conflux::detail::write_frame_header(f.data(), conflux::detail::frame_type::user, 1,
                                                body.size());
            f.insert(f.end(), body.begin(), body.end());
            send_with_fds(raw.get(), f, {p[0]});
            CHECK_THROWS_AS(co_await ch.receive<conflux::file_descriptor>(), conflux::ipc_error);
        }
        ::close(p[0]);
        ::close(p[1]);
    }());
    CHECK(conflux_test::open_fds() == fds_before);
}

TEST_CASE("buffers: shareable ones travel as memory (sender detached), others as bytes") {
    conflux_test::watchdog dog(10s);
    conflux::run([]() -> task<void> {
        auto a_b = ipc_channel::pair();
        auto& a = a_b.first;
        auto& b = a_b.second;
        auto shared = conflux::buffer::shareable(1 << 20);
        shared.data()[0] = std::byte{42};
        co_await a.send(std::move(shared));
        CHECK(shared.detached()); // NOLINT: checking the moved-from state is the point
        auto got = co_await b.receive<conflux::buffer>();
        REQUIRE(got);
        CHECK(got->is_shareable());
        CHECK(got->size() == (1u << 20));
        CHECK(got->data()[0] == std::byte{42});

        auto slice = conflux::buffer::shareable(4096).slice(1000, 24);
        slice.data()[0] = std::byte{7};
        co_await a.send(std::move(slice));
        auto got_slice = co_await b.receive<conflux::buffer>();
        CHECK(got_slice->size() == 24);
        CHECK(got_slice->data()[0] == std::byte{7});

        conflux::buffer heap(100);
        heap.data()[99] = std::byte{9};
        co_await a.send(std::move(heap));
        auto copied = co_await b.receive<conflux::buffer>();
        CHECK(!copied->is_shareable());
        CHECK(copied->data()[99] == std::byte{9});

        co_await a.send(conflux::buffer());
        CHECK((co_await b.receive<conflux::buffer>())->detached());

        // A shared_buffer: both sides see each other's writes.
        conflux::shared_buffer mem(4096);
        co_await a.send(mem);
        auto theirs = co_await b.receive<conflux::shared_buffer>();
        REQUIRE(theirs);
        theirs->view<std::int32_t>().store(3, 1234);
        CHECK(mem.view<std::int32_t>().load(3) == 1234);
    }());
}

TEST_CASE("a peer that stops reading applies back-pressure with bounded memory") {
    conflux_test::watchdog dog(20s);
    conflux::run([]() -> task<void> {
        auto a_b = ipc_channel::pair({.high_water_mark = 64 * 1024});
        auto& a = a_b.first;
        auto& b = a_b.second;
        const std::string kib(1024, 'k');
        const int queued = co_await fill(a, kib);
        // The socket buffer took some; then the queue filled up to the mark and no further.
        CHECK(queued > 64);
        CHECK(a.pending_bytes() >= 64 * 1024);
        CHECK(a.pending_bytes() < 64 * 1024 + 2048);
        CHECK(!a.try_send(kib));

        // A send now waits; the reader drains, the send completes, nothing is lost.
        int sent_after = 0;
        auto sender = [&]() -> task<void> {
            for (int i = 0; i < 200; ++i) {
                co_await a.send(kib);
                ++sent_after;
            }
        };
        auto reader = [&]() -> task<void> {
            for (int i = 0; i < queued + 200; ++i) {
                auto m = co_await b.receive<std::string>();
                REQUIRE(m);
                if (*m != kib) FAIL("corrupted message " << i);
            }
        };
        co_await conflux::when_all(sender(), reader());
        CHECK(sent_after == 200);
    }());
}

TEST_CASE("try_send: false only when full; a disconnected channel throws, full or not") {
    conflux_test::watchdog dog(10s);
    conflux::run([]() -> task<void> {
        auto a_b = ipc_channel::pair({.high_water_mark = 4096});
        auto& a = a_b.first; // a_b.second never reads
        const std::string big(4096, 'x');
        co_await fill(a, big);
        CHECK_FALSE(a.try_send(big)); // full: retry later
        a.disconnect();
        CHECK_THROWS_AS(a.try_send(big), conflux::ipc_error); // closed, although still full
        CHECK_THROWS_AS(co_await a.send(big), conflux::ipc_error);

        auto c_d = ipc_channel::pair();
        c_d.first.disconnect();
        CHECK_THROWS_AS(c_d.first.try_send(std::string("x")), conflux::ipc_error);
    }());
}

TEST_CASE("a send waiting for room is cancelled by its stop token") {
    conflux_test::watchdog dog(10s);
    conflux::run([]() -> task<void> {
        auto a_b = ipc_channel::pair({.high_water_mark = 4096});
        auto& a = a_b.first; // a_b.second never reads
        const std::string big(4096, 'x');
        co_await fill(a, big);
        std::stop_source stop;
        auto canceller = [&]() -> task<void> {
            co_await conflux::sleep_for(10ms);
            stop.request_stop();
        };
        auto sender = [&]() -> task<void> {
            CHECK_THROWS_AS(co_await a.send(big, stop.get_token()), conflux::operation_cancelled);
        };
        co_await conflux::when_all(sender(), canceller());
        std::stop_source stop2;
        auto receiver = [&]() -> task<void> {
            auto c_d = ipc_channel::pair();
            auto& c = c_d.first; // c_d.second never writes
            CHECK_THROWS_AS(co_await c.receive<int>(stop2.get_token()),
                            conflux::operation_cancelled);
        };
        auto canceller2 = [&]() -> task<void> {
            co_await conflux::sleep_for(10ms);
            stop2.request_stop();
        };
        co_await conflux::when_all(receiver(), canceller2());
    }());
}

TEST_CASE("the peer dying mid-message ends receive with one ipc_error, no hang, no leak") {
    conflux_test::watchdog dog(10s);
    const auto fds_before = conflux_test::open_fds();
    conflux::run([]() -> task<void> {
        auto ch_raw = raw_pair();
        auto& ch = ch_raw.first;
        auto& raw = ch_raw.second;
        auto f = frame_of(std::string(100000, 'z'));
        auto reader = [&]() -> task<void> {
            CHECK_THROWS_AS(co_await ch.receive<std::string>(), conflux::ipc_error);
        };
        auto killer = [&]() -> task<void> {
            write_all(raw.get(), std::span(f).first(50000));
            co_await conflux::sleep_for(5ms);
            raw.reset();
        };
        co_await conflux::when_all(reader(), killer());
    }());
    CHECK(conflux_test::open_fds() == fds_before);
}

TEST_CASE("a last message and the peer's hang-up seen in one edge: the message, then the end") {
    // The receiver sleeps first, so the frame and the close reach the loop as one epoll event;
    // the short read that takes the frame must not be taken for proof that nothing is left.
    conflux_test::watchdog dog(10s);
    for (auto mode : {conflux::ipc_mode::binary, conflux::ipc_mode::json}) {
        conflux::run([mode]() -> task<void> {
            auto ch_raw = raw_pair({.mode = mode});
            auto& ch = ch_raw.first;
            auto& raw = ch_raw.second;
            auto reader = [&]() -> task<void> {
                auto first = co_await ch.receive<std::string>();
                REQUIRE(first);
                CHECK(*first == "\"last\"");
                auto rest =
                    co_await conflux::when_any(ch.receive<std::string>(), conflux::sleep_for(2s));
                REQUIRE(rest.index() == 0);
                CHECK(!std::get<0>(rest));
            };
            auto closer = [&]() -> task<void> {
                co_await yield_a_little();
                if (mode == conflux::ipc_mode::json) {
                    const std::string line = "\"last\"\n";
                    write_all(raw.get(), std::as_bytes(std::span(line)));
                } else {
                    write_all(raw.get(), frame_of(std::string("\"last\"")));
                }
                raw.reset();
            };
            co_await conflux::when_all(reader(), closer());
        }());
    }
}

TEST_CASE("json mode: one JSON text per line, Node's internal messages skipped") {
    conflux_test::watchdog dog(10s);
    conflux::run([]() -> task<void> {
        auto ch_raw = raw_pair({.mode = conflux::ipc_mode::json});
        auto& ch = ch_raw.first;
        auto& raw = ch_raw.second;
        const std::string in = "{\"a\":1}\n{\"cmd\":\"NODE_HANDLE_ACK\"}\n\"h\\u00e9\"\n[1,";
        write_all(raw.get(), std::as_bytes(std::span(in)));
        CHECK(co_await ch.receive<std::string>() == std::string("{\"a\":1}"));
        CHECK(co_await ch.receive<std::string>() == std::string("\"h\\u00e9\""));
        const std::string rest = "2]\n";
        write_all(raw.get(), std::as_bytes(std::span(rest)));
        CHECK(co_await ch.receive<std::string>() == std::string("[1,2]"));
        co_await ch.send(std::string("{\"b\":2}"));
        co_await ch.flush();
        char buf[64] = {};
        CHECK(::read(raw.get(), buf, sizeof buf) == 8);
        CHECK(std::string(buf) == "{\"b\":2}\n");
        CHECK_THROWS_AS(co_await ch.send(std::string("a\nb")), std::invalid_argument);
        raw.reset();
        CHECK(!(co_await ch.receive<std::string>()));
    }());
}

TEST_CASE("json mode: a line that is not JSON text is an ipc_error, then the channel is closed") {
    conflux_test::watchdog dog(20s);
    const auto fds_before = conflux_test::open_fds();
    // Anything pretending to be a Node.js peer: each case follows one good message.
    const std::vector<std::pair<const char*, std::string>> cases = {
        {"plain text", "hello\n"},
        {"unterminated string", "\"abc\n"},
        {"two values", "1 2\n"},
        {"trailing comma", "[1,2,]\n"},
        {"single quotes", "{'a':1}\n"},
        {"leading zero", "012\n"},
        {"bad escape", "\"\\x41\"\n"},
        {"raw control character", std::string("\"a\tb\"\n")},
        {"NUL byte", std::string("\"a\0b\"\n", 6)},
        {"invalid UTF-8", "\"\xc3\x28\"\n"},
        {"overlong UTF-8", "\"\xc0\xaf\"\n"},
        {"UTF-8 surrogate", "\"\xed\xa0\x80\"\n"},
        {"deeper than max_depth", std::string(9, '[') + std::string(9, ']') + "\n"},
        {"a Node-internal prefix that is no JSON", "{\"cmd\":\"NODE_x\n"},
        {"longer than max_message_size", "\"" + std::string(5000, 'x') + "\"\n"},
        {"unfinished line then EOF", "[1,2"},
    };
    conflux::run([&]() -> task<void> {
        for (const auto& named_case : cases) {
            const char* name = named_case.first;
            CAPTURE(name);
            auto ch_raw = raw_pair(
                {.mode = conflux::ipc_mode::json, .max_message_size = 4096, .max_depth = 8});
            auto& ch = ch_raw.first;
            auto& raw = ch_raw.second;
            const std::string in = "{\"good\":[1,2.5e3,\"\\u00e9\xc3\xa9\"]}\n" + named_case.second;
            write_all(raw.get(), std::as_bytes(std::span(in)));
            raw.reset();
            CHECK(co_await ch.receive<std::string>() ==
                  std::string("{\"good\":[1,2.5e3,\"\\u00e9\xc3\xa9\"]}"));
            CHECK_THROWS_AS(co_await ch.receive<std::string>(), conflux::ipc_error);
            CHECK(!ch.connected());
            CHECK(!(co_await ch.receive<std::string>()));
        }
    }());
    CHECK(conflux_test::open_fds() == fds_before);
}

TEST_CASE("json mode: runs of blank lines and Node's internal messages are skipped in linear "
          "time, without recursion") {
    // Each skipped line used to cost a recursive call and a move of everything after it: a
    // peer writing a few MiB of line feeds overflowed the stack or took minutes.
    conflux_test::watchdog dog(30s);
    conflux::run([]() -> task<void> {
        auto ch_raw = raw_pair({.mode = conflux::ipc_mode::json});
        auto& ch = ch_raw.first;
        auto& raw = ch_raw.second;
        std::string in(4 << 20, '\n');
        for (int i = 0; i < 20000; ++i) in += "{\"cmd\":\"NODE_HANDLE_ACK\"}\n \r\n";
        in += "\"after\"\n";
        std::thread writer([&in, fd = raw.get()] {
            write_all(fd, std::as_bytes(std::span(in)));
            ::shutdown(fd, SHUT_WR);
        });
        const auto start = std::chrono::steady_clock::now();
        auto first = co_await ch.receive<std::string>();
        writer.join();
        CHECK(first == std::string("\"after\""));
        CHECK(!(co_await ch.receive<std::string>()));
        CHECK(std::chrono::steady_clock::now() - start < 10s);
    }());
}

TEST_CASE("json mode: what is sent must be one line of JSON text within the limits") {
    conflux::run([]() -> task<void> {
        auto a_b = ipc_channel::pair({.mode = conflux::ipc_mode::json, .max_depth = 4});
        auto& a = a_b.first;
        auto& b = a_b.second;
        CHECK_THROWS_AS(co_await a.send(std::string("not json")), std::invalid_argument);
        CHECK_THROWS_AS(co_await a.send(std::string("  ")), std::invalid_argument);
        CHECK_THROWS_AS(co_await a.send(std::string("{\"a\":1}\n{\"b\":2}")),
                        std::invalid_argument);
        CHECK_THROWS_AS(co_await a.send(std::string("\"\xff\"")), std::invalid_argument);
        CHECK_THROWS_AS(co_await a.send(std::string("[[[[[1]]]]]")), conflux::ipc_error);
        // Still usable: the refused messages were never queued.
        co_await a.send(std::string(" [[[[1]]]] "));
        co_await a.send(std::string("{\"k\":[true,false,null,-0.5E-7,\"\\ud83d\\ude00\"]}"));
        CHECK(co_await b.receive<std::string>() == std::string(" [[[[1]]]] "));
        CHECK(co_await b.receive<std::string>() ==
              std::string("{\"k\":[true,false,null,-0.5E-7,\"\\ud83d\\ude00\"]}"));
    }());
}

TEST_CASE("json_line_decoder: the same messages however the stream is split") {
    const std::string stream =
        "{\"a\":[1,{\"b\":null}]}\n\n{\"cmd\":\"NODE_X\"}\n\"\xe2\x82\xac\"\r\n[]\n1";
    std::vector<std::string> expected = {"{\"a\":[1,{\"b\":null}]}", "\"\xe2\x82\xac\"\r", "[]"};
    for (std::size_t step = 1; step <= stream.size(); ++step) {
        CAPTURE(step);
        conflux::detail::json_line_decoder d(conflux::codec_limits{});
        CHECK(!d.next()); // nothing read yet: no message (and, for UBSan, no memchr of null)
        std::vector<std::string> got;
        for (std::size_t at = 0; at < stream.size(); at += step) {
            d.feed(
                std::as_bytes(std::span(stream).subspan(at, std::min(step, stream.size() - at))));
            while (auto f = d.next()) {
                got.emplace_back(reinterpret_cast<const char*>(f->body.data()), f->body.size());
            }
        }
        CHECK(got == expected);
        CHECK(d.mid_line()); // the "1" has no line feed yet
    }
}

TEST_CASE("messages too large or too deep are refused on the sending side") {
    conflux::run([]() -> task<void> {
        auto a_b = ipc_channel::pair({.max_message_size = 1000, .max_depth = 3});
        auto& a = a_b.first;
        auto& b = a_b.second;
        CHECK_THROWS_AS(co_await a.send(std::string(2000, 'x')), conflux::ipc_error);
        using deep = std::vector<std::vector<std::vector<std::vector<std::vector<int>>>>>;
        deep nested(1);
        nested[0].resize(1);
        nested[0][0].resize(1);
        nested[0][0][0].resize(1);
        nested[0][0][0][0].push_back(1);
        CHECK_THROWS_AS(co_await a.send(std::move(nested)), conflux::ipc_error);
        co_await a.send(std::string("still fine"));
        CHECK(co_await b.receive<std::string>() == std::string("still fine"));
    }());
}

namespace {

task<int> wins_at_once() { co_return 7; }

} // namespace

TEST_CASE("a receive that loses a when_any takes no message, binary and json") {
    conflux_test::watchdog dog(10s);
    for (auto mode : {conflux::ipc_mode::binary, conflux::ipc_mode::json}) {
        CAPTURE(static_cast<int>(mode));
        conflux::run([](conflux::ipc_mode mode) -> task<void> {
            conflux::ipc_options options;
            options.mode = mode;
            auto a_b = ipc_channel::pair(options);
            auto& a = a_b.first;
            auto& b = a_b.second;
            const std::string one = "\"one\"";
            const std::string two = "\"two\"";
            co_await a.send(one);
            co_await a.send(two);
            co_await a.flush();
            // Both messages arrive in one read: the second is then decoded and waiting when
            // the race starts, its winner already done.
            CHECK(co_await b.receive<std::string>() == std::optional<std::string>(one));
            auto r = co_await conflux::when_any(wins_at_once(), b.receive<std::string>());
            CHECK(r.index() == 0);
            // And when the message is still in the socket.
            const std::string three = "\"three\"";
            co_await a.send(three);
            co_await a.flush();
            auto r2 = co_await conflux::when_any(wins_at_once(), b.receive<std::string>());
            CHECK(r2.index() == 0);
            CHECK(co_await b.receive<std::string>() == std::optional<std::string>(two));
            CHECK(co_await b.receive<std::string>() == std::optional<std::string>(three));
        }(mode));
    }
}

TEST_CASE("receives raced against a timer, the sender on another thread: every message, once") {
    conflux_test::watchdog dog(30s);
    constexpr int messages = 400;
    auto a_b = conflux::detail::ipc_socketpair();
    const int sender_fd = a_b.first.release();
    const int receiver_fd = a_b.second.release();
    std::thread sender([sender_fd] {
        conflux::run([](int fd) -> task<void> {
            ipc_channel a{conflux::file_descriptor(fd)};
            for (int i = 0; i < messages; ++i) {
                co_await a.send(i);
                if (i % 5 == 0) co_await conflux::sleep_for(200us);
            }
            co_await a.flush();
            a.disconnect();
        }(sender_fd));
    });
    int timeouts = 0;
    const int received = conflux::run([](int fd, int& timeouts) -> task<int> {
        ipc_channel b{conflux::file_descriptor(fd)};
        int expected = 0;
        for (;;) {
            auto r = co_await conflux::when_any(b.receive<int>(), conflux::sleep_for(100us));
            if (r.index() == 1) {
                ++timeouts;
                continue;
            }
            const std::optional<int>& message = std::get<0>(r);
            if (!message) co_return expected;
            CHECK(*message == expected);
            ++expected;
        }
    }(receiver_fd, timeouts));
    sender.join();
    CHECK(received == messages);
    MESSAGE("races lost to the timer: " << timeouts);
}
