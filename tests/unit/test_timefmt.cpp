#include <doctest/doctest.h>
#include <time.h>

#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>

#include "util/timefmt.h"

using namespace scantrace;

TEST_CASE("rfc3339 known instants") {
    CHECK(rfc3339_utc_us(0) == "1970-01-01T00:00:00.000000Z");
    CHECK(rfc3339_utc_us(1700000000123456789) == "2023-11-14T22:13:20.123456Z");
    CHECK(rfc3339_utc_us(1709210096789012345) == "2024-02-29T12:34:56.789012Z");  // leap day
    CHECK(rfc3339_utc_us(1709251199999999999) == "2024-02-29T23:59:59.999999Z");
    CHECK(rfc3339_utc_us(1709251200000000000) == "2024-03-01T00:00:00.000000Z");
    CHECK(rfc3339_utc_us(2147483648000000000) == "2038-01-19T03:14:08.000000Z");  // past 32-bit time_t
    CHECK(rfc3339_utc_us(4107542399999999999) == "2100-02-28T23:59:59.999999Z");  // 2100 is not leap
    CHECK(rfc3339_utc_us(4107542400000000000) == "2100-03-01T00:00:00.000000Z");
    CHECK(rfc3339_utc_us(std::numeric_limits<std::int64_t>::max()) == "2262-04-11T23:47:16.854775Z");
}

TEST_CASE("rfc3339 truncates nanoseconds") {
    CHECK(rfc3339_utc_us(999) == "1970-01-01T00:00:00.000000Z");
    CHECK(rfc3339_utc_us(1999) == "1970-01-01T00:00:00.000001Z");
    CHECK(rfc3339_utc_us(999999999) == "1970-01-01T00:00:00.999999Z");
    CHECK(rfc3339_utc_us(1700000000999999999) == "2023-11-14T22:13:20.999999Z");
}

TEST_CASE("rfc3339 before 1970") {
    // An instant before the epoch lies in the second that started before it.
    CHECK(rfc3339_utc_us(-1) == "1969-12-31T23:59:59.999999Z");
    CHECK(rfc3339_utc_us(-1000) == "1969-12-31T23:59:59.999999Z");
    CHECK(rfc3339_utc_us(-1001) == "1969-12-31T23:59:59.999998Z");
    CHECK(rfc3339_utc_us(-1000000000) == "1969-12-31T23:59:59.000000Z");
    CHECK(rfc3339_utc_us(-2203891200000000000) == "1900-03-01T00:00:00.000000Z");
    CHECK(rfc3339_utc_us(std::numeric_limits<std::int64_t>::min()) == "1677-09-21T00:12:43.145224Z");
}

TEST_CASE("rfc3339 agrees with gmtime_r over the int64 range") {
    std::mt19937_64 rng(42);
    std::uniform_int_distribution<std::int64_t> dist(std::numeric_limits<std::int64_t>::min(),
                                                     std::numeric_limits<std::int64_t>::max());
    int mismatches = 0;
    for (int i = 0; i < 20000; ++i) {
        const std::int64_t ns = dist(rng);
        std::int64_t secs = ns / 1000000000;
        std::int64_t sub = ns % 1000000000;
        if (sub < 0) {
            sub += 1000000000;
            --secs;
        }
        const time_t t = static_cast<time_t>(secs);
        tm parts{};
        REQUIRE(gmtime_r(&t, &parts) != nullptr);
        char want[40];
        std::snprintf(want, sizeof want, "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", parts.tm_year + 1900, parts.tm_mon + 1,
                      parts.tm_mday, parts.tm_hour, parts.tm_min, parts.tm_sec, static_cast<int>(sub / 1000));
        if (rfc3339_utc_us(ns) != want && ++mismatches <= 5)
            FAIL_CHECK(ns << ": " << rfc3339_utc_us(ns) << " != " << want);
    }
    CHECK(mismatches == 0);
}

TEST_CASE("append_rfc3339_utc_us appends") {
    std::string s = "ts=";
    append_rfc3339_utc_us(s, 0);
    CHECK(s == "ts=1970-01-01T00:00:00.000000Z");
}

TEST_CASE("BootClock maps boot time to wall time") {
    BootClock clock;
    const std::int64_t converted = clock.to_unix_ns(BootClock::now_boot_ns());
    const std::int64_t wall = BootClock::now_unix_ns();
    // Only a wall-clock step between the two reads could break this.
    CHECK(converted <= wall + 1000000);
    CHECK(wall - converted < 1000000000);
    CHECK(BootClock::now_boot_ns() > 0);
    clock.resample();
    CHECK(std::llabs(clock.to_unix_ns(BootClock::now_boot_ns()) - BootClock::now_unix_ns()) < 1000000000);
}
