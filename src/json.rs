//! Hand-written JSON output for the per-run records, the hot path of the
//! report and of `GET /test-groups/{id}`: a million-run report is close to
//! a gigabyte. Bytes are exactly what serde_json writes for the same
//! values (`tests/report_bytes.rs` holds the report to it); what is not
//! per run stays with serde.

use crate::time::write_rfc3339;
use uuid::Uuid;

/// Appends JSON to a byte buffer. Timestamps share the text of their second
/// with the one before, so most cost nine digits.
#[derive(Default)]
pub struct JsonOut {
    pub buf: Vec<u8>,
    /// The last second formatted and its `"YYYY-MM-DDTHH:MM:SS.` text.
    second: Option<(i64, [u8; 21])>,
}

impl JsonOut {
    pub fn with_capacity(n: usize) -> JsonOut {
        JsonOut {
            buf: Vec::with_capacity(n),
            second: None,
        }
    }

    /// Appends to `buf` (taken back from the `buf` field).
    pub fn on(buf: Vec<u8>) -> JsonOut {
        JsonOut { buf, second: None }
    }

    pub fn raw(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// `,"key":` (`key` written as given: no escaping).
    pub fn key(&mut self, key: &str) {
        self.buf.extend_from_slice(b",\"");
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    pub fn uint(&mut self, n: u64) {
        push_uint(&mut self.buf, n);
    }

    /// `,"key":n` when `n` is Some.
    pub fn opt_uint(&mut self, key: &str, n: Option<u64>) {
        if let Some(n) = n {
            self.key(key);
            self.uint(n);
        }
    }

    /// A string, quoted and escaped as serde_json escapes it.
    pub fn str(&mut self, s: &str) {
        push_str(&mut self.buf, s);
    }

    pub fn uuid(&mut self, id: &Uuid) {
        let mut text = [0u8; 36];
        self.buf.push(b'"');
        self.buf
            .extend_from_slice(id.hyphenated().encode_lower(&mut text).as_bytes());
        self.buf.push(b'"');
    }

    /// A timestamp (nanoseconds since the epoch), quoted RFC 3339.
    pub fn time(&mut self, ns: i128) {
        let secs = ns.div_euclid(1_000_000_000);
        let nanos = ns.rem_euclid(1_000_000_000) as u32;
        let prefix = match self.second {
            Some((s, text)) if s as i128 == secs => text,
            _ => {
                let mut text = String::with_capacity(32);
                let _ = write_rfc3339(&mut text, secs * 1_000_000_000);
                // Years 0..=9999: "YYYY-MM-DDTHH:MM:SS.000000000Z"; any
                // other is written whole, as rare as it is.
                let (Ok(s), 30) = (i64::try_from(secs), text.len()) else {
                    self.buf.push(b'"');
                    let _ = write_rfc3339(&mut Utf8Vec(&mut self.buf), ns);
                    self.buf.push(b'"');
                    return;
                };
                let mut prefix = [0u8; 21];
                prefix[0] = b'"';
                prefix[1..].copy_from_slice(&text.as_bytes()[..20]);
                self.second = Some((s, prefix));
                prefix
            }
        };
        self.buf.extend_from_slice(&prefix);
        let mut digits = [b'0'; 11];
        let mut n = nanos;
        for d in digits[..9].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        digits[9] = b'Z';
        digits[10] = b'"';
        self.buf.extend_from_slice(&digits);
    }
}

/// `fmt::Write` into a byte buffer.
struct Utf8Vec<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for Utf8Vec<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// `n` in decimal.
pub fn push_uint(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// `s` as a JSON string: text with nothing to escape is copied, anything
/// else goes through serde_json.
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Rfc3339;

    #[test]
    fn writes_what_serde_json_writes() {
        let mut out = JsonOut::default();
        for ns in [
            0i128,
            -1,
            999_999_999,
            1_000_000_000,
            1_795_963_805_190_836_322,
            1_795_963_805_990_836_322,
            -62_135_596_800_000_000_000,
            -62_135_596_800_000_000_001,
            253_402_300_800_000_000_000,
            i64::MAX as i128,
            i64::MIN as i128,
        ] {
            out.buf.clear();
            out.time(ns);
            let serde = serde_json::to_string(&Rfc3339(ns)).unwrap();
            assert_eq!(String::from_utf8_lossy(&out.buf), serde, "{ns}");
        }
        for n in [0, 7, 10, 99, 1234567890, u64::MAX] {
            out.buf.clear();
            out.uint(n);
            assert_eq!(out.buf, n.to_string().as_bytes());
        }
        for s in [
            "",
            "plain",
            "q\"uote",
            "back\\slash",
            "\u{1}\n\t",
            "✓ \u{7f}",
        ] {
            out.buf.clear();
            out.str(s);
            assert_eq!(out.buf, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }
}
