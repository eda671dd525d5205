#include "detect/syn_flood.h"

#include <dirent.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "util/procfs.h"

namespace scantrace {

std::vector<SynFloodReport> SynFloodMonitor::tick(std::uint64_t now_ns, const std::vector<SynSample>& samples,
                                                  const NetnsReader& read_netns) {
    std::vector<SynFloodReport> out;
    const double dt = last_tick_ns_ ? (now_ns - last_tick_ns_) / 1e9 : 0;
    last_tick_ns_ = now_ns;

    // Namespaces worth a procfs read: any port with SYNs in the last
    // kWatchNs, or flooding. Under SYN cookies the hook-visible SYN count
    // stalls while the flood goes on, so activity is remembered a while.
    constexpr std::uint64_t kWatchNs = 10'000'000'000ull;
    std::set<std::uint32_t> wanted;
    for (const auto& s : samples) {
        PortState& p = ports_[{s.netns, s.port}];
        if (s.syns != p.syns) p.last_active_ns = now_ns;
        if (p.flooding || (p.last_active_ns && now_ns - p.last_active_ns < kWatchNs)) wanted.insert(s.netns);
    }
    std::map<std::uint32_t, std::pair<NetnsTcpSample, NetnsTcpSample>> ns_now;  // (current, delta)
    for (auto ns : wanted) {
        auto cur = read_netns(ns);
        if (!cur) continue;
        NsState& st = netns_[ns];
        NetnsTcpSample delta;
        if (st.have) {
            delta.syncookies_sent = cur->syncookies_sent - st.last.syncookies_sent;
            delta.listen_drops = cur->listen_drops - st.last.listen_drops;
            delta.listen_overflows = cur->listen_overflows - st.last.listen_overflows;
        }
        st.last = *cur;
        st.have = true;
        ns_now[ns] = {*cur, delta};
    }

    for (const auto& s : samples) {
        PortState& p = ports_[{s.netns, s.port}];
        const bool first = p.syns == 0 && p.synack == 0 && !p.flooding && p.last_active_ns == now_ns;
        const double rate = (!first && dt > 0) ? (s.syns - p.syns) / dt : 0;
        const double retrans = (!first && dt > 0) ? (s.synack_retrans - p.synack) / dt : 0;
        p.syns = s.syns;
        p.synack = s.synack_retrans;
        if (dt <= 0) continue;

        std::uint32_t half_open = s.half_open;
        NetnsTcpSample delta;
        if (auto it = ns_now.find(s.netns); it != ns_now.end()) {
            if (auto h = it->second.first.half_open.find(s.port); h != it->second.first.half_open.end())
                half_open = std::max(half_open, h->second);
            delta = it->second.second;
        }
        const bool cookies = delta.syncookies_sent > 0;
        // A high SYN rate alone is a busy server; with SYNs left half-open it
        // is a flood.
        const bool flood = (rate >= rate_thr_ && half_open > 0) || half_open >= half_open_thr_ ||
                           (cookies && half_open > 0);
        // Ending is about arrivals: once SYNs stop, a pile of half-open
        // connections from spoofed sources lingers until the SYN-ACK retries
        // run out (about a minute); that pile draining is calm.
        const bool arriving = rate >= rate_thr_ || cookies || half_open > p.last_half_open;
        p.last_half_open = half_open;
        SynFloodReport r;
        r.netns = s.netns;
        r.port = s.port;
        r.syn_rate = rate;
        r.half_open = half_open;
        r.synack_retransmits = retrans;
        r.syncookies = cookies;
        r.syncookies_sent = delta.syncookies_sent;
        r.listen_drops = delta.listen_drops;
        r.listen_overflows = delta.listen_overflows;
        if (p.flooding ? arriving : flood) {
            p.calm_since_ns = 0;
            p.peak_rate = std::max(p.peak_rate, rate);
            p.peak_half_open = std::max(p.peak_half_open, half_open);
            if (!p.flooding) {
                p.flooding = true;
                p.since_ns = now_ns;
                out.push_back(r);
            }
        } else if (p.flooding) {
            if (!p.calm_since_ns) p.calm_since_ns = now_ns;
            if (now_ns - p.calm_since_ns >= end_after_ns_) {
                r.ended = true;
                r.duration_s = (now_ns - p.since_ns) / 1e9;
                r.peak_syn_rate = p.peak_rate;
                r.peak_half_open = p.peak_half_open;
                out.push_back(r);
                p = PortState{s.syns, s.synack_retrans};
                p.last_active_ns = now_ns;
            }
        }
    }
    return out;
}

std::size_t SynFloodMonitor::flooding() const {
    std::size_t n = 0;
    for (const auto& [k, p] : ports_) n += p.flooding;
    return n;
}

namespace {

// "TcpExt: a b c\nTcpExt: 1 2 3": the header line names the values line.
void parse_tcpext(std::istream& in, NetnsTcpSample& out) {
    std::string header, values;
    while (std::getline(in, header) && std::getline(in, values)) {
        if (header.rfind("TcpExt:", 0) != 0) continue;
        std::istringstream hs(header), vs(values);
        std::string name, val;
        hs >> name;
        vs >> val;
        while (hs >> name && vs >> val) {
            std::uint64_t v = std::strtoull(val.c_str(), nullptr, 10);
            if (name == "SyncookiesSent") out.syncookies_sent = v;
            else if (name == "ListenDrops") out.listen_drops = v;
            else if (name == "ListenOverflows") out.listen_overflows = v;
        }
    }
}

}  // namespace

std::optional<NetnsTcpSample> read_netns_tcp(std::uint32_t pid) {
    const std::string base = "/proc/" + std::to_string(pid) + "/net/";
    std::ifstream ns(base + "netstat");
    if (!ns) return std::nullopt;
    NetnsTcpSample s;
    parse_tcpext(ns, s);
    return s;
}

std::optional<std::uint32_t> pid_in_netns(std::uint32_t netns) {
    static std::map<std::uint32_t, std::uint32_t> cache;
    if (auto it = cache.find(netns); it != cache.end()) {
        if (netns_of(it->second) == netns) return it->second;
        cache.erase(it);
    }
    DIR* d = opendir("/proc");
    if (!d) return std::nullopt;
    std::optional<std::uint32_t> found;
    while (dirent* e = readdir(d)) {
        char* end = nullptr;
        unsigned long pid = std::strtoul(e->d_name, &end, 10);
        if (!end || *end || pid == 0) continue;
        std::uint32_t ns = netns_of(static_cast<std::uint32_t>(pid));
        if (ns && !cache.count(ns)) cache[ns] = static_cast<std::uint32_t>(pid);
        if (ns == netns) {
            found = static_cast<std::uint32_t>(pid);
            break;
        }
    }
    closedir(d);
    return found;
}

}  // namespace scantrace
