// parse_command_line: defaults, help, and the one-line error contract.
#include <doctest/doctest.h>

#include <initializer_list>
#include <set>
#include <string>
#include <vector>

#include "cli/options.h"

using namespace scantrace;

namespace {

ParseResult parse(std::initializer_list<const char*> args) {
    std::vector<const char*> argv{"scantrace"};
    argv.insert(argv.end(), args.begin(), args.end());
    return parse_command_line(static_cast<int>(argv.size()), argv.data());
}

// An error: no config, exit code 2, one line that starts with "scantrace:".
void check_usage_error(std::initializer_list<const char*> args, const char* what) {
    CAPTURE(what);
    const ParseResult r = parse(args);
    CAPTURE(r.message);
    CHECK_FALSE(r.config);
    CHECK(r.exit_code == 2);
    CHECK(r.message.rfind("scantrace:", 0) == 0);
    CHECK(r.message.find('\n') == std::string::npos);
    CHECK(r.message.size() > std::string("scantrace:").size());
}

}  // namespace

TEST_CASE("options: defaults") {
    const ParseResult r = parse({});
    REQUIRE(r.config);
    CHECK(r.exit_code == 0);
    const Config& c = *r.config;
    CHECK(c.format == OutputFormat::json);
    CHECK(c.ports.empty());
    CHECK(c.states.empty());
    CHECK(c.peer_scopes.empty());
    CHECK_FALSE(c.no_loopback);
    CHECK(c.stats_interval_s == doctest::Approx(60));
    CHECK(c.ringbuf_bytes == (2u << 20));
    CHECK(c.max_conns == 16384);
    CHECK(c.max_listeners == 2048);
    CHECK(c.inventory);
    CHECK_FALSE(c.verbose);
    CHECK(c.hook_families.empty());
    CHECK(c.fast_threshold == 20);
    CHECK(c.fast_window_s == doctest::Approx(10));
    CHECK(c.slow_threshold == 60);
    CHECK(c.slow_window_s == doctest::Approx(900));
    CHECK(c.scan_quiet_s == doctest::Approx(30));
    CHECK(c.progress_interval_s == doctest::Approx(5));
    CHECK(c.dist_sources == 30);
    CHECK(c.dist_ports == 10);
    CHECK(c.dist_window_s == doctest::Approx(10));
    CHECK_FALSE(c.group_v6_64);
    CHECK(c.ignore.empty());
    CHECK(c.max_sources == 64512);
    CHECK_FALSE(c.all_states);
    CHECK_FALSE(c.attach_only);
    CHECK(c.max_memory == (64u << 20));
    CHECK(c.syn_rate == doctest::Approx(200));
    CHECK(c.half_open == 64);
    CHECK(c.local_scan_targets == 20);
}

TEST_CASE("options: --help exits 0 with the usage text") {
    for (const char* flag : {"--help", "-h"}) {
        const ParseResult r = parse({flag});
        CAPTURE(flag);
        CHECK_FALSE(r.config);
        CHECK(r.exit_code == 0);
        CHECK(r.message.find("--scan-ports") != std::string::npos);
        CHECK(r.message.find("--hooks") != std::string::npos);
    }
    const ParseResult v = parse({"--version"});
    CHECK_FALSE(v.config);
    CHECK(v.exit_code == 0);
    CHECK(v.message.find("scantrace") != std::string::npos);
}

TEST_CASE("options: values are parsed") {
    // clang-format off
    const ParseResult r =
        parse({"--format", "text", "--port", "22", "--port", "443", "--state", "established", "--state", "SYN_RECV",
               "--peer-scope", "private", "--no-loopback", "--ringbuf-size", "1048576", "--no-inventory",
               "--scan-ports", "30", "--scan-window", "5", "--slow-scan-ports", "100", "--slow-scan-window", "5",
               "--group-v6-64", "--max-memory", "128", "--syn-flood-rate", "50", "--local-scan-targets", "7"});
    // clang-format on
    REQUIRE_MESSAGE(r.config, r.message);
    const Config& c = *r.config;
    CHECK(c.format == OutputFormat::text);
    CHECK(c.ports == std::set<std::uint16_t>{22, 443});
    CHECK(c.states == std::set<unsigned>{1, 3});
    CHECK(c.peer_scopes == std::set<Scope>{Scope::private_});
    CHECK(c.no_loopback);
    CHECK(c.ringbuf_bytes == (1u << 20));
    CHECK_FALSE(c.inventory);
    CHECK(c.fast_threshold == 30);
    CHECK(c.fast_window_s == doctest::Approx(5));
    CHECK(c.slow_threshold == 100);
    CHECK(c.slow_window_s == doctest::Approx(5));  // equal windows are allowed
    CHECK(c.group_v6_64);
    CHECK(c.max_memory == (128ull << 20));
    CHECK(c.syn_rate == doctest::Approx(50));
    CHECK(c.local_scan_targets == 7);
    CHECK(c.all_states);  // implied by --state: leaving a state needs every transition
}

TEST_CASE("options: --all-states and --attach-only") {
    const ParseResult r = parse({"--all-states", "--attach-only"});
    REQUIRE_MESSAGE(r.config, r.message);
    CHECK(r.config->all_states);
    CHECK(r.config->attach_only);
    CHECK(r.config->states.empty());
}

TEST_CASE("options: usage errors are one line and exit 2") {
    check_usage_error({"--bogus"}, "unknown flag");
    check_usage_error({"stray"}, "positional argument");
    check_usage_error({"--port"}, "missing value");
    check_usage_error({"--port", "0"}, "port 0");
    check_usage_error({"--port", "70000"}, "port 70000");
    check_usage_error({"--port", "http"}, "port not a number");
    check_usage_error({"--state", "NOPE"}, "unknown state");
    check_usage_error({"--peer-scope", "nope"}, "unknown scope");
    check_usage_error({"--format", "xml"}, "unknown format");
    check_usage_error({"--ringbuf-size", "5000"}, "not a power of two");
    check_usage_error({"--ringbuf-size", "2048"}, "ring buffer too small");
    check_usage_error({"--ignore", "x/99"}, "bad CIDR");
    check_usage_error({"--ignore", "10.0.0.0/33"}, "prefix too long");
    check_usage_error({"--hooks", "bogus"}, "unknown hook family");
    check_usage_error({"--hooks", "tp_btf,-nope"}, "unknown excluded hook family");
    check_usage_error({"--scan-window", "60", "--slow-scan-window", "30"}, "slow window shorter than fast");
    check_usage_error({"--slow-scan-window", "5"}, "slow window shorter than the default fast window");
    check_usage_error({"--scan-ports", "1"}, "threshold below 2");
    check_usage_error({"--max-memory", "1"}, "max-memory too small");
}

TEST_CASE("options: --hooks selects hook families") {
    auto families = [](const char* spec) {
        const ParseResult r = parse({"--hooks", spec});
        REQUIRE_MESSAGE(r.config, r.message);
        return r.config->hook_families;
    };
    using S = std::set<std::string>;
    CHECK(families("-fentry,-kprobe") == S{"tp_btf", "raw_tp", "sock_ops"});
    CHECK(families("tp_btf") == S{"tp_btf"});
    CHECK(families("tp_btf,kprobe") == S{"tp_btf", "kprobe"});
    CHECK(families("tp_btf,kprobe,-kprobe") == S{"tp_btf"});
    CHECK(families("-sock_ops") == S{"tp_btf", "raw_tp", "fentry", "kprobe"});
}

TEST_CASE("options: --ignore parses CIDRs") {
    const ParseResult r = parse({"--ignore", "10.0.0.0/8", "--ignore", "192.0.2.7", "--ignore", "fd00::/64"});
    REQUIRE_MESSAGE(r.config, r.message);
    const auto& ig = r.config->ignore;
    REQUIRE(ig.size() == 3);
    CHECK(ig[0].addr.to_string() == "10.0.0.0");
    CHECK(ig[0].prefix == 8);
    CHECK(ig[1].addr.to_string() == "192.0.2.7");
    CHECK(ig[1].prefix == 32);
    CHECK(ig[2].addr.to_string() == "fd00::");
    CHECK(ig[2].prefix == 64);
    CHECK(ig[0].contains(IpAddr::v4(10, 200, 1, 1)));
    CHECK_FALSE(ig[0].contains(IpAddr::v4(11, 0, 0, 1)));
}
