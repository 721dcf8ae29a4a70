//! One-off requests to the server (create, fetch a group) outside the
//! measured loop: a blocking socket driving the same [`ClientConn`] machine
//! the load driver uses.

use crate::http::client::{ClientConn, ClientLimits, Response};
use crate::http::proxy::{authority, Proxies, Proxy, ProxyError, ProxyRoute, Tunnel, TunnelState};
use crate::http::url::{Scheme, Url};
use crate::http::{reason_phrase, Method};
use crate::tls::Transport;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How to trust an https server, and what to show it.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Extra CA certificates (PEM), beside the platform's.
    pub cacert: Option<PathBuf>,
    /// Skip certificate verification (said so in the summary).
    pub insecure: bool,
    /// A client certificate for servers that ask for one (`--cert`, `--key`).
    pub identity: Option<crate::tls::Identity>,
}

/// Where to connect instead of the URL's host and port, as curl's
/// `--connect-to HOST:PORT:HOST2:PORT2` and `--resolve HOST:PORT:ADDR`
/// say. The `Host` header and TLS keep the URL's name.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// (host, port, address): that host and port are at that address.
    pub resolve: Vec<(String, u16, IpAddr)>,
    /// (host, port, host2, port2): connect to host2:port2 instead; an
    /// empty host or a port 0 matches any (and keeps it, on the right).
    pub connect_to: Vec<(String, u16, String, u16)>,
    /// The proxies (`--proxy`, `--noproxy`, the environment): the server
    /// is reached through the one its URL's scheme and host call for.
    pub proxies: Proxies,
}

impl Overrides {
    /// The addresses to connect to for `host:port`.
    fn addresses(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        let same = |a: &str, b: &str| a.is_empty() || a.eq_ignore_ascii_case(b);
        let (host, port) = self
            .connect_to
            .iter()
            .find(|(h, p, _, _)| same(h, host) && (*p == 0 || *p == port))
            .map_or((host, port), |(_, _, h2, p2)| {
                (
                    if h2.is_empty() { host } else { h2.as_str() },
                    if *p2 == 0 { port } else { *p2 },
                )
            });
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if let Some((_, _, ip)) = self
            .resolve
            .iter()
            .find(|(h, p, _)| h.eq_ignore_ascii_case(host) && *p == port)
        {
            return Ok(vec![SocketAddr::new(*ip, port)]);
        }
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve '{host}': {e}"))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("'{host}' resolved to no address"));
        }
        Ok(addrs)
    }
}

/// A conntest server: its URL, its addresses, the token to present and,
/// for https, the TLS config.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub url: Url,
    pub addrs: Vec<SocketAddr>,
    pub token: Option<String>,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// `-H` headers, on every request to the server (a `Host` among them
    /// replaces the URL's; TLS keeps the URL's name).
    pub headers: Vec<(String, String)>,
    /// The proxy every connection goes through (`addrs` are then its).
    pub proxy: Option<Proxy>,
    /// Index of the address that last answered.
    preferred: Arc<AtomicUsize>,
}

impl Endpoint {
    /// Parses `-r` and resolves its host (or where `overrides` send it).
    pub fn resolve(
        remote: &str,
        token: Option<String>,
        tls: &TlsOptions,
        overrides: &Overrides,
    ) -> Result<Endpoint, String> {
        let url = Url::parse(remote).map_err(|e| format!("-r: {e}"))?;
        let tls = match url.scheme {
            Scheme::Http => None,
            Scheme::Https => {
                let cacert: Vec<&std::path::Path> =
                    tls.cacert.iter().map(PathBuf::as_path).collect();
                Some(crate::tls::client_config(
                    &cacert,
                    tls.insecure,
                    tls.identity.clone(),
                    crate::tls::Verifying::Client,
                )?)
            }
        };
        let proxy = overrides.proxies.for_url(&url).cloned();
        let addrs = match &proxy {
            Some(p) => overrides
                .addresses(&p.host, p.port)
                .map_err(|e| format!("{}: {e}", p.named()))?,
            None => overrides.addresses(&url.host, url.port)?,
        };
        Ok(Endpoint {
            url,
            addrs,
            token,
            tls,
            headers: Vec::new(),
            proxy,
            preferred: Arc::default(),
        })
    }

    /// An endpoint for a server at a known address (the embedded one).
    pub fn local(addr: SocketAddr) -> Endpoint {
        Endpoint {
            url: Url {
                scheme: Scheme::Http,
                host: addr.ip().to_string(),
                port: addr.port(),
                path: "/".into(),
                target: "/".into(),
            },
            addrs: vec![addr],
            token: None,
            tls: None,
            headers: Vec::new(),
            proxy: None,
            preferred: Arc::default(),
        }
    }

    pub fn bearer(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {t}"))
    }

    /// The `Host` requests carry: a `-H 'Host: ...'`, else the URL's.
    pub fn host_header(&self) -> String {
        self.headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("host"))
            .map_or_else(|| self.url.host_header(), |(_, value)| value.clone())
    }

    /// The header lines of a run request after `Host`: the token, then
    /// the `-H` headers, then (to a proxy in absolute form) its
    /// credentials.
    pub fn run_headers(&self) -> Vec<(String, String)> {
        let token = self.bearer().map(|b| ("Authorization".to_owned(), b));
        let proxy = self
            .absolute_form()
            .and_then(|p| p.authorization.clone())
            .map(|a| ("Proxy-Authorization".to_owned(), a));
        token
            .into_iter()
            .chain(
                self.headers
                    .iter()
                    .filter(|(name, _)| !name.eq_ignore_ascii_case("host"))
                    .cloned(),
            )
            .chain(proxy)
            .collect()
    }

    /// The proxy an http:// server is asked through, in absolute form.
    fn absolute_form(&self) -> Option<&Proxy> {
        self.proxy
            .as_ref()
            .filter(|_| self.url.scheme == Scheme::Http)
    }

    /// The request target of `route` (joined to the URL's path prefix):
    /// to a proxy in absolute form, the whole URL.
    pub fn target(&self, route: &str) -> String {
        let path = self.url.join(route);
        match self.absolute_form() {
            Some(_) => format!("http://{}{path}", authority(&self.url.host, self.url.port)),
            None => path,
        }
    }

    /// How connections go through the proxy, if there is one: `CONNECT`
    /// first for https, absolute form for http.
    pub fn proxy_route(&self) -> Option<ProxyRoute> {
        self.proxy.as_ref().map(|proxy| ProxyRoute {
            proxy: proxy.clone(),
            connect: (self.url.scheme == Scheme::Https)
                .then(|| authority(&self.url.host, self.url.port)),
        })
    }

    /// Sends one request to `route` (joined to the URL's path prefix) and
    /// reads the whole answer.
    pub fn request(
        &self,
        method: Method,
        route: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Response, String> {
        self.open(method, route, body, timeout)?.rest()
    }

    /// Sends a GET and parses its answer as JSON while it streams in, so a
    /// large body is never held whole. A non-200 answer is returned as its
    /// status and error message.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        route: &str,
        timeout: Duration,
    ) -> Result<Result<T, (u16, String)>, String> {
        self.get_with(route, timeout, |body| {
            let reader = std::io::BufReader::with_capacity(64 * 1024, body);
            serde_json::from_reader(reader).map_err(|e| e.to_string())
        })
    }

    /// Sends a GET and hands its body, as it streams in, to `read`. A
    /// non-200 answer is returned as its status and error message.
    pub fn get_with<T>(
        &self,
        route: &str,
        timeout: Duration,
        read: impl FnOnce(&mut dyn Read) -> Result<T, String>,
    ) -> Result<Result<T, (u16, String)>, String> {
        let mut exchange = self.open(Method::Get, route, b"", timeout)?;
        let status = exchange.status()?;
        if status != 200 {
            let rest = exchange.rest()?;
            return Ok(Err((status, error_message(&rest))));
        }
        read(&mut exchange).map(Ok).map_err(|e| {
            format!(
                "the answer to GET {} is not valid: {e}",
                self.url.join(route)
            )
        })
    }

    /// The address that last answered (the first one, before any did): the
    /// load driver uses it, so a name with several addresses is tested on
    /// the one that works.
    pub fn addr(&self) -> SocketAddr {
        self.addrs[self.preferred.load(Ordering::Relaxed) % self.addrs.len()]
    }

    /// Connects to the preferred address, else to each other in turn.
    fn connect(&self, timeout: Duration) -> Result<TcpStream, String> {
        let first = self.preferred.load(Ordering::Relaxed);
        let mut last_error = String::from("no address");
        for k in 0..self.addrs.len() {
            let i = (first + k) % self.addrs.len();
            match TcpStream::connect_timeout(&self.addrs[i], timeout) {
                Ok(stream) => {
                    self.preferred.store(i, Ordering::Relaxed);
                    return Ok(stream);
                }
                Err(e) if is_timeout(&e) => {
                    last_error = format!(
                        "cannot connect to {} ({}) within {timeout:?} (--timeout)",
                        self.peer(),
                        self.addrs[i]
                    )
                }
                Err(e) => {
                    last_error =
                        format!("cannot connect to {} ({}): {e}", self.peer(), self.addrs[i])
                }
            }
        }
        Err(last_error)
    }

    /// What a connection goes to, as messages name it: the server's URL,
    /// or the proxy.
    fn peer(&self) -> String {
        match &self.proxy {
            Some(p) => p.named(),
            None => self.url.to_string(),
        }
    }

    /// Opens a tunnel through the proxy to an https server (`CONNECT`),
    /// on a blocking socket.
    fn tunnel(&self, stream: &mut TcpStream, timeout: Duration) -> Result<(), String> {
        let Some(route) = self.proxy_route() else {
            return Ok(());
        };
        let Some(target) = &route.connect else {
            return Ok(());
        };
        let proxy = &route.proxy;
        let what = format!("CONNECT {target}");
        let words = |e: ProxyError| e.words(proxy, &what);
        let io = |e: std::io::Error| {
            if is_timeout(&e) {
                format!(
                    "no answer to {what} from {} within {timeout:?} (--timeout)",
                    proxy.named()
                )
            } else {
                format!("{what} to {}: {e}", proxy.named())
            }
        };
        let mut tunnel = Tunnel::new(target, proxy.authorization.as_deref(), 0);
        stream.write_all(tunnel.poll_output()).map_err(io)?;
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).map_err(io)?;
            if n == 0 {
                return Err(words(tunnel.receive_eof()));
            }
            match tunnel.receive(&buf[..n], 0).map_err(words)? {
                TunnelState::Waiting => {}
                TunnelState::Open { .. } => return Ok(()),
            }
        }
    }

    /// Connects and sends one request.
    fn open(
        &self,
        method: Method,
        route: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Exchange, String> {
        let mut stream = self.connect(timeout)?;
        let _ = stream.set_read_timeout(Some(timeout));
        let _ = stream.set_write_timeout(Some(timeout));
        let _ = stream.set_nodelay(true);
        self.tunnel(&mut stream, timeout)?;
        let mut http = ClientConn::new(ClientLimits::default());
        let mut headers = vec![
            ("User-Agent".to_owned(), "conntest".to_owned()),
            ("Connection".to_owned(), "close".to_owned()),
        ];
        headers.extend(self.run_headers());
        http.send(
            method,
            &self.host_header(),
            &self.target(route),
            &headers,
            body,
        );
        let mut transport = match &self.tls {
            None => Transport::Plain,
            Some(config) => Transport::tls_client(config, &self.url.host)?,
        };
        // What the messages name: the method and the whole URL.
        let request = format!("{} {}{}", method.as_str(), self.url, route);
        let what = match &self.proxy {
            Some(p) => format!("{request} (through {})", p.named()),
            None => request.clone(),
        };
        // A blocking socket takes everything (TLS keeps the request until
        // the handshake is done; `fill` sends it then).
        let n = match transport.write(http.poll_output(), &mut stream) {
            Ok(n) => n,
            Err(e) if is_timeout(&e) => {
                return Err(format!("{what}: not sent within {timeout:?} (--timeout)"))
            }
            Err(e) => return Err(format!("{what}: {e}")),
        };
        http.advance_output(n);
        Ok(Exchange {
            what,
            request,
            absolute_form: self.absolute_form().cloned(),
            timeout,
            stream,
            transport,
            http,
            buf: vec![0; 64 * 1024],
            body: Vec::new(),
            pos: 0,
            done: None,
        })
    }
}

/// One request in progress on a blocking socket; reads its answer whole
/// ([`Exchange::rest`]) or as a stream of body bytes (`Read`).
struct Exchange {
    /// The request, as messages name it (`GET http://host:port/route`).
    what: String,
    /// The request alone (`GET http://host:port/route`).
    request: String,
    /// The proxy asked in absolute form: its 407 is its own, not the
    /// server's.
    absolute_form: Option<Proxy>,
    timeout: Duration,
    stream: TcpStream,
    transport: Transport,
    http: ClientConn,
    buf: Vec<u8>,
    /// Body bytes taken from the machine and not yet read out.
    body: Vec<u8>,
    pos: usize,
    /// The whole response, once it is in (its body is then in `body`).
    done: Option<Response>,
}

impl Exchange {
    /// Reads from the socket into the machine; false at end of stream.
    fn fill(&mut self) -> Result<(), String> {
        let read = self.stream.read(&mut self.buf);
        // A proxy that refused may reset the connection after its head.
        if let (Err(_), Some(status)) = (&read, self.http.pending_status()) {
            self.not_the_proxys(status)?;
        }
        let n = read.map_err(|e| {
            if is_timeout(&e) {
                format!(
                    "no answer to {} within {:?} (--timeout)",
                    self.what, self.timeout
                )
            } else {
                format!("reading the answer to {}: {e}", self.what)
            }
        })?;
        if n == 0 && self.transport.is_handshaking() {
            return Err("the connection closed during the TLS handshake".into());
        }
        let complete = if n == 0 || self.transport.peer_closed() {
            Some(
                self.http
                    .receive_eof()
                    .map_err(|e| e.to_string())?
                    .ok_or("the server closed the connection without answering")?,
            )
        } else {
            let plain = self.transport.decode(&self.buf[..n])?;
            self.http.receive(plain);
            // Handshake replies, and the request once the handshake is done.
            self.transport
                .write(&[], &mut self.stream)
                .map_err(|e| format!("sending: {e}"))?;
            self.http.next_response().map_err(|e| e.to_string())?
        };
        if let Some(mut r) = complete {
            self.body.append(&mut r.body);
            self.done = Some(r);
        }
        Ok(())
    }

    /// The status, once the head has arrived.
    fn status(&mut self) -> Result<u16, String> {
        loop {
            if let Some(status) = self
                .done
                .as_ref()
                .map(|r| r.status)
                .or(self.http.pending_status())
            {
                return self.not_the_proxys(status);
            }
            self.fill()?;
        }
    }

    /// `status`, unless it is a proxy's refusal (a 407 in absolute form).
    fn not_the_proxys(&self, status: u16) -> Result<u16, String> {
        match &self.absolute_form {
            Some(proxy) if status == 407 => Err(ProxyError::Refused {
                status,
                reason: reason_phrase(status).to_owned(),
            }
            .words(proxy, &self.request)),
            _ => Ok(status),
        }
    }

    /// The whole response.
    fn rest(mut self) -> Result<Response, String> {
        while self.done.is_none() {
            self.fill()?;
        }
        if let Some(r) = &self.done {
            self.not_the_proxys(r.status)?;
        }
        let mut r = self.done.take().ok_or("no response")?;
        self.http.take_partial_body(&mut self.body);
        r.body = self.body.split_off(self.pos);
        Ok(r)
    }
}

impl Read for Exchange {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.pos < self.body.len() {
                let n = out.len().min(self.body.len() - self.pos);
                out[..n].copy_from_slice(&self.body[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            self.body.clear();
            self.pos = 0;
            if self.done.is_some() {
                return Ok(0);
            }
            self.fill().map_err(std::io::Error::other)?;
            self.http.take_partial_body(&mut self.body);
        }
    }
}

/// A blocking socket's timeout (the error kind differs by platform).
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Longest answer text shown as it is; a longer one (an HTML error page from
/// something that is not a conntest server) is described instead.
const SHOWN_TEXT: usize = 200;

/// The `<title>` of an HTML page (an error page of a proxy on the path), on
/// one line and at most [`SHOWN_TEXT`] long.
fn html_title(text: &str) -> Option<String> {
    let lower = text.to_ascii_lowercase();
    let start = lower.find("<title>")? + "<title>".len();
    let len = lower[start..].find("</title>")?;
    let title: String = text[start..start + len]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control())
        .take(SHOWN_TEXT)
        .collect();
    (!title.is_empty()).then_some(title)
}

/// What nginx's pages for mutual TLS (`ssl_verify_client on`) mean, with
/// the flags that fix it; for any other page, a question.
fn page_hint(title: &str) -> &'static str {
    if title.contains("No required SSL certificate was sent") {
        "; the path asks for a client certificate: give one with --cert FILE --key FILE"
    } else if title.contains("The SSL certificate error") {
        "; the path refused the client certificate: give --cert one it trusts (issued by a CA \
         it names in ssl_client_certificate), not expired"
    } else {
        " (is this a conntest server?)"
    }
}

/// The `error` of a JSON error answer, or a short answer's text; always one
/// line.
pub fn error_message(response: &Response) -> String {
    let json = serde_json::from_slice::<serde_json::Value>(&response.body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned));
    let text = match json {
        Some(error) => error,
        None => {
            let text = String::from_utf8_lossy(&response.body);
            let text = text.trim();
            if text.len() > SHOWN_TEXT || text.contains(['\n', '\r']) {
                return match html_title(text) {
                    Some(title) => format!(
                        "a {}-byte HTML page titled '{title}', not a conntest error{}",
                        response.body.len(),
                        page_hint(&title)
                    ),
                    None => format!(
                        "a {}-byte answer that is not a conntest error (is this a conntest server?)",
                        response.body.len()
                    ),
                };
            }
            text.to_owned()
        }
    };
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match line.trim() {
        "" => "(no error message)".into(),
        line => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(body: &str) -> String {
        error_message(&Response {
            status: 400,
            body: body.as_bytes().to_vec(),
            close: false,
        })
    }

    #[test]
    fn error_pages_are_named_by_their_title() {
        let nginx = |title: &str| {
            format!(
                "<html>\r\n<head><TITLE>{title}</TITLE></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n</body></html>\r\n"
            )
        };
        let page = nginx("400 No required SSL certificate was sent");
        assert_eq!(
            message(&page),
            format!(
                "a {}-byte HTML page titled '400 No required SSL certificate was sent', not a conntest \
                 error; the path asks for a client certificate: give one with --cert FILE --key FILE",
                page.len()
            )
        );
        let refused = message(&nginx("400 The SSL certificate error"));
        assert!(
            refused.contains("refused the client certificate"),
            "{refused}"
        );
        let other = message(&nginx("502 Bad\n  Gateway"));
        assert!(
            other.ends_with(
                "titled '502 Bad Gateway', not a conntest error (is this a conntest server?)"
            ),
            "{other}"
        );
        let untitled = message(&"x\n".repeat(300));
        assert_eq!(
            untitled,
            "a 600-byte answer that is not a conntest error (is this a conntest server?)"
        );
        assert_eq!(message(r#"{"error": "no test group"}"#), "no test group");
    }
}
