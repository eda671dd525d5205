// What detection reports: plain values, formatted by src/output/records.cpp.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "events/decode.h"
#include "util/netaddr.h"

namespace scantrace {

// enum st_technique -> "syn", "connect", "fin", "null", "xmas", "ack",
// "maimon", "udp", "other"; out of range -> "other".
const char* technique_name(unsigned t);
// enum st_outcome -> "closed", "open", "dropped", "reset".
const char* outcome_name(unsigned o);

enum class ScanPhase { start, progress, end };

struct ScanReport {
    ScanPhase phase = ScanPhase::start;
    std::string rule;       // "fast" / "slow" (start, progress); end: why it ended
    std::uint32_t netns = 0;
    IpAddr source;
    std::uint8_t source_prefix = 0;  // 64 when IPv6 sources are grouped per /64, else full length
    IpAddr destination;
    std::vector<std::pair<std::string, std::uint32_t>> techniques;  // by count, descending
    std::vector<std::string> outcomes;
    std::uint64_t ports = 0;
    bool ports_exact = false;
    std::uint64_t probes = 0;
    std::uint64_t first_ns = 0, last_ns = 0;  // boot clock
    std::vector<std::uint16_t> sample_ports;
    std::vector<std::uint16_t> open_ports;
    std::uint32_t threshold = 0;
    double window_s = 0;
};

struct DistributedScanReport {
    std::uint32_t netns = 0;
    std::uint32_t sources = 0;
    std::uint32_t ports = 0;  // distinct ports, from a 1-in-64-bucket bitmap: a lower bound
    std::uint64_t window_start_ns = 0;
    double window_s = 0;
    std::vector<IpAddr> sample_sources;
};

struct SynFloodReport {
    bool ended = false;
    std::uint32_t netns = 0;
    std::uint16_t port = 0;
    double syn_rate = 0;           // SYNs per second reaching the listener (hook-visible)
    std::uint32_t half_open = 0;   // SYN_RECV request sockets on the port
    double synack_retransmits = 0; // per second
    bool syncookies = false;       // the namespace sent SYN cookies in the interval
    std::uint64_t syncookies_sent = 0, listen_drops = 0, listen_overflows = 0;  // in the interval
    double duration_s = 0;         // for the end record
    double peak_syn_rate = 0;
    std::uint32_t peak_half_open = 0;
};

struct LocalScanReport {
    Owner process;
    std::uint32_t netns = 0;
    std::uint32_t targets = 0;  // distinct (address, port) refused
    std::uint32_t hosts = 0;
    std::uint32_t ports = 0;
    std::vector<std::pair<IpAddr, std::uint16_t>> sample_targets;
    double window_s = 0;
};

}  // namespace scantrace
