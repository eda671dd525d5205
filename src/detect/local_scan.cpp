#include "detect/local_scan.h"

#include <algorithm>
#include <tuple>

namespace scantrace {

bool operator<(const IpAddr& a, const IpAddr& b) { return std::tie(a.family, a.bytes) < std::tie(b.family, b.bytes); }

namespace {
constexpr unsigned kSynSent = 2, kClose = 7;
constexpr std::size_t kMaxTargetsKept = 4096;  // per process and window
}  // namespace

std::optional<LocalScanReport> LocalScanTracker::feed(const ConnEvent& e) {
    // A refused outbound connect: SYN_SENT -> CLOSE, owner known.
    if (e.oldstate != kSynSent || e.newstate != kClose || e.direction != ST_DIR_OUTBOUND || !e.owner) return std::nullopt;
    Window& w = by_process_[{e.netns, e.owner->pid}];
    // Records from different CPUs may arrive slightly out of order: one a
    // little older than the window's start still belongs to it.
    const auto age = static_cast<double>(static_cast<std::int64_t>(e.ts_ns - w.start_ns));
    if (w.start_ns == 0 || age > window_ns_) w = Window{e.ts_ns};
    w.last_ns = std::max(w.last_ns, e.ts_ns);
    if (w.targets.size() < kMaxTargetsKept) w.targets.emplace(e.ep.raddr, e.ep.rport);
    if (w.reported || w.targets.size() < threshold_) return std::nullopt;
    w.reported = true;

    LocalScanReport r;
    r.process = *e.owner;
    r.netns = e.netns;
    r.targets = static_cast<std::uint32_t>(w.targets.size());
    std::set<IpAddr> hosts;
    std::set<std::uint16_t> ports;
    for (const auto& [a, p] : w.targets) {
        hosts.insert(a);
        ports.insert(p);
        if (r.sample_targets.size() < 32) r.sample_targets.emplace_back(a, p);
    }
    r.hosts = static_cast<std::uint32_t>(hosts.size());
    r.ports = static_cast<std::uint32_t>(ports.size());
    r.window_s = window_ns_ / 1e9;
    return r;
}

void LocalScanTracker::expire(std::uint64_t now_ns) {
    for (auto it = by_process_.begin(); it != by_process_.end();)
        it = now_ns > it->second.last_ns && now_ns - it->second.last_ns > window_ns_ ? by_process_.erase(it)
                                                                                     : std::next(it);
}

}  // namespace scantrace
