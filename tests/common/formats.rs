//! Small independent decoders for what the server and the client write.

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
