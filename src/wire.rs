//! The JSON contract shared by the server, the client and the report.
//!
//! Field names follow the original tool (`original-*.json`). Run bodies are
//! shown as readable strings: `data` holds the body as text; when the body is
//! not valid UTF-8, `data` holds a lossy rendering for people and
//! `data_base64` the exact bytes, and readers take `data_base64` when it is
//! present. Durations are integer nanoseconds; timestamps RFC 3339.

use crate::http::url::Url;
use crate::json::JsonOut;
use crate::time::{parse_rfc3339, rfc3339};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::sync::Arc;
use uuid::Uuid;

pub const MAX_RUN_COUNT: u64 = 100_000_000;
pub const MAX_CONCURRENCY: u64 = 100_000;
/// Longest delay or timeout a group may ask for: one hour.
pub const MAX_DELAY_NS: u64 = 3_600_000_000_000;

/// A test group's configuration, as created over HTTP.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupConfig {
    pub description: String,
    pub run_count: u64,
    pub concurrency: u64,
    pub client_delay_ns: u64,
    pub server_delay_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_timeout_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Request headers whose values each run's record keeps (lower case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_headers: Option<Vec<String>>,
}

/// At most this many `record_headers`, each at most this long.
pub const MAX_RECORD_HEADERS: usize = 16;
pub const MAX_HEADER_NAME: usize = 64;

const FIELDS: &[&str] = &[
    "description",
    "run_count",
    "concurrency",
    "client_delay_ns",
    "server_delay_ns",
    "upstream_endpoint",
    "upstream_timeout_ns",
    "data",
    "record_headers",
];

impl GroupConfig {
    /// Parses and checks a create request's body; the error names the
    /// problem and the field.
    pub fn from_json(body: &[u8]) -> Result<GroupConfig, String> {
        // A UTF-8 byte order mark, as some editors write, is skipped.
        let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
        let value: Value =
            serde_json::from_slice(body).map_err(|e| format!("invalid JSON: {e}"))?;
        let Value::Object(map) = value else {
            return Err("the test group must be a JSON object".into());
        };
        serde_json::from_slice::<KeysOnce>(body).map_err(|e| e.to_string())?;
        if let Some(unknown) = map.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(format!(
                "unknown field '{unknown}' (expected one of: {})",
                FIELDS.join(", ")
            ));
        }
        let run_count = uint(&map, "run_count", MAX_RUN_COUNT)?.ok_or("run_count is required")?;
        if run_count < 1 {
            return Err("run_count must be at least 1".into());
        }
        let upstream_endpoint = string(&map, "upstream_endpoint")?.filter(|s| !s.is_empty());
        if let Some(endpoint) = &upstream_endpoint {
            Url::parse(endpoint).map_err(|e| format!("upstream_endpoint: {e}"))?;
        }
        Ok(GroupConfig {
            description: string(&map, "description")?.unwrap_or_default(),
            run_count,
            concurrency: uint(&map, "concurrency", MAX_CONCURRENCY)?
                .unwrap_or(0)
                .max(1),
            client_delay_ns: uint(&map, "client_delay_ns", MAX_DELAY_NS)?.unwrap_or(0),
            server_delay_ns: uint(&map, "server_delay_ns", MAX_DELAY_NS)?.unwrap_or(0),
            upstream_endpoint,
            upstream_timeout_ns: uint(&map, "upstream_timeout_ns", MAX_DELAY_NS)?
                .filter(|&t| t > 0),
            data: string(&map, "data")?,
            record_headers: record_headers(&map)?,
        })
    }
}

/// `record_headers`: header names, lowered, each once; an empty list is
/// none. `authorization` is refused: it carries the server's token.
fn record_headers(map: &Map<String, Value>) -> Result<Option<Vec<String>>, String> {
    const FIELD: &str = "record_headers";
    let list = match map.get(FIELD) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(other) => {
            return Err(format!(
                "{FIELD} must be an array of header names, not {}",
                kind(other)
            ))
        }
    };
    if list.len() > MAX_RECORD_HEADERS {
        return Err(format!(
            "{FIELD} names {} headers; at most {MAX_RECORD_HEADERS}",
            list.len()
        ));
    }
    let mut names: Vec<String> = Vec::with_capacity(list.len());
    for item in list {
        let Value::String(name) = item else {
            return Err(format!(
                "{FIELD} must hold header names (strings), not {}",
                kind(item)
            ));
        };
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || name.len() > MAX_HEADER_NAME || !name.bytes().all(token) {
            return Err(format!(
                "{FIELD}: '{name}' is not a header name (1 to {MAX_HEADER_NAME} letters, digits or !#$%&'*+-.^_`|~)"
            ));
        }
        let name = name.to_ascii_lowercase();
        if matches!(name.as_str(), "authorization" | "proxy-authorization") {
            return Err(format!(
                "{FIELD}: '{name}' carries credentials and is never recorded"
            ));
        }
        if names.contains(&name) {
            return Err(format!("{FIELD} names '{name}' twice"));
        }
        names.push(name);
    }
    Ok((!names.is_empty()).then_some(names))
}

/// Reads a JSON object's keys and fails on the first one given twice
/// (serde_json keeps the last silently).
struct KeysOnce;

impl<'de> Deserialize<'de> for KeysOnce {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Keys;
        impl<'de> serde::de::Visitor<'de> for Keys {
            type Value = KeysOnce;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<KeysOnce, A::Error> {
                let mut seen = std::collections::HashSet::new();
                while let Some(key) = access.next_key::<String>()? {
                    access.next_value::<serde::de::IgnoredAny>()?;
                    if !seen.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format!(
                            "field '{key}' is given twice"
                        )));
                    }
                }
                Ok(KeysOnce)
            }
        }
        d.deserialize_map(Keys)
    }
}

fn uint(map: &Map<String, Value>, field: &str, max: u64) -> Result<Option<u64>, String> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) if v <= max => Ok(Some(v)),
            (Some(_), _) => Err(format!("{field} must be at most {max}")),
            (None, Some(f)) if f < 0.0 => Err(format!("{field} must not be negative")),
            // Past 64 bits, JSON numbers arrive as floats.
            (None, Some(f)) if f.fract() == 0.0 && f > max as f64 => {
                Err(format!("{field} must be at most {max}"))
            }
            (None, _) => Err(format!("{field} must be a whole number")),
        },
        Some(other) => Err(format!("{field} must be a number, not {}", kind(other))),
    }
}

fn string(map: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(format!("{field} must be a string, not {}", kind(other))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A run body as JSON fields: readable text, plus exact bytes when needed.
pub struct DataFields<'a> {
    pub data: Cow<'a, str>,
    pub data_base64: Option<String>,
}

pub fn data_fields(bytes: &[u8]) -> DataFields<'_> {
    match std::str::from_utf8(bytes) {
        Ok(s) => DataFields {
            data: Cow::Borrowed(s),
            data_base64: None,
        },
        Err(_) => DataFields {
            data: String::from_utf8_lossy(bytes),
            data_base64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        },
    }
}

/// The exact bytes of a run body from its JSON fields.
pub fn data_bytes(data: Option<&str>, data_base64: Option<&str>) -> Result<Vec<u8>, String> {
    match data_base64 {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("data_base64 is not base64: {e}")),
        None => Ok(data.unwrap_or("").as_bytes().to_vec()),
    }
}

/// One run as the server records and shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerRunJson<'a> {
    pub run_id: uuid::Uuid,
    pub run_count: u64,
    pub time: Cow<'a, str>,
    #[serde(default)]
    pub data: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_base64: Option<String>,
    pub server_start: Cow<'a, str>,
    pub server_end: Cow<'a, str>,
    pub server_duration_ns: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_response_code: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_response_time_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_dns_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_connect_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_tls_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_subject: Option<Cow<'a, str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<HeaderValues>,
}

/// The values of a group's `record_headers` that a run's request carried,
/// in the group's order (a repeated header's values joined with `, `); a
/// JSON object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderValues(pub Vec<(Box<str>, Box<str>)>);

impl Serialize for HeaderValues {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, value) in &self.0 {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for HeaderValues {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Values;
        impl<'de> serde::de::Visitor<'de> for Values {
            type Value = HeaderValues;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object of header values")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut access: A,
            ) -> Result<HeaderValues, A::Error> {
                let mut values = Vec::new();
                while let Some((name, value)) = access.next_entry::<String, String>()? {
                    values.push((name.into(), value.into()));
                }
                Ok(HeaderValues(values))
            }
        }
        d.deserialize_map(Values)
    }
}

/// What the server learnt of its upstream during one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamOutcome {
    /// 0 when no answer arrived.
    pub code: u16,
    pub time_ns: u64,
    /// Name resolution time, when the host was a name.
    pub dns_ns: Option<u64>,
    /// TCP connect time to the upstream.
    pub connect_ns: Option<u64>,
    /// TLS handshake time, for https upstreams.
    pub tls_ns: Option<u64>,
    pub error: Option<Box<str>>,
}

/// What a run's record holds beyond its times and body, when anything:
/// boxed, so a plain run pays one pointer for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunExtra {
    pub upstream: Option<UpstreamOutcome>,
    /// The subject of the client certificate the run's connection presented
    /// (`--tls-client-ca`).
    pub client_cert_subject: Option<Arc<str>>,
    /// Present when the group has `record_headers`.
    pub headers: Option<HeaderValues>,
}

/// One recorded run, compact: what the server stores and what the client
/// holds of the server's record. Times are wall-clock nanoseconds since the
/// epoch. About 64 bytes plus the body; equal consecutive bodies share one
/// allocation.
#[derive(Debug, Clone)]
pub struct RecordedRun {
    pub run_id: Uuid,
    pub run_count: u64,
    pub server_start: i64,
    pub server_end: i64,
    pub data: Arc<[u8]>,
    pub extra: Option<Box<RunExtra>>,
}

impl RecordedRun {
    /// What the server learnt of its upstream during the run, if it had one.
    pub fn upstream(&self) -> Option<&UpstreamOutcome> {
        self.extra.as_deref().and_then(|e| e.upstream.as_ref())
    }

    /// 0 when the record ends before it starts. In i128, so a record from
    /// 1677 to 2262 gives its true length rather than an overflow.
    pub fn server_duration_ns(&self) -> u64 {
        let ns = self.server_end as i128 - self.server_start as i128;
        u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
    }

    /// Reads a run from its JSON, sharing `previous`'s body if equal.
    pub fn from_json(
        json: ServerRunJson<'_>,
        previous: Option<&Arc<[u8]>>,
    ) -> Result<RecordedRun, String> {
        let time = |field: &str, s: &str| match parse_rfc3339(s) {
            None => Err(format!(
                "run {}: {field} '{s}' is not an RFC 3339 time",
                json.run_count
            )),
            // An i64 of nanoseconds spans 1677-09-21 to 2262-04-11.
            Some(ns) => i64::try_from(ns).map_err(|_| {
                format!(
                    "run {}: {field} '{s}' is outside the times conntest can hold \
                     (1677-09-21 to 2262-04-11)",
                    json.run_count
                )
            }),
        };
        let server_start = time("server_start", &json.server_start)?;
        let server_end = time("server_end", &json.server_end)?;
        let data = match previous {
            // The common case, a text body like the one before: no copy.
            Some(p) if json.data_base64.is_none() && **p == *json.data.as_bytes() => Arc::clone(p),
            _ => {
                let bytes = data_bytes(Some(&json.data), json.data_base64.as_deref())?;
                match previous {
                    Some(p) if **p == *bytes => Arc::clone(p),
                    _ => Arc::from(bytes),
                }
            }
        };
        let upstream = match (
            json.upstream_response_code,
            json.upstream_response_time_ns,
            &json.error,
        ) {
            (None, None, None) => None,
            (code, time_ns, error) => Some(UpstreamOutcome {
                code: code.unwrap_or(0),
                time_ns: time_ns.unwrap_or(0),
                dns_ns: json.upstream_dns_ns,
                connect_ns: json.upstream_connect_ns,
                tls_ns: json.upstream_tls_ns,
                error: error.as_deref().map(Into::into),
            }),
        };
        let extra = match (upstream, json.client_cert_subject, json.headers) {
            (None, None, None) => None,
            (upstream, subject, headers) => Some(Box::new(RunExtra {
                upstream,
                client_cert_subject: subject.map(|s| Arc::from(&*s)),
                headers,
            })),
        };
        Ok(RecordedRun {
            run_id: json.run_id,
            run_count: json.run_count,
            server_start,
            server_end,
            data,
            extra,
        })
    }
}

/// Reads the server's runs in the layout [`write_run`] writes, fast: no
/// serde, timestamps that share their second's text with the one before
/// parsed from their nine digits. Anything else is left to serde.
#[derive(Default)]
pub struct QuickRuns {
    /// The last second read: its `YYYY-MM-DDTHH:MM:SS` text and value.
    second: Option<([u8; 19], i64)>,
}

impl QuickRuns {
    /// The run at the start of `text` and its length, if it is a run in
    /// [`write_run`]'s layout with no upstream and nothing escaped; what
    /// [`RecordedRun::from_json`] would make of it.
    pub fn run(
        &mut self,
        text: &[u8],
        previous: Option<&Arc<[u8]>>,
    ) -> Option<(RecordedRun, usize)> {
        let mut c = Cursor { b: text, i: 0 };
        c.lit(b"{\"run_id\":")?;
        let run_id = Uuid::try_parse_ascii(c.plain()?).ok()?;
        c.lit(b",\"run_count\":")?;
        let run_count = c.uint()?;
        c.lit(b",\"time\":")?;
        c.plain()?;
        c.lit(b",\"data\":")?;
        let data = c.plain()?;
        c.lit(b",\"server_start\":")?;
        let server_start = self.time(c.plain()?)?;
        c.lit(b",\"server_end\":")?;
        let server_end = self.time(c.plain()?)?;
        c.lit(b",\"server_duration_ns\":")?;
        c.uint()?;
        c.lit(b"}")?;
        let data = match previous {
            Some(p) if **p == *data => Arc::clone(p),
            _ => Arc::from(data),
        };
        let run = RecordedRun {
            run_id,
            run_count,
            server_start,
            server_end,
            data,
            extra: None,
        };
        Some((run, c.i))
    }

    /// A timestamp's nanoseconds, as [`parse_rfc3339`] reads it.
    fn time(&mut self, text: &[u8]) -> Option<i64> {
        let nine = |t: &[u8]| -> Option<i64> {
            let (digits, z) = (t.get(20..29)?, t.get(29..)?);
            if t.len() != 30 || t[19] != b'.' || z != b"Z" || !digits.iter().all(u8::is_ascii_digit)
            {
                return None;
            }
            Some(digits.iter().fold(0, |n, d| n * 10 + (d - b'0') as i64))
        };
        if let (Some((second, base)), Some(frac)) = (self.second, nine(text)) {
            if text[..19] == second {
                return base.checked_add(frac);
            }
        }
        let ns = i64::try_from(parse_rfc3339(std::str::from_utf8(text).ok()?)?).ok()?;
        if let Some(frac) = nine(text) {
            let mut second = [0u8; 19];
            second.copy_from_slice(&text[..19]);
            self.second = Some((second, ns - frac));
        }
        Some(ns)
    }
}

/// A position in a run's JSON text.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn lit(&mut self, s: &[u8]) -> Option<()> {
        (self.b.get(self.i..self.i + s.len())? == s).then(|| self.i += s.len())
    }

    /// A JSON number that is a u64, without leading zeros.
    fn uint(&mut self) -> Option<u64> {
        let digits = self.b[self.i..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let text = &self.b[self.i..self.i + digits];
        if digits == 0 || digits > 19 || (digits > 1 && text[0] == b'0') {
            return None;
        }
        self.i += digits;
        Some(text.iter().fold(0, |n, d| n * 10 + (d - b'0') as u64))
    }

    /// A string with nothing escaped, valid UTF-8: its bytes.
    fn plain(&mut self) -> Option<&'a [u8]> {
        self.lit(b"\"")?;
        let len = self.b[self.i..]
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        let text = &self.b[self.i..self.i + len];
        self.i += len;
        self.lit(b"\"")?;
        std::str::from_utf8(text).ok()?;
        Some(text)
    }
}

/// A run as JSON.
pub fn run_json(run: &RecordedRun) -> ServerRunJson<'_> {
    let data = data_fields(&run.data);
    let upstream = run.upstream();
    let extra = run.extra.as_deref();
    ServerRunJson {
        run_id: run.run_id,
        run_count: run.run_count,
        time: Cow::Owned(rfc3339(run.server_start as i128)),
        data: data.data,
        data_base64: data.data_base64,
        server_start: Cow::Owned(rfc3339(run.server_start as i128)),
        server_end: Cow::Owned(rfc3339(run.server_end as i128)),
        server_duration_ns: run.server_duration_ns(),
        upstream_response_code: upstream.map(|u| u.code),
        upstream_response_time_ns: upstream.map(|u| u.time_ns),
        upstream_connect_ns: upstream.and_then(|u| u.connect_ns),
        upstream_tls_ns: upstream.and_then(|u| u.tls_ns),
        upstream_dns_ns: upstream.and_then(|u| u.dns_ns),
        error: upstream.and_then(|u| u.error.as_deref()).map(Cow::Borrowed),
        client_cert_subject: extra
            .and_then(|e| e.client_cert_subject.as_deref())
            .map(Cow::Borrowed),
        headers: extra.and_then(|e| e.headers.clone()),
    }
}

/// A run's body as its JSON fields: `,"data":...` and, when not UTF-8,
/// `,"data_base64":...`.
pub fn write_data(out: &mut JsonOut, bytes: &[u8]) {
    let fields = data_fields(bytes);
    out.key("data");
    out.str(&fields.data);
    if let Some(b64) = &fields.data_base64 {
        out.key("data_base64");
        out.str(b64);
    }
}

/// A run as JSON, the bytes serde_json writes for [`run_json`], faster.
pub fn write_run(out: &mut JsonOut, run: &RecordedRun) {
    out.raw(b"{\"run_id\":");
    out.uuid(&run.run_id);
    out.key("run_count");
    out.uint(run.run_count);
    out.key("time");
    out.time(run.server_start as i128);
    write_data(out, &run.data);
    out.key("server_start");
    out.time(run.server_start as i128);
    out.key("server_end");
    out.time(run.server_end as i128);
    out.key("server_duration_ns");
    out.uint(run.server_duration_ns());
    if let Some(extra) = run.extra.as_deref() {
        write_extra(out, extra);
    }
    out.raw(b"}");
}

/// A run's fields beyond its times, in [`ServerRunJson`]'s order.
fn write_extra(out: &mut JsonOut, extra: &RunExtra) {
    if let Some(up) = &extra.upstream {
        out.opt_uint("upstream_response_code", Some(up.code as u64));
        out.opt_uint("upstream_response_time_ns", Some(up.time_ns));
        out.opt_uint("upstream_dns_ns", up.dns_ns);
        out.opt_uint("upstream_connect_ns", up.connect_ns);
        out.opt_uint("upstream_tls_ns", up.tls_ns);
        if let Some(error) = &up.error {
            out.key("error");
            out.str(error);
        }
    }
    if let Some(subject) = &extra.client_cert_subject {
        out.key("client_cert_subject");
        out.str(subject);
    }
    if let Some(headers) = &extra.headers {
        out.key("headers");
        out.raw(b"{");
        for (i, (name, value)) in headers.0.iter().enumerate() {
            if i > 0 {
                out.raw(b",");
            }
            out.str(name);
            out.raw(b":");
            out.str(value);
        }
        out.raw(b"}");
    }
}

/// A group's runs read from JSON one at a time into compact records, so a
/// million-run group never exists as a million JSON objects.
#[derive(Debug, Default)]
pub struct RecordedRuns(pub Vec<RecordedRun>);

impl<'de> Deserialize<'de> for RecordedRuns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Runs;
        impl<'de> serde::de::Visitor<'de> for Runs {
            type Value = RecordedRuns;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array of test runs")
            }
            fn visit_unit<E>(self) -> Result<RecordedRuns, E> {
                Ok(RecordedRuns::default())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RecordedRuns, A::Error> {
                let mut runs: Vec<RecordedRun> =
                    Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(json) = seq.next_element::<ServerRunJson<'_>>()? {
                    let run = RecordedRun::from_json(json, runs.last().map(|r| &r.data))
                        .map_err(serde::de::Error::custom)?;
                    runs.push(run);
                }
                Ok(RecordedRuns(runs))
            }
        }
        d.deserialize_any(Runs)
    }
}

/// A group's header fields, everything but its runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupHeader {
    pub run_group_id: uuid::Uuid,
    pub created_at: String,
    #[serde(flatten)]
    pub config: GroupConfig,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorded(server_start: &str) -> Result<RecordedRun, String> {
        let json = format!(
            r#"{{"run_id": "6f1c2b1e-0f6e-4a51-9c7e-2b1d3f4a5b6c", "run_count": 7,
                "time": "{server_start}", "data": "x", "server_start": "{server_start}",
                "server_end": "2026-11-25T08:00:00Z", "server_duration_ns": 0}}"#
        );
        let json: ServerRunJson<'_> = serde_json::from_str(&json).unwrap();
        RecordedRun::from_json(json, None)
    }

    #[test]
    fn times_beyond_an_i64_of_nanoseconds_are_errors_not_wrapped() {
        let ok = recorded("2262-04-11T23:47:16.854775807Z").unwrap();
        assert_eq!(ok.server_start, i64::MAX);
        let ok = recorded("1677-09-21T00:12:43.145224192Z").unwrap();
        assert_eq!(ok.server_start, i64::MIN);
        for far in [
            "2262-04-11T23:47:16.854775808Z",
            "2300-01-01T00:00:00Z",
            "1500-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
        ] {
            let e = recorded(far).unwrap_err();
            assert!(
                e.contains("run 7: server_start") && e.contains("outside"),
                "{far}: {e}"
            );
        }
    }

    #[test]
    fn quick_runs_read_what_serde_reads() {
        let body: Arc<[u8]> = Arc::from(&b"3b6f1c2e-8a4d-4f6b-9c1e-7d2a5b8e0f13"[..]);
        let mut runs = Vec::new();
        for (i, start) in [
            0i64,
            999_999_999,
            1_000_000_000,
            -1,
            1_795_963_805_190_836_322,
        ]
        .into_iter()
        .enumerate()
        {
            runs.push(RecordedRun {
                run_id: Uuid::from_u64_pair(i as u64, 77),
                run_count: [0, 1, 10, u64::MAX / 2, 123_456][i],
                server_start: start,
                server_end: start.saturating_add(3_517),
                data: if i == 3 {
                    Arc::from(&b""[..])
                } else {
                    Arc::clone(&body)
                },
                extra: None,
            });
        }
        let mut text = JsonOut::default();
        for run in &runs {
            write_run(&mut text, run);
        }
        let mut quick = QuickRuns::default();
        let (mut at, mut previous) = (0, None::<Arc<[u8]>>);
        for run in &runs {
            let (read, len) = quick.run(&text.buf[at..], previous.as_ref()).unwrap();
            let json: ServerRunJson<'_> = serde_json::from_slice(&text.buf[at..at + len]).unwrap();
            let serde = RecordedRun::from_json(json, previous.as_ref()).unwrap();
            assert_eq!(format!("{read:?}"), format!("{serde:?}"));
            assert_eq!(format!("{read:?}"), format!("{run:?}"));
            if let Some(p) = &previous {
                assert_eq!(Arc::ptr_eq(p, &read.data), Arc::ptr_eq(p, &serde.data));
            }
            previous = Some(read.data);
            at += len;
        }
        // Anything else is left to serde.
        for other in [
            r#"{"run_id":"x","run_count":1}"#,
            r#"{ "run_id":"6f1c2b1e-0f6e-4a51-9c7e-2b1d3f4a5b6c"}"#,
            r#"{"run_id":"6f1c2b1e-0f6e-4a51-9c7e-2b1d3f4a5b6c","run_count":01,"#,
        ] {
            assert!(quick.run(other.as_bytes(), None).is_none(), "{other}");
        }
        let mut upstream = runs[1].clone();
        upstream.extra = Some(Box::new(RunExtra {
            upstream: Some(UpstreamOutcome {
                code: 200,
                time_ns: 1,
                dns_ns: None,
                connect_ns: None,
                tls_ns: None,
                error: None,
            }),
            ..RunExtra::default()
        }));
        let mut escaped = runs[1].clone();
        escaped.data = Arc::from(&b"a\"b"[..]);
        for run in [upstream, escaped] {
            let mut text = JsonOut::default();
            write_run(&mut text, &run);
            assert!(quick.run(&text.buf, None).is_none());
        }
    }

    #[test]
    fn extras_are_written_as_serde_writes_them_and_read_back() {
        let mut run = recorded("2026-11-25T08:00:00.5Z").unwrap();
        for extra in [
            RunExtra {
                client_cert_subject: Some(Arc::from("CN=conntest client, O=\"Test\"")),
                ..RunExtra::default()
            },
            RunExtra {
                headers: Some(HeaderValues(vec![
                    ("x-forwarded-for".into(), "127.0.0.1, 10.0.0.2".into()),
                    ("via".into(), "1.1 \u{1}nginx\\".into()),
                ])),
                ..RunExtra::default()
            },
            RunExtra {
                upstream: Some(UpstreamOutcome {
                    code: 502,
                    time_ns: 9,
                    dns_ns: Some(1),
                    connect_ns: None,
                    tls_ns: None,
                    error: Some("bad".into()),
                }),
                client_cert_subject: Some(Arc::from("CN=c")),
                headers: Some(HeaderValues::default()),
            },
        ] {
            run.extra = Some(Box::new(extra));
            let mut text = JsonOut::default();
            write_run(&mut text, &run);
            assert_eq!(
                String::from_utf8_lossy(&text.buf),
                serde_json::to_string(&run_json(&run)).unwrap()
            );
            assert!(QuickRuns::default().run(&text.buf, None).is_none());
            let json: ServerRunJson<'_> = serde_json::from_slice(&text.buf).unwrap();
            let back = RecordedRun::from_json(json, None).unwrap();
            assert_eq!(back.extra, run.extra);
        }
    }

    #[test]
    fn record_headers_are_header_names_lowered_each_once() {
        let c = GroupConfig::from_json(
            br#"{"run_count": 1, "record_headers": ["X-Forwarded-For", "via"]}"#,
        )
        .unwrap();
        assert_eq!(
            c.record_headers,
            Some(vec!["x-forwarded-for".to_owned(), "via".to_owned()])
        );
        let none = GroupConfig::from_json(br#"{"run_count": 1, "record_headers": []}"#).unwrap();
        assert_eq!(none.record_headers, None);
        let many: Vec<String> = (0..17).map(|i| format!("\"h{i}\"")).collect();
        for (list, needle) in [
            (
                "\"via\"".to_owned(),
                "must be an array of header names, not a string",
            ),
            (
                "[1]".to_owned(),
                "must hold header names (strings), not a number",
            ),
            ("[\"\"]".to_owned(), "'' is not a header name"),
            ("[\"x y\"]".to_owned(), "'x y' is not a header name"),
            (
                format!("[\"{}\"]", "a".repeat(65)),
                "is not a header name (1 to 64",
            ),
            ("[\"Via\", \"VIA\"]".to_owned(), "names 'via' twice"),
            (
                "[\"Authorization\"]".to_owned(),
                "'authorization' carries credentials",
            ),
            (
                format!("[{}]", many.join(",")),
                "names 17 headers; at most 16",
            ),
        ] {
            let e = err(&format!(r#"{{"run_count": 1, "record_headers": {list}}}"#));
            assert!(
                e.starts_with("record_headers") && e.contains(needle),
                "{list}: {e}"
            );
        }
    }

    #[test]
    fn durations_across_the_whole_range_do_not_overflow() {
        let mut run = recorded("1677-09-21T00:12:43.145224192Z").unwrap();
        run.server_end = i64::MAX;
        assert_eq!(run.server_duration_ns(), u64::MAX);
        run.server_end = i64::MIN;
        run.server_start = i64::MAX;
        assert_eq!(run.server_duration_ns(), 0);
    }

    fn err(body: &str) -> String {
        GroupConfig::from_json(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn accepts_the_seed_example() {
        let c = GroupConfig::from_json(
            br#"{"description": "example test group", "run_count": 1000, "concurrency": 5,
                "client_delay_ns": 100, "upstream_endpoint": "https://internal.example.net", "server_delay_ns": 0}"#,
        )
        .unwrap();
        assert_eq!(c.run_count, 1000);
        assert_eq!(c.concurrency, 5);
        assert_eq!(
            c.upstream_endpoint.as_deref(),
            Some("https://internal.example.net")
        );
        assert_eq!(c.upstream_timeout_ns, None);
    }

    #[test]
    fn concurrency_absent_or_zero_means_one() {
        assert_eq!(
            GroupConfig::from_json(br#"{"run_count": 1}"#)
                .unwrap()
                .concurrency,
            1
        );
        assert_eq!(
            GroupConfig::from_json(br#"{"run_count": 1, "concurrency": 0}"#)
                .unwrap()
                .concurrency,
            1
        );
    }

    #[test]
    fn errors_name_the_problem_and_field() {
        assert!(err("{").starts_with("invalid JSON"));
        assert!(err("[]").contains("JSON object"));
        assert!(err(r#"{"run_cout": 5}"#).contains("unknown field 'run_cout'"));
        assert!(err(r#"{"concurrency": 5}"#).contains("run_count is required"));
        assert!(err(r#"{"run_count": 0}"#).contains("run_count must be at least 1"));
        assert!(err(r#"{"run_count": "5"}"#).contains("run_count must be a number, not a string"));
        assert!(err(r#"{"run_count": 5, "server_delay_ns": -1}"#)
            .contains("server_delay_ns must not be negative"));
        assert!(err(r#"{"run_count": 1.5}"#).contains("run_count must be a whole number"));
        assert!(err(r#"{"run_count": 1000000000}"#).contains("at most 100000000"));
        for huge in ["100000000000000000000", "1e300"] {
            let e = err(&format!(r#"{{"run_count": {huge}}}"#));
            assert!(e.contains("run_count must be at most 100000000"), "{e}");
        }
        assert!(err(r#"{"run_count": -1e30}"#).contains("must not be negative"));
        let e = err(r#"{"run_count": 1, "run_count": 2}"#);
        assert!(e.contains("field 'run_count' is given twice"), "{e}");
        assert!(err("[1, 2]").contains("JSON object"));
        assert!(err("\u{feff}").starts_with("invalid JSON"));
        assert_eq!(
            GroupConfig::from_json(b"\xEF\xBB\xBF{\"run_count\": 3}")
                .unwrap()
                .run_count,
            3
        );
        assert!(err(r#"{"run_count": 1, "upstream_endpoint": "ftp://x"}"#)
            .starts_with("upstream_endpoint:"));
        assert!(
            err(r#"{"run_count": 1, "description": 3}"#).contains("description must be a string")
        );
    }

    #[test]
    fn data_round_trips_exactly() {
        for body in [
            &b"plain"[..],
            "multi\nline ✓".as_bytes(),
            b"\xff\x00binary\x80",
            b"",
        ] {
            let f = data_fields(body);
            assert_eq!(
                data_bytes(Some(&f.data), f.data_base64.as_deref()).unwrap(),
                body
            );
            assert_eq!(f.data_base64.is_some(), std::str::from_utf8(body).is_err());
        }
    }
}
