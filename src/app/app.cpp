#include "app/app.h"

#include <bpf/libbpf.h>
#include <malloc.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <cstdio>
#include <map>
#include <set>
#include <unordered_set>

#include "detect/local_scan.h"
#include "detect/scan_tracker.h"
#include "detect/syn_flood.h"
#include "events/decode.h"
#include "loader/loader.h"
#include "loader/privileges.h"
#include "output/filter.h"
#include "output/records.h"
#include "output/sink.h"
#include "util/procfs.h"
#include "util/services.h"
#include "util/tcp_states.h"
#include "util/timefmt.h"

namespace scantrace {
namespace {

volatile std::sig_atomic_t g_stop = 0;

void on_signal(int) { g_stop = 1; }

void install_signal_handlers() {
    struct sigaction sa {};
    sa.sa_handler = on_signal;
    // A second Ctrl-C gets the default action: a stuck shutdown can be killed.
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    // A closed stdout shows up as EPIPE on write, handled by the sink.
    std::signal(SIGPIPE, SIG_IGN);
}

std::string kernel_release() {
    utsname u{};
    return uname(&u) == 0 ? u.release : "unknown";
}

class Tracer {
public:
    Tracer(const Config& cfg, Loader& loader)
        : cfg_(cfg), loader_(loader), services_(ServiceTable::load()),
          fmt_(make_formatter(cfg.format, clock_, services_)), filter_(cfg), sink_(STDOUT_FILENO),
          start_boot_ns_(BootClock::now_boot_ns()),
          scans_(policy_of(cfg), [&l = loader](const st_src_key& k) { return l.read_source(k); },
                 [&l = loader](const st_src_key& k) { l.delete_source(k); }),
          local_scans_(cfg.local_scan_targets, cfg.fast_window_s), floods_(cfg.syn_rate, cfg.half_open) {}

    int run() {
        StartInfo si{SCANTRACE_VERSION, kernel_release(), static_cast<std::uint32_t>(getpid()), loader_.hooks(),
                     loader_.memory(), &cfg_};
        fmt_->start(sink_.buffer(), BootClock::now_unix_ns(), si);
        counted(RecordType::start);
        sink_.flush();

        if (cfg_.inventory) inventory();
        sink_.flush();
        // Loading parsed the kernel's BTF (several MiB) and the inventory read
        // procfs: give that heap back rather than carry it as steady RSS.
        malloc_trim(0);

        ring_buffer* rb = ring_buffer__new(loader_.ringbuf_fd(), &Tracer::on_record, this, nullptr);
        if (!rb) {
            std::fprintf(stderr, "scantrace: cannot open the BPF ring buffer: %s\n", std::strerror(errno));
            return 1;
        }
        const std::uint64_t interval_ns = static_cast<std::uint64_t>(cfg_.stats_interval_s * 1e9);
        std::uint64_t next_stats = start_boot_ns_ + interval_ns;
        std::uint64_t next_tick = start_boot_ns_ + kTickNs;

        while (!g_stop) {
            // Routine records wake nobody (bpf/common.bpf.h): epoll reports
            // only alerts and a filling buffer, so drain after every wait.
            int n = ring_buffer__poll(rb, kDrainIntervalMs);
            if (n >= 0 || n == -EINTR) n = ring_buffer__consume(rb);
            if (n < 0 && n != -EINTR) {
                std::fprintf(stderr, "scantrace: ring buffer poll failed: %s\n", std::strerror(-n));
                ring_buffer__free(rb);
                return 1;
            }
            const std::uint64_t now = BootClock::now_boot_ns();
            if (now >= next_tick) {
                detection_tick(now);
                next_tick = now + kTickNs;
            }
            if (interval_ns && now >= next_stats) {
                stats(false);
                next_stats += interval_ns;
            }
            sink_.flush();
            if (sink_.reader_gone()) {
                // Nobody reads any more: leave at once and quietly.
                ring_buffer__free(rb);
                return 0;
            }
        }

        // Shutdown: stop the programs first, then drain what they produced.
        loader_.detach();
        ring_buffer__consume(rb);
        ring_buffer__free(rb);
        for (const auto& r : scans_.finish()) emit_scan(r, BootClock::now_unix_ns());
        stats(true);
        sink_.flush();
        return 0;
    }

private:
    static int on_record(void* ctx, void* data, std::size_t size) {
        // No exception may cross libbpf's C callback.
        try {
            static_cast<Tracer*>(ctx)->handle(data, size);
        } catch (...) {
            ++static_cast<Tracer*>(ctx)->lost_decode_;
        }
        return 0;
    }

    void handle(const void* data, std::size_t size) {
        Event ev = decode_record(data, size);
        if (auto* c = std::get_if<ConnEvent>(&ev)) {
            // Without --all-states a connection's end is its close record alone.
            if (cfg_.all_states || c->newstate != kTcpClose) {
                if (filter_.pass_state(*c)) {
                    fmt_->state(sink_.buffer(), *c);
                    counted(RecordType::state);
                } else {
                    ++filtered_;
                }
            }
            if (auto r = local_scans_.feed(*c)) {
                fmt_->local_scan(sink_.buffer(), *r, clock_.to_unix_ns(c->ts_ns));
                counted(RecordType::local_scan);
            }
            if (c->newstate == kTcpClose) {
                reported_open_.erase(c->sk_id);
                if (filter_.pass_close(*c)) {
                    fmt_->close(sink_.buffer(), *c);
                    counted(RecordType::close);
                } else {
                    ++filtered_;
                }
            }
        } else if (auto* a = std::get_if<ScanAlert>(&ev)) {
            if (auto r = scans_.on_alert(a->key, a->rule, a->ts_ns)) emit_scan(*r, clock_.to_unix_ns(a->ts_ns));
        } else if (auto* d = std::get_if<DistAlert>(&ev)) {
            distributed(*d);
        } else if (auto* l = std::get_if<ListenEvent>(&ev)) {
            emit_listen(*l, l->action == ST_LISTEN_CLOSE ? ListenKind::close : ListenKind::open,
                        clock_.to_unix_ns(l->ts_ns));
        } else {
            ++lost_decode_;
        }
        sink_.maybe_flush();
    }

    static ScanPolicy policy_of(const Config& c) {
        return ScanPolicy{c.fast_threshold, c.fast_window_s, c.slow_threshold, c.slow_window_s,
                          c.scan_quiet_s,   c.progress_interval_s, c.group_v6_64};
    }

    void emit_scan(const ScanReport& r, std::int64_t unix_ns) {
        fmt_->scan(sink_.buffer(), r, unix_ns);
        counted(r.phase == ScanPhase::start      ? RecordType::scan
                : r.phase == ScanPhase::progress ? RecordType::scan_progress
                                                 : RecordType::scan_end);
    }

    void distributed(const DistAlert& a) {
        DistributedScanReport r;
        r.netns = a.netns;
        r.sources = a.sources;
        r.ports = a.ports_seen;
        r.window_start_ns = a.window_start_ns;
        r.window_s = cfg_.dist_window_s;
        if (auto d = loader_.read_dist(a.netns)) {
            for (unsigned i = 0; i < ST_DIST_SAMPLES && i < d->new_sources; ++i)
                r.sample_sources.push_back(IpAddr::from_raw(d->samples[i].family, d->samples[i].addr));
        }
        fmt_->distributed_scan(sink_.buffer(), r, clock_.to_unix_ns(a.ts_ns));
        counted(RecordType::distributed_scan);
    }

    // Connections the kernel left in st_conns as ESTABLISHED (lifecycle mode)
    // get their state record here, once each: a connection that closed before
    // this sweep came is reported by its close record alone.
    void sweep_open_conns() {
        std::unordered_set<std::uint64_t> still_open;
        loader_.for_each_open_conn([&](std::uint64_t id, const st_conn_val& v) {
            // Once per sweep (a fallback walk may pass an entry twice) and
            // once per connection.
            if (!still_open.insert(id).second || reported_open_.count(id)) return;
            st_conn_event e{};
            e.hdr.type = ST_REC_CONN;
            e.hdr.size = sizeof(e);
            e.hdr.flags = v.flags & (ST_F_OWNER_KNOWN | ST_F_START_KNOWN);
            e.hdr.ts_ns = v.est_ns;
            e.tuple = v.tuple;
            e.owner = v.owner;
            e.sk_id = id;
            e.start_ns = v.start_ns;
            e.netns = v.netns;
            e.oldstate = v.est_from;
            e.newstate = kTcpEstablished;
            e.direction = v.direction;
            handle(&e, sizeof(e));
        });
        // Connections no longer in the table are forgotten (closed, or their
        // close record is on its way and will find nothing to erase).
        reported_open_.swap(still_open);
    }

    // Every kTickNs: scan progress and ends, SYN floods.
    void detection_tick(std::uint64_t now) {
        if (!cfg_.all_states) sweep_open_conns();
        const std::int64_t unix_now = clock_.to_unix_ns(now);
        for (const auto& r : scans_.tick(now)) emit_scan(r, unix_now);
        local_scans_.expire(now);
        std::vector<SynSample> samples;
        loader_.for_each_syn([&samples](const st_listener_key& k, const st_syn_val& v) {
            samples.push_back({k.netns, k.port, v.syns, v.synack_retrans, v.half_open});
        });
        auto reader = [](std::uint32_t netns) -> std::optional<NetnsTcpSample> {
            auto pid = pid_in_netns(netns);
            return pid ? read_netns_tcp(*pid) : std::nullopt;
        };
        for (const auto& r : floods_.tick(now, samples, reader)) {
            fmt_->syn_flood(sink_.buffer(), r, unix_now);
            counted(r.ended ? RecordType::syn_flood_end : RecordType::syn_flood);
        }
    }

    void emit_listen(const ListenEvent& e, ListenKind kind, std::int64_t unix_ns) {
        if (!filter_.pass_listen(e)) {
            ++filtered_;
            return;
        }
        fmt_->listen(sink_.buffer(), e, kind, unix_ns);
        counted(RecordType::listen);
    }

    // Sockets that were listening before we attached: report them, and tell
    // the kernel who owns them so inbound connections get attributed.
    void inventory() {
        const std::int64_t now = BootClock::now_unix_ns();
        std::map<std::pair<std::uint32_t, std::uint16_t>, st_listener_val> owners;
        for (const auto& ls : scan_listening()) {
            ListenEvent e;
            e.netns = ls.netns;
            e.ep.laddr = ls.sock.laddr;
            e.ep.lport = ls.sock.lport;
            e.proto = ls.sock.proto;
            if (ls.owner) e.owner = Owner{ls.owner->pid, ls.owner->pid, ls.owner->uid, ls.owner->cgroup_id, ls.owner->comm};
            emit_listen(e, ListenKind::inventory, now);
            sink_.maybe_flush();

            if (ls.sock.proto != ST_PROTO_TCP || !ls.owner) continue;
            auto& v = owners[{ls.netns, ls.sock.lport}];
            if (v.nsockets++ == 0) {
                v.owner.tgid = v.owner.pid = ls.owner->pid;
                v.owner.uid = ls.owner->uid;
                v.owner.cgroup_id = ls.owner->cgroup_id;
                std::snprintf(v.owner.comm, sizeof(v.owner.comm), "%s", ls.owner->comm.c_str());
            }
        }
        for (const auto& [k, v] : owners) {
            st_listener_key key{k.first, k.second, ST_PROTO_TCP, 0};
            if (!loader_.seed_listener(key, v)) ++seed_failures_;
        }
        // Namespaces with listeners already: tell the sock_ops path their
        // cookies (new listeners teach the kernel themselves).
        std::set<std::uint32_t> seen;
        for (const auto& [k, v] : owners) {
            if (!seen.insert(k.first).second) continue;
            auto pid = pid_in_netns(k.first);
            if (!pid) continue;
            if (auto cookie = netns_cookie_of(*pid)) loader_.seed_netns_cookie(*cookie, k.first);
        }
    }

    void stats(bool final) {
        StatsInfo s;
        s.final = final;
        s.uptime_s = static_cast<double>(BootClock::now_boot_ns() - start_boot_ns_) / 1e9;
        s.kernel = loader_.read_counters();
        // Seeding failures are listener-map inserts that did not fit.
        s.kernel.v[ST_CNT_LISTEN_MAP_FULL] += seed_failures_;
        s.records = records_;
        s.records[static_cast<std::size_t>(RecordType::stats)] += 1;  // this one
        s.filtered = filtered_;
        s.lost_decode = lost_decode_;
        s.lost_output = sink_.lost_lines();
        s.sources_live = loader_.count_sources();
        const std::uint64_t gone = s.sources_live + scans_.removed();
        s.sources_evicted = s.kernel[ST_CNT_SRC_NEW] > gone ? s.kernel[ST_CNT_SRC_NEW] - gone : 0;
        s.scans_active = scans_.active();
        s.syn_floods_active = floods_.flooding();
        fmt_->stats(sink_.buffer(), BootClock::now_unix_ns(), s);
        counted(RecordType::stats);
    }

    void counted(RecordType t) { ++records_[static_cast<std::size_t>(t)]; }

    static constexpr std::uint64_t kTickNs = 250'000'000;  // sweep, scan_end/progress, SYN-flood resolution
    static constexpr int kDrainIntervalMs = 100;            // the longest a routine record waits

    const Config& cfg_;
    Loader& loader_;
    BootClock clock_;
    ServiceTable services_;
    std::unique_ptr<Formatter> fmt_;
    Filter filter_;
    LineSink sink_;
    std::uint64_t start_boot_ns_;
    std::array<std::uint64_t, static_cast<std::size_t>(RecordType::count_)> records_{};
    std::uint64_t filtered_ = 0;
    std::uint64_t lost_decode_ = 0;
    std::uint64_t seed_failures_ = 0;
    std::unordered_set<std::uint64_t> reported_open_;  // socket ids with their ESTABLISHED record out
    ScanTracker scans_;
    LocalScanTracker local_scans_;
    SynFloodMonitor floods_;
};

}  // namespace

int run_tracer(const Config& cfg) {
    configure_libbpf_logging(cfg.verbose);
    if (auto why = missing_privileges(); !why.empty()) {
        std::fprintf(stderr, "%s\n", why.c_str());
        return 3;
    }
    install_signal_handlers();

    auto started = Loader::start(cfg);
    if (auto* err = std::get_if<LoadError>(&started)) {
        std::fprintf(stderr, "%s\n", err->message.c_str());
        return err->exit_code;
    }
    auto& loader = std::get<std::unique_ptr<Loader>>(started);
    Tracer tracer(cfg, *loader);
    return tracer.run();
}

}  // namespace scantrace
