// Service names from /etc/services ("http" for tcp/80), for listening records.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace scantrace {

class ServiceTable {
public:
    // A missing or unreadable file yields an empty table (names become null).
    static ServiceTable load(const std::string& path = "/etc/services");
    // Parses the services(5) format: "name port/proto [aliases] [# comment]".
    static ServiceTable parse(std::string_view text);

    // proto is 6 (tcp) or 17 (udp). First entry in the file wins.
    std::optional<std::string_view> lookup(std::uint16_t port, std::uint8_t proto) const;
    std::size_t size() const { return names_.size(); }

private:
    std::unordered_map<std::uint32_t, std::string> names_;  // (proto << 16) | port
};

}  // namespace scantrace
