//! Small independent decoders for what the server and the client write:
//! RFC 3339 timestamps, UUIDs, JSON files.

use serde_json::Value;
use std::path::Path;

/// Nanoseconds since the Unix epoch of an RFC 3339 UTC timestamp
/// (`2026-11-24T14:50:05.24190385Z`, fraction optional).
pub fn rfc3339_ns(s: &str) -> i128 {
    fn fail(s: &str) -> ! {
        panic!("not an RFC 3339 UTC timestamp: {s:?}")
    }
    let (date, time) = s.split_once('T').unwrap_or_else(|| fail(s));
    let time = time.strip_suffix('Z').unwrap_or_else(|| fail(s));
    let num = |t: &str| t.parse::<i64>().unwrap_or_else(|_| fail(s));
    let d: Vec<i64> = date.split('-').map(num).collect();
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let t: Vec<i64> = hms.split(':').map(num).collect();
    if d.len() != 3 || t.len() != 3 || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        fail(s);
    }
    if !(1..=12).contains(&d[1]) || !(1..=31).contains(&d[2]) {
        panic!("bad date: {s}");
    }
    let nanos = if frac.is_empty() {
        0
    } else {
        num(&format!("{frac:0<9}"))
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y, m, day) = (if d[1] <= 2 { d[0] - 1 } else { d[0] }, d[1], d[2]);
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + t[0] * 3_600 + t[1] * 60 + t[2];
    secs as i128 * 1_000_000_000 + nanos as i128
}

/// [`rfc3339_ns`] of a timestamp in exactly the server's format,
/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (UTC, nine fraction digits); panics on
/// any other shape.
pub fn rfc3339_ns_exact(s: &str) -> i128 {
    let b = s.as_bytes();
    let digits_at = |r: std::ops::Range<usize>| {
        r.into_iter()
            .all(|i| b.get(i).is_some_and(u8::is_ascii_digit))
    };
    let ok = b.len() == 30
        && digits_at(0..4)
        && b[4] == b'-'
        && digits_at(5..7)
        && b[7] == b'-'
        && digits_at(8..10)
        && b[10] == b'T'
        && digits_at(11..13)
        && b[13] == b':'
        && digits_at(14..16)
        && b[16] == b':'
        && digits_at(17..19)
        && b[19] == b'.'
        && digits_at(20..29)
        && b[29] == b'Z';
    assert!(ok, "not RFC 3339 UTC with nanoseconds: {s:?}");
    rfc3339_ns(s)
}

/// Whether `s` is a version 4 UUID of the RFC 4122 variant (hex digits in
/// either case).
pub fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
        && b.iter()
            .enumerate()
            .all(|(i, c)| [8, 13, 18, 23].contains(&i) || c.is_ascii_hexdigit())
        && b[14] == b'4'
        && b"89abAB".contains(&b[19])
}

/// Asserts that `s` is a lowercase version 4 UUID of the RFC 4122 variant,
/// as conntest writes them.
pub fn assert_uuid_v4(s: &str) {
    assert!(
        is_uuid_v4(s) && !s.bytes().any(|c| c.is_ascii_uppercase()),
        "not a lowercase version 4 UUID of the RFC 4122 variant: {s:?}"
    );
}

/// The JSON document in the file at `path`.
pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_slice(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// A JSON value that must be an unsigned integer.
pub fn u(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not an unsigned integer: {v}"))
}

/// A report summary's `runs`, `succeeded` and `failed`.
pub fn tally(summary: &Value) -> (u64, u64, u64) {
    (
        u(&summary["runs"]),
        u(&summary["succeeded"]),
        u(&summary["failed"]),
    )
}

/// The `run_count` of each run of a report's or a group's run array.
pub fn counts(list: &Value) -> Vec<u64> {
    list.as_array()
        .expect("an array")
        .iter()
        .map(|r| u(&r["run_count"]))
        .collect()
}
