//! The test-group API: routes a request to an answer, or to a test run for
//! the loop to carry out. No I/O and no clock here: the loop hands in the
//! wall-clock time of the request.

use super::metrics::{Metrics, Route};
use super::store::{Group, Store, StoreError};
use crate::event::clock::Nanos;
use crate::http::server::{BodySource, Request, Response};
use crate::http::url::{Scheme, Url};
use crate::http::Method;
use crate::time::rfc3339;
pub use crate::wire::run_json;
use crate::wire::{GroupConfig, GroupHeader};
use std::sync::{Arc, Mutex, MutexGuard};
use uuid::Uuid;

/// Access and safety settings of the API.
#[derive(Debug, Clone, Default)]
pub struct ApiPolicy {
    /// When set, every route but the probes (/healthz, /readyz) needs
    /// `Authorization: Bearer TOKEN`.
    pub token: Option<String>,
    /// When set, upstream endpoints must match one of these entries.
    pub upstream_allow: Option<Vec<AllowEntry>>,
}

/// One `--upstream-allow` entry: `host`, `host:port`, `[v6]:port`, or an
/// origin URL `http://host[:port]` (that scheme, and its default port when
/// none is given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowEntry {
    scheme: Option<Scheme>,
    /// Lowercase; an IP address in its canonical form, IPv6 without brackets.
    host: String,
    port: Option<u16>,
}

impl AllowEntry {
    /// Parses one entry; an error names it and says what is wrong.
    pub fn parse(entry: &str) -> Result<AllowEntry, String> {
        let bad = |why: &str| format!("'{entry}' {why}");
        if entry.contains("://") {
            let url = Url::parse(entry)?;
            if url.target != "/" {
                return Err(bad("names a path: give only scheme://host[:port]"));
            }
            return Ok(AllowEntry {
                scheme: Some(url.scheme),
                host: canonical_host(&url.host),
                port: Some(url.port),
            });
        }
        let (host, port) = if let Some(v6) = entry.strip_prefix('[') {
            let (host, rest) = v6
                .split_once(']')
                .ok_or_else(|| bad("has an unclosed '['"))?;
            match rest {
                "" => (host, None),
                _ => (
                    host,
                    Some(
                        rest.strip_prefix(':')
                            .ok_or_else(|| bad("has a bad port"))?,
                    ),
                ),
            }
        } else if entry.matches(':').count() > 1 {
            // A bare IPv6 address: its colons are not a port.
            (entry, None)
        } else {
            match entry.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (entry, None),
            }
        };
        if host.is_empty()
            || host.contains(['/', '@', '[', ']'])
            || host.contains(char::is_whitespace)
        {
            return Err(bad("is not a host, host:port or http://host:port"));
        }
        if host.contains(':') && host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("is not an IPv6 address (write [addr]:port)"));
        }
        let port = match port {
            None => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|&p| p != 0)
                    .ok_or_else(|| bad(&format!("has a bad port '{p}'")))?,
            ),
        };
        Ok(AllowEntry {
            scheme: None,
            host: canonical_host(host),
            port,
        })
    }

    fn matches(&self, url: &Url) -> bool {
        self.scheme.is_none_or(|s| s == url.scheme)
            && self.port.is_none_or(|p| p == url.port)
            && self.host == canonical_host(&url.host)
    }
}

impl std::fmt::Display for AllowEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.scheme {
            Some(Scheme::Http) => f.write_str("http://")?,
            Some(Scheme::Https) => f.write_str("https://")?,
            None => {}
        }
        f.write_str(&authority(&self.host, self.port))
    }
}

/// Parses a comma-separated `--upstream-allow` list; empty entries are skipped.
pub fn parse_allow_list(list: &str) -> Result<Vec<AllowEntry>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(AllowEntry::parse)
        .collect()
}

/// A host as entries and URLs are compared: lowercase, addresses canonical.
fn canonical_host(host: &str) -> String {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => host.to_ascii_lowercase(),
    }
}

/// `host:port`, an IPv6 host in brackets.
fn authority(host: &str, port: Option<u16>) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    match port {
        Some(p) => format!("{host}:{p}"),
        None => host,
    }
}

/// A test run the loop must carry out: upstream, delay, record, answer.
#[derive(Debug)]
pub struct RunOrder {
    pub group_id: Uuid,
    pub run_count: u64,
    pub body: Vec<u8>,
    pub upstream: Option<Url>,
    pub upstream_timeout: Option<Nanos>,
    pub delay: Nanos,
}

pub enum Action {
    Respond(Response),
    Run(RunOrder),
}

pub struct Api {
    store: Arc<Mutex<Store>>,
    policy: ApiPolicy,
    metrics: Metrics,
}

impl Api {
    pub fn new(store: Arc<Mutex<Store>>, policy: ApiPolicy) -> Api {
        Api {
            store,
            policy,
            metrics: Metrics::default(),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave a half-appended run
        // (Vec::push is all or nothing), so a poisoned lock is still usable.
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn handle(&self, request: Request, wall_now: i128) -> Action {
        let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        let method = request.method;
        let action = 'answer: {
            let probe = matches!(segments.as_slice(), ["healthz"] | ["readyz"]);
            if !probe && !self.authorized(&request) {
                break 'answer Action::Respond(
                    Response::error(
                        401,
                        "missing or wrong bearer token (Authorization: Bearer TOKEN)",
                    )
                    .with_header("WWW-Authenticate", "Bearer".into()),
                );
            }
            let get = matches!(method, Method::Get | Method::Head);
            Action::Respond(match segments.as_slice() {
                ["healthz"] if get => Response::json(200, b"{\"status\":\"ok\"}\n".to_vec()),
                // Ready to take runs: the in-memory store always is; a server
                // shutting down answers every new request 503, this one too.
                ["readyz"] if get => Response::json(200, b"{\"status\":\"ready\"}\n".to_vec()),
                ["metrics"] if get => Response::json(200, self.metrics.render().into_bytes())
                    .with_header("Content-Type", super::metrics::CONTENT_TYPE.into()),
                ["test-groups"] if get => self.list(),
                ["test-groups", "create"] if method == Method::Post => {
                    self.create(&request.body, wall_now)
                }
                ["test-groups", "create"] => method_not_allowed(&segments),
                ["test-groups", id] if get => self.show(id),
                ["test-groups", id, "status"] if get => self.status(id),
                ["test-groups", id] if method == Method::Delete => self.delete(id),
                ["test-groups", id, count] if method == Method::Post => {
                    break 'answer match self.run_order(id, count, request.body) {
                        Ok(order) => Action::Run(order),
                        Err(response) => Action::Respond(response),
                    }
                }
                ["healthz"] | ["readyz"] | ["metrics"] | ["test-groups"] | ["test-groups", _] => {
                    method_not_allowed(&segments)
                }
                ["test-groups", _, _] => method_not_allowed(&segments),
                _ => Response::error(
                    404,
                    &format!("no route for {} {}", method.as_str(), request.path),
                ),
            })
        };
        // Answered here, counted here; a run is counted when it is answered.
        if let Action::Respond(response) = &action {
            self.metrics.request(Route::of(&segments), response.status);
        }
        action
    }

    fn authorized(&self, request: &Request) -> bool {
        let Some(token) = &self.policy.token else {
            return true;
        };
        // `Bearer` in any case, then one or more spaces (RFC 7235).
        let given = request.authorization.as_deref().unwrap_or(b"");
        let scheme = b"bearer ";
        let credentials = match given.get(..scheme.len()) {
            Some(s) if s.eq_ignore_ascii_case(scheme) => &given[scheme.len()..],
            _ => return false,
        };
        let credentials = credentials.trim_ascii_start();
        constant_time_eq(credentials, token.as_bytes())
    }

    fn create(&self, body: &[u8], wall_now: i128) -> Response {
        let config = match GroupConfig::from_json(body) {
            Ok(c) => c,
            Err(e) => return Response::error(400, &e),
        };
        if let (Some(endpoint), Some(allow)) =
            (&config.upstream_endpoint, &self.policy.upstream_allow)
        {
            if let Err(e) = check_allowed(endpoint, allow) {
                return Response::error(400, &e);
            }
        }
        let mut store = self.store();
        match store.create(config, rfc3339(wall_now)) {
            Ok(group) => {
                crate::debug!("created group {}", group.header.run_group_id);
                let mut body = header_json(&group.header);
                body.extend_from_slice(b",\"test_runs\":[]}\n");
                Response::json(200, body)
            }
            Err(e) => store_error(e),
        }
    }

    fn list(&self) -> Response {
        let store = self.store();
        let groups: Vec<serde_json::Value> = store
            .groups()
            .into_iter()
            .map(|g| {
                let mut v = serde_json::to_value(&g.header).unwrap_or_default();
                v["recorded_runs"] = g.runs.len().into();
                v
            })
            .collect();
        let mut body = serde_json::to_vec(&groups).unwrap_or_default();
        body.push(b'\n');
        Response::json(200, body)
    }

    fn show(&self, id: &str) -> Response {
        let Some(id) = self.known_group(id) else {
            return unknown_group(id);
        };
        Response::stream(
            200,
            Box::new(GroupStream {
                store: Arc::clone(&self.store),
                id,
                next_run: None,
            }),
        )
    }

    fn delete(&self, id: &str) -> Response {
        let deleted = Uuid::parse_str(id).is_ok_and(|uuid| self.store().delete(&uuid));
        if deleted {
            Response::json(200, format!("{{\"deleted\":\"{id}\"}}\n").into_bytes())
        } else {
            unknown_group(id)
        }
    }

    fn known_group(&self, id: &str) -> Option<Uuid> {
        let uuid = Uuid::parse_str(id).ok()?;
        self.store().get(&uuid).is_some().then_some(uuid)
    }

    fn run_order(&self, id: &str, count: &str, body: Vec<u8>) -> Result<RunOrder, Response> {
        let run_count = match count.parse::<u64>() {
            Ok(n) if n >= 1 && count.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => {
                return Err(Response::error(
                    400,
                    &format!("run count '{count}' is not a positive integer"),
                ))
            }
        };
        let mut store = self.store();
        let group = Uuid::parse_str(id).ok().and_then(|uuid| store.get(&uuid));
        let Some(group) = group else {
            return Err(unknown_group(id));
        };
        store.check_room().map_err(store_error)?;
        let config = &group.header.config;
        let order = RunOrder {
            group_id: group.header.run_group_id,
            run_count,
            body,
            upstream: config
                .upstream_endpoint
                .as_deref()
                .and_then(|e| Url::parse(e).ok()),
            upstream_timeout: config.upstream_timeout_ns,
            delay: config.server_delay_ns,
        };
        // In progress until the loop records it (`Store::record`).
        store.begin(&order.group_id);
        Ok(order)
    }

    /// How many runs the group holds and how many are still in progress
    /// (received, not yet recorded): a client compares once none is.
    fn status(&self, id: &str) -> Response {
        let store = self.store();
        let Some(group) = Uuid::parse_str(id).ok().and_then(|uuid| store.get(&uuid)) else {
            return unknown_group(id);
        };
        let body = serde_json::json!({
            "run_group_id": group.header.run_group_id,
            "recorded_runs": group.runs.len(),
            "runs_in_progress": group.in_progress,
        });
        let mut body = serde_json::to_vec(&body).unwrap_or_default();
        body.push(b'\n');
        Response::json(200, body)
    }
}

fn method_not_allowed(segments: &[&str]) -> Response {
    let allow = match segments {
        ["test-groups", "create"] => "POST",
        ["test-groups", _] => "GET, HEAD, DELETE",
        ["test-groups", _, _] => "POST",
        _ => "GET, HEAD",
    };
    Response::error(405, &format!("method not allowed here; allowed: {allow}"))
        .with_header("Allow", allow.into())
}

fn unknown_group(id: &str) -> Response {
    Response::error(404, &format!("no test group '{id}'"))
}

pub fn store_error(e: StoreError) -> Response {
    match e {
        StoreError::UnknownGroup => Response::error(404, "the test group was deleted"),
        StoreError::Full(message) => Response::error(507, &message),
    }
}

/// The group's header as a JSON object left open for `test_runs`.
fn header_json(header: &GroupHeader) -> Vec<u8> {
    let mut body = serde_json::to_vec(header).unwrap_or_else(|_| b"{}".to_vec());
    body.pop(); // the closing brace
    body
}

/// Streams a group's JSON a batch of runs at a time, taking the lock only
/// for each batch, so a million-run group never sits whole in memory as text.
struct GroupStream {
    store: Arc<Mutex<Store>>,
    id: Uuid,
    /// None until the header is written.
    next_run: Option<usize>,
}

const RUNS_PER_PIECE: usize = 256;

impl BodySource for GroupStream {
    fn fill(&mut self, out: &mut Vec<u8>) -> bool {
        let store = self.store.lock().unwrap_or_else(|p| p.into_inner());
        let Some(group) = store.get(&self.id) else {
            // Deleted while being sent: close the JSON so it stays valid.
            out.extend_from_slice(if self.next_run.is_none() {
                b"{}\n"
            } else {
                b"]}\n"
            });
            return true;
        };
        let start = match self.next_run {
            None => {
                out.extend_from_slice(&header_json(&group.header));
                out.extend_from_slice(b",\"test_runs\":[");
                0
            }
            Some(i) => i,
        };
        write_runs(out, group, start, RUNS_PER_PIECE);
        let end = (start + RUNS_PER_PIECE).min(group.runs.len());
        self.next_run = Some(end);
        if end >= group.runs.len() {
            out.extend_from_slice(b"]}\n");
            return true;
        }
        false
    }
}

fn write_runs(out: &mut Vec<u8>, group: &Group, start: usize, count: usize) {
    for (i, run) in group.runs.iter().enumerate().skip(start).take(count) {
        if i > 0 {
            out.push(b',');
        }
        let _ = serde_json::to_writer(&mut *out, &run_json(run));
    }
}

/// Compares without an early exit, so timing does not reveal the token.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for (i, &expected) in b.iter().enumerate() {
        diff |= a.get(i).copied().unwrap_or(0) ^ expected;
    }
    diff == 0
}

fn check_allowed(endpoint: &str, allow: &[AllowEntry]) -> Result<(), String> {
    let url = Url::parse(endpoint).map_err(|e| format!("upstream_endpoint: {e}"))?;
    if allow.iter().any(|entry| entry.matches(&url)) {
        Ok(())
    } else {
        Err(format!(
            "upstream_endpoint host '{}' is not allowed by this server (--upstream-allow)",
            authority(&url.host, Some(url.port))
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::store::StoreLimits;

    fn api(policy: ApiPolicy) -> Api {
        Api::new(
            Arc::new(Mutex::new(Store::new(StoreLimits::default()))),
            policy,
        )
    }

    fn request(method: Method, path: &str, body: &[u8]) -> Request {
        Request::new(method, path, body.to_vec())
    }

    fn status(action: Action) -> u16 {
        match action {
            Action::Respond(r) => r.status,
            Action::Run(_) => 0,
        }
    }

    #[test]
    fn routes() {
        let api = api(ApiPolicy::default());
        let status_of =
            |method, path: &str, body: &[u8]| status(api.handle(request(method, path, body), 0));
        for (method, path, body, expected) in [
            (Method::Get, "/healthz", &b""[..], 200),
            (Method::Get, "/readyz", b"", 200),
            (Method::Post, "/readyz", b"", 405),
            (Method::Get, "/nope", b"", 404),
            (Method::Get, "/test-groups/create", b"", 405),
            (Method::Put, "/test-groups", b"", 405),
            (Method::Post, "/test-groups/create", b"{}", 400),
        ] {
            assert_eq!(
                status_of(method, path, body),
                expected,
                "{} {path}",
                method.as_str()
            );
        }
        let created = api.handle(
            request(
                Method::Post,
                "/test-groups/create",
                br#"{"run_count":2,"server_delay_ns":5}"#,
            ),
            0,
        );
        assert_eq!(status(created), 200);
        let id = api.store().groups()[0].header.run_group_id;
        let run = api.handle(
            request(Method::Post, &format!("/test-groups/{id}/1"), b"x"),
            0,
        );
        assert!(matches!(
            run,
            Action::Run(RunOrder {
                run_count: 1,
                delay: 5,
                ..
            })
        ));
        for (method, path, expected) in [
            (Method::Post, format!("/test-groups/{id}/0"), 400),
            (Method::Post, format!("/test-groups/{id}/+1"), 400),
            (Method::Post, "/test-groups/nope/1".to_owned(), 404),
            (Method::Get, format!("/test-groups/{id}/1"), 405),
            (Method::Delete, format!("/test-groups/{id}"), 200),
            (Method::Get, format!("/test-groups/{id}"), 404),
        ] {
            assert_eq!(
                status_of(method, &path, b""),
                expected,
                "{} {path}",
                method.as_str()
            );
        }
    }

    #[test]
    fn token_guards_all_but_the_probes() {
        let api = api(ApiPolicy {
            token: Some("s3cret".into()),
            upstream_allow: None,
        });
        for probe in ["/healthz", "/readyz"] {
            assert_eq!(status(api.handle(request(Method::Get, probe, b""), 0)), 200);
        }
        assert_eq!(
            status(api.handle(request(Method::Get, "/test-groups", b""), 0)),
            401
        );
        let mut ok = request(Method::Get, "/test-groups", b"");
        ok.authorization = Some(b"Bearer s3cret".to_vec());
        assert_eq!(status(api.handle(ok, 0)), 200);
        let mut wrong = request(Method::Get, "/test-groups", b"");
        wrong.authorization = Some(b"Bearer s3cres".to_vec());
        assert_eq!(status(api.handle(wrong, 0)), 401);
    }

    #[test]
    fn upstream_allow_list() {
        let allow = parse_allow_list(
            "127.0.0.1:9000, Internal.example.net,http://10.0.0.1,https://[::1]:8443,[0::2]:81,::3",
        )
        .unwrap();
        let ok = |url| check_allowed(url, &allow).is_ok();
        assert!(ok("http://127.0.0.1:9000/x"));
        assert!(ok("https://internal.example.net"));
        assert!(ok("http://10.0.0.1:80/"));
        assert!(!ok("https://10.0.0.1/"), "the entry's scheme and port bind");
        assert!(ok("https://[::1]:8443/"));
        assert!(!ok("http://[::1]:8443/"));
        assert!(ok("http://[::2]:81/"));
        assert!(ok("http://[0:0::3]:1/"));
        assert!(check_allowed("http://127.0.0.1:9001/", &allow)
            .unwrap_err()
            .contains("'127.0.0.1:9001'"));
        assert!(check_allowed("http://[::1]:9/", &allow)
            .unwrap_err()
            .contains("'[::1]:9'"));
        assert!(!ok("http://169.254.169.254/"));
        let shown: Vec<String> = allow.iter().map(|e| e.to_string()).collect();
        assert_eq!(
            shown,
            [
                "127.0.0.1:9000",
                "internal.example.net",
                "http://10.0.0.1:80",
                "https://[::1]:8443",
                "[::2]:81",
                "[::3]"
            ]
        );
        for bad in [
            "ftp://x",
            "http://h/path",
            "h:0",
            "h:x",
            "[::1",
            "[::1]x",
            "a:b:c",
            "user@h",
            "http://h:99999",
        ] {
            assert!(parse_allow_list(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"ab", b"abc"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
