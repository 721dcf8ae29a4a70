//! The server's upstream GETs, one connection per request, driven by the
//! server's event loop with the same [`ClientConn`] machine the client uses.
//!
//! Each request resolves its host off the loop, connects without blocking,
//! (for https) shakes hands through a [`Transport`], sends `GET`, and reads
//! the answer, all bounded by the group's `upstream_timeout_ns`. Bodies are
//! counted and dropped, up to a limit past which the answer is not read
//! further. Every outcome, good or bad, comes back as an [`UpstreamOutcome`]
//! with the connect and handshake times.

use super::store::UpstreamOutcome;
use crate::event::clock::{self, Nanos};
use crate::event::resolver::Resolver;
use crate::event::timer::{TimerKey, TimerWheel};
use crate::event::Source;
use crate::http::client::{ClientConn, ClientError, ClientLimits};
use crate::http::url::{Scheme, Url};
use crate::http::Method;
use crate::tls::Transport;
use mio::net::TcpStream;
use mio::{Interest, Registry};
use slab::Slab;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::sync::Arc;

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
    Exchanging {
        stream: TcpStream,
        transport: Transport,
        handshake_since: Nanos,
    },
}

struct Exchange {
    run: usize,
    url: Url,
    phase: Phase,
    http: ClientConn,
    started: Nanos,
    timeout: Option<(Nanos, TimerKey)>,
    connect_ns: Option<u64>,
    tls_ns: Option<u64>,
}

/// A timer the server loop must route back here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimer {
    exchange: usize,
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
    exchanges: Slab<Exchange>,
    resolver: Resolver,
    max_body: u64,
    /// Trust for https upstreams; platform roots unless the server was
    /// given `--upstream-cacert`. Built on first use.
    tls: Option<Arc<rustls::ClientConfig>>,
}

type Outcome = Result<u16, (u16, String)>;

impl Upstreams {
    pub fn new(
        resolver: Resolver,
        max_body: u64,
        tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Upstreams {
        Upstreams {
            exchanges: Slab::new(),
            resolver,
            max_body,
            tls,
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
        http.send(
            Method::Get,
            &url.host_header(),
            &url.path,
            &[("User-Agent", "conntest")],
            b"",
        );
        let key = self.exchanges.insert(Exchange {
            run,
            url: url.clone(),
            phase: Phase::Resolving,
            http,
            started: ctx.now,
            timeout: None,
            connect_ns: None,
            tls_ns: None,
        });
        if let Some(t) = timeout {
            let at = ctx.now.saturating_add(t);
            let timer = ctx
                .wheel
                .insert(at, T::from(UpstreamTimer { exchange: key, run }));
            self.exchanges[key].timeout = Some((t, timer));
        }
        self.resolver.resolve(key as u64, &url.host, url.port);
    }

    /// Handles resolver answers that arrived (the loop's waker fired).
    pub fn on_resolved<T>(&mut self, mut ctx: Ctx<'_, T>) {
        let answers: Vec<_> = self.resolver.answers().collect();
        for (id, result) in answers {
            let key = id as usize;
            if !matches!(
                self.exchanges.get(key).map(|e| &e.phase),
                Some(Phase::Resolving)
            ) {
                continue;
            }
            match result {
                Ok(addrs) if !addrs.is_empty() => self.connect(key, addrs, 0, &mut ctx),
                Ok(_) => self.finish(
                    key,
                    &mut ctx,
                    Err((0, "name resolved to no address".into())),
                ),
                Err(e) => self.finish(
                    key,
                    &mut ctx,
                    Err((0, format!("name resolution failed: {e}"))),
                ),
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
            return self.finish(key, ctx, Err((0, "no address could be connected".into())));
        };
        let result = TcpStream::connect(addr).and_then(|mut stream| {
            let token = Source::Upstream(key).token();
            ctx.registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
            Ok(stream)
        });
        match result {
            Ok(stream) => {
                self.exchanges[key].phase = Phase::Connecting {
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
            Err(e) => self.finish(key, ctx, Err((0, format!("connect to {addr} failed: {e}")))),
        }
    }

    /// Readiness on an upstream socket.
    pub fn on_ready<T>(&mut self, key: usize, scratch: &mut [u8], mut ctx: Ctx<'_, T>) {
        let Some(exchange) = self.exchanges.get_mut(key) else {
            return;
        };
        if let Phase::Connecting {
            stream,
            addrs,
            next,
            since,
        } = &mut exchange.phase
        {
            let error = match crate::event::connect_outcome(stream) {
                None => return,
                Some(result) => result.err(),
            };
            if let Some(e) = error {
                let (addrs, next) = (std::mem::take(addrs), *next);
                let _ = ctx.registry.deregister(stream);
                if next < addrs.len() {
                    return self.connect(key, addrs, next, &mut ctx);
                }
                return self.finish(key, &mut ctx, Err((0, format!("connect failed: {e}"))));
            }
            let _ = stream.set_nodelay(true);
            exchange.connect_ns = Some(ctx.now - *since);
            let transport = match exchange.url.scheme {
                Scheme::Http => Ok(Transport::Plain),
                Scheme::Https => {
                    let config = match &self.tls {
                        Some(c) => Ok(Arc::clone(c)),
                        None => crate::tls::client_config(&[], false),
                    };
                    config.and_then(|c| {
                        self.tls = Some(Arc::clone(&c));
                        Transport::tls_client(&c, &exchange.url.host)
                    })
                }
            };
            let transport = match transport {
                Ok(t) => t,
                Err(e) => return self.finish(key, &mut ctx, Err((0, e))),
            };
            let Phase::Connecting { stream, .. } =
                std::mem::replace(&mut exchange.phase, Phase::Resolving)
            else {
                return;
            };
            // The handshake is timed with fresh clock readings: its first
            // flight and the reply can fall within one loop wake-up.
            exchange.phase = Phase::Exchanging {
                stream,
                transport,
                handshake_since: clock::now(),
            };
        }
        let result = pump(exchange, scratch);
        match result {
            Ok(None) => {}
            Ok(Some(status)) => self.finish(key, &mut ctx, Ok(status)),
            Err(e) => self.finish(key, &mut ctx, Err(e)),
        }
    }

    /// The timeout of an upstream request expired.
    pub fn on_timeout<T>(&mut self, timer: UpstreamTimer, mut ctx: Ctx<'_, T>) {
        let Some(exchange) = self.exchanges.get_mut(timer.exchange) else {
            return;
        };
        if exchange.run != timer.run {
            return;
        }
        let limit = exchange.timeout.map_or(0, |(t, _)| t);
        let stage = match &exchange.phase {
            Phase::Resolving => "resolving the name",
            Phase::Connecting { .. } => "connecting",
            Phase::Exchanging { transport, .. } if transport.is_handshaking() => {
                "in the TLS handshake"
            }
            Phase::Exchanging { .. } => "waiting for the answer",
        };
        exchange.timeout = None;
        let message = format!("upstream timed out after {limit} ns while {stage}");
        self.finish(timer.exchange, &mut ctx, Err((0, message)));
    }

    fn finish<T>(&mut self, key: usize, ctx: &mut Ctx<'_, T>, result: Outcome) {
        let mut exchange = self.exchanges.remove(key);
        if let Some((_, timer)) = exchange.timeout {
            ctx.wheel.cancel(timer);
        }
        if let Phase::Connecting { stream, .. } | Phase::Exchanging { stream, .. } =
            &mut exchange.phase
        {
            let _ = ctx.registry.deregister(stream);
        }
        let (code, error) = match result {
            Ok(code) => (code, None),
            Err((code, e)) => {
                crate::debug!("upstream {} failed: {e}", exchange.url);
                (code, Some(e.into()))
            }
        };
        ctx.done.push(Finished {
            run: exchange.run,
            outcome: UpstreamOutcome {
                code,
                time_ns: ctx.now.saturating_sub(exchange.started),
                connect_ns: exchange.connect_ns,
                tls_ns: exchange.tls_ns,
                error,
            },
        });
    }
}

/// Writes what is owed and reads what arrived; the status once the whole
/// answer is in.
fn pump(exchange: &mut Exchange, scratch: &mut [u8]) -> Result<Option<u16>, (u16, String)> {
    let Phase::Exchanging {
        stream,
        transport,
        handshake_since,
    } = &mut exchange.phase
    else {
        return Ok(None);
    };
    let http = &mut exchange.http;
    let failed = |e: ClientError| {
        let code = if let ClientError::BodyTooLarge { status, .. } = e {
            status
        } else {
            0
        };
        (code, format!("upstream {e}"))
    };
    loop {
        // Send what is owed (with TLS, handshake records too).
        transport
            .send(http, stream)
            .map_err(|e| (0, format!("sending the request failed: {e}")))?;
        let handshaking = transport.is_handshaking();
        let read = match stream.read(scratch) {
            Ok(0) => {
                if handshaking {
                    return Err((0, "connection closed during the TLS handshake".into()));
                }
                return match http.receive_eof() {
                    Ok(Some(r)) => Ok(Some(r.status)),
                    Ok(None) => Err((0, "upstream closed the connection without answering".into())),
                    Err(e) => Err(failed(e)),
                };
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((0, format!("reading the answer failed: {e}"))),
        };
        let plain = transport.decode(&scratch[..read]).map_err(|e| (0, e))?;
        http.receive(plain);
        if handshaking && !transport.is_handshaking() {
            exchange.tls_ns = Some(clock::now() - *handshake_since);
        }
        match http.next_response() {
            Ok(Some(r)) => return Ok(Some(r.status)),
            Ok(None) => {}
            Err(e) => return Err(failed(e)),
        }
    }
}
