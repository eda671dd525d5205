// Userspace throughput: synthetic kernel records through decode + the JSON
// formatter, exactly the per-record path of the tracer (minus write(2)).
// Prints records per second (median of several rounds) as JSON.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "events/decode.h"
#include "output/records.h"

using namespace scantrace;

int main(int argc, char** argv) {
    const int n = argc > 1 ? std::atoi(argv[1]) : 1000000;
    BootClock clock;
    ServiceTable services = ServiceTable::load();
    auto fmt = make_formatter(OutputFormat::json, clock, services);

    // A realistic mix: IPv4 and IPv6, known owners, a close every 8th record.
    std::vector<st_conn_event> recs(1024);
    for (std::size_t i = 0; i < recs.size(); ++i) {
        st_conn_event& r = recs[i];
        std::memset(&r, 0, sizeof(r));
        r.hdr = {ST_REC_CONN, sizeof(r), ST_F_OWNER_KNOWN | ST_F_START_KNOWN, 1'000'000'000ull * 3600 + i * 1000};
        r.tuple.family = i % 3 ? ST_AF_INET : ST_AF_INET6;
        if (r.tuple.family == ST_AF_INET) {
            std::uint8_t l[4] = {10, 0, 0, 1}, rr[4] = {93, 184, static_cast<std::uint8_t>(i), 34};
            std::memcpy(r.tuple.laddr, l, 4);
            std::memcpy(r.tuple.raddr, rr, 4);
        } else {
            r.tuple.laddr[0] = 0xfd;
            r.tuple.laddr[15] = 1;
            r.tuple.raddr[0] = 0x20;
            r.tuple.raddr[1] = 0x01;
            r.tuple.raddr[15] = static_cast<std::uint8_t>(i);
        }
        r.tuple.lport = 443;
        r.tuple.rport = static_cast<std::uint16_t>(30000 + i);
        r.owner = {4242, 4243, 33, 0, 77, "nginx"};
        r.sk_id = 0xffff888100000000ull + i * 64;
        r.start_ns = r.hdr.ts_ns - 5'000'000;
        r.netns = 4026531840u;
        r.oldstate = 1;
        r.newstate = i % 8 == 7 ? 7 : 4;
        if (r.newstate == 7) {
            r.hdr.flags |= ST_F_TCP_INFO;
            r.bytes_acked = 123456;
            r.bytes_received = 789;
        }
        r.direction = ST_DIR_INBOUND;
    }

    std::string out;
    out.reserve(1 << 20);
    std::vector<double> rates;
    std::size_t bytes = 0, lines = 0;
    for (int round = 0; round < 5; ++round) {
        auto t0 = std::chrono::steady_clock::now();
        lines = 0;
        for (int i = 0; i < n; ++i) {
            const st_conn_event& raw = recs[static_cast<std::size_t>(i) & 1023];
            Event ev = decode_record(&raw, sizeof(raw));
            const auto& c = std::get<ConnEvent>(ev);
            fmt->state(out, c);
            ++lines;
            if (c.newstate == 7) {
                fmt->close(out, c);
                ++lines;
            }
            if (out.size() > (1 << 19)) {
                bytes += out.size();
                out.clear();
            }
        }
        double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        rates.push_back(n / dt);
    }
    std::sort(rates.begin(), rates.end());
    std::printf("{\"records\":%d,\"rounds\":5,\"records_per_s_median\":%.0f,\"min\":%.0f,\"max\":%.0f,\"lines_per_round\":%zu}\n",
                n, rates[2], rates[0], rates[4], lines);
    return bytes == 0 && out.empty();  // keep the work observable
}
