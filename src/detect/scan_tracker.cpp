#include "detect/scan_tracker.h"

#include <algorithm>
#include <cstring>

#include "detect/portset_estimate.h"

namespace scantrace {

const char* technique_name(unsigned t) {
    static const char* const kNames[] = {"syn", "connect", "fin", "null", "xmas", "ack", "maimon", "udp", "other"};
    return t < sizeof(kNames) / sizeof(kNames[0]) ? kNames[t] : "other";
}

const char* outcome_name(unsigned o) {
    static const char* const kNames[] = {"closed", "open", "dropped", "reset"};
    return o < 4 ? kNames[o] : "unknown";
}

bool SrcKeyLess::operator()(const st_src_key& a, const st_src_key& b) const { return std::memcmp(&a, &b, sizeof(a)) < 0; }

ScanReport make_scan_report(const st_src_key& key, const st_src_val& v, ScanPhase phase, const ScanPolicy& policy) {
    ScanReport r;
    r.phase = phase;
    r.netns = key.netns;
    r.source = IpAddr::from_raw(key.family, key.addr);
    r.source_prefix = r.source.family == Family::v4 ? 32 : (policy.group_v6_64 ? 64 : 128);
    r.destination = IpAddr::from_raw(v.dst_family, v.dst_addr);
    for (unsigned t = 0; t < ST_TECH_MAX; ++t)
        if (v.tech_count[t]) r.techniques.emplace_back(technique_name(t), v.tech_count[t]);
    std::stable_sort(r.techniques.begin(), r.techniques.end(),
                     [](const auto& a, const auto& b) { return a.second > b.second; });
    for (unsigned o = 0; o < 4; ++o)
        if (v.outcomes & (1u << o)) r.outcomes.emplace_back(outcome_name(o));
    PortCount pc = estimate_ports(v);
    r.ports = pc.value;
    r.ports_exact = pc.exact;
    r.probes = v.probes;
    r.first_ns = v.first_ns;
    r.last_ns = v.last_ns;
    r.sample_ports = sample_ports(v, 32);
    r.open_ports.assign(v.open_ports, v.open_ports + std::min<unsigned>(v.n_open, ST_OPEN_PORTS));
    return r;
}

ScanReport ScanTracker::end_report(const st_src_key& key, const st_src_val& v, const char* why) const {
    ScanReport r = make_scan_report(key, v, ScanPhase::end, policy_);
    r.rule = why;
    return r;
}

std::optional<ScanReport> ScanTracker::on_alert(const st_src_key& key, std::uint32_t rule, std::uint64_t now_ns) {
    auto v = read_(key);
    if (!v) return std::nullopt;  // evicted between alert and read: nothing reliable to say
    const char* rule_name = rule == ST_RULE_SLOW ? "slow" : "fast";
    auto it = active_.find(key);
    if (it == active_.end()) {
        ScanReport r = make_scan_report(key, *v, ScanPhase::start, policy_);
        r.rule = rule_name;
        r.threshold = rule == ST_RULE_SLOW ? policy_.slow_threshold : policy_.fast_threshold;
        r.window_s = rule == ST_RULE_SLOW ? policy_.slow_window_s : policy_.fast_window_s;
        active_[key] = Active{now_ns, r.ports, rule_name, *v};
        return r;
    }
    // Already reported: a new window crossed again. Progress, rate-limited.
    it->second.last = *v;
    it->second.rule = rule_name;
    // now_ns may be slightly older than the last report (alerts carry the
    // kernel's time, ticks userspace's): that is "too soon", not a wrap.
    const auto since = static_cast<std::int64_t>(now_ns - it->second.last_report_ns);
    if (since < static_cast<std::int64_t>(policy_.progress_interval_s * 1e9)) return std::nullopt;
    ScanReport r = make_scan_report(key, *v, ScanPhase::progress, policy_);
    r.rule = rule_name;
    it->second.last_report_ns = now_ns;
    it->second.last_ports = r.ports;
    return r;
}

std::vector<ScanReport> ScanTracker::tick(std::uint64_t now_ns) {
    std::vector<ScanReport> out;
    const auto quiet_ns = static_cast<std::uint64_t>(policy_.quiet_s * 1e9);
    const auto progress_ns = static_cast<std::uint64_t>(policy_.progress_interval_s * 1e9);
    for (auto it = active_.begin(); it != active_.end();) {
        auto v = read_(it->first);
        if (!v || v->first_ns != it->second.last.first_ns) {
            // Gone (LRU eviction under a flood of sources) or restarted as a
            // new episode: end what we knew.
            out.push_back(end_report(it->first, it->second.last, v ? "restarted" : "evicted"));
            it = active_.erase(it);
            continue;
        }
        it->second.last = *v;
        if (now_ns > v->last_ns && now_ns - v->last_ns >= quiet_ns) {
            out.push_back(end_report(it->first, *v, "quiet"));
            remove_(it->first);
            ++removed_;
            it = active_.erase(it);
            continue;
        }
        // Progress only while the scan still finds new ports.
        if (now_ns > it->second.last_report_ns && now_ns - it->second.last_report_ns >= progress_ns) {
            ScanReport r = make_scan_report(it->first, *v, ScanPhase::progress, policy_);
            if (r.ports > it->second.last_ports) {
                r.rule = it->second.rule;
                it->second.last_report_ns = now_ns;
                it->second.last_ports = r.ports;
                out.push_back(std::move(r));
            }
        }
        ++it;
    }
    return out;
}

std::vector<ScanReport> ScanTracker::finish() {
    std::vector<ScanReport> out;
    for (const auto& [key, a] : active_) {
        auto v = read_(key);
        out.push_back(end_report(key, v ? *v : a.last, "shutdown"));
    }
    active_.clear();
    return out;
}

}  // namespace scantrace
