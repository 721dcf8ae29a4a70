//! HTTP proxies as curl reads them, and the `CONNECT` exchange that opens a
//! tunnel through one, sans-IO.
//!
//! Which proxy (curl's rules): `--proxy URL`, else the environment:
//! `http_proxy` for `http://` targets (lower case only: curl ignores
//! `HTTP_PROXY`, which a CGI request's `Proxy:` header can set),
//! `https_proxy` or `HTTPS_PROXY` for `https://` ones, and `all_proxy` or
//! `ALL_PROXY` for either when its own is not set; the lower case wins.
//! `--noproxy LIST`, else `no_proxy` or `NO_PROXY`, names the hosts reached
//! directly, even with `--proxy`: `*` is every host; a name matches itself
//! and every name under it (`example.com` and `.example.com` both match
//! `www.example.com`); an address, or a CIDR block (`10.0.0.0/8`), matches
//! an address host. `--proxy ""` turns the environment's proxies off and
//! `--noproxy ""` proxies every host.
//!
//! A proxy URL is `[http://][user:pass@]host[:port]` (port 1080 when not
//! given, as curl); the credentials, percent-decoded, go as Basic
//! `Proxy-Authorization`. An `http://` target is asked of the proxy in
//! absolute form (`POST http://host:port/path`); an `https://` one goes
//! through a [`Tunnel`] (`CONNECT host:port`), then TLS end to end.

use super::url::{Scheme, Url};
use crate::event::clock::Nanos;
use base64::Engine;
use std::fmt;
use std::mem::MaybeUninit;
use std::net::IpAddr;

/// curl's default proxy port.
pub const DEFAULT_PORT: u16 = 1080;

/// One HTTP proxy.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    /// Host name or address, IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// `Basic ...`, from the URL's credentials.
    pub authorization: Option<String>,
    /// Where it was given: `--proxy`, `https_proxy`...
    pub source: &'static str,
}

/// Never the credentials.
impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Proxy({self}, {})", self.source)
    }
}

/// `http://host:port`, never the credentials.
impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", authority(&self.host, self.port))
    }
}

impl Proxy {
    /// Parses `[http://][user:pass@]host[:port][/]`; `source` names it in
    /// errors, which never show the password.
    pub fn parse(s: &str, source: &'static str) -> Result<Proxy, String> {
        let s = s.trim();
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest)) => (scheme, rest),
            None => ("http", s),
        };
        let authority_part = rest.split(['/', '?', '#']).next().unwrap_or("");
        let (credentials, host_port) = match authority_part.rsplit_once('@') {
            Some((c, h)) => (Some(c), h),
            None => (None, authority_part),
        };
        let shown = match credentials {
            Some(c) => {
                let user = c.split(':').next().unwrap_or("");
                format!("{scheme}://{user}:***@{host_port}")
            }
            None => format!("{scheme}://{host_port}"),
        };
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(format!(
                "{source}: '{shown}': {scheme}:// proxies are not supported; give an http:// proxy"
            ));
        }
        // The port is explicit when a colon follows the host (past an
        // IPv6 address's brackets).
        let after_host = host_port.rsplit_once(']').map_or(host_port, |(_, r)| r);
        let url = Url::parse(&format!("http://{host_port}"))
            .map_err(|_| format!("{source}: '{shown}' is not [http://][user:pass@]host[:port]"))?;
        let port = if after_host.contains(':') {
            url.port
        } else {
            DEFAULT_PORT
        };
        let authorization = credentials.map(|c| {
            let (user, pass) = c.split_once(':').unwrap_or((c, ""));
            let pair = [percent_decode(user), b":".to_vec(), percent_decode(pass)].concat();
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(pair)
            )
        });
        Ok(Proxy {
            host: url.host,
            port,
            authorization,
            source,
        })
    }

    /// How messages name it: `the proxy http://host:port (https_proxy)`.
    pub fn named(&self) -> String {
        format!("the proxy {self} ({})", self.source)
    }
}

/// How a client's connections go through a proxy.
#[derive(Debug, Clone)]
pub struct ProxyRoute {
    pub proxy: Proxy,
    /// `host:port` to `CONNECT` to first (https); None for absolute form
    /// (http: the request target is then the whole URL).
    pub connect: Option<String>,
}

/// `host:port`, an IPv6 host in brackets: what `CONNECT` and the absolute
/// form name.
pub fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `%XX` escapes decoded; anything else kept as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// The hosts reached without a proxy (`--noproxy`, `NO_PROXY`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NoProxy {
    all: bool,
    names: Vec<String>,
    /// Addresses and CIDR blocks: (network, prefix length).
    blocks: Vec<(IpAddr, u8)>,
}

impl NoProxy {
    /// A comma-separated list, as curl reads it.
    pub fn parse(list: &str) -> NoProxy {
        let mut no = NoProxy::default();
        for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry == "*" {
                no.all = true;
                continue;
            }
            let (addr, bits) = match entry.split_once('/') {
                Some((a, b)) => (a, b.parse::<u8>().ok()),
                None => (entry, None),
            };
            let addr = addr.trim_start_matches('[').trim_end_matches(']');
            if let Ok(ip) = addr.parse::<IpAddr>() {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                no.blocks.push((ip, bits.unwrap_or(max).min(max)));
            } else {
                let name = entry.trim_start_matches('.').trim_end_matches('.');
                no.names.push(name.to_ascii_lowercase());
            }
        }
        no
    }

    /// Whether `host` (a name, or an address without brackets) is reached
    /// directly.
    pub fn matches(&self, host: &str) -> bool {
        if self.all {
            return true;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Ok(ip) = host.parse::<IpAddr>() {
            return self
                .blocks
                .iter()
                .any(|&(net, bits)| in_block(ip, net, bits));
        }
        self.names.iter().any(|name| {
            host == *name
                || (host.len() > name.len()
                    && host.ends_with(name.as_str())
                    && host.as_bytes()[host.len() - name.len() - 1] == b'.')
        })
    }
}

/// Whether `ip` is in `net/bits` (a v4 address never in a v6 block).
fn in_block(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let (a, b, width) = match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) as u128, u32::from(b) as u128, 32),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let shift = width - u32::from(bits);
    shift >= width || (a >> shift) == (b >> shift)
}

/// The proxies for `http://` and `https://` targets and the hosts that
/// bypass them.
#[derive(Debug, Clone, Default)]
pub struct Proxies {
    http: Option<Proxy>,
    https: Option<Proxy>,
    no_proxy: NoProxy,
}

impl Proxies {
    /// Reads `--proxy` (`flag`), `--noproxy` (`noproxy`) and the
    /// environment (`env`), as curl does. Returns warnings to print (an
    /// `HTTP_PROXY` that is ignored).
    pub fn configure(
        env: impl Fn(&str) -> Option<String>,
        flag: Option<&str>,
        noproxy: Option<&str>,
    ) -> Result<(Proxies, Vec<String>), String> {
        let var = |names: &[&'static str]| {
            names.iter().find_map(|&n| {
                env(n)
                    .filter(|v| !v.trim().is_empty())
                    .map(|value| (n, value))
            })
        };
        let parse = |found: Option<(&'static str, String)>| {
            found
                .map(|(source, value)| Proxy::parse(&value, source))
                .transpose()
        };
        let mut warnings = Vec::new();
        let (http, https) = match flag {
            Some(f) if f.trim().is_empty() => (None, None),
            Some(f) => {
                let p = Proxy::parse(f, "--proxy")?;
                (Some(p.clone()), Some(p))
            }
            None => {
                let all = parse(var(&["all_proxy", "ALL_PROXY"]))?;
                let http = parse(var(&["http_proxy"]))?.or_else(|| all.clone());
                let https = parse(var(&["https_proxy", "HTTPS_PROXY"]))?.or(all);
                if http.is_none() && var(&["HTTP_PROXY"]).is_some() {
                    warnings.push(
                        "HTTP_PROXY is ignored, as curl ignores it: set http_proxy (lower case) or give --proxy to send http:// requests through a proxy".to_owned(),
                    );
                }
                (http, https)
            }
        };
        let no_proxy = match noproxy {
            Some(list) => NoProxy::parse(list),
            None => var(&["no_proxy", "NO_PROXY"])
                .map(|(_, list)| NoProxy::parse(&list))
                .unwrap_or_default(),
        };
        Ok((
            Proxies {
                http,
                https,
                no_proxy,
            },
            warnings,
        ))
    }

    /// The environment's proxies, as the server's upstream GETs use them.
    pub fn from_env() -> Result<(Proxies, Vec<String>), String> {
        Proxies::configure(|name| std::env::var(name).ok(), None, None)
    }

    /// The proxy to reach `url` through, if any.
    pub fn for_url(&self, url: &Url) -> Option<&Proxy> {
        let proxy = match url.scheme {
            Scheme::Http => self.http.as_ref(),
            Scheme::Https => self.https.as_ref(),
        }?;
        (!self.no_proxy.matches(&url.host)).then_some(proxy)
    }

    /// Whether any target goes through a proxy.
    pub fn any(&self) -> bool {
        self.http.is_some() || self.https.is_some()
    }

    /// In words, for the log: `http:// through the proxy http://p:3128
    /// (http_proxy); https:// directly`.
    pub fn describe(&self) -> String {
        let one = |p: &Option<Proxy>| {
            p.as_ref()
                .map_or("directly".to_owned(), |p| format!("through {}", p.named()))
        };
        format!("http:// {}; https:// {}", one(&self.http), one(&self.https))
    }
}

/// Why a proxy did not carry a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyError {
    /// It answered with this status (and reason phrase).
    Refused { status: u16, reason: String },
    /// Its answer was not HTTP.
    Malformed(String),
    /// It closed the connection before answering.
    Closed,
    /// Bytes came through the tunnel before the client spoke.
    Early(usize),
}

impl ProxyError {
    /// The error in words: `proxy` names it (with where it was given),
    /// `what` the request it refused (`CONNECT host:port`).
    pub fn words(&self, proxy: &Proxy, what: &str) -> String {
        let who = proxy.named();
        match self {
            ProxyError::Refused { status, reason } => {
                let why = match status {
                    // tinyproxy answers 401 to credentials it refuses.
                    401 | 407 if proxy.authorization.is_some() => {
                        ": it refused the credentials given (check the user and password in http://user:pass@proxy; %-encode special characters)"
                    }
                    401 | 407 => {
                        ": it wants credentials; give them as http://user:pass@proxy"
                    }
                    403 => {
                        ": it does not allow that destination (allow the host and port in the proxy's configuration, or reach the server directly with --noproxy HOST)"
                    }
                    502..=504 => ": it could not reach the server itself",
                    _ => "",
                };
                format!("{who} answered {status} {reason} to {what}{why}")
            }
            ProxyError::Malformed(why) => {
                format!("{who} answered {what} with something that is not HTTP ({why})")
            }
            ProxyError::Closed => {
                format!("{who} closed the connection before answering {what}")
            }
            ProxyError::Early(n) => format!(
                "{who} sent {n} bytes through the tunnel before the client spoke, after answering {what}"
            ),
        }
    }
}

/// Largest answer head a proxy may send to `CONNECT`.
const MAX_HEAD: usize = 16 * 1024;

/// The `CONNECT` exchange that opens a tunnel through a proxy, sans-IO:
/// the request waits in [`Tunnel::poll_output`], the proxy's answer goes
/// in through [`Tunnel::receive`] with the time it was read, and the
/// outcome says how long the tunnel took from `started`. No sockets and no
/// clock inside.
pub struct Tunnel {
    output: Vec<u8>,
    written: usize,
    input: Vec<u8>,
    started: Nanos,
}

/// What the bytes received so far amount to.
#[derive(Debug, PartialEq, Eq)]
pub enum TunnelState {
    /// The answer is not all in yet.
    Waiting,
    /// A 2xx: the tunnel is open, `elapsed` ns after `started`.
    Open { elapsed: Nanos },
}

impl Tunnel {
    /// A `CONNECT` to `target` (`host:port`), with the proxy's credentials
    /// if any; `started` is when the exchange (or the connection to the
    /// proxy) began.
    pub fn new(target: &str, authorization: Option<&str>, started: Nanos) -> Tunnel {
        let mut output = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(a) = authorization {
            output.push_str("Proxy-Authorization: ");
            output.push_str(a);
            output.push_str("\r\n");
        }
        output.push_str("User-Agent: conntest\r\n\r\n");
        Tunnel {
            output: output.into_bytes(),
            written: 0,
            input: Vec::new(),
            started,
        }
    }

    pub fn poll_output(&self) -> &[u8] {
        &self.output[self.written..]
    }

    pub fn advance_output(&mut self, n: usize) {
        self.written = (self.written + n).min(self.output.len());
    }

    /// Takes bytes read from the proxy at `now`. A refusal, or an answer
    /// that is not HTTP, is an error: the connection is then of no use.
    pub fn receive(&mut self, data: &[u8], now: Nanos) -> Result<TunnelState, ProxyError> {
        self.input.extend_from_slice(data);
        loop {
            let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; 32];
            let mut resp = httparse::Response::new(&mut []);
            let window = &self.input[..self.input.len().min(MAX_HEAD + 1)];
            let head_len = match httparse::ParserConfig::default()
                .parse_response_with_uninit_headers(&mut resp, window, &mut headers)
            {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) if self.input.len() <= MAX_HEAD => {
                    return Ok(TunnelState::Waiting)
                }
                Ok(httparse::Status::Partial) => {
                    return Err(ProxyError::Malformed(format!(
                        "an answer head over {MAX_HEAD} bytes"
                    )))
                }
                Err(e) => return Err(ProxyError::Malformed(e.to_string())),
            };
            let status = resp.code.unwrap_or(0);
            let reason = resp.reason.unwrap_or("").to_owned();
            self.input.drain(..head_len);
            match status {
                // Interim answers come before the real one.
                100..=199 => continue,
                // No body follows a 2xx to CONNECT (RFC 9110 9.3.6): the
                // tunnel starts right after the head, and the proxy has
                // nothing to say before the client speaks.
                200..=299 if self.input.is_empty() => {
                    return Ok(TunnelState::Open {
                        elapsed: now.saturating_sub(self.started),
                    })
                }
                200..=299 => return Err(ProxyError::Early(self.input.len())),
                _ => return Err(ProxyError::Refused { status, reason }),
            }
        }
    }

    /// The proxy closed the connection (no answer came, or not a whole one).
    pub fn receive_eof(&self) -> ProxyError {
        ProxyError::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    }

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn proxy_urls_as_curl_reads_them() {
        let p = Proxy::parse("http://proxy.corp:3128/", "--proxy").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("proxy.corp", 3128));
        assert_eq!(p.authorization, None);
        let p = Proxy::parse("proxy.corp", "https_proxy").unwrap();
        assert_eq!(
            (p.port, p.to_string()),
            (1080, "http://proxy.corp:1080".into())
        );
        assert_eq!(p.named(), "the proxy http://proxy.corp:1080 (https_proxy)");
        let p = Proxy::parse("HTTP://[::1]:8888", "x").unwrap();
        assert_eq!((p.host.as_str(), p.port), ("::1", 8888));
        assert_eq!(Proxy::parse("[::1]", "x").unwrap().port, 1080);
        // Percent-decoded credentials, as Basic.
        let p = Proxy::parse("http://us%40er:p%3Ass@h:1", "x").unwrap();
        let expected = base64::engine::general_purpose::STANDARD.encode("us@er:p:ss");
        assert_eq!(p.authorization, Some(format!("Basic {expected}")));
        assert!(!format!("{p:?}{p}").contains("ss"));
        let e = Proxy::parse("socks5://u:secret@h:1", "ALL_PROXY").unwrap_err();
        assert_eq!(
            e,
            "ALL_PROXY: 'socks5://u:***@h:1': socks5:// proxies are not supported; give an http:// proxy"
        );
        let e = Proxy::parse("http://h:99999", "--proxy").unwrap_err();
        assert_eq!(
            e,
            "--proxy: 'http://h:99999' is not [http://][user:pass@]host[:port]"
        );
    }

    #[test]
    fn which_variable_serves_which_scheme() {
        let (p, warnings) = Proxies::configure(
            env(&[
                ("HTTP_PROXY", "http://upper:1"),
                ("HTTPS_PROXY", "http://secure:2"),
            ]),
            None,
            None,
        )
        .unwrap();
        assert_eq!(p.for_url(&url("http://a")), None, "HTTP_PROXY is ignored");
        assert_eq!(warnings.len(), 1);
        assert_eq!(p.for_url(&url("https://a")).unwrap().host, "secure");
        let (p, warnings) = Proxies::configure(
            env(&[
                ("http_proxy", "lower:1"),
                ("HTTP_PROXY", "upper:1"),
                ("https_proxy", "low:2"),
                ("HTTPS_PROXY", "up:2"),
            ]),
            None,
            None,
        )
        .unwrap();
        assert!(warnings.is_empty());
        assert_eq!(p.for_url(&url("http://a")).unwrap().host, "lower");
        assert_eq!(p.for_url(&url("https://a")).unwrap().host, "low");
        let (p, _) = Proxies::configure(env(&[("ALL_PROXY", "all:3")]), None, None).unwrap();
        assert_eq!(p.for_url(&url("http://a")).unwrap().source, "ALL_PROXY");
        assert_eq!(p.for_url(&url("https://a")).unwrap().host, "all");
        // --proxy wins over the environment; an empty one turns it off.
        let vars = env(&[("https_proxy", "env:1"), ("NO_PROXY", "skip.example")]);
        let (p, _) = Proxies::configure(&vars, Some("flag:2"), None).unwrap();
        assert_eq!(p.for_url(&url("https://a")).unwrap().source, "--proxy");
        assert_eq!(p.for_url(&url("http://a")).unwrap().host, "flag");
        assert_eq!(p.for_url(&url("https://www.skip.example")), None);
        let (p, _) = Proxies::configure(&vars, Some(""), None).unwrap();
        assert!(!p.any());
        // --noproxy replaces NO_PROXY; an empty one proxies every host.
        let (p, _) = Proxies::configure(&vars, None, Some("")).unwrap();
        assert!(p.for_url(&url("https://skip.example")).is_some());
        let (p, _) = Proxies::configure(&vars, None, Some("*")).unwrap();
        assert_eq!(p.for_url(&url("https://a")), None);
        assert!(Proxies::configure(env(&[("https_proxy", "socks5://h")]), None, None).is_err());
        let (p, _) = Proxies::configure(env(&[("https_proxy", "  ")]), None, None).unwrap();
        assert!(!p.any());
    }

    #[test]
    fn no_proxy_matches_names_and_addresses_as_curl() {
        let no = NoProxy::parse(" example.com, .corp.net ,10.0.0.0/8, ::1, 192.168.1.7 ,");
        for host in [
            "example.com",
            "www.example.com",
            "EXAMPLE.com.",
            "corp.net",
            "a.b.corp.net",
            "10.2.3.4",
            "::1",
            "192.168.1.7",
        ] {
            assert!(no.matches(host), "{host}");
        }
        for host in [
            "notexample.com",
            "example.com.org",
            "11.0.0.1",
            "192.168.1.8",
            "::2",
            "localhost",
        ] {
            assert!(!no.matches(host), "{host}");
        }
        assert!(NoProxy::parse("*").matches("anything"));
        assert!(!NoProxy::parse("").matches("anything"));
        assert!(NoProxy::parse("127.0.0.0/0").matches("8.8.8.8"));
        assert!(!NoProxy::parse("127.0.0.0/8").matches("::1"));
    }

    #[test]
    fn connect_is_written_with_the_credentials() {
        let t = Tunnel::new("example:443", Some("Basic dTpw"), 0);
        assert_eq!(
            t.poll_output(),
            b"CONNECT example:443 HTTP/1.1\r\nHost: example:443\r\nProxy-Authorization: Basic dTpw\r\nUser-Agent: conntest\r\n\r\n"
        );
        let mut t = Tunnel::new("[::1]:8443", None, 0);
        let all = t.poll_output().len();
        t.advance_output(5);
        assert_eq!(&t.poll_output()[..12], b"CT [::1]:844");
        t.advance_output(all);
        assert!(t.poll_output().is_empty());
    }

    const OPEN: &[u8] =
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 Connection established\r\nProxy-agent: tinyproxy/1.11\r\n\r\n";

    #[test]
    fn every_split_point_opens_the_tunnel_at_the_last_bytes_time() {
        for split in 0..=OPEN.len() {
            let mut t = Tunnel::new("h:1", None, 1_000);
            let first = t.receive(&OPEN[..split], 1_500);
            if split == OPEN.len() {
                assert_eq!(first, Ok(TunnelState::Open { elapsed: 500 }));
                continue;
            }
            assert_eq!(first, Ok(TunnelState::Waiting), "split at {split}");
            let state = t.receive(&OPEN[split..], 4_000);
            assert_eq!(
                state,
                Ok(TunnelState::Open { elapsed: 3_000 }),
                "split at {split}"
            );
        }
    }

    #[test]
    fn refusals_and_garbage_are_errors_in_words() {
        let proxy = Proxy::parse("http://127.0.0.1:3128", "--proxy").unwrap();
        let mut t = Tunnel::new("h:1", None, 0);
        let e = t
            .receive(
                b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 5\r\n\r\nhello",
                10,
            )
            .unwrap_err();
        assert_eq!(
            e.words(&proxy, "CONNECT h:1"),
            "the proxy http://127.0.0.1:3128 (--proxy) answered 407 Proxy Authentication Required to CONNECT h:1: it wants credentials; give them as http://user:pass@proxy"
        );
        let with_auth = Proxy::parse("http://u:p@127.0.0.1:3128", "--proxy").unwrap();
        assert!(e
            .words(&with_auth, "CONNECT h:1")
            .ends_with("it refused the credentials given (check the user and password in http://user:pass@proxy; %-encode special characters)"));
        let mut t = Tunnel::new("h:1", None, 0);
        let e = t
            .receive(b"HTTP/1.0 403 Access violation\r\n\r\n", 10)
            .unwrap_err();
        assert_eq!(
            e,
            ProxyError::Refused {
                status: 403,
                reason: "Access violation".into()
            }
        );
        let mut t = Tunnel::new("h:1", None, 0);
        let e = t.receive(b"SSH-2.0-OpenSSH\r\n\r\n", 10).unwrap_err();
        assert!(matches!(e, ProxyError::Malformed(_)));
        assert_eq!(
            e.words(&proxy, "CONNECT h:1"),
            "the proxy http://127.0.0.1:3128 (--proxy) answered CONNECT h:1 with something that is not HTTP (invalid HTTP version)"
        );
        let mut t = Tunnel::new("h:1", None, 0);
        assert_eq!(
            t.receive(b"HTTP/1.1 200 OK\r\n", 10),
            Ok(TunnelState::Waiting)
        );
        assert_eq!(
            t.receive_eof().words(&proxy, "CONNECT h:1"),
            "the proxy http://127.0.0.1:3128 (--proxy) closed the connection before answering CONNECT h:1"
        );
        let mut t = Tunnel::new("h:1", None, 0);
        assert_eq!(
            t.receive(b"HTTP/1.1 200 OK\r\n\r\nxyz", 10),
            Err(ProxyError::Early(3))
        );
        let mut t = Tunnel::new("h:1", None, 0);
        let huge = vec![b'a'; MAX_HEAD + 10];
        assert!(matches!(
            t.receive(b"HTTP/1.1 200 OK\r\nX: ", 1)
                .and_then(|_| t.receive(&huge, 2)),
            Err(ProxyError::Malformed(_))
        ));
    }
}
