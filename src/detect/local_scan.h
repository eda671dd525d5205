// A local process scanning others: its outbound connects refused (RST while
// in SYN_SENT) across many ports or hosts within the scan window. Fed from
// the state transitions the tracer already receives; no extra kernel work.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <utility>

#include "detect/reports.h"
#include "events/decode.h"

namespace scantrace {

class LocalScanTracker {
public:
    LocalScanTracker(std::uint32_t threshold, double window_s) : threshold_(threshold), window_ns_(window_s * 1e9) {}
    // One report per process per window, when it crosses the threshold.
    std::optional<LocalScanReport> feed(const ConnEvent& e);
    // Drop state of processes idle for a window (bounds memory).
    void expire(std::uint64_t now_ns);

private:
    struct Window {
        std::uint64_t start_ns = 0;
        std::set<std::pair<IpAddr, std::uint16_t>> targets;
        bool reported = false;
        std::uint64_t last_ns = 0;
    };
    std::uint32_t threshold_;
    double window_ns_;
    std::map<std::pair<std::uint32_t, std::uint32_t>, Window> by_process_;  // (netns, pid)
};

bool operator<(const IpAddr& a, const IpAddr& b);

}  // namespace scantrace
