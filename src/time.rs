//! RFC 3339 timestamps with nanoseconds, UTC, as the original tool wrote them.
//!
//! Formatting and parsing are written out here (days-from-civil arithmetic)
//! rather than pulled from a date crate: the format is fixed and the code is
//! a few lines. Timestamps are integer nanoseconds since the Unix epoch.

use std::fmt::Write;

/// Go's zero `time.Time`, which the original wrote for unset timestamps.
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// A timestamp (nanoseconds since the epoch) that serializes as RFC 3339
/// straight into the output, with no string allocated per timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rfc3339(pub i128);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write_rfc3339(f, self.0)
    }
}

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Rfc3339 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        parse_rfc3339(&text)
            .map(Rfc3339)
            .ok_or_else(|| serde::de::Error::custom(format!("'{text}' is not an RFC 3339 time")))
    }
}

/// Writes `ns` (nanoseconds since the epoch) as `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
pub fn write_rfc3339(out: &mut impl Write, ns: i128) -> std::fmt::Result {
    let secs = ns.div_euclid(1_000_000_000) as i64;
    let nanos = ns.rem_euclid(1_000_000_000) as u32;
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
        y,
        m,
        d,
        sod / 3600,
        sod / 60 % 60,
        sod % 60,
        nanos
    )
}

/// `ns` as an RFC 3339 string.
pub fn rfc3339(ns: i128) -> String {
    Rfc3339(ns).to_string()
}

/// Parses an RFC 3339 timestamp (any fraction length, `Z` or a numeric
/// offset) into nanoseconds since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i128> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac: i128 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        let mut scale = 100_000_000i128;
        while i < b.len() && b[i].is_ascii_digit() {
            frac += (b[i] - b'0') as i128 * scale;
            scale /= 10;
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset_secs: i64 = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let off = oh * 3600 + om * 60;
            if *sign == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo as u32, d as u32);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_secs;
    Some(secs as i128 * 1_000_000_000 + frac)
}

// Howard Hinnant's algorithms, exact over the proleptic Gregorian calendar.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(1_795_963_805_190_836_322),
            "2026-11-29T14:50:05.190836322Z"
        );
        assert_eq!(
            rfc3339(951_782_400 * 1_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(
            serde_json::to_string(&Rfc3339(0)).unwrap(),
            "\"1970-01-01T00:00:00.000000000Z\""
        );
    }

    #[test]
    fn parses_what_it_formats_and_go_output() {
        for ns in [
            0i128,
            1,
            1_795_963_805_190_836_322,
            951_782_400_000_000_000,
            -62_135_596_800_000_000_000,
        ] {
            assert_eq!(parse_rfc3339(&rfc3339(ns)), Some(ns), "{ns}");
        }
        assert_eq!(
            parse_rfc3339("2026-11-24T14:50:05.24190385Z"),
            parse_rfc3339("2026-11-24T14:50:05.241903850Z")
        );
        assert_eq!(parse_rfc3339(ZERO_TIME), Some(-62_135_596_800_000_000_000));
        assert_eq!(
            parse_rfc3339("2026-11-24T15:50:05+01:00"),
            parse_rfc3339("2026-11-24T14:50:05Z")
        );
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "2026-11-24",
            "2026-13-01T00:00:00Z",
            "2026-11-24T14:50:05.Z",
            "2026-11-24T14:50:05",
            "2026-11-24T14:50:05Zx",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s}");
        }
    }
}
