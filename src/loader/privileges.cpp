#include "loader/privileges.h"

#include <linux/capability.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

namespace scantrace {
namespace {

// CAP_BPF and CAP_PERFMON appeared in 5.8; older headers may lack them.
constexpr int kCapPerfmon = 38;
constexpr int kCapBpf = 39;

}  // namespace

std::string missing_privileges() {
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2]{};
    if (syscall(SYS_capget, &hdr, data) != 0) return "scantrace: cannot read this process's capabilities";
    std::uint64_t eff = (std::uint64_t{data[1].effective} << 32) | data[0].effective;
    auto has = [eff](int cap) { return (eff >> cap) & 1; };

    // CAP_SYS_ADMIN stands in for CAP_BPF + CAP_PERFMON (pre-5.8 kernels).
    const bool sys_admin = has(CAP_SYS_ADMIN);
    std::vector<const char*> missing;
    if (!sys_admin && !has(kCapBpf)) missing.push_back("CAP_BPF");
    if (!sys_admin && !has(kCapPerfmon)) missing.push_back("CAP_PERFMON");
    if (!has(CAP_NET_ADMIN)) missing.push_back("CAP_NET_ADMIN");
    if (missing.empty()) return {};

    std::string msg = "scantrace: missing capabilities ";
    for (std::size_t i = 0; i < missing.size(); ++i) msg += (i ? ", " : "") + std::string(missing[i]);
    msg += ": run as root (sudo scantrace)";
    return msg;
}

}  // namespace scantrace
