#include "loader/loader.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <functional>
#include <mutex>

#include "conn.skel.h"

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

// What the running kernel offers, probed once; never a version number.
struct KernelFeatures {
    btf* vmlinux = nullptr;
    bool has_btf_type(const char* name, __u32 kind) const {
        return vmlinux && btf__find_by_name_kind(vmlinux, name, kind) >= 0;
    }
};

// One hook, its candidate programs in order of preference, and how to tell
// whether the kernel can run each.
struct Variant {
    bpf_program* prog;
    const char* attach;
    std::function<std::string(const KernelFeatures&)> unavailable;  // empty = usable
};
struct Hook {
    const char* name;
    bool required;  // the tool cannot work without it
    std::vector<Variant> variants;
    int chosen = -1;
    std::string reason;
};

std::string errstr(int err) { return std::strerror(err < 0 ? -err : err); }

}  // namespace

void configure_libbpf_logging(bool verbose) {
    g_verbose = verbose;
    libbpf_set_print(libbpf_print);
}

std::string libbpf_last_error() {
    std::lock_guard lk(g_log_mu);
    // The last non-empty line is the most specific one.
    std::string s = g_last_log;
    while (!s.empty() && s.back() == '\n') s.pop_back();
    auto nl = s.rfind('\n');
    return nl == std::string::npos ? s : s.substr(nl + 1);
}

struct Loader::Impl {
    conn_bpf* conn = nullptr;
    std::vector<bpf_link*> links;
    KernelFeatures features;
    ~Impl() {
        for (auto* l : links) bpf_link__destroy(l);
        conn_bpf__destroy(conn);
        btf__free(features.vmlinux);
    }
};

Loader::~Loader() = default;

std::variant<std::unique_ptr<Loader>, LoadError> Loader::start(const Config& cfg) {
    if (access("/sys/kernel/btf/vmlinux", R_OK) != 0)
        return LoadError{4, "scantrace: kernel BTF not found at /sys/kernel/btf/vmlinux: this kernel needs "
                            "CONFIG_DEBUG_INFO_BTF=y"};
    if (libbpf_probe_bpf_map_type(BPF_MAP_TYPE_RINGBUF, nullptr) != 1)
        return LoadError{4, "scantrace: this kernel has no BPF ring buffer (needs Linux 5.8 or later)"};

    std::unique_ptr<Loader> self(new Loader());
    self->impl_ = std::make_unique<Impl>();
    Impl& im = *self->impl_;

    im.features.vmlinux = btf__load_vmlinux_btf();
    if (!im.features.vmlinux)
        return LoadError{4, "scantrace: cannot parse kernel BTF at /sys/kernel/btf/vmlinux: " + errstr(errno)};

    im.conn = conn_bpf__open();
    if (!im.conn) return LoadError{1, "scantrace: cannot open BPF object: " + errstr(errno)};

    // Sizes come from the command line, so open and load are separate steps.
    bpf_map__set_max_entries(im.conn->maps.st_events, cfg.ringbuf_bytes);
    bpf_map__set_max_entries(im.conn->maps.st_conns, cfg.max_conns);
    bpf_map__set_max_entries(im.conn->maps.st_listeners, cfg.max_listeners);

    auto needs_btf_typedef = [](const char* tp) {
        return [tp](const KernelFeatures& f) -> std::string {
            std::string t = std::string("btf_trace_") + tp;
            return f.has_btf_type(t.c_str(), BTF_KIND_TYPEDEF) ? "" : "kernel BTF has no " + t;
        };
    };
    auto always = [](const KernelFeatures&) { return std::string(); };

    std::vector<Hook> table = {
        {"inet_sock_set_state", true,
         {{im.conn->progs.st_state_btf, "tp_btf", needs_btf_typedef("inet_sock_set_state")},
          {im.conn->progs.st_state_raw, "raw_tp", always}}},
    };

    // Choose: the first usable variant of each hook loads, the rest do not.
    for (auto& h : table) {
        for (std::size_t i = 0; i < h.variants.size(); ++i) {
            std::string why = h.variants[i].unavailable(im.features);
            if (h.chosen < 0 && why.empty()) {
                h.chosen = static_cast<int>(i);
            } else if (h.chosen < 0) {
                h.reason += (h.reason.empty() ? "" : "; ") + why;
            }
        }
        for (std::size_t i = 0; i < h.variants.size(); ++i)
            bpf_program__set_autoload(h.variants[i].prog, static_cast<int>(i) == h.chosen);
        if (h.chosen < 0 && h.required)
            return LoadError{4, std::string("scantrace: no usable hook for ") + h.name + ": " + h.reason};
    }

    if (int err = conn_bpf__load(im.conn)) {
        std::string detail = libbpf_last_error();
        return LoadError{1, "scantrace: loading BPF programs failed: " + errstr(err) +
                                (detail.empty() ? "" : " (" + detail + ")") + "; --verbose shows the verifier log"};
    }

    for (auto& h : table) {
        HookStatus st{h.name, false, {}, {}, h.reason};
        if (h.chosen >= 0) {
            const Variant& v = h.variants[h.chosen];
            bpf_link* link = bpf_program__attach(v.prog);
            if (!link) {
                int err = errno;
                if (h.required)
                    return LoadError{1, std::string("scantrace: attaching ") + bpf_program__name(v.prog) + " to " +
                                            h.name + " failed: " + errstr(err)};
                st.reason = std::string("attach failed: ") + errstr(err);
            } else {
                im.links.push_back(link);
                st.attached = true;
                st.program = bpf_program__name(v.prog);
                st.attach = v.attach;
                st.reason.clear();
            }
        }
        self->hooks_.push_back(std::move(st));
    }
    return self;
}

int Loader::ringbuf_fd() const { return bpf_map__fd(impl_->conn->maps.st_events); }

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

void Loader::detach() {
    for (auto* l : impl_->links) bpf_link__destroy(l);
    impl_->links.clear();
}

}  // namespace scantrace
