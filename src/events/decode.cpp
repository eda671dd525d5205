#include "events/decode.h"

#include <cstring>

namespace scantrace {
namespace {

template <typename T>
bool read_record(const void* data, std::size_t size, T& out) {
    if (size < sizeof(T)) return false;
    std::memcpy(&out, data, sizeof(T));  // ring-buffer data is 8-aligned, but be strict
    return out.hdr.size == sizeof(T);
}

Endpoints endpoints_from(const st_tuple& t) {
    Endpoints ep;
    ep.laddr = IpAddr::from_raw(t.family, t.laddr);
    ep.raddr = IpAddr::from_raw(t.family, t.raddr);
    ep.lport = t.lport;
    ep.rport = t.rport;
    return ep;
}

std::optional<Owner> owner_from(const st_hdr& h, const st_owner& o) {
    if (!(h.flags & ST_F_OWNER_KNOWN)) return std::nullopt;
    return Owner{o.tgid, o.pid, o.uid, o.cgroup_id, comm_from_kernel(o.comm)};
}

}  // namespace

std::string comm_from_kernel(const char (&comm)[ST_COMM_LEN]) {
    std::size_t n = strnlen(comm, ST_COMM_LEN);
    return std::string(comm, n);
}

Event decode_record(const void* data, std::size_t size) {
    if (size < sizeof(st_hdr)) return DecodeError{"record shorter than its header"};
    st_hdr h;
    std::memcpy(&h, data, sizeof(h));
    switch (h.type) {
    case ST_REC_CONN: {
        st_conn_event r;
        if (!read_record(data, size, r)) return DecodeError{"conn record of wrong size"};
        ConnEvent e;
        e.ts_ns = r.hdr.ts_ns;
        e.netns = r.netns;
        e.ep = endpoints_from(r.tuple);
        e.oldstate = r.oldstate;
        e.newstate = r.newstate;
        e.direction = r.direction;
        e.owner = owner_from(r.hdr, r.owner);
        e.sk_id = r.sk_id;
        if (r.hdr.flags & ST_F_START_KNOWN) e.start_ns = r.start_ns;
        e.has_tcp_info = r.hdr.flags & ST_F_TCP_INFO;
        e.bytes_acked = r.bytes_acked;
        e.bytes_received = r.bytes_received;
        e.total_retrans = r.total_retrans;
        e.srtt_us = r.srtt_us;
        return e;
    }
    case ST_REC_LISTEN: {
        st_listen_event r;
        if (!read_record(data, size, r)) return DecodeError{"listen record of wrong size"};
        ListenEvent e;
        e.ts_ns = r.hdr.ts_ns;
        e.netns = r.netns;
        e.ep = endpoints_from(r.tuple);
        e.proto = r.proto;
        e.action = r.action;
        e.owner = owner_from(r.hdr, r.owner);
        return e;
    }
    case ST_REC_SCAN_ALERT: {
        st_scan_alert r;
        if (!read_record(data, size, r)) return DecodeError{"scan alert of wrong size"};
        if (r.key.family != ST_AF_INET && r.key.family != ST_AF_INET6) return DecodeError{"scan alert: bad family"};
        return ScanAlert{r.hdr.ts_ns, r.key, r.rule, r.distinct, r.dport, r.technique};
    }
    case ST_REC_DIST_ALERT: {
        st_dist_alert r;
        if (!read_record(data, size, r)) return DecodeError{"distributed-scan alert of wrong size"};
        return DistAlert{r.hdr.ts_ns, r.netns, r.sources, r.ports_seen, r.window_start_ns};
    }
    default:
        return DecodeError{"unknown record type " + std::to_string(h.type)};
    }
}

}  // namespace scantrace
