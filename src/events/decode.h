// Kernel records -> typed C++ events. The decoder trusts nothing: it checks
// each record's size and type before reading it, and kernel values used as
// indexes (states, directions) are kept as numbers and checked where printed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>

#include <scantrace/events.h>

#include "util/netaddr.h"

namespace scantrace {

struct Owner {
    std::uint32_t pid = 0;  // tgid
    std::uint32_t tid = 0;
    std::uint32_t uid = 0;
    std::uint64_t cgroup_id = 0;
    std::string comm;  // raw bytes up to the first NUL; may be hostile
};

struct Endpoints {
    IpAddr laddr, raddr;
    std::uint16_t lport = 0, rport = 0;
};

struct ConnEvent {
    std::uint64_t ts_ns = 0;  // boot clock
    std::uint32_t netns = 0;
    Endpoints ep;
    unsigned oldstate = 0, newstate = 0;
    std::uint8_t direction = ST_DIR_UNKNOWN;
    std::optional<Owner> owner;
    std::uint64_t sk_id = 0;
    std::optional<std::uint64_t> start_ns;
    bool has_tcp_info = false;
    std::uint64_t bytes_acked = 0, bytes_received = 0;
    std::uint32_t total_retrans = 0, srtt_us = 0;
};

struct ListenEvent {
    std::uint64_t ts_ns = 0;
    std::uint32_t netns = 0;
    Endpoints ep;  // local side only
    std::uint8_t proto = ST_PROTO_TCP;
    std::uint8_t action = ST_LISTEN_OPEN;
    std::optional<Owner> owner;
};

struct ScanAlert {
    std::uint64_t ts_ns = 0;
    st_src_key key{};
    std::uint32_t rule = 0;  // ST_RULE_FAST / ST_RULE_SLOW
    std::uint32_t distinct = 0;
    std::uint16_t dport = 0;
    std::uint8_t technique = 0;
};

struct DistAlert {
    std::uint64_t ts_ns = 0;
    std::uint32_t netns = 0;
    std::uint32_t sources = 0;
    std::uint32_t ports_seen = 0;
    std::uint64_t window_start_ns = 0;
};

struct DecodeError {
    std::string what;
};

using Event = std::variant<ConnEvent, ListenEvent, ScanAlert, DistAlert, DecodeError>;

Event decode_record(const void* data, std::size_t size);

// The comm field: bytes up to the first NUL, at most ST_COMM_LEN.
std::string comm_from_kernel(const char (&comm)[ST_COMM_LEN]);

}  // namespace scantrace
