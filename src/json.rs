//! Hand-written JSON output for the per-run records, the hot path of the
//! report and of `GET /test-groups/{id}`: a million-run report is close to
//! a gigabyte. Bytes are exactly what serde_json writes for the same
//! values (`tests/report_bytes.rs` holds the report to it); what is not
//! per run stays with serde.

use crate::http::push_decimal;
use crate::time::write_rfc3339;
use uuid::Uuid;

/// Appends JSON to a byte buffer. Timestamps share the text of their second
/// with the one before, so most cost nine digits.
pub struct JsonOut {
    pub buf: Vec<u8>,
    /// The last seconds formatted and their `"YYYY-MM-DDTHH:MM:SS.` text:
    /// a record's timestamps alternate between a few (when a run was due,
    /// when it left), so one is not enough.
    seconds: [(i64, [u8; 21]); SECONDS],
    /// The entry to replace next.
    next: usize,
}

const SECONDS: usize = 4;

impl Default for JsonOut {
    fn default() -> JsonOut {
        JsonOut::on(Vec::new())
    }
}

impl JsonOut {
    pub fn with_capacity(n: usize) -> JsonOut {
        JsonOut::on(Vec::with_capacity(n))
    }

    /// Appends to `buf` (taken back from the `buf` field).
    pub fn on(buf: Vec<u8>) -> JsonOut {
        JsonOut {
            buf,
            // No timestamp falls in second i64::MIN.
            seconds: [(i64::MIN, [0; 21]); SECONDS],
            next: 0,
        }
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
        push_decimal(&mut self.buf, n);
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
        let (secs, nanos) = match i64::try_from(ns) {
            Ok(ns) => (
                ns.div_euclid(1_000_000_000),
                ns.rem_euclid(1_000_000_000) as u32,
            ),
            Err(_) => (i64::MIN, 0),
        };
        let prefix = match self.seconds.iter().find(|(s, _)| *s == secs) {
            Some((_, text)) => *text,
            None => {
                let mut text = String::with_capacity(32);
                let _ = write_rfc3339(&mut text, secs as i128 * 1_000_000_000);
                // Years 0..=9999 within an i64 of nanoseconds:
                // "YYYY-MM-DDTHH:MM:SS.000000000Z"; any other is written
                // whole, as rare as it is.
                if secs == i64::MIN || text.len() != 30 {
                    self.buf.push(b'"');
                    let _ = write_rfc3339(&mut Utf8Vec(&mut self.buf), ns);
                    self.buf.push(b'"');
                    return;
                }
                let mut prefix = [0u8; 21];
                prefix[0] = b'"';
                prefix[1..].copy_from_slice(&text.as_bytes()[..20]);
                self.seconds[self.next] = (secs, prefix);
                self.next = (self.next + 1) % SECONDS;
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

/// What [`stream_array_member`] does with the array's elements.
pub trait Elements {
    /// Takes the element at the start of `text` (which runs to the end of
    /// what has arrived) if it has the one layout read fast, and returns
    /// its length; None hands it to [`Elements::element`] instead.
    fn quick(&mut self, text: &[u8]) -> Option<usize>;

    /// Takes an element from its whole text.
    fn element(&mut self, text: &[u8]) -> Result<(), String>;
}

/// Reads a JSON object from `reader` as it streams in and hands each
/// element of its top-level array member `field` to `each` as its own text,
/// so that a million-element array is never held whole and each element is
/// parsed from a slice (serde_json reads a slice several times faster than
/// a reader, and borrows its strings). Returns the object's text without
/// that member, for serde; JSON errors inside a member or an element are
/// left to serde to find.
pub fn stream_array_member(
    reader: &mut dyn std::io::Read,
    field: &str,
    each: &mut dyn Elements,
) -> Result<Vec<u8>, String> {
    const READ: usize = 256 << 10;
    let mut buf: Vec<u8> = Vec::with_capacity(2 * READ);
    let mut rest = Vec::new();
    let mut s = Scan::default();
    loop {
        // Keep only what is not yet handed on.
        let keep = if s.in_array {
            s.elem_start
        } else {
            s.member_start.min(s.pos)
        };
        if keep > READ {
            buf.drain(..keep);
            s.shift(keep);
        }
        let len = buf.len();
        buf.resize(len + READ, 0);
        let n = loop {
            match reader.read(&mut buf[len..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.to_string()),
            }
        };
        buf.truncate(len + n);
        if n == 0 {
            return Err("the JSON ends early".into());
        }
        if s.scan(&buf, field, &mut rest, each)? {
            if buf[s.pos..].iter().any(|b| !b.is_ascii_whitespace()) {
                return Err("trailing characters after the JSON".into());
            }
            // Whatever is left of the stream must be blank too.
            let mut tail = Vec::new();
            reader.read_to_end(&mut tail).map_err(|e| e.to_string())?;
            if tail.iter().any(|b| !b.is_ascii_whitespace()) {
                return Err("trailing characters after the JSON".into());
            }
            return Ok(rest);
        }
    }
}

/// Where [`stream_array_member`]'s scan is; positions index its buffer.
#[derive(Default)]
struct Scan {
    pos: usize,
    depth: u32,
    in_str: bool,
    escaped: bool,
    /// Start of the top-level member being read.
    member_start: usize,
    /// The member being read is the array: it is not kept.
    skip_member: bool,
    in_array: bool,
    elem_start: usize,
    /// Where the element taken by [`Elements::quick`] ends.
    taken_end: Option<usize>,
    elements: u64,
}

impl Scan {
    fn shift(&mut self, by: usize) {
        self.pos -= by;
        self.member_start = self.member_start.saturating_sub(by);
        self.elem_start = self.elem_start.saturating_sub(by);
        self.taken_end = self.taken_end.map(|end| end - by);
    }

    /// Scans `buf` from `pos`; true once the top-level object is closed.
    fn scan(
        &mut self,
        buf: &[u8],
        field: &str,
        rest: &mut Vec<u8>,
        each: &mut dyn Elements,
    ) -> Result<bool, String> {
        let mut i = self.pos;
        while i < buf.len() {
            if self.in_array && i == self.elem_start && self.taken_end.is_none() && !self.in_str {
                if let Some(n) = each.quick(&buf[i..]) {
                    self.elements += 1;
                    i += n;
                    self.taken_end = Some(i);
                    continue;
                }
            }
            let b = buf[i];
            if self.in_str {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_str = false;
                } else {
                    // The rest of a plain string, at once.
                    while i + 1 < buf.len() && !matches!(buf[i + 1], b'"' | b'\\') {
                        i += 1;
                    }
                }
                i += 1;
                continue;
            }
            match b {
                b'"' => self.in_str = true,
                b'{' | b'[' => {
                    if self.depth == 0 {
                        if b != b'{' {
                            return Err("expected a JSON object".into());
                        }
                        rest.push(b'{');
                        self.member_start = i + 1;
                    } else if self.depth == 1
                        && b == b'['
                        && is_key(&buf[self.member_start..i], field)
                    {
                        self.in_array = true;
                        self.skip_member = true;
                        self.elem_start = i + 1;
                    }
                    self.depth += 1;
                }
                b'}' | b']' => {
                    if self.in_array && self.depth == 2 {
                        self.element(&buf[..i], false, each)?;
                        self.in_array = false;
                    }
                    self.depth = self.depth.checked_sub(1).ok_or("unbalanced JSON")?;
                    if self.depth == 0 {
                        self.member(&buf[self.member_start..i], rest);
                        rest.push(b'}');
                        self.pos = i + 1;
                        return Ok(true);
                    }
                }
                b',' if self.in_array && self.depth == 2 => {
                    self.element(&buf[..i], true, each)?;
                    self.elem_start = i + 1;
                }
                b',' if self.depth == 1 => {
                    self.member(&buf[self.member_start..i], rest);
                    self.member_start = i + 1;
                }
                _ if self.depth == 0 && !b.is_ascii_whitespace() => {
                    return Err("expected a JSON object".into());
                }
                _ => {}
            }
            i += 1;
        }
        self.pos = i;
        Ok(false)
    }

    /// The element that ends here (`buf` up to a `,` or `]`).
    fn element(&mut self, buf: &[u8], more: bool, each: &mut dyn Elements) -> Result<(), String> {
        if let Some(end) = self.taken_end.take() {
            return match buf[end..].iter().all(u8::is_ascii_whitespace) {
                true => Ok(()),
                false => Err(format!("unexpected text after element {}", self.elements)),
            };
        }
        let text = &buf[self.elem_start..];
        if text.iter().all(u8::is_ascii_whitespace) {
            // Only `[]` has no element.
            return match (more, self.elements) {
                (false, 0) => Ok(()),
                _ => Err(format!(
                    "element {} of the array is empty",
                    self.elements + 1
                )),
            };
        }
        self.elements += 1;
        each.element(text)
    }

    fn member(&mut self, text: &[u8], rest: &mut Vec<u8>) {
        if std::mem::take(&mut self.skip_member) {
            return;
        }
        if rest.len() > 1 {
            rest.push(b',');
        }
        rest.extend_from_slice(text);
    }
}

/// Whether `text` is `"field" :` (blanks allowed).
fn is_key(text: &[u8], field: &str) -> bool {
    let text = text.trim_ascii();
    let Some(key) = text.strip_suffix(b":") else {
        return false;
    };
    let key = key.trim_ascii();
    key.len() == field.len() + 2
        && key.starts_with(b"\"")
        && key.ends_with(b"\"")
        && &key[1..key.len() - 1] == field.as_bytes()
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

    fn split(json: &str, chunk: usize) -> Result<(String, Vec<String>), String> {
        struct Slow<'a>(&'a [u8], usize);
        impl std::io::Read for Slow<'_> {
            fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(self.1).min(out.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        /// Takes `q` elements quickly, the rest whole.
        struct Texts(Vec<String>);
        impl Elements for Texts {
            fn quick(&mut self, text: &[u8]) -> Option<usize> {
                text.starts_with(b"q")
                    .then(|| self.0.push("q".into()))
                    .map(|_| 1)
            }
            fn element(&mut self, text: &[u8]) -> Result<(), String> {
                self.0.push(String::from_utf8_lossy(text).trim().to_owned());
                Ok(())
            }
        }
        let mut texts = Texts(Vec::new());
        let rest = stream_array_member(&mut Slow(json.as_bytes(), chunk), "runs", &mut texts)?;
        let elements = texts.0;
        Ok((String::from_utf8(rest).unwrap(), elements))
    }

    #[test]
    fn streams_the_array_member_and_keeps_the_rest() {
        let json = r#" { "a": "x,]}\"[{", "runs" : [ {"k": "v,}"}, [1, 2], "s\\"] , "b": {"c": [1]} }
"#;
        for chunk in [1, 2, 7, 1 << 20] {
            let (rest, elements) = split(json, chunk).unwrap();
            assert_eq!(rest, r#"{ "a": "x,]}\"[{", "b": {"c": [1]} }"#, "{chunk}");
            assert_eq!(elements, [r#"{"k": "v,}"}"#, "[1, 2]", r#""s\\""#]);
        }
        let (rest, elements) = split(r#"{"runs":[],"a":1}"#, 3).unwrap();
        assert_eq!((rest.as_str(), elements.len()), (r#"{"a":1}"#, 0));
        let (rest, _) = split(r#"{"runs":null,"x":[2]}"#, 3).unwrap();
        assert_eq!(rest, r#"{"runs":null,"x":[2]}"#);
        for bad in [
            "",
            "[1]",
            r#"{"runs":[1,]}"#,
            r#"{"runs":[1,,2]}"#,
            "{} x",
            r#"{"a":1"#,
        ] {
            assert!(split(bad, 4).is_err(), "{bad}");
        }
    }
}
