//! The test-group API: routes a request to an answer, or to a test run for
//! the loop to carry out. No I/O and no clock here: the loop hands in the
//! wall-clock time of the request.

use super::metrics::{Metrics, Route};
use crate::event::clock::Nanos;
use crate::http::server::{Request, Response};
use crate::http::url::{Scheme, Url};
use crate::http::Method;
use crate::store::{Op, Reply, RunList, ShardPage, Store, StoreError};
use crate::time::rfc3339;
pub use crate::wire::run_json;
use crate::wire::{GroupConfig, GroupHeader, HeaderValues, RunExtra};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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
    /// What the record holds of the request: the client certificate's
    /// subject, the group's `record_headers` values.
    pub seen: Option<Box<RunExtra>>,
}

/// What a run's request showed of its path, until its group is known.
#[derive(Debug)]
pub struct Seen {
    /// The request's head, when the loop kept it.
    head: Option<Box<[u8]>>,
    client_cert_subject: Option<Arc<str>>,
}

impl Seen {
    fn of(head: Option<Box<[u8]>>, subject: Option<Arc<str>>) -> Option<Box<Seen>> {
        (head.is_some() || subject.is_some()).then(|| {
            Box::new(Seen {
                head,
                client_cert_subject: subject,
            })
        })
    }

    /// What the record of a run of `config` keeps: None when nothing.
    fn extra(seen: Option<Box<Seen>>, config: &GroupConfig) -> Option<Box<RunExtra>> {
        let (head, subject) = match seen {
            None if config.record_headers.is_none() => return None,
            None => (None, None),
            Some(seen) => (seen.head, seen.client_cert_subject),
        };
        let headers = config.record_headers.as_ref().map(|names| {
            let head = head.as_deref().unwrap_or(b"");
            HeaderValues(
                names
                    .iter()
                    .filter_map(|n| {
                        let value = crate::http::header_value(head, n)?;
                        Some((n.as_str().into(), value.into()))
                    })
                    .collect(),
            )
        });
        match (headers, subject) {
            (None, None) => None,
            (headers, client_cert_subject) => Some(Box::new(RunExtra {
                upstream: None,
                client_cert_subject,
                headers,
            })),
        }
    }
}

/// What the API makes of a request.
pub enum Action {
    Respond(Response),
    /// Ask the store, then hand its reply to [`Api::answer`] with `then`.
    Store(Op, Then),
}

/// What a store reply is for: how [`Api::answer`] turns it into an answer.
#[derive(Debug)]
pub enum Then {
    Created,
    Listed,
    Show(Uuid),
    ShowShard(Uuid, u32),
    Status(Uuid),
    Deleted(Uuid),
    /// A run whose group is now known: carry it out.
    Run {
        id: Uuid,
        run_count: u64,
        body: Vec<u8>,
        /// None when the request showed nothing to record.
        seen: Option<Box<Seen>>,
    },
    Appended(Uuid, u32),
}

impl Then {
    /// The route of the request the reply is for.
    fn route(&self) -> Route {
        match self {
            Then::Created => Route::Create,
            Then::Listed => Route::Groups,
            Then::Show(_) | Then::Deleted(_) => Route::Group,
            Then::ShowShard(..) | Then::Appended(..) => Route::Shard,
            Then::Status(_) => Route::Status,
            Then::Run { .. } => Route::Run,
        }
    }
}

/// What the loop does with a store reply.
pub enum Next {
    Respond(Response),
    Run(RunOrder),
    /// Stream a run list: `head`, then the list's runs page by page from
    /// the store, then `]}` and a newline.
    Stream {
        id: Uuid,
        list: RunList,
        head: Vec<u8>,
    },
}

pub struct Api {
    store: Store,
    policy: ApiPolicy,
    metrics: Metrics,
    /// Requests keep their head: a group of this process records header
    /// values, or the store is shared (a group another replica created may
    /// want them, unknown until its first run here).
    keep_heads: AtomicBool,
}

impl Api {
    pub fn new(store: Store, policy: ApiPolicy) -> Api {
        Api {
            store,
            policy,
            metrics: Metrics::default(),
            keep_heads: AtomicBool::new(false),
        }
    }

    /// Every request keeps its head from now on: a group asks for header
    /// values, or the store is shared.
    pub fn keep_all_heads(&self) {
        self.keep_heads.store(true, Ordering::Relaxed);
    }

    /// Whether the loops keep each request's head.
    pub fn keeps_heads(&self) -> bool {
        self.keep_heads.load(Ordering::Relaxed)
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn store(&self) -> &Store {
        &self.store
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
            let store = |op, then| Ok(Action::Store(op, then));
            let outcome = match segments.as_slice() {
                ["healthz"] if get => {
                    respond(Response::json(200, b"{\"status\":\"ok\"}\n".to_vec()))
                }
                // Ready to take runs: the store takes writes; a server
                // shutting down answers every new request 503, this one too.
                ["readyz"] if get => respond(match self.store.ready() {
                    Ok(()) => Response::json(200, b"{\"status\":\"ready\"}\n".to_vec()),
                    Err(why) => Response::error(503, &why),
                }),
                ["metrics"] if get => respond(
                    Response::json(200, self.metrics.render().into_bytes())
                        .with_header("Content-Type", super::metrics::CONTENT_TYPE.into()),
                ),
                ["test-groups"] if get => store(Op::List, Then::Listed),
                ["test-groups", "create"] if method == Method::Post => {
                    self.create(&request.body, wall_now)
                }
                ["test-groups", "create"] => respond(method_not_allowed(&segments)),
                ["test-groups", id] if get => {
                    group_id(id).and_then(|id| store(Op::Header { id }, Then::Show(id)))
                }
                ["test-groups", id, "status"] if get => {
                    group_id(id).and_then(|id| store(Op::Status { id }, Then::Status(id)))
                }
                ["test-groups", id] if method == Method::Delete => {
                    group_id(id).and_then(|id| store(Op::Delete { id }, Then::Deleted(id)))
                }
                ["test-groups", id, "shards", shard] if get => group_id(id).and_then(|id| {
                    let shard = shard_index(shard)?;
                    store(Op::Status { id }, Then::ShowShard(id, shard))
                }),
                ["test-groups", id, "shards", shard] if method == Method::Post => group_id(id)
                    .and_then(|id| {
                        let shard = shard_index(shard)?;
                        let page = shard_page(shard, &request.body)?;
                        store(Op::AppendShard { id, page }, Then::Appended(id, shard))
                    }),
                ["test-groups", id, count] if method == Method::Post => {
                    group_id(id).and_then(|id| {
                        let run_count = run_count(count)?;
                        store(
                            Op::Begin { id },
                            Then::Run {
                                id,
                                run_count,
                                body: request.body,
                                seen: Seen::of(request.head, request.client_cert_subject),
                            },
                        )
                    })
                }
                ["healthz"]
                | ["readyz"]
                | ["metrics"]
                | ["test-groups"]
                | ["test-groups", _]
                | ["test-groups", _, "shards", _] => respond(method_not_allowed(&segments)),
                ["test-groups", _, _] => respond(method_not_allowed(&segments)),
                _ => respond(Response::error(
                    404,
                    &format!("no route for {} {}", method.as_str(), request.path),
                )),
            };
            outcome.unwrap_or_else(Action::Respond)
        };
        // Answered here, counted here; the rest are counted when the
        // store's reply is answered.
        if let Action::Respond(response) = &action {
            self.metrics.request(Route::of(&segments), response.status);
        }
        action
    }

    /// Turns the store's reply into the answer (or the run) it was for.
    pub fn answer(&self, then: Then, reply: Reply) -> Next {
        let route = then.route();
        let next = match (then, reply) {
            (then, Reply::Error(e)) => Next::Respond(store_error(e, || match then {
                Then::Show(id)
                | Then::Status(id)
                | Then::Deleted(id)
                | Then::ShowShard(id, _)
                | Then::Appended(id, _)
                | Then::Run { id, .. } => unknown_group(&id.to_string()),
                Then::Created | Then::Listed => Response::error(404, "no such test group"),
            })),
            (Then::Created, Reply::Group(header)) => {
                crate::debug!("created group {}", header.run_group_id);
                let mut body = header_json(&header);
                body.extend_from_slice(b",\"test_runs\":[]}\n");
                Next::Respond(Response::json(200, body))
            }
            (Then::Listed, Reply::List(groups)) => {
                let groups: Vec<serde_json::Value> = groups
                    .into_iter()
                    .map(|g| {
                        let mut v = serde_json::to_value(&*g.header).unwrap_or_default();
                        v["recorded_runs"] = g.recorded_runs.into();
                        v
                    })
                    .collect();
                Next::Respond(json_answer(&groups))
            }
            (Then::Show(id), Reply::Group(header)) => {
                let mut head = header_json(&header);
                head.extend_from_slice(b",\"test_runs\":[");
                Next::Stream {
                    id,
                    list: RunList::Server,
                    head,
                }
            }
            (Then::ShowShard(id, shard), Reply::Status(status)) => {
                match status.shards.iter().find(|s| s.shard == shard) {
                    Some(s) => {
                        let head = format!(
                            "{{\"shard\":{},\"shards\":{},\"complete\":{},\"runs\":[",
                            s.shard, s.shards, s.complete
                        )
                        .into_bytes();
                        Next::Stream {
                            id,
                            list: RunList::Shard(shard),
                            head,
                        }
                    }
                    None => Next::Respond(unknown_shard(shard)),
                }
            }
            (Then::Status(id), Reply::Status(status)) => {
                Next::Respond(json_answer(&serde_json::json!({
                    "run_group_id": id,
                    "recorded_runs": status.recorded_runs,
                    "runs_in_progress": status.runs_in_progress,
                    "shards": status.shards,
                })))
            }
            (Then::Deleted(id), Reply::Done) => Next::Respond(Response::json(
                200,
                format!("{{\"deleted\":\"{id}\"}}\n").into_bytes(),
            )),
            (Then::Appended(_, shard), Reply::Appended { runs }) => Next::Respond(json_answer(
                &serde_json::json!({"shard": shard, "runs": runs}),
            )),
            (
                Then::Run {
                    run_count,
                    body,
                    seen,
                    ..
                },
                Reply::Group(header),
            ) => {
                let config = &header.config;
                if config.record_headers.is_some() {
                    self.keep_all_heads();
                }
                Next::Run(RunOrder {
                    group_id: header.run_group_id,
                    run_count,
                    body,
                    upstream: config
                        .upstream_endpoint
                        .as_deref()
                        .and_then(|e| Url::parse(e).ok()),
                    upstream_timeout: config.upstream_timeout_ns,
                    delay: config.server_delay_ns,
                    seen: Seen::extra(seen, config),
                })
            }
            (then, reply) => Next::Respond(Response::error(
                500,
                &format!("the store answered {reply:?} to {then:?}"),
            )),
        };
        // A run is counted when it is answered, after its record.
        match &next {
            Next::Respond(response) => self.metrics.request(route, response.status),
            Next::Stream { .. } => self.metrics.request(route, 200),
            Next::Run(_) => {}
        }
        next
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

    fn create(&self, body: &[u8], wall_now: i128) -> Result<Action, Response> {
        let config = GroupConfig::from_json(body).map_err(|e| Response::error(400, &e))?;
        if let (Some(endpoint), Some(allow)) =
            (&config.upstream_endpoint, &self.policy.upstream_allow)
        {
            check_allowed(endpoint, allow).map_err(|e| Response::error(400, &e))?;
        }
        if config.record_headers.is_some() {
            // Before the group exists: its first run keeps its head.
            self.keep_all_heads();
        }
        Ok(Action::Store(
            Op::Create {
                config,
                created_at: rfc3339(wall_now),
                created_ns: wall_now,
            },
            Then::Created,
        ))
    }
}

fn respond(response: Response) -> Result<Action, Response> {
    Ok(Action::Respond(response))
}

fn json_answer<T: serde::Serialize>(value: &T) -> Response {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    Response::json(200, body)
}

fn group_id(id: &str) -> Result<Uuid, Response> {
    Uuid::parse_str(id).map_err(|_| unknown_group(id))
}

fn run_count(count: &str) -> Result<u64, Response> {
    match count.parse::<u64>() {
        Ok(n) if n >= 1 && count.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(Response::error(
            400,
            &format!("run count '{count}' is not a positive integer"),
        )),
    }
}

fn shard_index(shard: &str) -> Result<u32, Response> {
    match shard.parse::<u32>() {
        Ok(n) if shard.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(Response::error(
            400,
            &format!("shard '{shard}' is not a shard index (0, 1, ...)"),
        )),
    }
}

/// The body of a shard's upload:
/// `{"shards": N, "from": K, "runs": [{...}, ...], "last": bool}`.
fn shard_page(shard: u32, body: &[u8]) -> Result<ShardPage, Response> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Upload<'a> {
        shards: u32,
        from: u64,
        #[serde(borrow)]
        runs: Vec<&'a serde_json::value::RawValue>,
        last: bool,
    }
    let bad = |why: String| Response::error(400, &format!("shard upload: {why}"));
    let upload: Upload<'_> = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    if shard >= upload.shards {
        return Err(bad(format!(
            "shard {shard} is not one of {} shards (0 to {})",
            upload.shards,
            upload.shards.saturating_sub(1)
        )));
    }
    let mut runs = Vec::with_capacity(upload.runs.len());
    for (i, run) in upload.runs.iter().enumerate() {
        let text = run.get();
        if !text.starts_with('{') {
            return Err(bad(format!("runs[{i}] is not a JSON object")));
        }
        runs.push(text.as_bytes().into());
    }
    Ok(ShardPage {
        shard,
        shards: upload.shards,
        from: upload.from,
        runs,
        last: upload.last,
    })
}

fn method_not_allowed(segments: &[&str]) -> Response {
    let allow = match segments {
        ["test-groups", "create"] => "POST",
        ["test-groups", _] => "GET, HEAD, DELETE",
        ["test-groups", _, _] => "POST",
        ["test-groups", _, "shards", _] => "GET, HEAD, POST",
        _ => "GET, HEAD",
    };
    Response::error(405, &format!("method not allowed here; allowed: {allow}"))
        .with_header("Allow", allow.into())
}

fn unknown_group(id: &str) -> Response {
    Response::error(404, &format!("no test group '{id}'"))
}

fn unknown_shard(shard: u32) -> Response {
    Response::error(404, &format!("no upload from shard {shard} in this group"))
}

/// The answer to a store error; `unknown` answers for an unknown group.
pub fn store_error(e: StoreError, unknown: impl FnOnce() -> Response) -> Response {
    match e {
        StoreError::UnknownGroup => unknown(),
        StoreError::UnknownShard => Response::error(404, "no upload from that shard in this group"),
        StoreError::Full(message) => Response::error(507, &message),
        StoreError::Unavailable(message) => Response::error(503, &message),
        StoreError::Conflict(message) => Response::error(409, &message),
    }
}

/// The group's header as a JSON object left open for `test_runs`.
fn header_json(header: &GroupHeader) -> Vec<u8> {
    let mut body = serde_json::to_vec(header).unwrap_or_else(|_| b"{}".to_vec());
    body.pop(); // the closing brace
    body
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
    use crate::store::memory::MemoryStore;
    use crate::store::StoreLimits;
    use std::sync::Arc;

    fn api(policy: ApiPolicy) -> Api {
        Api::new(Arc::new(MemoryStore::new(StoreLimits::default())), policy)
    }

    fn request(method: Method, path: &str, body: &[u8]) -> Request {
        Request::new(method, path, body.to_vec())
    }

    /// What the loop would make of a request, the store answering at once.
    fn outcome(api: &Api, request: Request) -> Next {
        match api.handle(request, 0) {
            Action::Respond(r) => Next::Respond(r),
            Action::Store(op, then) => api.answer(then, apply(api.store(), op)),
        }
    }

    fn apply(store: &Store, op: Op) -> Reply {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        store
            .submit(op, 0, &crate::store::Inbox::new(waker))
            .expect("the memory store answers at once")
    }

    fn status(next: Next) -> u16 {
        match next {
            Next::Respond(r) => r.status,
            Next::Stream { .. } => 200,
            Next::Run(_) => 0,
        }
    }

    #[test]
    fn routes() {
        let api = api(ApiPolicy::default());
        let status_of =
            |method, path: &str, body: &[u8]| status(outcome(&api, request(method, path, body)));
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
        let created = outcome(
            &api,
            request(
                Method::Post,
                "/test-groups/create",
                br#"{"run_count":2,"server_delay_ns":5}"#,
            ),
        );
        let Next::Respond(created) = created else {
            panic!("create answers at once")
        };
        assert_eq!(created.status, 200);
        let crate::http::server::Body::Json(body) = created.body else {
            panic!("a JSON body")
        };
        let id = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["run_group_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let run = outcome(
            &api,
            request(Method::Post, &format!("/test-groups/{id}/1"), b"x"),
        );
        assert!(matches!(
            run,
            Next::Run(RunOrder {
                run_count: 1,
                delay: 5,
                ..
            })
        ));
        let shard_body = br#"{"shards":2,"from":0,"runs":[{"run_count":1}],"last":true}"#;
        for (method, path, body, expected) in [
            (Method::Post, format!("/test-groups/{id}/0"), &b""[..], 400),
            (Method::Post, format!("/test-groups/{id}/+1"), b"", 400),
            (Method::Post, "/test-groups/nope/1".to_owned(), b"", 404),
            (Method::Get, format!("/test-groups/{id}/1"), b"", 405),
            (Method::Get, format!("/test-groups/{id}/shards/1"), b"", 404),
            (
                Method::Post,
                format!("/test-groups/{id}/shards/2"),
                shard_body,
                400,
            ),
            (
                Method::Post,
                format!("/test-groups/{id}/shards/x"),
                shard_body,
                400,
            ),
            (
                Method::Post,
                format!("/test-groups/{id}/shards/1"),
                b"[1]",
                400,
            ),
            (
                Method::Post,
                format!("/test-groups/{id}/shards/1"),
                shard_body,
                200,
            ),
            (Method::Get, format!("/test-groups/{id}/shards/1"), b"", 200),
            (
                Method::Delete,
                format!("/test-groups/{id}/shards/1"),
                b"",
                405,
            ),
            (Method::Get, format!("/test-groups/{id}/status"), b"", 200),
            (Method::Delete, format!("/test-groups/{id}"), b"", 200),
            (Method::Get, format!("/test-groups/{id}"), b"", 404),
            (Method::Get, format!("/test-groups/{id}/status"), b"", 404),
        ] {
            assert_eq!(
                status_of(method, &path, body),
                expected,
                "{} {path}",
                method.as_str()
            );
        }
    }

    #[test]
    fn a_store_that_cannot_be_reached_answers_503_naming_it() {
        let e = StoreError::Unavailable("store redis://r:6379/0: connection refused".into());
        let response = store_error(e, || unreachable!());
        assert_eq!(response.status, 503);
        let crate::http::server::Body::Json(body) = response.body else {
            panic!("a JSON body")
        };
        assert!(String::from_utf8_lossy(&body).contains("redis://r:6379/0"));
    }

    /// A group's `record_headers` turn on keeping heads, and its runs'
    /// records get the values the request carried (and the client
    /// certificate's subject the loop names).
    #[test]
    fn runs_of_a_group_with_record_headers_keep_their_values() {
        let api = api(ApiPolicy::default());
        let create =
            |body: &[u8]| match outcome(&api, request(Method::Post, "/test-groups/create", body)) {
                Next::Respond(r) => match r.body {
                    crate::http::server::Body::Json(b) => {
                        serde_json::from_slice::<serde_json::Value>(&b).unwrap()["run_group_id"]
                            .as_str()
                            .unwrap()
                            .to_owned()
                    }
                    _ => panic!("a JSON body"),
                },
                _ => panic!("create answers at once"),
            };
        let plain = create(br#"{"run_count": 2}"#);
        assert!(!api.keeps_heads(), "nothing asks for heads yet");
        let recording = create(br#"{"run_count": 2, "record_headers": ["Via", "X-Absent"]}"#);
        assert!(api.keeps_heads());
        let head = b"POST /x HTTP/1.1\r\nVia: 1.1 a\r\nvia: 1.1 b\r\n\r\n";
        let seen = |id: &str, subject: Option<&str>| {
            let mut r = request(Method::Post, &format!("/test-groups/{id}/1"), b"x");
            r.head = Some(Box::from(&head[..]));
            r.client_cert_subject = subject.map(Arc::from);
            match outcome(&api, r) {
                Next::Run(order) => order.seen,
                _ => panic!("a run"),
            }
        };
        assert_eq!(seen(&plain, None), None);
        let extra = seen(&recording, Some("CN=c")).unwrap();
        assert_eq!(extra.client_cert_subject.as_deref(), Some("CN=c"));
        assert_eq!(
            extra.headers,
            Some(HeaderValues(vec![("via".into(), "1.1 a, 1.1 b".into())]))
        );
        let extra = seen(&plain, Some("CN=c")).unwrap();
        assert_eq!(extra.headers, None);
    }

    #[test]
    fn token_guards_all_but_the_probes() {
        let api = api(ApiPolicy {
            token: Some("s3cret".into()),
            upstream_allow: None,
        });
        for probe in ["/healthz", "/readyz"] {
            assert_eq!(status(outcome(&api, request(Method::Get, probe, b""))), 200);
        }
        assert_eq!(
            status(outcome(&api, request(Method::Get, "/test-groups", b""))),
            401
        );
        let mut ok = request(Method::Get, "/test-groups", b"");
        ok.authorization = Some(b"Bearer s3cret".to_vec());
        assert_eq!(status(outcome(&api, ok)), 200);
        let mut wrong = request(Method::Get, "/test-groups", b"");
        wrong.authorization = Some(b"Bearer s3cres".to_vec());
        assert_eq!(status(outcome(&api, wrong)), 401);
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
