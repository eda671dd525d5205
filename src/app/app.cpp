#include "app/app.h"

#include <bpf/libbpf.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <cstdio>
#include <map>

#include "events/decode.h"
#include "loader/loader.h"
#include "loader/privileges.h"
#include "output/filter.h"
#include "output/records.h"
#include "output/sink.h"
#include "util/procfs.h"
#include "util/services.h"
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
          start_boot_ns_(BootClock::now_boot_ns()) {}

    int run() {
        StartInfo si{SCANTRACE_VERSION, kernel_release(), static_cast<std::uint32_t>(getpid()), loader_.hooks(), &cfg_};
        fmt_->start(sink_.buffer(), BootClock::now_unix_ns(), si);
        counted(RecordType::start);
        sink_.flush();

        if (cfg_.inventory) inventory();
        sink_.flush();

        ring_buffer* rb = ring_buffer__new(loader_.ringbuf_fd(), &Tracer::on_record, this, nullptr);
        if (!rb) {
            std::fprintf(stderr, "scantrace: cannot open the BPF ring buffer: %s\n", std::strerror(errno));
            return 1;
        }
        const std::uint64_t interval_ns = static_cast<std::uint64_t>(cfg_.stats_interval_s * 1e9);
        std::uint64_t next_stats = start_boot_ns_ + interval_ns;

        while (!g_stop) {
            int n = ring_buffer__poll(rb, 100);
            if (n < 0 && n != -EINTR) {
                std::fprintf(stderr, "scantrace: ring buffer poll failed: %s\n", std::strerror(-n));
                ring_buffer__free(rb);
                return 1;
            }
            if (interval_ns && BootClock::now_boot_ns() >= next_stats) {
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
            if (filter_.pass_state(*c)) {
                fmt_->state(sink_.buffer(), *c);
                counted(RecordType::state);
            } else {
                ++filtered_;
            }
            if (c->newstate == TCP_CLOSE_STATE) {
                if (filter_.pass_close(*c)) {
                    fmt_->close(sink_.buffer(), *c);
                    counted(RecordType::close);
                } else {
                    ++filtered_;
                }
            }
        } else if (auto* l = std::get_if<ListenEvent>(&ev)) {
            emit_listen(*l, l->action == ST_LISTEN_CLOSE ? ListenKind::close : ListenKind::open,
                        clock_.to_unix_ns(l->ts_ns));
        } else {
            ++lost_decode_;
        }
        sink_.maybe_flush();
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
        fmt_->stats(sink_.buffer(), BootClock::now_unix_ns(), s);
        counted(RecordType::stats);
    }

    void counted(RecordType t) { ++records_[static_cast<std::size_t>(t)]; }

    static constexpr unsigned TCP_CLOSE_STATE = 7;

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
