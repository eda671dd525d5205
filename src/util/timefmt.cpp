#include "util/timefmt.h"

#include <time.h>

namespace scantrace {

namespace {

constexpr std::int64_t kNsPerSec = 1'000'000'000;
constexpr std::int64_t kSecPerDay = 86'400;

// Floor division: a pre-1970 instant belongs to the second (and day) that
// began before it, as with any calendar, not the one truncation toward zero
// would pick.
constexpr std::int64_t floor_div(std::int64_t a, std::int64_t b) {
    const std::int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

struct Civil {
    std::int64_t year;
    unsigned month;  // 1..12
    unsigned day;    // 1..31
};

// Proleptic Gregorian date of a day count since 1970-01-01. The year is
// shifted to start on March 1 so the leap day falls at the end of it, and the
// 400-year cycle (146097 days) repeats exactly, leaving only integer
// arithmetic within one era. Formatting a record this way costs a few
// divisions instead of a gmtime_r call.
constexpr Civil civil_from_days(std::int64_t days) {
    days += 719'468;  // 0000-03-01 to 1970-01-01
    const std::int64_t era = floor_div(days, 146'097);
    const auto doe = static_cast<unsigned>(days - era * 146'097);                // [0, 146096]
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;  // [0, 399]
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);                // [0, 365], from March 1
    const unsigned mp = (5 * doy + 2) / 153;                                     // [0, 11], March = 0
    const unsigned day = doy - (153 * mp + 2) / 5 + 1;
    const unsigned month = mp < 10 ? mp + 3 : mp - 9;
    const std::int64_t year = static_cast<std::int64_t>(yoe) + era * 400 + (month <= 2 ? 1 : 0);
    return {year, month, day};
}

static_assert(civil_from_days(0).year == 1970 && civil_from_days(0).month == 1 && civil_from_days(0).day == 1);
static_assert(civil_from_days(-1).year == 1969 && civil_from_days(-1).month == 12 && civil_from_days(-1).day == 31);
static_assert(civil_from_days(19'782).month == 2 && civil_from_days(19'782).day == 29);  // 2024-02-29

inline void put_digits(char* p, unsigned v, int width) {
    for (int i = width - 1; i >= 0; --i) {
        p[i] = static_cast<char>('0' + v % 10);
        v /= 10;
    }
}

std::int64_t clock_ns(clockid_t id) {
    timespec ts{};
    clock_gettime(id, &ts);
    return static_cast<std::int64_t>(ts.tv_sec) * kNsPerSec + ts.tv_nsec;
}

}  // namespace

void append_rfc3339_utc_us(std::string& out, std::int64_t unix_ns) {
    // Split with the remainder rather than secs * 1e9, which overflows near INT64_MIN.
    std::int64_t secs = unix_ns / kNsPerSec;
    std::int64_t sub = unix_ns % kNsPerSec;
    if (sub < 0) {
        sub += kNsPerSec;
        --secs;
    }
    const auto micros = static_cast<unsigned>(sub / 1000);  // truncated, never rounded up into the next second
    const std::int64_t days = floor_div(secs, kSecPerDay);
    const auto sod = static_cast<unsigned>(secs - days * kSecPerDay);
    const Civil c = civil_from_days(days);

    // An int64 of nanoseconds spans 1677..2262, always four digits.
    char buf[27] = {'0', '0', '0', '0', '-', '0', '0', '-', '0', '0', 'T', '0', '0', ':',
                    '0', '0', ':', '0', '0', '.', '0', '0', '0', '0', '0', '0', 'Z'};
    put_digits(buf, static_cast<unsigned>(c.year), 4);
    put_digits(buf + 5, c.month, 2);
    put_digits(buf + 8, c.day, 2);
    put_digits(buf + 11, sod / 3600, 2);
    put_digits(buf + 14, sod / 60 % 60, 2);
    put_digits(buf + 17, sod % 60, 2);
    put_digits(buf + 20, micros, 6);
    out.append(buf, sizeof buf);
}

std::string rfc3339_utc_us(std::int64_t unix_ns) {
    std::string s;
    append_rfc3339_utc_us(s, unix_ns);
    return s;
}

BootClock::BootClock() { resample(); }

void BootClock::resample() {
    // Bracket the realtime read between two boottime reads and pair it with
    // their midpoint, so a preemption between the calls skews the offset by
    // at most half of the gap instead of all of it.
    const std::int64_t b1 = clock_ns(CLOCK_BOOTTIME);
    const std::int64_t r = clock_ns(CLOCK_REALTIME);
    const std::int64_t b2 = clock_ns(CLOCK_BOOTTIME);
    offset_ = r - (b1 + (b2 - b1) / 2);
}

std::uint64_t BootClock::now_boot_ns() { return static_cast<std::uint64_t>(clock_ns(CLOCK_BOOTTIME)); }

std::int64_t BootClock::now_unix_ns() { return clock_ns(CLOCK_REALTIME); }

}  // namespace scantrace
