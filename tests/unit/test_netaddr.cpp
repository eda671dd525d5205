#include <doctest/doctest.h>

#include "scantrace/events.h"
#include "util/netaddr.h"

using namespace scantrace;

namespace {

IpAddr ip(const char* text) {
    auto a = parse_ip(text);
    REQUIRE_MESSAGE(a.has_value(), text);
    return *a;
}

std::string_view scope_of(const char* text) { return scope_name(classify(ip(text))); }

}  // namespace

TEST_CASE("parse_ip and to_string") {
    CHECK(ip("10.0.0.1") == IpAddr::v4(10, 0, 0, 1));
    CHECK(ip("10.0.0.1").to_string() == "10.0.0.1");
    CHECK(ip("fd00::1").family == Family::v6);
    CHECK(ip("fd00::1").to_string() == "fd00::1");
    CHECK(ip("FD00:0:0::1").to_string() == "fd00::1");

    // The kernel's form of an IPv4 client on a dual-stack socket prints as IPv4.
    const IpAddr mapped = ip("::ffff:10.0.0.1");
    CHECK(mapped.family == Family::v4);
    CHECK(mapped == IpAddr::v4(10, 0, 0, 1));
    CHECK(mapped.to_string() == "10.0.0.1");

    for (const char* bad : {"", "x", "10.0.0", "10.0.0.256", "10.0.0.1 ", " 10.0.0.1", "1::2::3", "fe80::1%eth0",
                            "10.0.0.1/8", "::ffff:10.0.0.1:1"})
        CHECK_MESSAGE(!parse_ip(bad), bad);
    CHECK(!parse_ip(std::string_view("10.0.0.1\0", 9)));
    CHECK(!parse_ip(std::string(100, '1')));
}

TEST_CASE("from_raw folds mapped addresses and rejects unknown families") {
    const std::uint8_t v4raw[16] = {192, 168, 1, 2, 9, 9, 9, 9};  // trailing garbage ignored for AF_INET
    const IpAddr a = IpAddr::from_raw(ST_AF_INET, v4raw);
    CHECK(a == IpAddr::v4(192, 168, 1, 2));
    CHECK(a.bytes[4] == 0);

    const std::uint8_t mapped[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 8, 8, 4, 4};
    CHECK(IpAddr::from_raw(ST_AF_INET6, mapped) == IpAddr::v4(8, 8, 4, 4));

    const std::uint8_t v6raw[16] = {0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    const IpAddr b = IpAddr::from_raw(ST_AF_INET6, v6raw);
    CHECK(b.family == Family::v6);
    CHECK(b.to_string() == "2001:db8::1");

    // ::ffff:0:1 is not a mapped address with a different prefix: 0:0:0:0:0:fffe::
    const std::uint8_t almost[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe, 1, 2, 3, 4};
    CHECK(IpAddr::from_raw(ST_AF_INET6, almost).family == Family::v6);

    const IpAddr junk = IpAddr::from_raw(7, v6raw);
    CHECK(junk == IpAddr::v4(0, 0, 0, 0));
    CHECK(junk.is_unspecified());
}

TEST_CASE("is_unspecified") {
    CHECK(ip("0.0.0.0").is_unspecified());
    CHECK(ip("::").is_unspecified());
    CHECK(!ip("0.0.0.1").is_unspecified());
    CHECK(!ip("::1").is_unspecified());
}

TEST_CASE("IPv4 scope edges") {
    CHECK(scope_of("0.0.0.0") == "unspecified");
    CHECK(scope_of("0.1.2.3") == "reserved");
    CHECK(scope_of("0.0.0.1") == "reserved");
    CHECK(scope_of("127.0.0.1") == "loopback");
    CHECK(scope_of("127.255.255.254") == "loopback");
    CHECK(scope_of("126.255.255.255") == "global");
    CHECK(scope_of("10.0.0.0") == "private");
    CHECK(scope_of("10.255.255.255") == "private");
    CHECK(scope_of("11.0.0.0") == "global");
    CHECK(scope_of("172.15.255.255") == "global");
    CHECK(scope_of("172.15.0.1") == "global");
    CHECK(scope_of("172.16.0.0") == "private");
    CHECK(scope_of("172.31.255.255") == "private");
    CHECK(scope_of("172.32.0.0") == "global");
    CHECK(scope_of("192.168.0.0") == "private");
    CHECK(scope_of("192.168.255.255") == "private");
    CHECK(scope_of("192.167.255.255") == "global");
    CHECK(scope_of("192.169.0.0") == "global");
    CHECK(scope_of("100.63.255.255") == "global");
    CHECK(scope_of("100.64.0.0") == "cgnat");
    CHECK(scope_of("100.127.255.255") == "cgnat");
    CHECK(scope_of("100.128.0.0") == "global");
    CHECK(scope_of("169.254.0.1") == "link-local");
    CHECK(scope_of("169.254.255.255") == "link-local");
    CHECK(scope_of("169.253.255.255") == "global");
    CHECK(scope_of("169.255.0.0") == "global");
    CHECK(scope_of("223.255.255.255") == "global");
    CHECK(scope_of("224.0.0.0") == "multicast");
    CHECK(scope_of("224.0.0.1") == "multicast");
    CHECK(scope_of("239.255.255.250") == "multicast");
    CHECK(scope_of("240.0.0.0") == "reserved");
    CHECK(scope_of("250.1.2.3") == "reserved");
    CHECK(scope_of("255.255.255.255") == "reserved");
    CHECK(scope_of("8.8.8.8") == "global");
}

TEST_CASE("IPv6 scope edges") {
    CHECK(scope_of("::") == "unspecified");
    CHECK(scope_of("::1") == "loopback");
    CHECK(scope_of("::2") == "global");
    CHECK(scope_of("fe80::1") == "link-local");
    CHECK(scope_of("febf:ffff::") == "link-local");
    CHECK(scope_of("febf::") == "link-local");
    CHECK(scope_of("fec0::") == "global");
    CHECK(scope_of("fe7f::") == "global");
    CHECK(scope_of("fc00::1") == "private");
    CHECK(scope_of("fdff::") == "private");
    CHECK(scope_of("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff") == "private");
    CHECK(scope_of("fbff::") == "global");
    CHECK(scope_of("fe00::") == "global");
    CHECK(scope_of("ff02::1") == "multicast");
    CHECK(scope_of("ff00::") == "multicast");
    CHECK(scope_of("2001:db8::1") == "global");
    CHECK(scope_of("::ffff:10.0.0.1") == "private");
    CHECK(scope_of("::ffff:8.8.8.8") == "global");
    CHECK(scope_of("::ffff:127.0.0.1") == "loopback");

    // A mapped address built by hand (not folded) still classifies as IPv4.
    IpAddr raw;
    raw.family = Family::v6;
    raw.bytes = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 1};
    CHECK(classify(raw) == Scope::private_);
}

TEST_CASE("scope names round trip") {
    const Scope all[] = {Scope::unspecified, Scope::loopback,  Scope::private_, Scope::cgnat,
                         Scope::link_local,  Scope::multicast, Scope::reserved, Scope::global};
    for (Scope s : all) {
        auto back = parse_scope(scope_name(s));
        REQUIRE(back.has_value());
        CHECK(*back == s);
    }
    CHECK(scope_name(Scope::private_) == "private");
    CHECK(scope_name(Scope::link_local) == "link-local");
    CHECK(!parse_scope("Private"));
    CHECK(!parse_scope("link_local"));
    CHECK(!parse_scope(""));
}

TEST_CASE("exposure") {
    CHECK(exposure_of(ip("0.0.0.0")) == Exposure::all_interfaces);
    CHECK(exposure_of(ip("::")) == Exposure::all_interfaces);
    CHECK(exposure_of(ip("127.0.0.5")) == Exposure::loopback_only);
    CHECK(exposure_of(ip("::1")) == Exposure::loopback_only);
    CHECK(exposure_of(ip("10.0.0.1")) == Exposure::address);
    CHECK(exposure_of(ip("fe80::1")) == Exposure::address);
    CHECK(exposure_name(Exposure::all_interfaces) == "all-interfaces");
    CHECK(exposure_name(Exposure::loopback_only) == "loopback-only");
    CHECK(exposure_name(Exposure::address) == "address");
}

TEST_CASE("parse_cidr") {
    auto c = parse_cidr("10.0.0.0/8");
    REQUIRE(c);
    CHECK(c->prefix == 8);
    CHECK(c->addr == IpAddr::v4(10, 0, 0, 0));
    CHECK(c->contains(ip("10.255.255.255")));
    CHECK(c->contains(ip("10.0.0.0")));
    CHECK(!c->contains(ip("11.0.0.0")));
    CHECK(!c->contains(ip("9.255.255.255")));
    CHECK(c->contains(ip("::ffff:10.1.2.3")));  // folded on parse
    CHECK(!c->contains(ip("a00::1")));          // 0a00:: starts with the same byte but is IPv6

    // Host bits are masked off.
    auto masked = parse_cidr("192.168.17.99/20");
    REQUIRE(masked);
    CHECK(masked->addr == IpAddr::v4(192, 168, 16, 0));
    CHECK(masked->contains(ip("192.168.31.255")));
    CHECK(!masked->contains(ip("192.168.32.0")));

    auto bare = parse_cidr("10.0.0.1");
    REQUIRE(bare);
    CHECK(bare->prefix == 32);
    CHECK(bare->contains(ip("10.0.0.1")));
    CHECK(!bare->contains(ip("10.0.0.2")));

    auto v6 = parse_cidr("fd00::/64");
    REQUIRE(v6);
    CHECK(v6->prefix == 64);
    CHECK(v6->contains(ip("fd00::1")));
    CHECK(v6->contains(ip("fd00::ffff:ffff:ffff:ffff")));
    CHECK(!v6->contains(ip("fd00:0:0:1::")));
    CHECK(!v6->contains(ip("10.0.0.1")));

    auto v6bare = parse_cidr("2001:db8::1");
    REQUIRE(v6bare);
    CHECK(v6bare->prefix == 128);

    auto all4 = parse_cidr("0.0.0.0/0");
    REQUIRE(all4);
    CHECK(all4->contains(ip("1.2.3.4")));
    CHECK(all4->contains(ip("255.255.255.255")));
    CHECK(!all4->contains(ip("::1")));  // false across families

    auto all6 = parse_cidr("::/0");
    REQUIRE(all6);
    CHECK(all6->contains(ip("2001:db8::1")));
    CHECK(!all6->contains(ip("1.2.3.4")));

    auto odd = parse_cidr("fe80::/10");
    REQUIRE(odd);
    CHECK(odd->contains(ip("febf::1")));
    CHECK(!odd->contains(ip("fec0::1")));

    // An IPv4-mapped network is the IPv4 network it stands for.
    auto mapped = parse_cidr("::ffff:10.0.0.0/104");
    REQUIRE(mapped);
    CHECK(mapped->addr.family == Family::v4);
    CHECK(mapped->prefix == 8);
    CHECK(mapped->contains(ip("10.9.9.9")));

    for (const char* bad : {"10.0.0.0/33", "fd00::/129", "x", "10.0.0.1/", "", "/8", "10.0.0.0/-1", "10.0.0.0/8x",
                            "10.0.0.0/ 8", "10.0.0.0/0008", "10.0.0.0/8/8", "::ffff:10.0.0.0/64"})
        CHECK_MESSAGE(!parse_cidr(bad), bad);
    CHECK(parse_cidr("10.0.0.0/32"));
    CHECK(parse_cidr("fd00::/128"));
    CHECK(parse_cidr("10.0.0.0/0"));
}
