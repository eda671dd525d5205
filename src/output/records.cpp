#include "output/records.h"

#include <charconv>
#include <cinttypes>
#include <cstdio>

#include "output/json_writer.h"
#include "util/tcp_states.h"

namespace scantrace {

std::string_view record_type_name(RecordType t) {
    switch (t) {
    case RecordType::start: return "start";
    case RecordType::listen: return "listen";
    case RecordType::state: return "state";
    case RecordType::close: return "close";
    case RecordType::stats: return "stats";
    case RecordType::scan: return "scan";
    case RecordType::scan_progress: return "scan_progress";
    case RecordType::scan_end: return "scan_end";
    case RecordType::distributed_scan: return "distributed_scan";
    case RecordType::syn_flood: return "syn_flood";
    case RecordType::syn_flood_end: return "syn_flood_end";
    case RecordType::local_scan: return "local_scan";
    case RecordType::count_: break;
    }
    return "unknown";
}

std::string_view direction_name(std::uint8_t dir) {
    switch (dir) {
    case ST_DIR_INBOUND: return "inbound";
    case ST_DIR_OUTBOUND: return "outbound";
    default: return "unknown";
    }
}

std::string_view family_name(const IpAddr& a) { return a.family == Family::v4 ? "ipv4" : "ipv6"; }

std::string_view proto_name(std::uint8_t proto) {
    switch (proto) {
    case ST_PROTO_TCP: return "tcp";
    case ST_PROTO_UDP: return "udp";
    default: return "other";
    }
}

namespace {

std::string_view listen_kind_name(ListenKind k) {
    switch (k) {
    case ListenKind::inventory: return "inventory";
    case ListenKind::open: return "open";
    case ListenKind::close: return "close";
    }
    return "unknown";
}

// An address as a JSON value, formatted on the stack.
void addr_value(JsonWriter& w, const IpAddr& a) {
    char buf[IpAddr::kMaxText];
    w.str(std::string_view(buf, a.format(buf)));
}

// ---------------------------------------------------------------- JSON ---
class JsonFormatter final : public Formatter {
public:
    using Formatter::Formatter;

    void start(std::string& out, std::int64_t unix_ns, const StartInfo& s) override {
        JsonWriter w(out);
        head(w, "start", unix_ns);
        w.field("version", s.version).field("schema", kSchemaVersion).field("kernel", s.kernel).field("pid", s.pid);
        w.key("hooks").begin_array();
        for (const auto& h : s.hooks) {
            w.begin_object().field("name", h.name).field("state", h.attached ? "attached" : "unavailable");
            w.field("covers", h.covers);
            if (h.attached) {
                w.field("program", h.programs.empty() ? std::string() : h.programs.front());
                w.key("programs").begin_array();
                for (const auto& p : h.programs) w.str(p);
                w.end_array().field("attach", h.attach);
                // Better variants that were skipped, and why.
                if (!h.reason.empty()) w.field("skipped", h.reason);
            } else {
                w.field("reason", h.reason);
            }
            w.end_object();
        }
        w.end_array();
        w.key("memory").begin_object();
        std::uint64_t total = 0;
        w.key("maps").begin_object();
        for (const auto& m : s.memory) {
            w.dynamic_key(m.name).u64(m.bytes);
            total += m.bytes;
        }
        w.end_object().field("total_bytes", total).field("limit_bytes", s.config->max_memory).end_object();
        w.key("config");
        config(w, *s.config);
        end(w, out);
    }

    void listen(std::string& out, const ListenEvent& e, ListenKind kind, std::int64_t unix_ns) override {
        JsonWriter w(out);
        head(w, "listen", unix_ns);
        w.field("event", listen_kind_name(kind)).field("proto", proto_name(e.proto));
        w.field("family", family_name(e.ep.laddr)).field("laddr", e.ep.laddr.to_string()).field("lport", e.ep.lport);
        w.field("exposure", exposure_name(exposure_of(e.ep.laddr)));
        w.key("service");
        if (auto svc = services_.lookup(e.ep.lport, e.proto))
            w.str(*svc);
        else
            w.null();
        w.field("netns", e.netns);
        process(w, e.owner);
        end(w, out);
    }

    void state(std::string& out, const ConnEvent& e) override {
        JsonWriter w(out);
        head(w, "state", clock_.to_unix_ns(e.ts_ns));
        conn_fields(w, e);
        w.field("old", tcp_state_view(e.oldstate, scratch_)).field("new", tcp_state_view(e.newstate, scratch2_));
        end(w, out);
    }

    void close(std::string& out, const ConnEvent& e) override {
        JsonWriter w(out);
        head(w, "close", clock_.to_unix_ns(e.ts_ns));
        conn_fields(w, e);
        w.key("duration_ms");
        if (e.start_ns && e.ts_ns >= *e.start_ns)
            w.f64(static_cast<double>(e.ts_ns - *e.start_ns) / 1e6, 3);
        else
            w.null();
        w.field("bytes_sent", e.bytes_acked).field("bytes_received", e.bytes_received);
        w.field("retransmits", e.total_retrans).field("rtt_us", e.srtt_us);
        w.field("last_state", tcp_state_view(e.oldstate, scratch_));
        end(w, out);
    }

    void stats(std::string& out, std::int64_t unix_ns, const StatsInfo& s) override {
        JsonWriter w(out);
        head(w, "stats", unix_ns);
        w.field("final", s.final).key("uptime_s").f64(s.uptime_s, 3);
        w.key("kernel").begin_object().field("state_events", s.kernel[ST_CNT_STATE_EVENTS]);
        w.field("probes", s.kernel[ST_CNT_PROBES]).field("ignored_probes", s.kernel[ST_CNT_IGNORED]);
        w.field("sources_created", s.kernel[ST_CNT_SRC_NEW]).field("sources_live", s.sources_live);
        w.end_object();
        w.field("scans_active", s.scans_active).field("syn_floods_active", s.syn_floods_active);
        w.key("records").begin_object();
        for (std::size_t i = 0; i < s.records.size(); ++i)
            w.dynamic_key(record_type_name(static_cast<RecordType>(i))).u64(s.records[i]);
        w.end_object();
        w.field("filtered", s.filtered);
        w.key("lost").begin_object();
        w.field("ringbuf", s.kernel[ST_CNT_RB_LOST]);
        w.field("conn_map_full", s.kernel[ST_CNT_CONN_MAP_FULL]);
        w.field("listener_map_full", s.kernel[ST_CNT_LISTEN_MAP_FULL]);
        w.field("source_map_full", s.kernel[ST_CNT_SRC_MAP_FULL]).field("sources_evicted", s.sources_evicted);
        w.field("syn_map_full", s.kernel[ST_CNT_SYN_MAP_FULL]);
        w.field("decode", s.lost_decode).field("output", s.lost_output);
        w.end_object();
        end(w, out);
    }

    void scan(std::string& out, const ScanReport& r, std::int64_t unix_ns) override {
        JsonWriter w(out);
        const char* type = r.phase == ScanPhase::start ? "scan" : r.phase == ScanPhase::progress ? "scan_progress" : "scan_end";
        head(w, type, unix_ns);
        w.field("netns", r.netns).field("source", r.source.to_string()).field("family", family_name(r.source));
        if (r.source_prefix != (r.source.family == Family::v4 ? 32 : 128)) w.field("source_prefix", r.source_prefix);
        w.key("destinations").begin_array().str(r.destination.to_string()).end_array();
        w.field("technique", r.techniques.empty() ? "other" : r.techniques.front().first);
        w.key("techniques").begin_array();
        for (const auto& t : r.techniques) w.str(t.first);
        w.end_array().key("technique_probes").begin_object();
        for (const auto& t : r.techniques) w.dynamic_key(t.first).u64(t.second);
        w.end_object();
        w.field("ports", r.ports).field("ports_exact", r.ports_exact).field("probes", r.probes);
        w.key("first_seen");
        ts_field(w, clock_.to_unix_ns(r.first_ns));
        w.key("last_seen");
        ts_field(w, clock_.to_unix_ns(r.last_ns));
        w.key("sample_ports").begin_array();
        for (auto p : r.sample_ports) w.u64(p);
        w.end_array().key("open_ports").begin_array();
        for (auto p : r.open_ports) {
            w.begin_object().field("port", p).key("service");
            if (auto svc = services_.lookup(p, ST_PROTO_TCP)) w.str(*svc); else w.null();
            w.end_object();
        }
        w.end_array().key("outcomes").begin_array();
        for (const auto& o : r.outcomes) w.str(o);
        w.end_array();
        if (r.phase == ScanPhase::end) {
            const double dur = r.last_ns > r.first_ns ? (r.last_ns - r.first_ns) / 1e9 : 0;
            w.field("reason", r.rule).key("duration_s").f64(dur, 3);
            w.key("probes_per_s").f64(dur > 0 ? r.probes / dur : static_cast<double>(r.probes), 1);
        } else {
            w.field("rule", r.rule);
            if (r.phase == ScanPhase::start) w.field("threshold", r.threshold).key("window_s").f64(r.window_s, 3);
        }
        end(w, out);
    }

    void distributed_scan(std::string& out, const DistributedScanReport& r, std::int64_t unix_ns) override {
        JsonWriter w(out);
        head(w, "distributed_scan", unix_ns);
        w.field("netns", r.netns).field("sources", r.sources).field("ports", r.ports);
        w.key("window_start");
        ts_field(w, clock_.to_unix_ns(r.window_start_ns));
        w.key("window_s").f64(r.window_s, 3).key("sample_sources").begin_array();
        for (const auto& a : r.sample_sources) w.str(a.to_string());
        w.end_array();
        end(w, out);
    }

    void syn_flood(std::string& out, const SynFloodReport& r, std::int64_t unix_ns) override {
        JsonWriter w(out);
        head(w, r.ended ? "syn_flood_end" : "syn_flood", unix_ns);
        w.field("netns", r.netns).field("port", r.port).key("service");
        if (auto svc = services_.lookup(r.port, ST_PROTO_TCP)) w.str(*svc); else w.null();
        if (r.ended) {
            w.key("duration_s").f64(r.duration_s, 3).key("peak_syn_rate").f64(r.peak_syn_rate, 1);
            w.field("peak_half_open", r.peak_half_open);
        } else {
            w.key("syn_rate").f64(r.syn_rate, 1).field("half_open", r.half_open);
            w.key("synack_retransmits_per_s").f64(r.synack_retransmits, 1).field("syncookies", r.syncookies);
            w.field("syncookies_sent", r.syncookies_sent).field("listen_drops", r.listen_drops);
            w.field("listen_overflows", r.listen_overflows);
        }
        end(w, out);
    }

    void local_scan(std::string& out, const LocalScanReport& r, std::int64_t unix_ns) override {
        JsonWriter w(out);
        head(w, "local_scan", unix_ns);
        w.field("netns", r.netns);
        process(w, r.process);
        w.field("targets", r.targets).field("hosts", r.hosts).field("ports", r.ports).key("window_s").f64(r.window_s, 3);
        w.key("sample_targets").begin_array();
        for (const auto& [a, p] : r.sample_targets)
            w.begin_object().field("address", a.to_string()).field("port", p).end_object();
        w.end_array();
        end(w, out);
    }

private:
    void ts_field(JsonWriter& w, std::int64_t unix_ns) {
        ts_.clear();
        append_rfc3339_utc_us(ts_, unix_ns);
        w.str(ts_);
    }

    void head(JsonWriter& w, std::string_view type, std::int64_t unix_ns) {
        w.begin_object().field("type", type).field("v", kSchemaVersion);
        ts_.clear();
        append_rfc3339_utc_us(ts_, unix_ns);
        w.field("ts", ts_);
    }
    static void end(JsonWriter& w, std::string& out) {
        w.end_object();
        out += '\n';
    }

    static void process(JsonWriter& w, const std::optional<Owner>& o) {
        w.key("process");
        if (!o) {
            w.null();
            return;
        }
        w.begin_object().field("pid", o->pid).field("tid", o->tid).field("comm", o->comm);
        w.field("uid", o->uid).field("cgroup_id", o->cgroup_id).end_object();
    }

    void conn_fields(JsonWriter& w, const ConnEvent& e) {
        w.field("netns", e.netns).field("family", family_name(e.ep.raddr));
        w.key("laddr");
        addr_value(w, e.ep.laddr);
        w.field("lport", e.ep.lport).key("raddr");
        addr_value(w, e.ep.raddr);
        w.field("rport", e.ep.rport);
        w.field("direction", direction_name(e.direction));
        w.field("peer_scope", scope_name(classify(e.ep.raddr)));
        process(w, e.owner);
        char id[17];
        auto res = std::to_chars(id, id + sizeof(id), e.sk_id, 16);
        w.field("sock", std::string_view(id, static_cast<std::size_t>(res.ptr - id)));
    }

    static void config(JsonWriter& w, const Config& c) {
        w.begin_object();
        w.field("format", c.format == OutputFormat::json ? "json" : "text");
        w.key("port").begin_array();
        for (auto p : c.ports) w.u64(p);
        w.end_array().key("state").begin_array();
        for (auto s : c.states) w.str(tcp_state_name(s));
        w.end_array().key("peer_scope").begin_array();
        for (auto s : c.peer_scopes) w.str(scope_name(s));
        w.end_array();
        w.field("no_loopback", c.no_loopback).field("all_states", c.all_states).field("attach_only", c.attach_only).key("stats_interval_s").f64(c.stats_interval_s, 3);
        w.field("ringbuf_size", c.ringbuf_bytes).field("max_conns", c.max_conns);
        w.field("max_listeners", c.max_listeners).field("inventory", c.inventory);
        w.end_object();
    }

    std::string ts_;
    std::string scratch_, scratch2_;  // names of states a newer kernel added
};

// ---------------------------------------------------------------- text ---
// A process name may hold escape sequences: a terminal must never see them.
std::string printable(std::string_view s) {
    std::string out;
    for (unsigned char c : s) {
        if (c >= 0x20 && c < 0x7f) {
            out += static_cast<char>(c);
        } else {
            char buf[8];
            std::snprintf(buf, sizeof(buf), "\\x%02x", c);
            out += buf;
        }
    }
    return out;
}

std::string endpoint(const IpAddr& a, std::uint16_t port) {
    return a.family == Family::v6 ? "[" + a.to_string() + "]:" + std::to_string(port)
                                  : a.to_string() + ":" + std::to_string(port);
}

class TextFormatter final : public Formatter {
public:
    using Formatter::Formatter;

    void start(std::string& out, std::int64_t unix_ns, const StartInfo& s) override {
        row(out, unix_ns, "start", nullptr, "", "", "scantrace " + s.version + " on " + s.kernel);
        for (const auto& h : s.hooks)
            row(out, unix_ns, "hook", nullptr, "", "",
                h.name + (h.attached ? " attached via " + h.attach : " unavailable: " + h.reason));
        out += header();
    }
    void listen(std::string& out, const ListenEvent& e, ListenKind kind, std::int64_t unix_ns) override {
        std::string detail = std::string(proto_name(e.proto)) + " " + std::string(listen_kind_name(kind)) + " " +
                             std::string(exposure_name(exposure_of(e.ep.laddr)));
        if (auto svc = services_.lookup(e.ep.lport, e.proto)) detail += " " + std::string(*svc);
        row(out, unix_ns, "listen", e.owner ? &*e.owner : nullptr, endpoint(e.ep.laddr, e.ep.lport), "", detail);
    }
    void state(std::string& out, const ConnEvent& e) override {
        row(out, clock_.to_unix_ns(e.ts_ns), "state", e.owner ? &*e.owner : nullptr, endpoint(e.ep.laddr, e.ep.lport),
            endpoint(e.ep.raddr, e.ep.rport),
            tcp_state_name(e.oldstate) + " -> " + tcp_state_name(e.newstate) + " " +
                std::string(direction_name(e.direction)));
    }
    void close(std::string& out, const ConnEvent& e) override {
        char buf[128];
        double ms = e.start_ns && e.ts_ns >= *e.start_ns ? static_cast<double>(e.ts_ns - *e.start_ns) / 1e6 : -1;
        std::snprintf(buf, sizeof(buf), "tx %" PRIu64 " rx %" PRIu64 " ", e.bytes_acked, e.bytes_received);
        std::string d = buf;
        if (ms >= 0) {
            std::snprintf(buf, sizeof(buf), "%.3f ms", ms);
            d += buf;
        } else {
            d += "duration ?";
        }
        d += " " + std::string(scope_name(classify(e.ep.raddr)));
        row(out, clock_.to_unix_ns(e.ts_ns), "close", e.owner ? &*e.owner : nullptr, endpoint(e.ep.laddr, e.ep.lport),
            endpoint(e.ep.raddr, e.ep.rport), d);
    }
    void stats(std::string& out, std::int64_t unix_ns, const StatsInfo& s) override {
        char buf[256];
        std::snprintf(buf, sizeof(buf),
                      "%s kernel_state_events %" PRIu64 " lost ringbuf %" PRIu64 " conn_map %" PRIu64
                      " decode %" PRIu64 " output %" PRIu64 " filtered %" PRIu64,
                      s.final ? "final" : "periodic", s.kernel[ST_CNT_STATE_EVENTS], s.kernel[ST_CNT_RB_LOST],
                      s.kernel[ST_CNT_CONN_MAP_FULL], s.lost_decode, s.lost_output, s.filtered);
        row(out, unix_ns, "stats", nullptr, "", "", buf);
    }

    void scan(std::string& out, const ScanReport& r, std::int64_t unix_ns) override {
        const char* type = r.phase == ScanPhase::start ? "SCAN" : r.phase == ScanPhase::progress ? "scan+" : "scan.";
        std::string d = std::to_string(r.ports) + (r.ports_exact ? "" : "~") + " ports " + std::to_string(r.probes) +
                        " probes " + (r.techniques.empty() ? std::string("?") : r.techniques.front().first) + " " + r.rule;
        row(out, unix_ns, type, nullptr, r.destination.to_string(), r.source.to_string(), d);
    }
    void distributed_scan(std::string& out, const DistributedScanReport& r, std::int64_t unix_ns) override {
        row(out, unix_ns, "DSCAN", nullptr, "netns " + std::to_string(r.netns), "",
            std::to_string(r.sources) + " sources " + std::to_string(r.ports) + "+ ports");
    }
    void syn_flood(std::string& out, const SynFloodReport& r, std::int64_t unix_ns) override {
        char buf[160];
        std::snprintf(buf, sizeof(buf), "%s rate %.0f/s half-open %u cookies %s", r.ended ? "ended" : "started",
                      r.ended ? r.peak_syn_rate : r.syn_rate, r.ended ? r.peak_half_open : r.half_open,
                      r.syncookies ? "yes" : "no");
        row(out, unix_ns, "FLOOD", nullptr, ":" + std::to_string(r.port), "", buf);
    }
    void local_scan(std::string& out, const LocalScanReport& r, std::int64_t unix_ns) override {
        row(out, unix_ns, "LSCAN", &r.process, "", "",
            std::to_string(r.targets) + " refused targets on " + std::to_string(r.hosts) + " hosts");
    }

private:
    static std::string header() {
        char buf[256];
        std::snprintf(buf, sizeof(buf), "%-15s %-6s %7s %-16s %-46s %-46s %s\n", "TIME", "TYPE", "PID", "COMM",
                      "LOCAL", "REMOTE", "DETAIL");
        return buf;
    }
    void row(std::string& out, std::int64_t unix_ns, const char* type, const Owner* o, const std::string& local,
             const std::string& remote, const std::string& detail) {
        std::string ts = rfc3339_utc_us(unix_ns);
        std::string hms = ts.size() >= 26 ? ts.substr(11, 15) : ts;  // HH:MM:SS.uuuuuu
        std::string pid = o ? std::to_string(o->pid) : "-";
        std::string comm = o ? printable(o->comm) : "-";
        char buf[512];
        std::snprintf(buf, sizeof(buf), "%-15s %-6s %7s %-16s %-46s %-46s ", hms.c_str(), type, pid.c_str(),
                      comm.c_str(), local.c_str(), remote.c_str());
        out += buf;
        out += printable(detail);
        out += '\n';
    }
};

}  // namespace

std::unique_ptr<Formatter> make_formatter(OutputFormat f, const BootClock& clock, const ServiceTable& services) {
    if (f == OutputFormat::text) return std::make_unique<TextFormatter>(clock, services);
    return std::make_unique<JsonFormatter>(clock, services);
}

}  // namespace scantrace
