// libFuzzer target: arbitrary bytes as a kernel ring-buffer record, through
// the decoder and both formatters; and as a process name / kernel string
// through the JSON writer. Every JSON line produced must parse and be a
// single line. Run by ctest for a bounded time (tests/fuzz in CMakeLists.txt).
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

#include <nlohmann/json.hpp>

#include "events/decode.h"
#include "output/json_writer.h"
#include "output/records.h"

using namespace scantrace;

namespace {

void check_lines(const std::string& out) {
    std::size_t start = 0;
    while (start < out.size()) {
        std::size_t nl = out.find('\n', start);
        if (nl == std::string::npos) std::abort();  // every record ends its line
        auto line = std::string_view(out).substr(start, nl - start);
        for (unsigned char c : line)
            if (c < 0x20) std::abort();  // no raw control byte inside a line
        if (!nlohmann::json::accept(line)) std::abort();
        start = nl + 1;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    static BootClock clock;
    static ServiceTable services = ServiceTable::parse("http 80/tcp\nssh 22/tcp\n");
    static auto json = make_formatter(OutputFormat::json, clock, services);
    static auto text = make_formatter(OutputFormat::text, clock, services);

    // 1. As a record: the decoder must reject or accept, never misread.
    // Give the bytes a plausible header half of the time, so the fuzzer
    // reaches the field mapping instead of dying on the size check.
    std::string buf(reinterpret_cast<const char*>(data), size);
    if (size >= sizeof(st_hdr) && (data[0] & 1)) {
        st_hdr h;
        std::memcpy(&h, buf.data(), sizeof(h));
        const std::uint16_t types[] = {ST_REC_CONN, ST_REC_LISTEN, ST_REC_SCAN_ALERT, ST_REC_DIST_ALERT};
        const std::uint16_t sizes[] = {sizeof(st_conn_event), sizeof(st_listen_event), sizeof(st_scan_alert),
                                       sizeof(st_dist_alert)};
        unsigned k = data[1] & 3;
        h.type = types[k];
        h.size = sizes[k];
        buf.resize(std::max<std::size_t>(buf.size(), sizes[k]));
        std::memcpy(buf.data(), &h, sizeof(h));
    }
    Event ev = decode_record(buf.data(), buf.size());
    std::string out;
    if (auto* c = std::get_if<ConnEvent>(&ev)) {
        json->state(out, *c);
        json->close(out, *c);
        check_lines(out);
        out.clear();
        text->state(out, *c);
        text->close(out, *c);
    } else if (auto* l = std::get_if<ListenEvent>(&ev)) {
        json->listen(out, *l, ListenKind::open, 0);
        check_lines(out);
    }

    // 2. As a string value.
    out.clear();
    JsonWriter w(out);
    w.begin_object().field("comm", std::string_view(reinterpret_cast<const char*>(data), size)).end_object();
    out += '\n';
    check_lines(out);
    return 0;
}
