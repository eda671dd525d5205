// decode_record: the userspace end of the kernel contract. It must reject
// anything malformed and map well-formed records field by field.
#include <doctest/doctest.h>
#include <scantrace/events.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include "events/decode.h"

using namespace scantrace;

namespace {

template <typename T>
std::vector<unsigned char> bytes_of(const T& rec) {
    std::vector<unsigned char> b(sizeof(T));
    std::memcpy(b.data(), &rec, sizeof(T));
    return b;
}

Event decode(const std::vector<unsigned char>& b) {
    return decode_record(b.data(), b.size());
}

// By value: the callers decode into a temporary.
template <typename T>
T as(const Event& e) {
    REQUIRE_MESSAGE(std::holds_alternative<T>(e),
                    (std::holds_alternative<DecodeError>(e) ? std::get<DecodeError>(e).what : "other type"));
    return std::get<T>(e);
}

bool is_error(const Event& e) {
    return std::holds_alternative<DecodeError>(e);
}

void set_comm(char (&dst)[ST_COMM_LEN], const char* s) {
    std::memset(dst, 0, ST_COMM_LEN);
    std::memcpy(dst, s, std::min<std::size_t>(std::strlen(s), ST_COMM_LEN));
}

st_owner make_owner() {
    st_owner o{};
    o.tgid = 4242;
    o.pid = 4243;
    o.uid = 1001;
    o.cgroup_id = 0x1122334455667788ULL;
    set_comm(o.comm, "curl");
    return o;
}

st_conn_event make_conn() {
    st_conn_event r{};
    r.hdr.type = ST_REC_CONN;
    r.hdr.size = sizeof r;
    r.hdr.flags = ST_F_OWNER_KNOWN | ST_F_START_KNOWN | ST_F_TCP_INFO;
    r.hdr.ts_ns = 123456789;
    const std::uint8_t l[4] = {10, 0, 0, 1}, rr[4] = {10, 0, 0, 2};
    std::memcpy(r.tuple.laddr, l, 4);
    std::memcpy(r.tuple.raddr, rr, 4);
    r.tuple.lport = 45678;
    r.tuple.rport = 443;
    r.tuple.family = ST_AF_INET;
    r.owner = make_owner();
    r.sk_id = 0xffff888812345678ULL;
    r.start_ns = 100000000;
    r.bytes_acked = 1000;
    r.bytes_received = 2000;
    r.total_retrans = 3;
    r.srtt_us = 456;
    r.netns = 4026531840u;
    r.oldstate = 1;
    r.newstate = 4;
    r.direction = ST_DIR_OUTBOUND;
    return r;
}

st_listen_event make_listen() {
    st_listen_event r{};
    r.hdr.type = ST_REC_LISTEN;
    r.hdr.size = sizeof r;
    r.hdr.flags = ST_F_OWNER_KNOWN;
    r.hdr.ts_ns = 55;
    const std::uint8_t any6[16] = {};
    std::memcpy(r.tuple.laddr, any6, 16);
    r.tuple.lport = 8080;
    r.tuple.family = ST_AF_INET6;
    r.owner = make_owner();
    r.netns = 7;
    r.proto = ST_PROTO_TCP;
    r.action = ST_LISTEN_CLOSE;
    return r;
}

st_scan_alert make_scan_alert() {
    st_scan_alert r{};
    r.hdr.type = ST_REC_SCAN_ALERT;
    r.hdr.size = sizeof r;
    r.hdr.ts_ns = 999;
    r.key.netns = 11;
    r.key.family = ST_AF_INET;
    const std::uint8_t a[4] = {203, 0, 113, 9};
    std::memcpy(r.key.addr, a, 4);
    r.rule = ST_RULE_SLOW;
    r.distinct = 60;
    r.dport = 3389;
    r.technique = ST_TECH_XMAS;
    return r;
}

st_dist_alert make_dist_alert() {
    st_dist_alert r{};
    r.hdr.type = ST_REC_DIST_ALERT;
    r.hdr.size = sizeof r;
    r.hdr.ts_ns = 31337;
    r.netns = 12;
    r.sources = 45;
    r.window_start_ns = 31000;
    r.ports_seen = 17;
    return r;
}

}  // namespace

TEST_CASE("decode: records shorter than a header are rejected") {
    const unsigned char buf[sizeof(st_hdr)] = {};
    for (std::size_t n = 0; n < sizeof(st_hdr); ++n) CHECK(is_error(decode_record(buf, n)));
    CHECK(is_error(decode_record(nullptr, 0)));
}

TEST_CASE("decode: every record type is checked against its own size") {
    auto check_sizes = [](std::vector<unsigned char> b) {
        // Truncated anywhere: rejected (the header claims the full size).
        for (std::size_t n = 0; n < b.size(); ++n) CHECK_MESSAGE(is_error(decode_record(b.data(), n)), n);
        CHECK_FALSE(is_error(decode(b)));
        // The header's size must be the struct's, in either direction.
        st_hdr h;
        std::memcpy(&h, b.data(), sizeof h);
        for (int delta : {-8, -1, 1, 8}) {
            st_hdr bad = h;
            bad.size = static_cast<__u16>(h.size + delta);
            auto c = b;
            std::memcpy(c.data(), &bad, sizeof bad);
            CHECK_MESSAGE(is_error(decode(c)), delta);
        }
        st_hdr zero = h;
        zero.size = 0;
        std::memcpy(b.data(), &zero, sizeof zero);
        CHECK(is_error(decode(b)));
    };
    SUBCASE("conn") {
        check_sizes(bytes_of(make_conn()));
    }
    SUBCASE("listen") {
        check_sizes(bytes_of(make_listen()));
    }
    SUBCASE("scan alert") {
        check_sizes(bytes_of(make_scan_alert()));
    }
    SUBCASE("dist alert") {
        check_sizes(bytes_of(make_dist_alert()));
    }
}

TEST_CASE("decode: unknown record types are rejected") {
    auto b = bytes_of(make_conn());
    for (__u16 type : {0, 5, 6, 255, 0xffff}) {
        st_hdr h;
        std::memcpy(&h, b.data(), sizeof h);
        h.type = type;
        auto c = b;
        std::memcpy(c.data(), &h, sizeof h);
        const Event e = decode(c);
        REQUIRE(is_error(e));
        CHECK(std::get<DecodeError>(e).what.find(std::to_string(type)) != std::string::npos);
    }
}

TEST_CASE("decode: scan alert with a bad family is rejected") {
    for (__u16 fam : {0, 1, 3, 9, 11, 0xffff}) {
        auto r = make_scan_alert();
        r.key.family = fam;
        CHECK_MESSAGE(is_error(decode(bytes_of(r))), fam);
    }
    auto r6 = make_scan_alert();
    r6.key.family = ST_AF_INET6;
    CHECK_FALSE(is_error(decode(bytes_of(r6))));
}

TEST_CASE("decode: conn event fields") {
    const auto r = make_conn();
    const auto& e = as<ConnEvent>(decode(bytes_of(r)));
    CHECK(e.ts_ns == 123456789);
    CHECK(e.netns == 4026531840u);
    CHECK(e.ep.laddr.to_string() == "10.0.0.1");
    CHECK(e.ep.raddr.to_string() == "10.0.0.2");
    CHECK(e.ep.lport == 45678);
    CHECK(e.ep.rport == 443);
    CHECK(e.oldstate == 1);
    CHECK(e.newstate == 4);
    CHECK(e.direction == ST_DIR_OUTBOUND);
    REQUIRE(e.owner);
    CHECK(e.owner->pid == 4242);
    CHECK(e.owner->tid == 4243);
    CHECK(e.owner->uid == 1001);
    CHECK(e.owner->cgroup_id == 0x1122334455667788ULL);
    CHECK(e.owner->comm == "curl");
    CHECK(e.sk_id == 0xffff888812345678ULL);
    REQUIRE(e.start_ns);
    CHECK(*e.start_ns == 100000000);
    CHECK(e.has_tcp_info);
    CHECK(e.bytes_acked == 1000);
    CHECK(e.bytes_received == 2000);
    CHECK(e.total_retrans == 3);
    CHECK(e.srtt_us == 456);
}

TEST_CASE("decode: owner and start only with their flags") {
    auto r = make_conn();
    r.hdr.flags = 0;
    const auto& e = as<ConnEvent>(decode(bytes_of(r)));
    CHECK_FALSE(e.owner);
    CHECK_FALSE(e.start_ns);
    CHECK_FALSE(e.has_tcp_info);

    r.hdr.flags = ST_F_START_KNOWN;
    const auto& s = as<ConnEvent>(decode(bytes_of(r)));
    CHECK_FALSE(s.owner);
    REQUIRE(s.start_ns);
    CHECK(*s.start_ns == 100000000);

    r.hdr.flags = ST_F_OWNER_KNOWN | 0xffff0000u;  // unknown flag bits are ignored
    const auto& o = as<ConnEvent>(decode(bytes_of(r)));
    CHECK(o.owner);
    CHECK_FALSE(o.start_ns);

    // Kernel values used as indexes elsewhere stay plain numbers here.
    r.oldstate = 250;
    r.newstate = 0;
    r.direction = 77;
    const auto& odd = as<ConnEvent>(decode(bytes_of(r)));
    CHECK(odd.oldstate == 250);
    CHECK(odd.newstate == 0);
    CHECK(odd.direction == 77);
}

TEST_CASE("decode: IPv4-mapped addresses fold, IPv6 stays, unknown family is 0.0.0.0") {
    auto r = make_conn();
    r.tuple.family = ST_AF_INET6;
    const std::uint8_t mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 1};
    const std::uint8_t v6[16] = {0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2};
    std::memcpy(r.tuple.laddr, mapped, 16);
    std::memcpy(r.tuple.raddr, v6, 16);
    const auto& e = as<ConnEvent>(decode(bytes_of(r)));
    CHECK(e.ep.laddr.family == Family::v4);
    CHECK(e.ep.laddr.to_string() == "192.0.2.1");
    CHECK(e.ep.raddr.family == Family::v6);
    CHECK(e.ep.raddr.to_string() == "fd00::2");

    r.tuple.family = 1;  // AF_UNIX: never from the kernel side, but harmless
    const auto& bad = as<ConnEvent>(decode(bytes_of(r)));
    CHECK(bad.ep.laddr.is_unspecified());
    CHECK(bad.ep.raddr.is_unspecified());
}

TEST_CASE("decode: listen event fields") {
    const auto& e = as<ListenEvent>(decode(bytes_of(make_listen())));
    CHECK(e.ts_ns == 55);
    CHECK(e.netns == 7);
    CHECK(e.ep.laddr.family == Family::v6);
    CHECK(e.ep.laddr.to_string() == "::");
    CHECK(e.ep.lport == 8080);
    CHECK(e.proto == ST_PROTO_TCP);
    CHECK(e.action == ST_LISTEN_CLOSE);
    REQUIRE(e.owner);
    CHECK(e.owner->comm == "curl");

    auto r = make_listen();
    r.hdr.flags = 0;
    CHECK_FALSE(as<ListenEvent>(decode(bytes_of(r))).owner);
}

TEST_CASE("decode: scan and distributed alerts") {
    const auto& a = as<ScanAlert>(decode(bytes_of(make_scan_alert())));
    CHECK(a.ts_ns == 999);
    CHECK(a.key.netns == 11);
    CHECK(a.key.family == ST_AF_INET);
    CHECK(a.key.addr[0] == 203);
    CHECK(a.key.addr[3] == 9);
    CHECK(a.rule == ST_RULE_SLOW);
    CHECK(a.distinct == 60);
    CHECK(a.dport == 3389);
    CHECK(a.technique == ST_TECH_XMAS);

    const auto& d = as<DistAlert>(decode(bytes_of(make_dist_alert())));
    CHECK(d.ts_ns == 31337);
    CHECK(d.netns == 12);
    CHECK(d.sources == 45);
    CHECK(d.window_start_ns == 31000);
    CHECK(d.ports_seen == 17);
}

TEST_CASE("decode: comm stops at the first NUL, at most 16 bytes") {
    char c[ST_COMM_LEN];
    set_comm(c, "nginx");
    CHECK(comm_from_kernel(c) == "nginx");

    std::memset(c, 0, sizeof c);
    CHECK(comm_from_kernel(c).empty());

    // No NUL at all: the 16 raw bytes, never a read past the array.
    std::memcpy(c, "ABCDEFGHIJKLMNOP", ST_COMM_LEN);
    CHECK(comm_from_kernel(c) == "ABCDEFGHIJKLMNOP");
    CHECK(comm_from_kernel(c).size() == ST_COMM_LEN);

    // Bytes after the first NUL are not part of the name.
    std::memcpy(c, "ab\0cdefghijklmno", ST_COMM_LEN);
    CHECK(comm_from_kernel(c) == "ab");

    // Hostile bytes are kept raw: escaping is the writer's job.
    const char hostile[ST_COMM_LEN] = {'\x1b', '[', '3', '1', 'm', '"', '\\', '\n', '\xff', '\xfe', 'x'};
    std::memcpy(c, hostile, sizeof c);
    CHECK(comm_from_kernel(c) == std::string(hostile, 11));

    // Through the decoder as well.
    auto r = make_conn();
    std::memcpy(r.owner.comm, "0123456789abcdef", ST_COMM_LEN);
    const auto& e = as<ConnEvent>(decode(bytes_of(r)));
    REQUIRE(e.owner);
    CHECK(e.owner->comm == "0123456789abcdef");
}

TEST_CASE("decode: random bytes never crash the decoder") {
    std::mt19937 rng(0xdec0de);
    const __u16 sizes[] = {sizeof(st_conn_event), sizeof(st_listen_event), sizeof(st_scan_alert),
                           sizeof(st_dist_alert)};
    int decoded = 0;
    for (int i = 0; i < 100000; ++i) {
        const std::size_t n = rng() % 301;
        // Exact size: no slack that could hide an over-read from ASan.
        std::vector<unsigned char> buf(n);
        for (auto& b : buf) b = static_cast<unsigned char>(rng());
        // Half the time make the header plausible, so the per-type paths run.
        if (n >= sizeof(st_hdr) && (rng() & 1)) {
            st_hdr h;
            std::memcpy(&h, buf.data(), sizeof h);
            h.type = static_cast<__u16>(1 + rng() % 5);
            h.size = (rng() & 3) ? sizes[rng() % 4] : static_cast<__u16>(n);
            std::memcpy(buf.data(), &h, sizeof h);
        }
        const Event e = decode_record(n ? buf.data() : nullptr, n);
        if (!is_error(e)) {
            ++decoded;
            // Whatever was accepted was exactly one whole record.
            st_hdr h;
            std::memcpy(&h, buf.data(), sizeof h);
            const std::size_t want = h.type == ST_REC_CONN         ? sizeof(st_conn_event)
                                     : h.type == ST_REC_LISTEN     ? sizeof(st_listen_event)
                                     : h.type == ST_REC_SCAN_ALERT ? sizeof(st_scan_alert)
                                                                   : sizeof(st_dist_alert);
            CHECK(h.size == want);
            CHECK(n >= want);
            if (const auto* c = std::get_if<ConnEvent>(&e); c && c->owner) CHECK(c->owner->comm.size() <= ST_COMM_LEN);
            if (const auto* a = std::get_if<ScanAlert>(&e))
                CHECK((a->key.family == ST_AF_INET || a->key.family == ST_AF_INET6));
        }
    }
    MESSAGE("random records accepted: " << decoded << " of 100000");
    CHECK(decoded > 0);  // the plausible-header half reaches the decoders
}
