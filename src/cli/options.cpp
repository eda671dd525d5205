#include "cli/options.h"

#include <CLI/CLI.hpp>

#include "util/tcp_states.h"

namespace scantrace {
namespace {

// The first line of CLI11's message only: errors are one line by contract.
std::string first_line(std::string s) {
    if (auto nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
    return s;
}

}  // namespace

ParseResult parse_command_line(int argc, const char* const* argv) {
    Config cfg;
    std::vector<std::string> states, scopes;
    std::vector<int> ports;
    std::string format = "json";
    std::uint64_t ringbuf = cfg.ringbuf_bytes;
    bool no_inventory = false;

    CLI::App app{"scantrace: eBPF TCP connection tracer and port-scan detector. "
                 "Streams JSON lines to stdout (see docs/schema.md)."};
    app.set_version_flag("--version", std::string("scantrace ") + SCANTRACE_VERSION);
    app.add_option("--format", format, "Output format: json (one object per line) or text (aligned columns)")
        ->check(CLI::IsMember({"json", "text"}));
    app.add_option("--port", ports, "Only records whose local or remote port is PORT (repeatable)")
        ->check(CLI::Range(1, 65535))
        ->type_name("PORT");
    app.add_option("--state", states, "Only state records entering or leaving STATE, e.g. ESTABLISHED (repeatable)")
        ->type_name("STATE");
    app.add_option("--peer-scope", scopes,
                   "Only connection records whose peer is in SCOPE: loopback, private, cgnat, link-local, "
                   "multicast, reserved, unspecified, global (repeatable)")
        ->type_name("SCOPE");
    app.add_flag("--no-loopback", cfg.no_loopback, "Drop connection records whose peer is a loopback address");
    app.add_option("--stats-interval", cfg.stats_interval_s, "Seconds between stats records; 0 = only at exit")
        ->check(CLI::Range(0.0, 86400.0));
    app.add_option("--ringbuf-size", ringbuf, "Ring buffer bytes, a power of two from 4096 to 1 GiB")
        ->check(CLI::Range(std::uint64_t{4096}, std::uint64_t{1} << 30));
    app.add_option("--max-conns", cfg.max_conns, "Connections tracked at once in the kernel")
        ->check(CLI::Range(1024u, 16u << 20));
    app.add_option("--max-listeners", cfg.max_listeners, "Listening ports tracked at once in the kernel")
        ->check(CLI::Range(64u, 1u << 20));
    app.add_flag("--no-inventory", no_inventory, "Do not list already-listening sockets at start");
    app.add_flag("-v,--verbose", cfg.verbose, "Print libbpf's log on stderr");

    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForVersion& e) {
        return {std::nullopt, 0, e.what()};
    } catch (const CLI::Success&) {
        return {std::nullopt, 0, app.help()};
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return {std::nullopt, 0, app.help()};
        return {std::nullopt, 2, "scantrace: " + first_line(e.what()) + " (see --help)"};
    }

    cfg.format = format == "text" ? OutputFormat::text : OutputFormat::json;
    for (int p : ports) cfg.ports.insert(static_cast<std::uint16_t>(p));
    for (const auto& s : states) {
        auto st = parse_tcp_state(s);
        if (!st) return {std::nullopt, 2, "scantrace: --state: unknown TCP state '" + s + "' (e.g. ESTABLISHED, SYN_RECV)"};
        cfg.states.insert(*st);
    }
    for (const auto& s : scopes) {
        auto sc = parse_scope(s);
        if (!sc)
            return {std::nullopt, 2,
                    "scantrace: --peer-scope: unknown scope '" + s +
                        "' (loopback, private, cgnat, link-local, multicast, reserved, unspecified, global)"};
        cfg.peer_scopes.insert(*sc);
    }
    if (ringbuf & (ringbuf - 1))
        return {std::nullopt, 2, "scantrace: --ringbuf-size: " + std::to_string(ringbuf) + " is not a power of two"};
    cfg.ringbuf_bytes = static_cast<std::uint32_t>(ringbuf);
    cfg.inventory = !no_inventory;
    return {cfg, 0, {}};
}

}  // namespace scantrace
