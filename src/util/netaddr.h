// IP addresses as scantrace reports them: family-normalised (IPv4-mapped
// IPv6 folds into IPv4), classified by scope, parsed from the command line.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace scantrace {

enum class Family : std::uint8_t { v4, v6 };

struct IpAddr {
    Family family = Family::v4;
    // IPv4 uses bytes[0..3] (network order); the rest stays zero.
    std::array<std::uint8_t, 16> bytes{};

    // From the kernel's (af, 16-byte buffer). af is ST_AF_INET or ST_AF_INET6;
    // ::ffff:a.b.c.d becomes IPv4 a.b.c.d. Any other af yields IPv4 0.0.0.0.
    static IpAddr from_raw(std::uint16_t af, const std::uint8_t raw[16]);
    static IpAddr v4(std::uint8_t a, std::uint8_t b, std::uint8_t c, std::uint8_t d);

    std::string to_string() const;  // inet_ntop form: "10.0.0.1", "fd00::1"
    // The same text into buf (at least kMaxText bytes), no allocation; returns
    // its length. The per-record path of the output uses this.
    static constexpr std::size_t kMaxText = 46;
    std::size_t format(char* buf) const;
    bool is_unspecified() const;    // 0.0.0.0 or ::
    bool operator==(const IpAddr&) const = default;
};

// Parse "10.0.0.1", "fd00::1", "::ffff:10.0.0.1" (folded to v4). nullopt on error.
std::optional<IpAddr> parse_ip(std::string_view text);

enum class Scope : std::uint8_t {
    unspecified,  // 0.0.0.0, ::
    loopback,     // 127.0.0.0/8, ::1
    private_,     // RFC 1918 (10/8, 172.16/12, 192.168/16), RFC 4193 (fc00::/7)
    cgnat,        // 100.64.0.0/10 (RFC 6598)
    link_local,   // 169.254.0.0/16, fe80::/10
    multicast,    // 224.0.0.0/4, ff00::/8
    reserved,     // 0.0.0.0/8 (not 0.0.0.0), 240.0.0.0/4 incl. 255.255.255.255
    global,       // everything else
};
Scope classify(const IpAddr& addr);
// "unspecified", "loopback", "private", "cgnat", "link-local", "multicast",
// "reserved", "global"
std::string_view scope_name(Scope s);
std::optional<Scope> parse_scope(std::string_view name);  // inverse of scope_name

// Where a listening socket can be reached from, by its local address.
enum class Exposure : std::uint8_t { all_interfaces, loopback_only, address };
Exposure exposure_of(const IpAddr& local);       // 0.0.0.0/:: all, loopback -> loopback-only
std::string_view exposure_name(Exposure e);      // "all-interfaces", "loopback-only", "address"

struct Cidr {
    IpAddr addr;  // masked to the prefix
    std::uint8_t prefix = 0;
    bool contains(const IpAddr& a) const;  // false across families
};
// "10.0.0.0/8", "fd00::/64", a bare address means /32 or /128. nullopt on error.
std::optional<Cidr> parse_cidr(std::string_view text);

}  // namespace scantrace
