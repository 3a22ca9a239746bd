//! `ctime`: the time format of Python's `time.ctime()` and C's `ctime(3)`,
//! `Sun Nov 22 10:00:00 2026`, in local time.

use std::time::{SystemTime, UNIX_EPOCH};

const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Seconds since the Unix epoch (1970-01-01 00:00:00 UTC); 0 for a clock set before it.
pub fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or(0)
}

/// `at` as local time in ctime form, without ctime's trailing newline.
pub fn ctime(at: SystemTime) -> String {
    ctime_of_unix_seconds(unix_seconds(at) as i64)
}

/// The current local time in ctime form.
pub fn ctime_now() -> String {
    ctime(SystemTime::now())
}

/// Unix seconds as local time in ctime form (the time zone comes from `TZ` or
/// `/etc/localtime`, as for every C program).
pub fn ctime_of_unix_seconds(seconds: i64) -> String {
    let time = seconds as nix::libc::time_t;
    // SAFETY: localtime_r only writes into the `tm` we own and reads `time`;
    // an all-zero `tm` is a valid value of the plain C struct.
    let mut tm: nix::libc::tm = unsafe { std::mem::zeroed() };
    let converted = unsafe { nix::libc::localtime_r(&time, &mut tm) };
    if converted.is_null() {
        return format!("@{seconds}");
    }
    // The fields are small non-negative numbers when localtime_r succeeds; `% 7` and
    // `% 12` keep an odd libc from making us index out of range.
    format!(
        "{} {} {:2} {:02}:{:02}:{:02} {}",
        DAYS[(tm.tm_wday.rem_euclid(7)) as usize],
        MONTHS[(tm.tm_mon.rem_euclid(12)) as usize],
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        tm.tm_year + 1900
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_of_ctime() {
        let text = ctime_now();
        // "Sun Nov 22 10:00:00 2026": 24 characters, like Python's time.ctime().
        assert_eq!(text.len(), 24, "{text}");
        assert!(DAYS.contains(&&text[0..3]), "{text}");
        assert!(MONTHS.contains(&&text[4..7]), "{text}");
        assert_eq!(&text[13..14], ":");
    }

    #[test]
    fn day_is_space_padded_like_python() {
        // 2026-11-02 12:00 UTC is the 2nd (or the 1st/3rd near the date line) in
        // every time zone; in all of them the day has one digit and a space before it.
        let text = ctime_of_unix_seconds(1_793_620_800);
        assert_eq!(&text[8..9], " ", "{text}");
        assert!(text.ends_with(" 2026"), "{text}");
    }

    #[test]
    fn unix_seconds_before_epoch_is_zero() {
        assert_eq!(unix_seconds(UNIX_EPOCH), 0);
        assert_eq!(
            unix_seconds(UNIX_EPOCH - std::time::Duration::from_secs(5)),
            0
        );
    }
}
