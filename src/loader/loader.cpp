#include "loader/loader.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <linux/bpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>

#include "conn.skel.h"
#include "scan.skel.h"
#include "util/procfs.h"
#include "util/tcp_states.h"

namespace scantrace {
namespace {

bool g_verbose = false;
std::mutex g_log_mu;
std::string g_last_log;  // the tail of libbpf's log, for error messages

int libbpf_print(enum libbpf_print_level level, const char* fmt, va_list ap) {
    char buf[1024];
    va_list copy;
    va_copy(copy, ap);
    int n = std::vsnprintf(buf, sizeof(buf), fmt, copy);
    va_end(copy);
    if (n < 0) return 0;
    {
        std::lock_guard lk(g_log_mu);
        if (level != LIBBPF_DEBUG) {
            g_last_log += buf;
            if (g_last_log.size() > 4096) g_last_log.erase(0, g_last_log.size() - 4096);
        }
    }
    if (g_verbose) std::fputs(buf, stderr);
    return n;
}

std::string errstr(int err) { return std::strerror(err < 0 ? -err : err); }

// What the running kernel offers, probed once; never a version number.
struct KernelFeatures {
    btf* vmlinux = nullptr;
    std::optional<std::string> cgroup2;

    bool has_type(const char* name, __u32 kind) const {
        return vmlinux && btf__find_by_name_kind(vmlinux, name, kind) >= 0;
    }

    // Whether an fentry program may attach to func: a trial load of the
    // smallest possible program (fentry needs BTF trampolines, which some
    // kernels and sandboxes refuse with EPERM even to root).
    std::string fentry_unavailable(const char* func) const {
        if (!vmlinux) return "no kernel BTF";
        int id = btf__find_by_name_kind(vmlinux, func, BTF_KIND_FUNC);
        if (id < 0) return std::string("no BTF for ") + func + " (inlined?)";
        const bpf_insn insns[] = {
            {BPF_ALU64 | BPF_MOV | BPF_K, BPF_REG_0, 0, 0, 0},
            {BPF_JMP | BPF_EXIT, 0, 0, 0, 0},
        };
        LIBBPF_OPTS(bpf_prog_load_opts, opts, .expected_attach_type = BPF_TRACE_FENTRY,
                    .attach_btf_id = static_cast<__u32>(id));
        int fd = bpf_prog_load(BPF_PROG_TYPE_TRACING, "st_probe", "GPL", insns, 2, &opts);
        if (fd < 0) return std::string("fentry trial load on ") + func + " failed: " + errstr(errno);
        close(fd);
        return {};
    }

    // kprobes: the perf kprobe PMU must exist (CONFIG_KPROBES) and the
    // function must not be inlined.
    std::string kprobe_unavailable(const char* func) const {
        if (access("/sys/bus/event_source/devices/kprobe/type", R_OK) != 0) return "kernel has no kprobe support";
        if (!has_type(func, BTF_KIND_FUNC)) return std::string("no function ") + func + " to probe";
        return {};
    }

    // tcp:tcp_send_reset fires for segments with no socket (closed ports)
    // only on kernels whose tracepoint carries the reset reason (enum
    // sk_rst_reason, Linux 6.10); older ones return before it without a sk.
    std::string reset_tp_unavailable() const {
        if (!has_type("btf_trace_tcp_send_reset", BTF_KIND_TYPEDEF)) return "kernel BTF has no tcp_send_reset tracepoint";
        if (!has_type("sk_rst_reason", BTF_KIND_ENUM))
            return "tcp_send_reset does not fire without a socket on this kernel (no sk_rst_reason)";
        return {};
    }

    // Parameters of a BTF-typed tracepoint (without the leading ctx), or -1.
    int tp_arg_count(const char* tp) const {
        if (!vmlinux) return -1;
        std::string name = std::string("btf_trace_") + tp;
        int id = btf__find_by_name_kind(vmlinux, name.c_str(), BTF_KIND_TYPEDEF);
        if (id < 0) return -1;
        const btf_type* t = btf__type_by_id(vmlinux, btf__type_by_id(vmlinux, id)->type);  // -> pointer
        if (!t || !btf_is_ptr(t)) return -1;
        t = btf__type_by_id(vmlinux, t->type);  // -> func proto
        if (!t || !btf_is_func_proto(t)) return -1;
        return static_cast<int>(btf_vlen(t)) - 1;
    }

    // kfree_skb carries a drop reason since 5.17; without it the hook cannot
    // tell a probe from any other freed packet.
    std::string drop_reason_unavailable() const {
        if (!has_type("skb_drop_reason", BTF_KIND_ENUM)) return "kfree_skb has no drop reason on this kernel";
        return {};
    }
};

// One hook, its candidate program sets in order of preference, and how to
// tell whether the kernel can run each.
struct Variant {
    std::vector<bpf_program*> progs;
    const char* family;  // tp_btf, raw_tp, fentry, kprobe, sock_ops
    std::function<std::string()> unavailable;  // empty string = usable
};
struct Hook {
    const char* name;
    const char* covers;
    bool required;
    std::vector<Variant> variants;
    int chosen = -1;
    std::string reason;
};

std::uint64_t fdinfo_memlock(int fd) {
    std::ifstream in("/proc/self/fdinfo/" + std::to_string(fd));
    std::string key;
    std::uint64_t v = 0;
    while (in >> key) {
        if (key == "memlock:") {
            in >> v;
            return v;
        }
    }
    return 0;
}

}  // namespace

void configure_libbpf_logging(bool verbose) {
    g_verbose = verbose;
    libbpf_set_print(libbpf_print);
}

std::string libbpf_last_error() {
    std::lock_guard lk(g_log_mu);
    std::string s = g_last_log;
    while (!s.empty() && s.back() == '\n') s.pop_back();
    auto nl = s.rfind('\n');
    return nl == std::string::npos ? s : s.substr(nl + 1);
}

// Where scantrace mounts the cgroup v2 hierarchy itself when nobody did
// (cgroup v1-only systems still have it): every process is in its root.
constexpr const char* kOwnCgroup2 = "/run/scantrace/cgroup2";

struct Loader::Impl {
    conn_bpf* conn = nullptr;
    scan_bpf* scan = nullptr;
    std::vector<bpf_link*> links;
    KernelFeatures features;
    int cgroup_fd = -1;
    bool mounted_cgroup2 = false;
    ~Impl() {
        for (auto* l : links) bpf_link__destroy(l);
        scan_bpf__destroy(scan);
        conn_bpf__destroy(conn);
        btf__free(features.vmlinux);
        if (cgroup_fd >= 0) close(cgroup_fd);
        if (mounted_cgroup2) umount2(kOwnCgroup2, MNT_DETACH);
    }
};

namespace {

std::optional<std::string> mount_own_cgroup2(bool& mounted) {
    mkdir("/run/scantrace", 0700);
    mkdir(kOwnCgroup2, 0700);
    if (mount("none", kOwnCgroup2, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) return std::nullopt;
    mounted = true;
    return std::string(kOwnCgroup2);
}

}  // namespace

Loader::~Loader() = default;

namespace {

// The transitions the kernel reports itself without --all-states: into CLOSE
// (the close record). ESTABLISHED is swept from st_conns (for_each_open_conn).
constexpr std::uint32_t kLifecycleStates = 1u << kTcpClose;

// Policy shared by both objects (both include bpf/scan.bpf.h).
template <typename Rodata>
void set_policy(Rodata* ro, const Config& cfg) {
    ro->cfg_fast_window_ns = static_cast<__u64>(cfg.fast_window_s * 1e9);
    ro->cfg_fast_threshold = cfg.fast_threshold;
    ro->cfg_slow_window_ns = static_cast<__u64>(cfg.slow_window_s * 1e9);
    ro->cfg_slow_threshold = cfg.slow_threshold;
    ro->cfg_dist_window_ns = static_cast<__u64>(cfg.dist_window_s * 1e9);
    ro->cfg_dist_sources = cfg.dist_sources;
    ro->cfg_dist_ports = cfg.dist_ports;
    ro->cfg_group_v6_64 = cfg.group_v6_64;
    ro->cfg_have_ignores = !cfg.ignore.empty();
    ro->cfg_wakeup_bytes = cfg.ringbuf_bytes / 4;
    ro->cfg_attach_only = cfg.attach_only;
}

// Apply the choice: the chosen variant's programs load, all others do not.
std::string choose(std::vector<Hook>& table, const Config& cfg) {
    for (auto& h : table) {
        for (std::size_t i = 0; i < h.variants.size(); ++i) {
            const Variant& v = h.variants[i];
            std::string why;
            if (!cfg.hook_families.empty() && !cfg.hook_families.count(v.family))
                why = std::string(v.family) + " excluded by --hooks";
            else
                why = v.unavailable();
            if (h.chosen < 0 && why.empty())
                h.chosen = static_cast<int>(i);
            else if (h.chosen < 0)
                h.reason += (h.reason.empty() ? "" : "; ") + why;
        }
        for (std::size_t i = 0; i < h.variants.size(); ++i)
            for (auto* p : h.variants[i].progs) bpf_program__set_autoload(p, static_cast<int>(i) == h.chosen);
        if (h.chosen < 0 && h.required) return std::string("no usable hook for ") + h.name + ": " + h.reason;
    }
    return {};
}

}  // namespace

std::variant<std::unique_ptr<Loader>, LoadError> Loader::start(const Config& cfg) {
    if (access("/sys/kernel/btf/vmlinux", R_OK) != 0)
        return LoadError{4, "scantrace: kernel BTF not found at /sys/kernel/btf/vmlinux: this kernel needs "
                            "CONFIG_DEBUG_INFO_BTF=y"};
    if (libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, nullptr) != 1)
        return LoadError{4, "scantrace: this kernel has no BPF ring buffer (needs Linux 5.8 or later)"};

    std::unique_ptr<Loader> self(new Loader());
    self->impl_ = std::make_unique<Impl>();
    Impl& im = *self->impl_;
    KernelFeatures& kf = im.features;

    kf.vmlinux = btf__load_vmlinux_btf();
    if (!kf.vmlinux)
        return LoadError{4, "scantrace: cannot parse kernel BTF at /sys/kernel/btf/vmlinux: " + errstr(errno)};
    kf.cgroup2 = find_mount("cgroup2");
    const bool want_sockops = cfg.hook_families.empty() || cfg.hook_families.count("sock_ops");
    if (!kf.cgroup2 && want_sockops) kf.cgroup2 = mount_own_cgroup2(im.mounted_cgroup2);

    im.conn = conn_bpf__open();
    im.scan = scan_bpf__open();
    if (!im.conn || !im.scan) return LoadError{1, "scantrace: cannot open BPF objects: " + errstr(errno)};

    // Sizes and policy come from the command line: open and load are
    // separate steps.
    bpf_map__set_max_entries(im.conn->maps.st_events, cfg.ringbuf_bytes);
    bpf_map__set_max_entries(im.conn->maps.st_conns, cfg.max_conns);
    bpf_map__set_max_entries(im.conn->maps.st_listeners, cfg.max_listeners);
    bpf_map__set_max_entries(im.conn->maps.st_sources, cfg.max_sources);
    set_policy(im.conn->rodata, cfg);
    im.conn->rodata->cfg_report_states = cfg.all_states ? ~0u : kLifecycleStates;
    set_policy(im.scan->rodata, cfg);

    auto btf_tp = [&kf](const char* tp) {
        return [&kf, tp]() -> std::string {
            std::string t = std::string("btf_trace_") + tp;
            return kf.has_type(t.c_str(), BTF_KIND_TYPEDEF) ? "" : "kernel BTF has no " + t;
        };
    };
    auto both = [](std::string a, std::string b) { return a.empty() ? b : a; };
    auto* c = im.conn;
    auto* s = im.scan;
    auto cgroup_ok = [&kf]() -> std::string {
        return kf.cgroup2 ? "" : "no cgroup v2 hierarchy mounted, and mounting one failed";
    };

    std::vector<Hook> conn_table = {
        {"inet_sock_set_state", "TCP state transitions, connection owners, close summaries", true,
         {{{c->progs.st_state_btf}, "tp_btf", btf_tp("inet_sock_set_state")},
          {{c->progs.st_state_raw}, "raw_tp", [] { return std::string(); }}}},
    };
    std::vector<Hook> scan_table = {
        {"tcp_reset", "probes to closed TCP ports; ACK/Maimon probes to open ports", false,
         {{{s->progs.st_rst_btf}, "tp_btf", [&kf] { return kf.reset_tp_unavailable(); }},
          {{s->progs.st_rst4_fentry, s->progs.st_rst6_fentry}, "fentry",
           [&] { return both(kf.fentry_unavailable("tcp_v4_send_reset"), kf.fentry_unavailable("tcp_v6_send_reset")); }},
          {{s->progs.st_rst4_kprobe, s->progs.st_rst6_kprobe}, "kprobe",
           [&] { return both(kf.kprobe_unavailable("tcp_v4_send_reset"), kf.kprobe_unavailable("tcp_v6_send_reset")); }}}},
        {"tcp_syn", "SYN probes to open TCP ports (half-open scans), SYN rates per port", false,
         {{{s->progs.st_syn4_fentry, s->progs.st_syn6_fentry}, "fentry",
           [&] {
               return both(kf.fentry_unavailable("tcp_v4_conn_request"), kf.fentry_unavailable("tcp_v6_conn_request"));
           }},
          {{s->progs.st_syn4_kprobe, s->progs.st_syn6_kprobe}, "kprobe",
           [&] {
               return both(kf.kprobe_unavailable("tcp_v4_conn_request"), kf.kprobe_unavailable("tcp_v6_conn_request"));
           }},
          {{s->progs.st_sockops}, "sock_ops", cgroup_ok}}},
        {"skb_drop", "FIN/NULL/Xmas probes to open ports; UDP probes to closed ports", false,
         {{{s->progs.st_drop_btf_rxsk}, "tp_btf",
           [&] {
               return kf.tp_arg_count("kfree_skb") >= 4 ? kf.drop_reason_unavailable()
                                                         : std::string("kfree_skb has no receiving-socket argument");
           }},
          {{s->progs.st_drop_btf}, "tp_btf", [&] { return both(btf_tp("kfree_skb")(), kf.drop_reason_unavailable()); }},
          {{s->progs.st_drop_raw}, "raw_tp", [&kf] { return kf.drop_reason_unavailable(); }}}},
        {"tcp_retransmit_synack", "SYN-ACK retransmits per listening port (SYN floods)", false,
         {{{s->progs.st_synack_btf}, "tp_btf", btf_tp("tcp_retransmit_synack")}}},
    };

    if (auto err = choose(conn_table, cfg); !err.empty()) return LoadError{4, "scantrace: " + err};
    if (auto err = choose(scan_table, cfg); !err.empty()) return LoadError{4, "scantrace: " + err};

    auto load_failed = [](const char* what, int err) {
        std::string detail = libbpf_last_error();
        return LoadError{1, std::string("scantrace: loading ") + what + " BPF programs failed: " + errstr(err) +
                                (detail.empty() ? "" : " (" + detail + ")") + "; --verbose shows the verifier log"};
    };
    if (int err = conn_bpf__load(c)) return load_failed("connection", err);

    // One instance of every shared map: the scan object reuses the
    // connection object's ring buffer, counters and scan state.
    bpf_map* m;
    bpf_object__for_each_map(m, s->obj) {
        const char* name = bpf_map__name(m);
        if (name[0] == '.') continue;  // each object's own .rodata/.bss
        bpf_map* twin = bpf_object__find_map_by_name(c->obj, name);
        if (twin && bpf_map__reuse_fd(m, bpf_map__fd(twin)) != 0)
            return LoadError{1, std::string("scantrace: cannot share map ") + name + ": " + errstr(errno)};
    }
    if (int err = scan_bpf__load(s)) return load_failed("scan", err);

    // --ignore prefixes, as IPv6 with IPv4 mapped (prefix + 96).
    for (const auto& cidr : cfg.ignore) {
        struct {
            __u32 prefixlen;
            __u8 addr[16];
        } key{};
        __u8 one = 1;
        if (cidr.addr.family == Family::v4) {
            key.prefixlen = 96u + cidr.prefix;
            key.addr[10] = key.addr[11] = 0xff;
            std::memcpy(key.addr + 12, cidr.addr.bytes.data(), 4);
        } else {
            key.prefixlen = cidr.prefix;
            std::memcpy(key.addr, cidr.addr.bytes.data(), 16);
        }
        if (bpf_map_update_elem(bpf_map__fd(c->maps.st_ignore), &key, &one, BPF_ANY) != 0)
            return LoadError{1, "scantrace: cannot store --ignore prefix: " + errstr(errno)};
    }

    // Memory: the kernel's own accounting of every map, bounded by --max-memory.
    std::uint64_t total = 0;
    bpf_object__for_each_map(m, c->obj) {
        std::uint64_t b = fdinfo_memlock(bpf_map__fd(m));
        self->memory_.push_back({bpf_map__name(m), b});
        total += b;
    }
    bpf_object__for_each_map(m, s->obj) {
        if (!bpf_object__find_map_by_name(c->obj, bpf_map__name(m)) || bpf_map__name(m)[0] == '.') {
            std::uint64_t b = fdinfo_memlock(bpf_map__fd(m));
            self->memory_.push_back({bpf_map__name(m), b});
            total += b;
        }
    }
    if (total > cfg.max_memory)
        return LoadError{2, "scantrace: BPF maps need " + std::to_string(total >> 20) + " MiB, more than --max-memory " +
                                std::to_string(cfg.max_memory >> 20) +
                                " MiB: lower --max-sources / --max-conns / --ringbuf-size or raise --max-memory"};

    auto attach_table = [&](std::vector<Hook>& table) -> std::optional<LoadError> {
        for (auto& h : table) {
            HookStatus st{h.name, h.covers, false, {}, {}, h.reason};
            if (h.chosen >= 0) {
                const Variant& v = h.variants[h.chosen];
                std::string failed;
                for (auto* p : v.progs) {
                    bpf_link* link = nullptr;
                    if (std::strcmp(v.family, "sock_ops") == 0) {
                        if (im.cgroup_fd < 0) im.cgroup_fd = open(kf.cgroup2->c_str(), O_RDONLY | O_DIRECTORY);
                        // A cgroup bpf_link always allows other programs
                        // beside it (BPF_F_ALLOW_MULTI semantics) and goes
                        // away with this process.
                        if (im.cgroup_fd >= 0) link = bpf_program__attach_cgroup(p, im.cgroup_fd);
                    } else {
                        link = bpf_program__attach(p);
                    }
                    if (!link) {
                        failed = std::string("attaching ") + bpf_program__name(p) + " failed: " + errstr(errno);
                        break;
                    }
                    im.links.push_back(link);
                    st.programs.push_back(bpf_program__name(p));
                }
                if (!failed.empty()) {
                    if (h.required) return LoadError{1, "scantrace: " + std::string(h.name) + ": " + failed};
                    st.reason = (st.reason.empty() ? "" : st.reason + "; ") + failed;
                    st.programs.clear();
                } else {
                    st.attached = true;
                    st.attach = v.family;
                }
            }
            self->hooks_.push_back(std::move(st));
        }
        return std::nullopt;
    };
    if (auto e = attach_table(conn_table)) return *e;
    if (auto e = attach_table(scan_table)) return *e;
    // The parsed kernel BTF (about 5 MiB here) was for the choices above only.
    btf__free(kf.vmlinux);
    kf.vmlinux = nullptr;
    return self;
}

int Loader::ringbuf_fd() const { return bpf_map__fd(impl_->conn->maps.st_events); }

std::uint64_t Loader::memory_total() const {
    std::uint64_t t = 0;
    for (const auto& m : memory_) t += m.bytes;
    return t;
}

KernelCounters Loader::read_counters() const {
    KernelCounters out;
    int ncpu = libbpf_num_possible_cpus();
    if (ncpu <= 0) return out;
    std::vector<std::uint64_t> per_cpu(static_cast<std::size_t>(ncpu));
    int fd = bpf_map__fd(impl_->conn->maps.st_counters);
    for (__u32 i = 0; i < ST_CNT_MAX; ++i) {
        if (bpf_map_lookup_elem(fd, &i, per_cpu.data()) != 0) continue;
        for (auto x : per_cpu) out.v[i] += x;
    }
    return out;
}

bool Loader::seed_listener(const st_listener_key& key, const st_listener_val& val) {
    int fd = bpf_map__fd(impl_->conn->maps.st_listeners);
    return bpf_map_update_elem(fd, &key, &val, BPF_NOEXIST) == 0 || errno == EEXIST;
}

void Loader::seed_netns_cookie(std::uint64_t cookie, std::uint32_t netns) {
    bpf_map_update_elem(bpf_map__fd(impl_->conn->maps.st_netns_cookie), &cookie, &netns, BPF_NOEXIST);
}

std::optional<st_src_val> Loader::read_source(const st_src_key& key) const {
    st_src_val v;
    if (bpf_map_lookup_elem(bpf_map__fd(impl_->conn->maps.st_sources), &key, &v) != 0) return std::nullopt;
    return v;
}

void Loader::delete_source(const st_src_key& key) {
    bpf_map_delete_elem(bpf_map__fd(impl_->conn->maps.st_sources), &key);
}

namespace {

// Every key of a hash map, one get_next_key syscall each.
template <typename K, typename F>
void for_each_key(int fd, F&& fn) {
    K k{}, next{};
    const void* prev = nullptr;
    while (bpf_map_get_next_key(fd, prev, &next) == 0) {
        fn(next);
        k = next;
        prev = &k;
    }
}

// Every (key, value) of a hash map, one lookup per key on top.
template <typename K, typename V, typename F>
void for_each_entry(int fd, F&& fn) {
    for_each_key<K>(fd, [&](const K& k) {
        V v;
        if (bpf_map_lookup_elem(fd, &k, &v) == 0) fn(k, v);
    });
}

}  // namespace

std::uint64_t Loader::count_sources() const {
    std::uint64_t n = 0;
    for_each_key<st_src_key>(bpf_map__fd(impl_->conn->maps.st_sources), [&n](const st_src_key&) { ++n; });
    return n;
}

std::optional<st_dist_val> Loader::read_dist(std::uint32_t netns) const {
    st_dist_val v;
    if (bpf_map_lookup_elem(bpf_map__fd(impl_->conn->maps.st_dist), &netns, &v) != 0) return std::nullopt;
    return v;
}

void Loader::for_each_syn(const std::function<void(const st_listener_key&, const st_syn_val&)>& fn) const {
    for_each_entry<st_listener_key, st_syn_val>(bpf_map__fd(impl_->conn->maps.st_syn), fn);
}

void Loader::for_each_open_conn(const std::function<void(std::uint64_t, const st_conn_val&)>& fn) const {
    // Batched: one syscall per kBatch entries, not two per entry, so a sweep
    // of a full table stays cheap.
    constexpr __u32 kBatch = 256;
    int fd = bpf_map__fd(impl_->conn->maps.st_conns);
    auto open = [&fn](std::uint64_t id, const st_conn_val& v) {
        if (v.flags & ST_F_ESTABLISHED) fn(id, v);
    };
    std::vector<std::uint64_t> keys(kBatch);
    std::vector<st_conn_val> vals(kBatch);
    std::uint64_t in_batch = 0, out_batch = 0;
    for (bool first = true;; first = false) {
        __u32 count = kBatch;
        int err = bpf_map_lookup_batch(fd, first ? nullptr : &in_batch, &out_batch, keys.data(), vals.data(),
                                       &count, nullptr);
        if (err && errno != ENOENT) {
            // No batch operations (before Linux 5.6), or a bucket longer than
            // kBatch: walk the map key by key instead. Connections already
            // passed to fn may come again; the caller reports each once.
            for_each_entry<std::uint64_t, st_conn_val>(fd, open);
            return;
        }
        for (__u32 i = 0; i < count; ++i) open(keys[i], vals[i]);
        if (err) return;  // ENOENT: that was the last batch
        in_batch = out_batch;
    }
}

void Loader::detach() {
    for (auto* l : impl_->links) bpf_link__destroy(l);
    impl_->links.clear();
}

}  // namespace scantrace
