#include "util/netaddr.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include "scantrace/events.h"

namespace scantrace {

namespace {

// ::ffff:0:0/96. The kernel hands IPv4 peers of dual-stack sockets to us in
// this form; the schema promises they print (and classify) as IPv4.
bool is_v4_mapped(const std::uint8_t b[16]) {
    static constexpr std::uint8_t prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    return std::memcmp(b, prefix, sizeof prefix) == 0;
}

IpAddr fold_mapped(const IpAddr& a) {
    if (a.family != Family::v6 || !is_v4_mapped(a.bytes.data()))
        return a;
    return IpAddr::v4(a.bytes[12], a.bytes[13], a.bytes[14], a.bytes[15]);
}

Scope classify_v4(const std::uint8_t* b) {
    const std::uint8_t a0 = b[0], a1 = b[1];
    if (a0 == 0)
        return (b[1] | b[2] | b[3]) == 0 ? Scope::unspecified : Scope::reserved;
    if (a0 == 127)
        return Scope::loopback;
    if (a0 == 10 || (a0 == 172 && (a1 & 0xf0) == 16) || (a0 == 192 && a1 == 168))
        return Scope::private_;
    if (a0 == 100 && (a1 & 0xc0) == 64)
        return Scope::cgnat;
    if (a0 == 169 && a1 == 254)
        return Scope::link_local;
    if ((a0 & 0xf0) == 224)
        return Scope::multicast;
    if ((a0 & 0xf0) == 240)
        return Scope::reserved;
    return Scope::global;
}

Scope classify_v6(const std::array<std::uint8_t, 16>& b) {
    static constexpr std::array<std::uint8_t, 16> zero{};
    static constexpr std::array<std::uint8_t, 16> one{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    if (b == zero)
        return Scope::unspecified;
    if (b == one)
        return Scope::loopback;
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
        return Scope::link_local;
    if ((b[0] & 0xfe) == 0xfc)
        return Scope::private_;
    if (b[0] == 0xff)
        return Scope::multicast;
    return Scope::global;
}

constexpr std::string_view kScopeNames[] = {
    "unspecified", "loopback", "private", "cgnat", "link-local", "multicast", "reserved", "global",
};

}  // namespace

IpAddr IpAddr::from_raw(std::uint16_t af, const std::uint8_t raw[16]) {
    IpAddr a;
    if (af == ST_AF_INET) {
        std::memcpy(a.bytes.data(), raw, 4);
    } else if (af == ST_AF_INET6) {
        if (is_v4_mapped(raw)) {
            std::memcpy(a.bytes.data(), raw + 12, 4);
        } else {
            a.family = Family::v6;
            std::memcpy(a.bytes.data(), raw, 16);
        }
    }
    return a;
}

IpAddr IpAddr::v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d) {
    IpAddr r;
    r.bytes[0] = a;
    r.bytes[1] = b;
    r.bytes[2] = c;
    r.bytes[3] = d;
    return r;
}

std::size_t IpAddr::format(char* buf) const {
    if (family == Family::v4) {
        // Hand-rolled: inet_ntop is the largest cost of a state record.
        char* p = buf;
        for (int i = 0; i < 4; ++i) {
            unsigned v = bytes[static_cast<std::size_t>(i)];
            if (v >= 100) *p++ = static_cast<char>('0' + v / 100);
            if (v >= 10) *p++ = static_cast<char>('0' + v / 10 % 10);
            *p++ = static_cast<char>('0' + v % 10);
            if (i < 3) *p++ = '.';
        }
        return static_cast<std::size_t>(p - buf);
    }
    if (inet_ntop(AF_INET6, bytes.data(), buf, kMaxText) == nullptr) {
        buf[0] = '?';
        return 1;
    }
    return std::strlen(buf);
}

std::string IpAddr::to_string() const {
    char buf[INET6_ADDRSTRLEN];
    const int af = family == Family::v4 ? AF_INET : AF_INET6;
    if (inet_ntop(af, bytes.data(), buf, sizeof buf) == nullptr)
        return {};  // cannot happen with a correctly sized buffer
    return buf;
}

bool IpAddr::is_unspecified() const {
    const std::size_t n = family == Family::v4 ? 4 : 16;
    return std::all_of(bytes.begin(), bytes.begin() + n, [](std::uint8_t x) { return x == 0; });
}

std::optional<IpAddr> parse_ip(std::string_view text) {
    // inet_pton wants a NUL-terminated string; the longest valid literal
    // ("ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255") is 45 characters.
    char buf[INET6_ADDRSTRLEN + 1];
    if (text.empty() || text.size() >= sizeof buf || text.find('\0') != std::string_view::npos)
        return std::nullopt;
    std::memcpy(buf, text.data(), text.size());
    buf[text.size()] = '\0';

    std::uint8_t raw[16] = {};
    if (inet_pton(AF_INET, buf, raw) == 1)
        return IpAddr::from_raw(ST_AF_INET, raw);
    if (inet_pton(AF_INET6, buf, raw) == 1)
        return IpAddr::from_raw(ST_AF_INET6, raw);
    return std::nullopt;
}

Scope classify(const IpAddr& addr) {
    // A caller may build a mapped address by hand; classify it as the IPv4
    // address it stands for, as the kernel would route it.
    const IpAddr a = fold_mapped(addr);
    return a.family == Family::v4 ? classify_v4(a.bytes.data()) : classify_v6(a.bytes);
}

std::string_view scope_name(Scope s) {
    const auto i = static_cast<std::size_t>(s);
    return i < std::size(kScopeNames) ? kScopeNames[i] : std::string_view("global");
}

std::optional<Scope> parse_scope(std::string_view name) {
    for (std::size_t i = 0; i < std::size(kScopeNames); ++i)
        if (kScopeNames[i] == name)
            return static_cast<Scope>(i);
    return std::nullopt;
}

Exposure exposure_of(const IpAddr& local) {
    switch (classify(local)) {
    case Scope::unspecified: return Exposure::all_interfaces;
    case Scope::loopback: return Exposure::loopback_only;
    default: return Exposure::address;
    }
}

std::string_view exposure_name(Exposure e) {
    switch (e) {
    case Exposure::all_interfaces: return "all-interfaces";
    case Exposure::loopback_only: return "loopback-only";
    case Exposure::address: break;
    }
    return "address";
}

namespace {

// Clears every bit past the first `prefix` bits of the address.
void mask_to_prefix(std::array<std::uint8_t, 16>& b, unsigned prefix) {
    for (unsigned i = 0; i < b.size(); ++i) {
        const unsigned start = i * 8;
        if (prefix >= start + 8)
            continue;
        b[i] = prefix <= start ? 0 : static_cast<std::uint8_t>(b[i] & (0xff00u >> (prefix - start)));
    }
}

}  // namespace

bool Cidr::contains(const IpAddr& a) const {
    const IpAddr x = fold_mapped(a);
    if (x.family != addr.family)
        return false;
    std::array<std::uint8_t, 16> masked = x.bytes;
    mask_to_prefix(masked, prefix);
    return masked == addr.bytes;
}

std::optional<Cidr> parse_cidr(std::string_view text) {
    const std::size_t slash = text.find('/');
    const std::string_view addr_text = text.substr(0, slash);
    auto ip = parse_ip(addr_text);
    if (!ip)
        return std::nullopt;

    const bool written_as_v6 = addr_text.find(':') != std::string_view::npos;
    unsigned prefix = written_as_v6 ? 128 : 32;
    if (slash != std::string_view::npos) {
        const std::string_view p = text.substr(slash + 1);
        // Digits only: from_chars alone would accept "8x" as 8.
        if (p.empty() || p.size() > 3 || !std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; }))
            return std::nullopt;
        std::from_chars(p.data(), p.data() + p.size(), prefix);
        if (prefix > (written_as_v6 ? 128u : 32u))
            return std::nullopt;
    }

    if (written_as_v6 && ip->family == Family::v4) {
        // "::ffff:10.0.0.0/104" names IPv4 10/8. A shorter prefix would also
        // cover non-mapped IPv6 while every mapped address we compare against
        // has been folded to IPv4, so such a range could never match as the
        // user means it: refuse it rather than silently match nothing.
        if (prefix < 96)
            return std::nullopt;
        prefix -= 96;
    }
    Cidr c;
    c.addr = *ip;
    c.prefix = static_cast<std::uint8_t>(prefix);
    mask_to_prefix(c.addr.bytes, prefix);
    return c;
}

}  // namespace scantrace
