// Command-line configuration. Parsing never exits the process itself: it
// returns the exit code and message so main() decides (and tests can check).
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "util/netaddr.h"

namespace scantrace {

enum class OutputFormat { json, text };

struct Config {
    OutputFormat format = OutputFormat::json;
    std::set<std::uint16_t> ports;        // --port
    std::set<unsigned> states;            // --state (TCP state numbers)
    std::set<Scope> peer_scopes;          // --peer-scope
    bool no_loopback = false;             // --no-loopback
    bool all_states = false;              // --all-states (implied by --state)
    double stats_interval_s = 60.0;       // --stats-interval (0 = only at exit)
    std::uint32_t ringbuf_bytes = 2u << 20;  // --ringbuf-size (power of two)
    std::uint32_t max_conns = 16384;      // --max-conns
    std::uint32_t max_listeners = 2048;   // --max-listeners
    bool inventory = true;                // --no-inventory turns it off
    bool verbose = false;                 // --verbose: libbpf's log on stderr
    bool attach_only = false;             // --attach-only: programs return at once (benchmarks)

    // Hook families the loader may use (--hooks): tp_btf, raw_tp, fentry,
    // kprobe, sock_ops. Empty = all.
    std::set<std::string> hook_families;

    // Scan detection policy (docs/schema.md, "scan").
    std::uint32_t fast_threshold = 20;     // --scan-ports
    double fast_window_s = 10;             // --scan-window
    std::uint32_t slow_threshold = 60;     // --slow-scan-ports
    double slow_window_s = 900;            // --slow-scan-window
    double scan_quiet_s = 30;              // --scan-quiet: scan_end after this much silence
    double progress_interval_s = 5;        // --progress-interval
    std::uint32_t dist_sources = 30;       // --distributed-sources
    std::uint32_t dist_ports = 10;         // --distributed-ports
    double dist_window_s = 10;             // --distributed-window
    bool group_v6_64 = false;              // --group-v6-64
    std::vector<Cidr> ignore;              // --ignore CIDR
    std::uint32_t max_sources = 64512;     // --max-sources (63 Ki: with the rest, fits 64 MiB)
    std::uint64_t max_memory = 64u << 20;  // --max-memory: bound on all BPF maps
    // SYN flood
    double syn_rate = 200;                 // --syn-flood-rate (SYNs/s to one port)
    std::uint32_t half_open = 64;          // --syn-flood-half-open
    // Local processes scanning others
    std::uint32_t local_scan_targets = 20; // --local-scan-targets (refused connects in the fast window)
};

struct ParseResult {
    std::optional<Config> config;  // set when the program should run
    int exit_code = 0;             // when config is empty: 0 for --help/--version, 2 for errors
    std::string message;           // what to print (stdout for help, stderr one-liner for errors)
};

ParseResult parse_command_line(int argc, const char* const* argv);

}  // namespace scantrace
