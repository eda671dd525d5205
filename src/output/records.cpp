#include "output/records.h"

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

std::string hex_id(std::uint64_t v) {
    char buf[20];
    std::snprintf(buf, sizeof(buf), "%" PRIx64, v);
    return buf;
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
            if (h.attached)
                w.field("program", h.program).field("attach", h.attach);
            else
                w.field("reason", h.reason);
            w.end_object();
        }
        w.end_array();
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
        w.field("old", tcp_state_name(e.oldstate)).field("new", tcp_state_name(e.newstate));
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
        w.field("last_state", tcp_state_name(e.oldstate));
        end(w, out);
    }

    void stats(std::string& out, std::int64_t unix_ns, const StatsInfo& s) override {
        JsonWriter w(out);
        head(w, "stats", unix_ns);
        w.field("final", s.final).key("uptime_s").f64(s.uptime_s, 3);
        w.key("kernel").begin_object().field("state_events", s.kernel[ST_CNT_STATE_EVENTS]).end_object();
        w.key("records").begin_object();
        for (std::size_t i = 0; i < s.records.size(); ++i)
            w.field(record_type_name(static_cast<RecordType>(i)), s.records[i]);
        w.end_object();
        w.field("filtered", s.filtered);
        w.key("lost").begin_object();
        w.field("ringbuf", s.kernel[ST_CNT_RB_LOST]);
        w.field("conn_map_full", s.kernel[ST_CNT_CONN_MAP_FULL]);
        w.field("listener_map_full", s.kernel[ST_CNT_LISTEN_MAP_FULL]);
        w.field("decode", s.lost_decode).field("output", s.lost_output);
        w.end_object();
        end(w, out);
    }

private:
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
        w.field("laddr", e.ep.laddr.to_string()).field("lport", e.ep.lport);
        w.field("raddr", e.ep.raddr.to_string()).field("rport", e.ep.rport);
        w.field("direction", direction_name(e.direction));
        w.field("peer_scope", scope_name(classify(e.ep.raddr)));
        process(w, e.owner);
        w.field("sock", hex_id(e.sk_id));
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
        w.field("no_loopback", c.no_loopback).key("stats_interval_s").f64(c.stats_interval_s, 3);
        w.field("ringbuf_size", c.ringbuf_bytes).field("max_conns", c.max_conns);
        w.field("max_listeners", c.max_listeners).field("inventory", c.inventory);
        w.end_object();
    }

    std::string ts_;
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
                h.name + (h.attached ? " attached via " + h.attach + " (" + h.program + ")" : " unavailable: " + h.reason));
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
