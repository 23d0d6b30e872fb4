//! Wall-clock times for the CRI log and the exit record, without a date library:
//! RFC 3339 in UTC with a fixed 9-digit fraction, the layout kubelet writes and parses
//! (`2006-01-02T15:04:05.000000000Z07:00`, e.g. `2016-10-06T00:17:09.669794202Z`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Length of a formatted timestamp: `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
pub const LEN: usize = 30;

/// Seconds and nanoseconds since the Unix epoch (0 if the clock is before it).
fn since_epoch() -> (i64, u32) {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (
        i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        d.subsec_nanos(),
    )
}

/// Nanoseconds since the Unix epoch, for `ExitRecord::finished_at`.
pub fn now_ns() -> i64 {
    let (s, n) = since_epoch();
    s.saturating_mul(1_000_000_000).saturating_add(i64::from(n))
}

/// The current time, formatted.
pub fn now() -> [u8; LEN] {
    let (s, n) = since_epoch();
    format(s, n)
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day) in
/// the proleptic Gregorian calendar.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // March-based month, [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn put_digits(out: &mut [u8], mut value: u64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Format `secs` + `nanos` since the epoch. Years outside 0..=9999 wrap (they cannot
/// come from a working clock).
pub fn format(secs: i64, nanos: u32) -> [u8; LEN] {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400) as u64;
    let (year, month, day) = civil_from_days(days);
    let mut b = *b"0000-00-00T00:00:00.000000000Z";
    put_digits(&mut b[0..4], year.rem_euclid(10_000) as u64);
    put_digits(&mut b[5..7], u64::from(month));
    put_digits(&mut b[8..10], u64::from(day));
    put_digits(&mut b[11..13], sod / 3600);
    put_digits(&mut b[14..16], sod / 60 % 60);
    put_digits(&mut b[17..19], sod % 60);
    put_digits(&mut b[20..29], u64::from(nanos.min(999_999_999)));
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fmt(secs: i64, nanos: u32) -> String {
        String::from_utf8(format(secs, nanos).to_vec()).unwrap_or_default()
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(fmt(0, 0), "1970-01-01T00:00:00.000000000Z");
        // kubelet's own example record.
        assert_eq!(
            fmt(1_475_713_029, 669_794_202),
            "2016-10-06T00:17:09.669794202Z"
        );
        // Leap day, end of a leap year, a century that is not a leap year.
        assert_eq!(fmt(951_782_400, 1), "2000-02-29T00:00:00.000000001Z");
        assert_eq!(
            fmt(1_609_459_199, 999_999_999),
            "2020-12-31T23:59:59.999999999Z"
        );
        assert_eq!(fmt(4_107_542_400, 0), "2100-03-01T00:00:00.000000000Z");
        assert_eq!(fmt(-1, 0), "1969-12-31T23:59:59.000000000Z");
    }

    #[test]
    fn every_day_of_four_centuries_matches_a_naive_calendar() {
        let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for days in 0..(400 * 366) {
            assert_eq!(civil_from_days(days), (y, m, d), "day {days}");
            let month_len = match m {
                2 if leap(y) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            d += 1;
            if d > month_len {
                d = 1;
                m += 1;
                if m > 12 {
                    m = 1;
                    y += 1;
                }
            }
        }
    }

    #[test]
    fn now_is_well_formed() {
        let s = now();
        assert_eq!(s.len(), LEN);
        assert_eq!(s[LEN - 1], b'Z');
        assert!(now_ns() > 1_600_000_000_000_000_000);
    }
}
