//! The `Date` header (RFC 9110 §6.6.1): an origin server with a clock sends
//! one on every answer, in the IMF-fixdate form
//! `Sun, 06 Nov 1994 08:49:37 GMT`. It changes once a second, so each loop
//! thread formats it once a second and copies it into every answer.

use crate::event::clock::{Nanos, WallAnchor, SECOND};
use std::cell::Cell;

/// Length of an IMF-fixdate.
const LEN: usize = 29;

thread_local! {
    /// The last second formatted on this thread, and its text.
    static CACHE: Cell<(i64, [u8; LEN])> = const { Cell::new((i64::MIN, [0; LEN])) };
}

/// The `Date` of one connection: the text and the monotonic window in which
/// it holds, so an answer costs a comparison and a copy.
pub struct DateClock {
    anchor: WallAnchor,
    /// Monotonic instants `[from, until)` within one wall-clock second.
    from: Nanos,
    until: Nanos,
    text: [u8; LEN],
}

impl DateClock {
    pub fn new(anchor: WallAnchor) -> DateClock {
        DateClock {
            anchor,
            from: 1,
            until: 0,
            text: [0; LEN],
        }
    }

    /// Appends the IMF-fixdate of monotonic instant `now` to `out`.
    pub fn push(&mut self, out: &mut Vec<u8>, now: Nanos) {
        if now < self.from || now >= self.until {
            let wall = self.anchor.wall(now);
            let into_second = wall.rem_euclid(SECOND as i128) as Nanos;
            self.from = now.saturating_sub(into_second);
            self.until = self.from.saturating_add(SECOND);
            self.text = http_date(wall.div_euclid(SECOND as i128) as i64);
        }
        out.extend_from_slice(&self.text);
    }
}

/// The IMF-fixdate of `unix_secs` (seconds since the epoch), formatted once
/// a second per thread.
fn http_date(unix_secs: i64) -> [u8; LEN] {
    CACHE.with(|cache| {
        let (second, text) = cache.get();
        if second == unix_secs {
            return text;
        }
        let text = imf_fixdate(unix_secs);
        cache.set((unix_secs, text));
        text
    })
}

fn imf_fixdate(unix_secs: i64) -> [u8; LEN] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    let (year, month, day) = crate::time::civil_from_days(days);
    // Four digits: years outside 0..=9999 cannot be written in this form.
    let year = year.clamp(0, 9999) as u32;
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[days.rem_euclid(7) as usize]);
    two_digits(&mut out[5..7], day);
    out[8..11].copy_from_slice(MONTHS[(month - 1) as usize % 12]);
    two_digits(&mut out[12..14], year / 100);
    two_digits(&mut out[14..16], year % 100);
    two_digits(&mut out[17..19], (secs / 3600) as u32);
    two_digits(&mut out[20..22], (secs / 60 % 60) as u32);
    two_digits(&mut out[23..25], (secs % 60) as u32);
    out
}

fn two_digits(out: &mut [u8], n: u32) {
    out[0] = b'0' + (n / 10 % 10) as u8;
    out[1] = b'0' + (n % 10) as u8;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(secs: i64) -> String {
        String::from_utf8(http_date(secs).to_vec()).unwrap()
    }

    #[test]
    fn formats_imf_fixdate() {
        assert_eq!(date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        // RFC 9110's own example.
        assert_eq!(date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(date(1_709_164_799), "Wed, 28 Feb 2024 23:59:59 GMT");
        assert_eq!(date(1_709_251_200), "Fri, 01 Mar 2024 00:00:00 GMT");
        // The cache answers the same second again, and a new one anew.
        assert_eq!(date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(date(-1), "Wed, 31 Dec 1969 23:59:59 GMT");
    }

    #[test]
    fn a_connection_formats_anew_at_each_wall_second() {
        // Monotonic 5 s is wall 784111777.75 s.
        let anchor = WallAnchor::fixed(5 * SECOND, 784_111_777_750_000_000);
        let mut clock = DateClock::new(anchor);
        let at = |clock: &mut DateClock, now: Nanos| {
            let mut out = Vec::new();
            clock.push(&mut out, now);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(at(&mut clock, 5 * SECOND), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            at(&mut clock, 5 * SECOND + 249_999_999),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            at(&mut clock, 5 * SECOND + 250_000_000),
            "Sun, 06 Nov 1994 08:49:38 GMT"
        );
        assert_eq!(
            at(&mut clock, 5 * SECOND - 750_000_001),
            "Sun, 06 Nov 1994 08:49:36 GMT"
        );
    }
}
