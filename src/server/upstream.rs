//! The server's upstream GETs, one connection per request, driven by the
//! server's event loop with the same [`ClientConn`] machine the client uses.
//!
//! Each request resolves its host off the loop (concurrently with the
//! others), connects without blocking, (for https) shakes hands through a
//! [`Transport`], sends `GET` for the exact path and query of the endpoint,
//! and reads the answer, all bounded by the group's `upstream_timeout_ns`.
//! Bodies are counted and dropped, up to a limit past which the answer is not
//! read further. Every outcome, good or bad, comes back as an
//! [`UpstreamOutcome`] with the name look-up, connect and handshake times; an
//! answer outside 200-399 is an error (a broken path is what is tested for).
//!
//! Through a proxy (the server's `http_proxy`, `HTTPS_PROXY`, `NO_PROXY`...),
//! the proxy's name is looked up and connected to instead; an `http://`
//! upstream is asked in absolute form, an `https://` one through a
//! `CONNECT` tunnel ([`Tunnel`]) with TLS to the upstream inside. The
//! connect time then covers the connection to the proxy and the `CONNECT`
//! exchange.

use crate::event::clock::{self, Nanos};
use crate::event::resolver::{Answer, Resolver};
use crate::event::timer::{TimerKey, TimerWheel};
use crate::event::Source;
use crate::http::client::{ClientConn, ClientError, ClientLimits};
use crate::http::proxy::{authority, Proxies, Proxy, ProxyError, Tunnel, TunnelState};
use crate::http::url::{Scheme, Url};
use crate::http::{reason_phrase, Method};
use crate::tls::Transport;
use crate::wire::UpstreamOutcome;
use mio::net::TcpStream;
use mio::{Interest, Registry};
use slab::Slab;
use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;

/// Why an upstream GET failed.
#[derive(Debug)]
pub enum UpstreamError {
    Resolve(io::Error),
    NoAddress,
    Connect {
        addr: SocketAddr,
        error: io::Error,
    },
    /// TLS could not be set up, or the handshake failed.
    Tls(String),
    Send(io::Error),
    Read(io::Error),
    ClosedInHandshake,
    ClosedWithoutAnswer,
    /// The answer was not acceptable HTTP (or too large to read).
    Http(ClientError),
    TimedOut {
        after: Nanos,
        stage: &'static str,
    },
    /// The upstream answered, outside 200-399.
    Status(u16),
    /// The proxy refused or failed the request, in words.
    Proxy(String),
}

impl UpstreamError {
    /// The upstream's status code as recorded: 0 when no answer came.
    pub fn code(&self) -> u16 {
        match self {
            UpstreamError::Status(code) => *code,
            UpstreamError::Http(ClientError::BodyTooLarge { status, .. }) => *status,
            _ => 0,
        }
    }
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UpstreamError::Resolve(e) => write!(f, "name resolution failed: {e}"),
            UpstreamError::NoAddress => f.write_str("name resolved to no address"),
            UpstreamError::Connect { addr, error } => {
                write!(f, "connect to {addr} failed: {error}")
            }
            UpstreamError::Tls(e) => f.write_str(e),
            UpstreamError::Send(e) => write!(f, "sending the request failed: {e}"),
            UpstreamError::Read(e) => write!(f, "reading the answer failed: {e}"),
            UpstreamError::ClosedInHandshake => {
                f.write_str("connection closed during the TLS handshake")
            }
            UpstreamError::ClosedWithoutAnswer => {
                f.write_str("upstream closed the connection without answering")
            }
            UpstreamError::Http(e) => write!(f, "upstream {e}"),
            UpstreamError::TimedOut { after, stage } => {
                write!(f, "upstream timed out after {after} ns while {stage}")
            }
            UpstreamError::Status(code) => write!(
                f,
                "upstream answered {code} {} (outside 200-399)",
                reason_phrase(*code)
            ),
            UpstreamError::Proxy(words) => f.write_str(words),
        }
    }
}

/// An upstream request finished, for the pending run `run`.
pub struct Finished {
    pub run: usize,
    pub outcome: UpstreamOutcome,
}

enum Phase {
    Resolving,
    Connecting {
        stream: TcpStream,
        addrs: Vec<SocketAddr>,
        next: usize,
        since: Nanos,
    },
    /// Through a proxy to an https upstream: the `CONNECT` exchange.
    Tunneling {
        stream: TcpStream,
        tunnel: Tunnel,
    },
    Exchanging {
        stream: TcpStream,
        transport: Transport,
        handshake_since: Nanos,
    },
}

/// One upstream GET in progress.
struct UpstreamGet {
    run: usize,
    url: Url,
    /// The proxy this GET goes through, if any.
    proxy: Option<Proxy>,
    phase: Phase,
    http: ClientConn,
    started: Nanos,
    timeout: Option<(Nanos, TimerKey)>,
    dns_ns: Option<u64>,
    connect_ns: Option<u64>,
    tls_ns: Option<u64>,
}

/// A timer the server loop must route back here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimer {
    get: usize,
    run: usize,
}

/// What the loop passes to every upstream call.
pub struct Ctx<'a, T> {
    pub registry: &'a Registry,
    pub now: Nanos,
    pub wheel: &'a mut TimerWheel<T>,
    pub done: &'a mut Vec<Finished>,
}

pub struct Upstreams {
    gets: Slab<UpstreamGet>,
    resolver: Resolver,
    max_body: u64,
    /// Trust for https upstreams; platform roots unless the server was
    /// given `--upstream-cacert`. Built on first use.
    tls: Option<Arc<rustls::ClientConfig>>,
    proxies: Proxies,
}

type Outcome = Result<u16, UpstreamError>;

impl Upstreams {
    pub fn new(
        resolver: Resolver,
        max_body: u64,
        tls: Option<Arc<rustls::ClientConfig>>,
        proxies: Proxies,
    ) -> Upstreams {
        Upstreams {
            gets: Slab::new(),
            resolver,
            max_body,
            tls,
            proxies,
        }
    }

    /// Starts a GET to `url` for pending run `run`.
    pub fn start<T: From<UpstreamTimer>>(
        &mut self,
        run: usize,
        url: &Url,
        timeout: Option<Nanos>,
        ctx: Ctx<'_, T>,
    ) {
        let mut http = ClientConn::new(ClientLimits {
            max_body: self.max_body,
            discard_body: true,
            ..ClientLimits::default()
        });
        let proxy = self.proxies.for_url(url).cloned();
        let mut headers = vec![("User-Agent", "conntest")];
        // An http upstream is asked of the proxy in absolute form.
        let absolute = proxy.as_ref().filter(|_| url.scheme == Scheme::Http);
        let target = match absolute {
            Some(p) => {
                if let Some(a) = &p.authorization {
                    headers.push(("Proxy-Authorization", a));
                }
                format!("http://{}{}", authority(&url.host, url.port), url.target)
            }
            None => url.target.clone(),
        };
        http.send(Method::Get, &url.host_header(), &target, &headers, b"");
        let (host, port) = match &proxy {
            Some(p) => (p.host.clone(), p.port),
            None => (url.host.clone(), url.port),
        };
        let key = self.gets.insert(UpstreamGet {
            run,
            url: url.clone(),
            proxy,
            phase: Phase::Resolving,
            http,
            started: ctx.now,
            timeout: None,
            dns_ns: None,
            connect_ns: None,
            tls_ns: None,
        });
        if let Some(t) = timeout {
            let at = ctx.now.saturating_add(t);
            let timer = ctx
                .wheel
                .insert(at, T::from(UpstreamTimer { get: key, run }));
            self.gets[key].timeout = Some((t, timer));
        }
        self.resolver.resolve(key as u64, &host, port);
    }

    /// Handles resolver answers that arrived (the loop's waker fired).
    pub fn on_resolved<T>(&mut self, mut ctx: Ctx<'_, T>) {
        let answers: Vec<Answer> = self.resolver.answers().collect();
        for answer in answers {
            let key = answer.id as usize;
            let Some(get) = self.gets.get_mut(key) else {
                continue;
            };
            if !matches!(get.phase, Phase::Resolving) {
                continue;
            }
            get.dns_ns = answer.resolved_at.map(|t| t.saturating_sub(get.started));
            match answer.result {
                Ok(addrs) if !addrs.is_empty() => self.connect(key, addrs, 0, &mut ctx),
                Ok(_) => self.finish(key, &mut ctx, Err(UpstreamError::NoAddress)),
                Err(e) => self.finish(key, &mut ctx, Err(UpstreamError::Resolve(e))),
            }
        }
    }

    fn connect<T>(
        &mut self,
        key: usize,
        addrs: Vec<SocketAddr>,
        next: usize,
        ctx: &mut Ctx<'_, T>,
    ) {
        let Some(&addr) = addrs.get(next) else {
            return self.finish(key, ctx, Err(UpstreamError::NoAddress));
        };
        let result = TcpStream::connect(addr).and_then(|mut stream| {
            let token = Source::Upstream(key).token();
            ctx.registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
            Ok(stream)
        });
        match result {
            Ok(stream) => {
                self.gets[key].phase = Phase::Connecting {
                    stream,
                    addrs,
                    next: next + 1,
                    since: ctx.now,
                }
            }
            Err(e) if next + 1 < addrs.len() => {
                crate::debug!("upstream connect to {addr} failed: {e}");
                self.connect(key, addrs, next + 1, ctx)
            }
            Err(error) => self.finish(key, ctx, Err(UpstreamError::Connect { addr, error })),
        }
    }

    /// Readiness on an upstream socket.
    pub fn on_ready<T>(&mut self, key: usize, scratch: &mut [u8], mut ctx: Ctx<'_, T>) {
        let Some(get) = self.gets.get_mut(key) else {
            return;
        };
        if let Phase::Connecting {
            stream,
            addrs,
            next,
            since,
        } = &mut get.phase
        {
            let error = match crate::event::connect_outcome(stream) {
                None => return,
                Some(result) => result.err(),
            };
            if let Some(error) = error {
                let (addrs, next) = (std::mem::take(addrs), *next);
                let _ = ctx.registry.deregister(stream);
                if next < addrs.len() {
                    return self.connect(key, addrs, next, &mut ctx);
                }
                let addr = addrs[next - 1];
                return self.finish(key, &mut ctx, Err(UpstreamError::Connect { addr, error }));
            }
            let _ = stream.set_nodelay(true);
            let since = *since;
            let Phase::Connecting { stream, .. } =
                std::mem::replace(&mut get.phase, Phase::Resolving)
            else {
                return;
            };
            let tunnel_to = get
                .proxy
                .as_ref()
                .filter(|_| get.url.scheme == Scheme::Https);
            if let Some(proxy) = tunnel_to {
                let target = authority(&get.url.host, get.url.port);
                let auth = proxy.authorization.as_deref();
                get.phase = Phase::Tunneling {
                    stream,
                    tunnel: Tunnel::new(&target, auth, since),
                };
            } else {
                get.connect_ns = Some(ctx.now - since);
                if let Err(e) = self.exchange(key, stream) {
                    return self.finish(key, &mut ctx, Err(e));
                }
            }
        }
        let get = &mut self.gets[key];
        if let Phase::Tunneling { stream, tunnel } = &mut get.phase {
            match tunnel_through(stream, tunnel, scratch, ctx.now) {
                Ok(None) => return,
                Ok(Some(elapsed)) => {
                    get.connect_ns = Some(elapsed);
                    let Phase::Tunneling { stream, .. } =
                        std::mem::replace(&mut get.phase, Phase::Resolving)
                    else {
                        return;
                    };
                    if let Err(e) = self.exchange(key, stream) {
                        return self.finish(key, &mut ctx, Err(e));
                    }
                }
                Err(e) => {
                    let what = format!("CONNECT {}", authority(&get.url.host, get.url.port));
                    // Only a GET through a proxy tunnels.
                    let words = match (e, &get.proxy) {
                        (Ok(e), Some(p)) => e.words(p, &what),
                        (Err(e), Some(p)) => format!("{what} to {}: {e}", p.named()),
                        (e, None) => format!("{what}: {e:?}"),
                    };
                    return self.finish(key, &mut ctx, Err(UpstreamError::Proxy(words)));
                }
            }
        }
        let get = &mut self.gets[key];
        match pump(get, scratch) {
            Ok(None) => {}
            Ok(Some(status)) => self.finish(key, &mut ctx, Ok(status)),
            Err(e) => self.finish(key, &mut ctx, Err(e)),
        }
    }

    /// Sets up the exchange on a connected stream (TLS for https).
    fn exchange(&mut self, key: usize, stream: TcpStream) -> Result<(), UpstreamError> {
        let get = &mut self.gets[key];
        let transport = match get.url.scheme {
            Scheme::Http => Ok(Transport::Plain),
            Scheme::Https => {
                let config = match &self.tls {
                    Some(c) => Ok(Arc::clone(c)),
                    None => {
                        crate::tls::client_config(&[], false, None, crate::tls::Verifying::Upstream)
                    }
                };
                config.and_then(|c| {
                    self.tls = Some(Arc::clone(&c));
                    Transport::tls_client(&c, &get.url.host)
                })
            }
        };
        // The phase holds the stream even on failure, so finish deregisters it.
        let failed = transport.as_ref().err().cloned();
        // The handshake is timed with fresh clock readings: its first
        // flight and the reply can fall within one loop wake-up.
        get.phase = Phase::Exchanging {
            stream,
            transport: transport.unwrap_or_default(),
            handshake_since: clock::now(),
        };
        failed.map_or(Ok(()), |e| Err(UpstreamError::Tls(e)))
    }

    /// The timeout of an upstream request expired.
    pub fn on_timeout<T>(&mut self, timer: UpstreamTimer, mut ctx: Ctx<'_, T>) {
        let Some(get) = self.gets.get_mut(timer.get) else {
            return;
        };
        if get.run != timer.run {
            return;
        }
        let after = get.timeout.map_or(0, |(t, _)| t);
        let stage = match &get.phase {
            Phase::Resolving => "resolving the name",
            Phase::Connecting { .. } => "connecting",
            Phase::Tunneling { .. } => "waiting for the proxy's answer to CONNECT",
            Phase::Exchanging { transport, .. } if transport.is_handshaking() => {
                "in the TLS handshake"
            }
            Phase::Exchanging { .. } => "waiting for the answer",
        };
        get.timeout = None;
        self.finish(
            timer.get,
            &mut ctx,
            Err(UpstreamError::TimedOut { after, stage }),
        );
    }

    fn finish<T>(&mut self, key: usize, ctx: &mut Ctx<'_, T>, result: Outcome) {
        let mut get = self.gets.remove(key);
        if let Some((_, timer)) = get.timeout {
            ctx.wheel.cancel(timer);
        }
        if let Phase::Connecting { stream, .. }
        | Phase::Tunneling { stream, .. }
        | Phase::Exchanging { stream, .. } = &mut get.phase
        {
            let _ = ctx.registry.deregister(stream);
        }
        let absolute = get
            .proxy
            .as_ref()
            .filter(|_| get.url.scheme == Scheme::Http);
        let result = result.and_then(|code| match (code, absolute) {
            // In absolute form a 407 is the proxy's own.
            (407, Some(proxy)) => Err(UpstreamError::Proxy(
                ProxyError::Refused {
                    status: code,
                    reason: reason_phrase(code).into(),
                }
                .words(proxy, &format!("GET {}", get.url)),
            )),
            (200..=399, _) => Ok(code),
            _ => Err(UpstreamError::Status(code)),
        });
        let (code, error) = match result {
            Ok(code) => (code, None),
            Err(e) => {
                crate::debug!("upstream {} failed: {e}", get.url);
                // What failed on the way to the proxy names it.
                let text = match (&get.proxy, &e) {
                    (
                        Some(p),
                        UpstreamError::Resolve(_)
                        | UpstreamError::NoAddress
                        | UpstreamError::Connect { .. },
                    ) => format!("{}: {e}", p.named()),
                    _ => e.to_string(),
                };
                (e.code(), Some(text.into()))
            }
        };
        ctx.done.push(Finished {
            run: get.run,
            outcome: UpstreamOutcome {
                code,
                time_ns: ctx.now.saturating_sub(get.started),
                dns_ns: get.dns_ns,
                connect_ns: get.connect_ns,
                tls_ns: get.tls_ns,
                error,
            },
        });
    }
}

/// Moves a `CONNECT` exchange on: writes what is owed, reads the proxy's
/// answer. The time from the connect's start once the tunnel is open;
/// an error is the proxy's (`Ok`) or the socket's (`Err`).
fn tunnel_through(
    stream: &mut TcpStream,
    tunnel: &mut Tunnel,
    scratch: &mut [u8],
    now: Nanos,
) -> Result<Option<Nanos>, Result<ProxyError, io::Error>> {
    loop {
        if !tunnel.poll_output().is_empty() {
            match stream.write(tunnel.poll_output()) {
                Ok(n) => tunnel.advance_output(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Err(e)),
            }
            continue;
        }
        match stream.read(scratch) {
            Ok(0) => return Err(Ok(tunnel.receive_eof())),
            Ok(n) => match tunnel.receive(&scratch[..n], now) {
                Ok(TunnelState::Waiting) => {}
                Ok(TunnelState::Open { elapsed }) => return Ok(Some(elapsed)),
                Err(e) => return Err(Ok(e)),
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Err(e)),
        }
    }
}

/// Writes what is owed and reads what arrived; the status once the whole
/// answer is in.
fn pump(get: &mut UpstreamGet, scratch: &mut [u8]) -> Result<Option<u16>, UpstreamError> {
    let Phase::Exchanging {
        stream,
        transport,
        handshake_since,
    } = &mut get.phase
    else {
        return Ok(None);
    };
    let http = &mut get.http;
    loop {
        // Send what is owed (with TLS, handshake records too).
        transport.send(http, stream).map_err(UpstreamError::Send)?;
        let handshaking = transport.is_handshaking();
        let read = match stream.read(scratch) {
            Ok(0) => {
                if handshaking {
                    return Err(UpstreamError::ClosedInHandshake);
                }
                return match http.receive_eof() {
                    Ok(Some(r)) => Ok(Some(r.status)),
                    Ok(None) => Err(UpstreamError::ClosedWithoutAnswer),
                    Err(e) => Err(UpstreamError::Http(e)),
                };
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(UpstreamError::Read(e)),
        };
        let plain = transport
            .decode(&scratch[..read])
            .map_err(UpstreamError::Tls)?;
        http.receive(plain);
        if handshaking && !transport.is_handshaking() {
            get.tls_ns = Some(clock::now() - *handshake_since);
        }
        match http.next_response() {
            Ok(Some(r)) => return Ok(Some(r.status)),
            Ok(None) => {}
            Err(e) => return Err(UpstreamError::Http(e)),
        }
    }
}
