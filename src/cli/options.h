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
    double stats_interval_s = 60.0;       // --stats-interval (0 = only at exit)
    std::uint32_t ringbuf_bytes = 8u << 20;  // --ringbuf-size (power of two)
    std::uint32_t max_conns = 262144;     // --max-conns
    std::uint32_t max_listeners = 16384;  // --max-listeners
    bool inventory = true;                // --no-inventory turns it off
    bool verbose = false;                 // --verbose: libbpf's log on stderr
};

struct ParseResult {
    std::optional<Config> config;  // set when the program should run
    int exit_code = 0;             // when config is empty: 0 for --help/--version, 2 for errors
    std::string message;           // what to print (stdout for help, stderr one-liner for errors)
};

ParseResult parse_command_line(int argc, const char* const* argv);

}  // namespace scantrace
