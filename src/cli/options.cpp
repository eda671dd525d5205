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
    app.add_flag("--all-states", cfg.all_states,
                 "A state record for every TCP state transition (default: only for connections becoming "
                 "ESTABLISHED; every connection also gets its close record)");
    app.add_option("--state", states,
                   "Only state records entering or leaving STATE, e.g. ESTABLISHED (repeatable; implies --all-states)")
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
    app.add_flag("--attach-only", cfg.attach_only,
                 "Benchmark aid: attach every hook but let each program return at once (no records, no "
                 "detection), to measure what the hooks alone cost");

    std::string hooks;
    app.add_option("--hooks", hooks,
                   "Hook families to use, comma-separated from tp_btf, raw_tp, fentry, kprobe, sock_ops; "
                   "prefix with - to exclude (e.g. -fentry,-kprobe). Default: all, best first")
        ->type_name("LIST");
    app.add_option("--scan-ports", cfg.fast_threshold, "Fast rule: distinct ports from one source ...")
        ->check(CLI::Range(2u, 65535u));
    app.add_option("--scan-window", cfg.fast_window_s, "... within this many seconds")->check(CLI::Range(0.1, 3600.0));
    app.add_option("--slow-scan-ports", cfg.slow_threshold, "Slow rule: distinct ports from one source ...")
        ->check(CLI::Range(2u, 65535u));
    app.add_option("--slow-scan-window", cfg.slow_window_s, "... within this many seconds")
        ->check(CLI::Range(1.0, 86400.0));
    app.add_option("--scan-quiet", cfg.scan_quiet_s, "Seconds without probes before scan_end")
        ->check(CLI::Range(0.5, 86400.0));
    app.add_option("--progress-interval", cfg.progress_interval_s, "Minimum seconds between scan_progress records")
        ->check(CLI::Range(0.1, 86400.0));
    app.add_option("--distributed-sources", cfg.dist_sources,
                   "distributed_scan: new sources probing closed ports within the window ...")
        ->check(CLI::Range(2u, 1000000u));
    app.add_option("--distributed-ports", cfg.dist_ports, "... that together probed at least this many ports")
        ->check(CLI::Range(1u, 1024u));
    app.add_option("--distributed-window", cfg.dist_window_s, "distributed_scan window in seconds")
        ->check(CLI::Range(0.1, 3600.0));
    app.add_flag("--group-v6-64", cfg.group_v6_64, "Aggregate IPv6 sources per /64 instead of per address");
    std::vector<std::string> ignores;
    app.add_option("--ignore", ignores, "Never report probes from this CIDR (repeatable), e.g. a monitoring host")
        ->type_name("CIDR");
    app.add_option("--max-sources", cfg.max_sources, "Probe sources tracked at once in the kernel (LRU)")
        ->check(CLI::Range(1024u, 4u << 20));
    std::uint64_t max_memory_mib = cfg.max_memory >> 20;
    app.add_option("--max-memory", max_memory_mib, "Upper bound in MiB for all BPF maps together")
        ->check(CLI::Range(8, 65536));
    app.add_option("--syn-flood-rate", cfg.syn_rate, "syn_flood: SYNs per second to one listening port")
        ->check(CLI::Range(1.0, 1e9));
    app.add_option("--syn-flood-half-open", cfg.half_open, "syn_flood: half-open (SYN_RECV) connections on one port")
        ->check(CLI::Range(1u, 1u << 24));
    app.add_option("--local-scan-targets", cfg.local_scan_targets,
                   "local_scan: refused outbound connects from one process within the scan window")
        ->check(CLI::Range(2u, 1000000u));

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
        cfg.all_states = true;
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
    cfg.max_memory = max_memory_mib << 20;
    for (const auto& c : ignores) {
        auto cidr = parse_cidr(c);
        if (!cidr) return {std::nullopt, 2, "scantrace: --ignore: '" + c + "' is not an address or CIDR"};
        cfg.ignore.push_back(*cidr);
    }
    if (cfg.ignore.size() > 256) return {std::nullopt, 2, "scantrace: --ignore: at most 256 prefixes"};
    static const std::set<std::string> kFamilies = {"tp_btf", "raw_tp", "fentry", "kprobe", "sock_ops"};
    std::set<std::string> allow, deny;
    for (std::size_t pos = 0; pos <= hooks.size() && !hooks.empty();) {
        std::size_t comma = hooks.find(',', pos);
        std::string item = hooks.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        pos = comma == std::string::npos ? hooks.size() + 1 : comma + 1;
        bool neg = !item.empty() && item[0] == '-';
        std::string fam = neg ? item.substr(1) : item;
        if (!kFamilies.count(fam))
            return {std::nullopt, 2,
                    "scantrace: --hooks: unknown hook family '" + fam + "' (tp_btf, raw_tp, fentry, kprobe, sock_ops)"};
        (neg ? deny : allow).insert(fam);
    }
    if (!hooks.empty()) {
        for (const auto& f : allow.empty() ? kFamilies : allow)
            if (!deny.count(f)) cfg.hook_families.insert(f);
    }
    if (cfg.slow_window_s < cfg.fast_window_s)
        return {std::nullopt, 2, "scantrace: --slow-scan-window must not be shorter than --scan-window"};
    return {cfg, 0, {}};
}

}  // namespace scantrace
