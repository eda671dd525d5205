// The life of a scan in userspace. The kernel signals each rule crossing
// once per window (a ring-buffer alert); the tracker turns alerts and the
// source table into scan / scan_progress / scan_end reports.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <vector>

#include <scantrace/events.h>

#include "detect/reports.h"

namespace scantrace {

struct ScanPolicy {
    std::uint32_t fast_threshold = 20;
    double fast_window_s = 10;
    std::uint32_t slow_threshold = 60;
    double slow_window_s = 900;
    double quiet_s = 30;
    double progress_interval_s = 5;
    bool group_v6_64 = false;
};

// Build a report from a source's kernel aggregate.
ScanReport make_scan_report(const st_src_key& key, const st_src_val& v, ScanPhase phase, const ScanPolicy& policy);

struct SrcKeyLess {
    bool operator()(const st_src_key& a, const st_src_key& b) const;
};

class ScanTracker {
public:
    using Reader = std::function<std::optional<st_src_val>(const st_src_key&)>;
    using Remover = std::function<void(const st_src_key&)>;

    ScanTracker(ScanPolicy policy, Reader read, Remover remove)
        : policy_(policy), read_(std::move(read)), remove_(std::move(remove)) {}

    // A kernel alert: a new scan, or progress of one already reported.
    std::optional<ScanReport> on_alert(const st_src_key& key, std::uint32_t rule, std::uint64_t now_ns);
    // Periodic: progress for growing scans, end for quiet or vanished ones.
    std::vector<ScanReport> tick(std::uint64_t now_ns);
    // At shutdown: end every active scan.
    std::vector<ScanReport> finish();
    std::size_t active() const { return active_.size(); }
    std::uint64_t removed() const { return removed_; }

private:
    struct Active {
        std::uint64_t last_report_ns = 0;
        std::uint64_t last_ports = 0;
        std::string rule;
        st_src_val last{};  // the last aggregate read, for an evicted scan's end
    };
    ScanReport end_report(const st_src_key& key, const st_src_val& v, const char* why) const;

    ScanPolicy policy_;
    Reader read_;
    Remover remove_;
    std::map<st_src_key, Active, SrcKeyLess> active_;
    std::uint64_t removed_ = 0;
};

}  // namespace scantrace
