//! `conntest server`: the test-group API over one mio loop per thread.
//!
//! The loop accepts connections, moves bytes between sockets and each
//! connection's [`ServerConn`], hands complete requests to the [`Api`], and
//! carries out test runs: upstream GET, then the server delay on the timer
//! wheel, then the record and the answer. The clock is read once per
//! wake-up; every timestamp of that wake-up is that `now`.

pub mod api;
pub mod l4;
pub mod metrics;
pub mod stream;
pub mod upstream;

use crate::event::clock::{self, Nanos, WallAnchor, MILLISECOND};
use crate::event::resolver::Resolver;
use crate::event::timer::{TimerKey, TimerWheel};
use crate::event::wake::WakeTimer;
use crate::event::Source;
use crate::http::server::{Request, Response, ServerConn, ServerLimits};
use crate::ids::IdGen;
use crate::store::memory::MemoryStore;
use crate::store::{Inbox, Op, Reply, Run, Store, StoreLimits, Ticket, UpstreamOutcome};
use crate::tls::Transport;
use api::{store_error, Action, Api, ApiPolicy, Next, RunOrder, Then};
use metrics::Route;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll};
use slab::Slab;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use stream::{Mailbox, StoreStream, StreamCtx};
use upstream::{Finished, UpstreamTimer, Upstreams};

/// Everything `conntest server` can be told.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub bind: Vec<SocketAddr>,
    pub threads: usize,
    pub http: ServerLimits,
    /// Connections served at once, by all loops together.
    pub max_connections: usize,
    pub store: StoreLimits,
    /// Where groups and runs are kept; the memory store when `None`.
    pub backend: Option<Store>,
    pub policy: ApiPolicy,
    /// Upstream answers larger than this are not read further.
    pub upstream_max_body: u64,
    /// Serve HTTPS with this certificate (`--tls-cert`, `--tls-key`).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Trust for https upstreams (platform roots plus `--upstream-cacert`).
    pub upstream_tls: Option<Arc<rustls::ClientConfig>>,
    /// Raw TCP runs on this port (`--tcp-port`; 0: any free one), on the
    /// first bind address; none when `None`.
    pub tcp_port: Option<u16>,
    /// UDP runs on this port (`--udp-port`), likewise.
    pub udp_port: Option<u16>,
    /// The proxies upstream GETs go through (the server's environment:
    /// `http_proxy`, `HTTPS_PROXY`, `NO_PROXY`... as curl reads them).
    pub upstream_proxies: crate::http::proxy::Proxies,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            bind: vec![SocketAddr::from(([127, 0, 0, 1], 0))],
            threads: 1,
            http: ServerLimits::default(),
            max_connections: 10_000,
            store: StoreLimits::default(),
            backend: None,
            policy: ApiPolicy::default(),
            upstream_max_body: 1 << 20,
            tls: None,
            upstream_tls: None,
            tcp_port: None,
            udp_port: None,
            upstream_proxies: Default::default(),
        }
    }
}

/// A bound, not yet running server.
pub struct Server {
    listeners: Vec<Vec<std::net::TcpListener>>,
    api: Arc<Api>,
    options: ServerOptions,
    local_addrs: Vec<SocketAddr>,
    /// The raw TCP and UDP sockets, for the first loop.
    l4: l4::L4Sockets,
}

/// Stops the loops: the first call stops accepting and lets runs in flight
/// finish; they exit once none is left.
#[derive(Clone, Default)]
pub struct StopSignal {
    flag: Arc<AtomicBool>,
    /// The number of the signal that set the flag; 0 when none did.
    signal: Arc<AtomicUsize>,
}

impl StopSignal {
    /// A stop signal that a flag (set by a signal handler, say) triggers;
    /// `signal` holds the number of the signal that came, for the log.
    pub fn from_flag(flag: Arc<AtomicBool>, signal: Arc<AtomicUsize>) -> StopSignal {
        StopSignal { flag, signal }
    }

    /// The signal that stopped the loops, if one did.
    fn signal_name(&self) -> Option<String> {
        match self.signal.load(Ordering::SeqCst) {
            0 => None,
            2 => Some("SIGINT".to_owned()),
            15 => Some("SIGTERM".to_owned()),
            n => Some(format!("signal {n}")),
        }
    }

    pub fn trigger(&self) {
        self.flag.store(true, Ordering::SeqCst);
    }

    fn is_set(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }
}

impl Server {
    /// Binds every address (one listener per thread, sharing the port with
    /// SO_REUSEPORT so the kernel spreads connections over the threads).
    ///
    /// With several threads the port is first claimed by a socket bound
    /// without SO_REUSEPORT: that bind fails when any other process listens
    /// on the port (another server's SO_REUSEPORT loops included), so a
    /// second server cannot silently join the first and take half of its
    /// connections. The claim is held until our own listeners are bound.
    pub fn bind(options: ServerOptions) -> io::Result<Server> {
        let threads = options.threads.max(1);
        let mut listeners: Vec<Vec<std::net::TcpListener>> =
            (0..threads).map(|_| Vec::new()).collect();
        let mut local_addrs = Vec::new();
        for &addr in &options.bind {
            let claim = if threads > 1 {
                Some(bind_socket(addr, false)?)
            } else {
                None
            };
            let mut addr = match &claim {
                Some(socket) => socket.local_addr()?.as_socket().unwrap_or(addr),
                None => addr,
            };
            for per_thread in listeners.iter_mut() {
                let listener = bind_listener(addr, threads > 1)?;
                addr = listener.local_addr()?;
                per_thread.push(listener);
            }
            drop(claim);
            local_addrs.push(addr);
        }
        let store = options
            .backend
            .clone()
            .unwrap_or_else(|| Arc::new(MemoryStore::new(options.store)));
        let ip = local_addrs.first().map_or(options.bind[0].ip(), |a| a.ip());
        let l4 = l4::L4Sockets::bind(ip, options.tcp_port, options.udp_port)?;
        let api = Api::new(store, options.policy.clone()).with_l4(l4.ports());
        if options.backend.is_some() {
            api.keep_all_heads();
        }
        Ok(Server {
            listeners,
            api: Arc::new(api),
            options,
            local_addrs,
            l4,
        })
    }

    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// The raw TCP and UDP ports bound (`--tcp-port`, `--udp-port`).
    pub fn l4_ports(&self) -> crate::wire::L4Ports {
        self.l4.ports()
    }

    /// Runs the loops until `shutdown` is triggered and runs in flight end.
    pub fn run(mut self, shutdown: StopSignal) -> io::Result<()> {
        // Each loop takes its share of the connections.
        self.options.max_connections = self
            .options
            .max_connections
            .div_ceil(self.listeners.len().max(1));
        let mut handles = Vec::new();
        let mut sets = self.listeners.into_iter();
        let first = sets.next().unwrap_or_default();
        for (i, set) in sets.enumerate() {
            let api = Arc::clone(&self.api);
            let options = self.options.clone();
            let shutdown = shutdown.clone();
            handles.push(
                std::thread::Builder::new()
                    .name(format!("loop-{}", i + 1))
                    .spawn(move || ServerLoop::new(set, api, options, shutdown)?.run())?,
            );
        }
        let mut first = ServerLoop::new(first, self.api, self.options, shutdown.clone())?;
        first.add_l4(self.l4)?;
        let result = first.run();
        shutdown.trigger();
        for h in handles {
            match h.join() {
                Ok(r) => r?,
                Err(_) => return Err(io::Error::other("a server loop thread panicked")),
            }
        }
        result
    }
}

fn bind_listener(addr: SocketAddr, reuse_port: bool) -> io::Result<std::net::TcpListener> {
    let socket = bind_socket(addr, reuse_port)?;
    socket.listen(4096)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// A TCP socket bound to `addr`, not yet listening.
fn bind_socket(addr: SocketAddr, reuse_port: bool) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        // "::" serves IPv4 too.
        let _ = socket.set_only_v6(false);
    }
    socket.set_reuse_address(true)?;
    #[cfg(all(unix, not(any(target_os = "solaris", target_os = "illumos"))))]
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    #[cfg(not(all(unix, not(any(target_os = "solaris", target_os = "illumos")))))]
    let _ = reuse_port;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Timers of the server loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// Check a connection for idle or request timeouts.
    Connection {
        key: usize,
        serial: u64,
    },
    /// A run's server delay is over.
    RunDelay(usize),
    Upstream(UpstreamTimer),
    /// Retry accepting after running out of file descriptors.
    AcceptRetry,
    /// A raw TCP or UDP run's server delay is over.
    L4Delay(usize),
    /// Check a raw TCP connection for its idle or message timeout.
    L4Conn {
        key: usize,
        serial: u64,
    },
}

impl From<UpstreamTimer> for Timer {
    fn from(t: UpstreamTimer) -> Timer {
        Timer::Upstream(t)
    }
}

struct Connection {
    stream: TcpStream,
    /// Plain TCP, or TLS with `--tls-cert`.
    transport: Transport,
    /// The HTTP machine; it owns the connection's deadlines.
    http: ServerConn,
    serial: u64,
    /// The armed timer and its deadline.
    timer: Option<(Nanos, TimerKey)>,
    /// Reading stopped with the pipeline full; bytes may wait in the kernel.
    read_paused: bool,
    /// The client's address, for the log.
    peer: SocketAddr,
    /// Where store pages for this connection's streamed answer arrive;
    /// made with its first streamed answer.
    mailbox: Option<Arc<Mailbox>>,
    /// The subject of the client certificate (mutual TLS), read once the
    /// handshake is done; each run's record names it.
    client_cert_subject: Option<Arc<str>>,
    /// A TLS connection whose peer certificate is not read yet.
    cert_unread: bool,
}

/// A request whose answer waits on the store.
enum Waiting {
    Request {
        conn: usize,
        serial: u64,
        seq: u64,
        then: Then,
        /// The route it came on, for the log of an error answer.
        route: Option<String>,
    },
    /// A run being recorded: its 200 leaves once the store confirms.
    Record {
        conn: usize,
        serial: u64,
        seq: u64,
        path: String,
        submitted: Nanos,
    },
    /// A raw TCP or UDP run's step.
    L4(l4::L4Wait),
}

/// A test run between its request and its answer. It lives outside the
/// connection so it is recorded even when the client is gone.
struct PendingRun {
    conn: usize,
    /// The route it came on, for the log of an error answer.
    path: String,
    serial: u64,
    seq: u64,
    order: RunOrder,
    start: Nanos,
    upstream: Option<UpstreamOutcome>,
}

const SCRATCH: usize = 64 * 1024;
/// How long a stopping server waits for an upstream GET whose group set no
/// `upstream_timeout_ns`.
const STOP_UPSTREAM_BOUND: Nanos = 30 * clock::SECOND;
/// Beyond the longest held run, for its answer to be written.
const STOP_MARGIN: Nanos = 100 * MILLISECOND;
/// The answer to plain HTTP spoken to a TLS port.
const PLAIN_TO_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: 70\r\n\r\n{\"error\":\"this port speaks HTTPS: use https:// to reach this server\"}\n";

struct ServerLoop {
    poll: Poll,
    listeners: Vec<TcpListener>,
    conns: Slab<Connection>,
    runs: Slab<PendingRun>,
    wheel: TimerWheel<Timer>,
    wake: WakeTimer,
    upstreams: Upstreams,
    api: Arc<Api>,
    options: ServerOptions,
    shutdown: StopSignal,
    anchor: WallAnchor,
    ids: IdGen,
    scratch: Vec<u8>,
    next_serial: u64,
    accept_paused: bool,
    /// Once stopping: the loop exits by then even if runs are still held.
    stop_deadline: Option<Nanos>,
    /// The accept warning, logged once, then as a count.
    accept_warnings: crate::log::Repeated,
    /// Connections with new output to write before the loop sleeps.
    dirty: Vec<usize>,
    fired: Vec<Timer>,
    /// Requests read in one service call (kept for its allocation).
    requests: Vec<Request>,
    finished: Vec<Finished>,
    no_body: Arc<[u8]>,
    store: Store,
    /// Store answers delivered later land here (and wake the loop).
    inbox: Arc<Inbox>,
    /// Requests waiting on the store, by ticket.
    waiting: Slab<Waiting>,
    replies: Vec<(Ticket, Reply)>,
    /// Raw TCP and UDP runs (the first loop only).
    l4: l4::L4Side,
}

impl ServerLoop {
    fn new(
        listeners: Vec<std::net::TcpListener>,
        api: Arc<Api>,
        options: ServerOptions,
        shutdown: StopSignal,
    ) -> io::Result<ServerLoop> {
        let poll = Poll::new()?;
        let mut mio_listeners = Vec::new();
        for (i, l) in listeners.into_iter().enumerate() {
            let mut l = TcpListener::from_std(l);
            poll.registry()
                .register(&mut l, Source::Listener(i).token(), Interest::READABLE)?;
            mio_listeners.push(l);
        }
        let wake = WakeTimer::new(poll.registry(), Source::WakeTimer.token())?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), Source::Waker.token())?);
        let now = clock::now();
        let inbox = Inbox::new(Arc::clone(&waker));
        let store = Arc::clone(api.store());
        Ok(ServerLoop {
            poll,
            listeners: mio_listeners,
            conns: Slab::new(),
            runs: Slab::new(),
            wheel: TimerWheel::new(now),
            wake,
            upstreams: Upstreams::new(
                Resolver::new(waker),
                options.upstream_max_body,
                options.upstream_tls.clone(),
                options.upstream_proxies.clone(),
            ),
            api,
            options,
            shutdown,
            anchor: WallAnchor::capture(),
            ids: IdGen::new(),
            scratch: vec![0; SCRATCH],
            next_serial: 0,
            accept_paused: false,
            stop_deadline: None,
            accept_warnings: Default::default(),
            dirty: Vec::new(),
            fired: Vec::new(),
            requests: Vec::new(),
            finished: Vec::new(),
            no_body: Arc::from(&[][..]),
            store,
            inbox,
            waiting: Slab::new(),
            replies: Vec::new(),
            l4: Default::default(),
        })
    }

    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        let mut stopping = false;
        loop {
            if self.shutdown.is_set() && !stopping {
                stopping = true;
                self.stop(clock::now());
            }
            if stopping && self.runs.is_empty() && self.waiting.is_empty() && self.l4.is_idle() {
                return Ok(());
            }
            if self.stop_deadline.is_some_and(|d| clock::now() >= d) {
                crate::warn!(
                    "stopping: {} runs still held past the bound; exiting without them",
                    self.runs.len()
                );
                return Ok(());
            }
            // Wake at least every 200 ms (50 ms while stopping) to notice a shutdown.
            let cap = std::time::Duration::from_millis(if stopping { 50 } else { 200 });
            let timeout = self
                .wake
                .prepare(self.wheel.next_wakeup(), clock::now(), Some(cap))?;
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            let now = clock::now();
            for event in events.iter() {
                match Source::from_token(event.token()) {
                    Some(Source::Listener(i)) => self.accept(i, now),
                    Some(Source::Connection(key)) => {
                        self.service(key, now, event.is_readable() || event.is_read_closed())
                    }
                    Some(Source::Upstream(key)) => {
                        let ctx = upstream::Ctx {
                            registry: self.poll.registry(),
                            now,
                            wheel: &mut self.wheel,
                            done: &mut self.finished,
                        };
                        self.upstreams.on_ready(key, &mut self.scratch, ctx);
                    }
                    Some(Source::Waker) => {
                        let ctx = upstream::Ctx {
                            registry: self.poll.registry(),
                            now,
                            wheel: &mut self.wheel,
                            done: &mut self.finished,
                        };
                        self.upstreams.on_resolved(ctx);
                        self.take_replies(now);
                    }
                    Some(Source::WakeTimer) => self.wake.acknowledge(now),
                    Some(Source::L4(i)) => self.l4_event(i, now),
                    None => {}
                }
            }
            self.fire_timers(now);
            self.after_upstream(now);
            self.flush_dirty(now);
            // Echoes of runs recorded by timers or later store answers.
            self.l4_send_echoes();
        }
    }

    /// The first stop: no more connections; the runs held are finished and
    /// answered, every later request gets 503 and its connection closes, and
    /// idle connections close now.
    fn stop(&mut self, now: Nanos) {
        for l in &mut self.listeners {
            let _ = self.poll.registry().deregister(l);
        }
        self.listeners.clear();
        self.stop_l4();
        // A signal is news; the program stopping its own server (the one of
        // `conntest run`) is not.
        let (level, cause) = match self.shutdown.signal_name() {
            Some(name) => (crate::log::Level::Info, format!("{name} received")),
            None => (crate::log::Level::Debug, "asked to stop".to_owned()),
        };
        crate::log_at!(
            level,
            "{cause}: stopping; finishing {} held runs{}",
            self.runs.len(),
            std::thread::current()
                .name()
                .filter(|n| n.starts_with("loop-"))
                .map(|n| format!(" ({n})"))
                .unwrap_or_default()
        );
        // Each held run ends within its delay, after its upstream GET if
        // that is still under way (bounded by the group's timeout, or by
        // STOP_UPSTREAM_BOUND when the group set none).
        let longest = self
            .runs
            .iter()
            .map(|(_, run)| {
                let upstream_pending = run.order.upstream.is_some() && run.upstream.is_none();
                let upstream = if upstream_pending {
                    run.order.upstream_timeout.unwrap_or(STOP_UPSTREAM_BOUND)
                } else {
                    0
                };
                run.order.delay.saturating_add(upstream)
            })
            .max()
            .unwrap_or(0);
        self.stop_deadline = Some(now.saturating_add(longest).saturating_add(STOP_MARGIN));
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.http.go_away();
            }
            self.service(key, now, false);
        }
    }

    fn accept(&mut self, index: usize, now: Nanos) {
        let mut errors = 0;
        loop {
            if self.conns.len() >= self.options.max_connections {
                // Leave further connections queued in the kernel's backlog.
                self.accept_paused = true;
                return;
            }
            let Some(listener) = self.listeners.get(index) else {
                return;
            };
            match listener.accept() {
                Ok((stream, peer)) => self.add_connection(stream, peer, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // Out of descriptors, or an error that keeps coming back:
                // back off rather than spin.
                Err(e) if is_fd_exhaustion(&e) || errors >= 16 => {
                    self.accept_warnings
                        .warn(format!("accept: {e}; retrying in 50 ms"), now);
                    self.accept_paused = true;
                    self.wheel
                        .insert(now + 50 * MILLISECOND, Timer::AcceptRetry);
                    return;
                }
                // A connection aborted before it was accepted, and the like.
                Err(e) => {
                    errors += 1;
                    crate::debug!("accept: {e}");
                }
            }
        }
    }

    fn resume_accepting(&mut self, now: Nanos) {
        if self.accept_paused && self.conns.len() < self.options.max_connections {
            self.accept_paused = false;
            for i in 0..self.listeners.len() {
                self.accept(i, now);
            }
        }
    }

    fn add_connection(&mut self, mut stream: TcpStream, peer: SocketAddr, now: Nanos) {
        let _ = stream.set_nodelay(true);
        let transport = match &self.options.tls {
            None => Transport::Plain,
            Some(config) => match Transport::tls_server(config) {
                Ok(t) => t,
                Err(e) => {
                    crate::warn!("{e}");
                    return;
                }
            },
        };
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let token = Source::Connection(key).token();
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            crate::warn!("register connection: {e}");
            return;
        }
        self.next_serial += 1;
        self.api.metrics().connection_opened();
        let cert_unread = transport.is_tls();
        entry.insert(Connection {
            stream,
            transport,
            http: ServerConn::new(self.options.http, self.anchor, now),
            serial: self.next_serial,
            timer: None,
            read_paused: false,
            peer,
            mailbox: None,
            client_cert_subject: None,
            cert_unread,
        });
        self.arm_timer(key);
    }

    /// Reads what arrived, carries out complete requests, writes what is
    /// owed, and follows the connection's life (shut, drain, close) until
    /// nothing more can be done without new readiness.
    fn service(&mut self, key: usize, now: Nanos, readable: bool) {
        let mut requests = std::mem::take(&mut self.requests);
        self.service_with(key, now, readable, &mut requests);
        self.requests = requests;
    }

    fn service_with(
        &mut self,
        key: usize,
        now: Nanos,
        readable: bool,
        requests: &mut Vec<Request>,
    ) {
        let mut read = readable;
        loop {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            // Heads are kept while a group may record header values.
            conn.http.keep_heads(self.api.keeps_heads());
            // Requests read before a fatal error are still carried out: a
            // run whose client reset right after sending it is recorded.
            let fatal = (read || conn.read_paused)
                && read_requests(conn, &mut self.scratch, now, requests).is_err();
            read = false;
            let dispatched = !requests.is_empty();
            let subject = conn.client_cert_subject.clone();
            for mut request in requests.drain(..) {
                request.client_cert_subject = subject.clone();
                self.dispatch(key, request, now);
            }
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if let Some((status, why)) = conn.http.take_refusal() {
                self.api.metrics().request(Route::Other, status);
                crate::debug!("answered {status} ({why}) to a request from {}", conn.peer);
            }
            if fatal
                || conn
                    .transport
                    .send(&mut conn.http, &mut conn.stream)
                    .is_err()
            {
                return self.close(key);
            }
            if conn.http.is_finished() && !conn.transport.has_pending() {
                let _ = conn.stream.shutdown(Shutdown::Write);
                conn.http.shut_down(now);
                // Read out the leftovers now; a peer already gone closes.
                read = true;
                continue;
            }
            if conn.http.is_closed() {
                return self.close(key);
            }
            // Answers given at once may have freed a full pipeline.
            if dispatched && conn.read_paused {
                continue;
            }
            return self.arm_timer(key);
        }
    }

    fn dispatch(&mut self, key: usize, request: Request, now: Nanos) {
        let seq = request.seq;
        // Kept only when debug logging may name it in an error line.
        let route = crate::log::enabled(crate::log::Level::Debug)
            .then(|| format!("{} {}", request.method.as_str(), request.path));
        match self.api.handle(request, self.anchor.wall(now)) {
            Action::Respond(response) => {
                self.respond(key, None, seq, response, route.as_deref(), now)
            }
            Action::Store(op, then) => {
                let serial = self.conns.get(key).map_or(0, |c| c.serial);
                let waiting = Waiting::Request {
                    conn: key,
                    serial,
                    seq,
                    then,
                    route,
                };
                self.submit(op, waiting, now);
            }
        }
    }

    /// Answers request `seq` of connection `key` (of `serial`, when the
    /// answer comes later and the connection may be another by now).
    fn respond(
        &mut self,
        key: usize,
        serial: Option<u64>,
        seq: u64,
        response: Response,
        route: Option<&str>,
        now: Nanos,
    ) {
        if let Some(conn) = self.conns.get_mut(key) {
            if serial.is_none_or(|s| s == conn.serial) {
                log_error_answer(&response, route, conn.peer);
                conn.http.respond(seq, response, now);
                if serial.is_some() {
                    self.dirty.push(key);
                }
            }
        }
    }

    /// Hands `op` to the store; its answer is handled now or when the
    /// store delivers it.
    fn submit(&mut self, op: Op, waiting: Waiting, now: Nanos) {
        let ticket = self.waiting.vacant_key() as Ticket;
        match self.store.submit(op, ticket, &self.inbox) {
            Some(reply) => self.on_reply(waiting, reply, now),
            None => {
                self.waiting.insert(waiting);
            }
        }
    }

    /// Takes the store's later answers: pages go to their connection's
    /// stream, the rest to the request waiting on them.
    fn take_replies(&mut self, now: Nanos) {
        let mut replies = std::mem::take(&mut self.replies);
        self.inbox.take(&mut replies);
        for (ticket, reply) in replies.drain(..) {
            if let Some((key, serial)) = stream::connection_of(ticket) {
                if let Some(conn) = self.conns.get(key) {
                    if stream::same_serial(serial, conn.serial) {
                        if let Some(mailbox) = &conn.mailbox {
                            mailbox.put(reply);
                            self.dirty.push(key);
                        }
                    }
                }
            } else if let Some(waiting) = self.waiting.try_remove(ticket as usize) {
                self.on_reply(waiting, reply, now);
            }
        }
        self.replies = replies;
    }

    fn on_reply(&mut self, waiting: Waiting, reply: Reply, now: Nanos) {
        match waiting {
            Waiting::Request {
                conn,
                serial,
                seq,
                then,
                route,
            } => match self.api.answer(then, reply) {
                Next::Respond(response) => {
                    self.respond(conn, Some(serial), seq, response, route.as_deref(), now)
                }
                Next::Run(order) => self.start_run(conn, serial, seq, order, route, now),
                Next::Stream { id, list, head } => {
                    let Some(c) = self.conns.get_mut(conn).filter(|c| c.serial == serial) else {
                        return;
                    };
                    let ctx = StreamCtx {
                        store: Arc::clone(&self.store),
                        inbox: Arc::clone(&self.inbox),
                        ticket: stream::ticket(conn, serial),
                        mailbox: Arc::clone(c.mailbox.get_or_insert_with(Default::default)),
                    };
                    let source = StoreStream::new(ctx, id, list, head);
                    let response = Response::stream(200, Box::new(source));
                    self.respond(conn, Some(serial), seq, response, None, now);
                }
            },
            Waiting::Record {
                conn,
                serial,
                seq,
                path,
                submitted,
            } => {
                let metrics = self.api.metrics();
                metrics.record_time(now.saturating_sub(submitted));
                let response = match reply {
                    Reply::Done => {
                        metrics.run_recorded();
                        Response::empty(200)
                    }
                    Reply::Error(e) => {
                        store_error(e, || Response::error(404, "the test group was deleted"))
                    }
                    other => {
                        Response::error(500, &format!("the store answered {other:?} to a record"))
                    }
                };
                metrics.request(Route::Run, response.status);
                self.respond(conn, Some(serial), seq, response, Some(&path), now);
            }
            Waiting::L4(wait) => self.on_l4_reply(wait, reply, now),
        }
    }

    /// A run whose group the store confirmed: upstream, delay, record.
    fn start_run(
        &mut self,
        key: usize,
        serial: u64,
        seq: u64,
        order: RunOrder,
        route: Option<String>,
        now: Nanos,
    ) {
        let upstream = order.upstream.clone();
        let timeout = order.upstream_timeout;
        let run = self.runs.insert(PendingRun {
            conn: key,
            path: route.unwrap_or_default(),
            serial,
            seq,
            order,
            start: now,
            upstream: None,
        });
        match upstream {
            Some(url) => {
                let ctx = upstream::Ctx {
                    registry: self.poll.registry(),
                    now,
                    wheel: &mut self.wheel,
                    done: &mut self.finished,
                };
                self.upstreams.start(run, &url, timeout, ctx);
            }
            None => self.hold(run, now),
        }
    }

    /// Upstream done (or none): hold the answer for the server delay.
    fn hold(&mut self, run: usize, now: Nanos) {
        let delay = self.runs.get(run).map_or(0, |r| r.order.delay);
        if delay == 0 {
            self.complete(run, now);
        } else {
            self.wheel.insert(now + delay, Timer::RunDelay(run));
        }
    }

    fn after_upstream(&mut self, now: Nanos) {
        while let Some(done) = self.finished.pop() {
            self.api.metrics().upstream(&done.outcome);
            if let Some(run) = self.runs.get_mut(done.run) {
                run.upstream = Some(done.outcome);
                self.hold(done.run, now);
            }
        }
    }

    /// Records the run; it is answered once the store confirms the record.
    fn complete(&mut self, run: usize, now: Nanos) {
        let Some(pending) = self.runs.try_remove(run) else {
            return;
        };
        let record = Run {
            run_id: self.ids.uuid(),
            run_count: pending.order.run_count,
            server_start: clock::wall_i64(self.anchor.wall(pending.start)),
            server_end: clock::wall_i64(self.anchor.wall(now)),
            // The store puts the body in (sharing it with the previous run's
            // when equal); until then the loop's one empty body stands in.
            data: Arc::clone(&self.no_body),
            extra: match (pending.upstream, pending.order.seen) {
                (None, seen) => seen,
                (Some(upstream), seen) => {
                    let mut extra = seen.unwrap_or_default();
                    extra.upstream = Some(upstream);
                    Some(extra)
                }
            },
        };
        let op = Op::Record {
            id: pending.order.group_id,
            run: record,
            body: pending.order.body,
        };
        let waiting = Waiting::Record {
            conn: pending.conn,
            serial: pending.serial,
            seq: pending.seq,
            path: pending.path,
            submitted: clock::now(),
        };
        self.submit(op, waiting, now);
    }

    fn fire_timers(&mut self, now: Nanos) {
        let mut fired = std::mem::take(&mut self.fired);
        self.wheel.poll(now, &mut fired);
        for timer in fired.drain(..) {
            match timer {
                Timer::RunDelay(run) => self.complete(run, now),
                Timer::Connection { key, serial } => self.on_connection_timer(key, serial, now),
                Timer::Upstream(t) => {
                    let ctx = upstream::Ctx {
                        registry: self.poll.registry(),
                        now,
                        wheel: &mut self.wheel,
                        done: &mut self.finished,
                    };
                    self.upstreams.on_timeout(t, ctx);
                }
                Timer::AcceptRetry => self.resume_accepting(now),
                Timer::L4Delay(key) => self.l4_complete(key, now),
                Timer::L4Conn { key, serial } => self.l4_conn_timer(key, serial, now),
            }
        }
        self.fired = fired;
    }

    /// The connection's deadline came: the machine acts on it (408, idle,
    /// drain), then the loop writes and closes as it says.
    fn on_connection_timer(&mut self, key: usize, serial: u64, now: Nanos) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.serial != serial {
            return;
        }
        conn.timer = None;
        conn.http.handle_timeout(now);
        self.service(key, now, false);
    }

    /// Arms the connection's timer for the machine's next deadline. A later
    /// deadline keeps the armed timer, which then finds nothing due and
    /// re-arms: one wheel operation per deadline moved earlier, none per
    /// request.
    fn arm_timer(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let Some(deadline) = conn.http.poll_timeout() else {
            return;
        };
        let serial = conn.serial;
        arm_before(
            &mut self.wheel,
            &mut conn.timer,
            deadline,
            Timer::Connection { key, serial },
        );
    }

    fn flush_dirty(&mut self, now: Nanos) {
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        for key in dirty.drain(..) {
            self.service(key, now, false);
        }
        self.dirty = dirty;
    }

    fn close(&mut self, key: usize) {
        if let Some(mut conn) = self.conns.try_remove(key) {
            self.api.metrics().connection_closed();
            let _ = self.poll.registry().deregister(&mut conn.stream);
            if let Some((_, t)) = conn.timer {
                self.wheel.cancel(t);
            }
        }
        if self.conns.is_empty() && self.conns.capacity() > BURST_CONNECTIONS {
            // The last connection of a burst is gone: give its memory back.
            self.conns = Slab::new();
            release_free_memory();
        }
        self.resume_accepting(clock::now());
    }
}

/// Arms `armed` for `deadline` unless one no later is armed already (it
/// then finds nothing due and re-arms): one wheel operation per deadline
/// moved earlier, none per request or message.
fn arm_before(
    wheel: &mut TimerWheel<Timer>,
    armed: &mut Option<(Nanos, TimerKey)>,
    deadline: Nanos,
    timer: Timer,
) {
    if let Some((at, key)) = *armed {
        if at <= deadline {
            return;
        }
        wheel.cancel(key);
    }
    *armed = Some((deadline, wheel.insert(deadline, timer)));
}

/// Logs an error answer at debug level: its status, route and the client's
/// address. Never the request's headers or body, nor the answer's body.
fn log_error_answer(response: &Response, route: Option<&str>, peer: SocketAddr) {
    if response.status >= 400 {
        crate::debug!(
            "answered {} to {} from {peer}",
            response.status,
            route.unwrap_or("a request")
        );
    }
}

/// Reads until the socket has nothing more or the machine wants no more,
/// collecting the complete requests. An error means the connection is
/// beyond use (a read error, or bytes that are not TLS on a TLS port).
fn read_requests(
    conn: &mut Connection,
    scratch: &mut [u8],
    now: Nanos,
    requests: &mut Vec<Request>,
) -> Result<(), ()> {
    conn.read_paused = false;
    loop {
        // What is buffered first: a pipeline that was full may hold whole
        // requests that no new bytes will announce.
        while let Some(request) = conn.http.next_request(now) {
            requests.push(request);
        }
        if !conn.http.wants_input() {
            conn.read_paused = true;
            return Ok(());
        }
        match conn.stream.read(scratch) {
            Ok(0) => conn.http.receive_eof(),
            Ok(n) => match conn.transport.decode(&scratch[..n]) {
                Ok(plain) => {
                    conn.http.receive(plain, now);
                    if conn.cert_unread && !conn.transport.is_handshaking() {
                        conn.cert_unread = false;
                        conn.client_cert_subject = conn.transport.peer_subject().map(Arc::from);
                    }
                    if conn.transport.peer_closed() {
                        conn.http.receive_eof();
                    }
                }
                Err(e) => {
                    crate::debug!("closing a connection: {e}");
                    if crate::tls::looks_like_http(&scratch[..n]) {
                        // Say why, in the only language the peer speaks.
                        let _ = conn.stream.write(PLAIN_TO_TLS);
                    } else {
                        // The TLS alert saying why (a client certificate
                        // missing or refused, say), best effort.
                        let _ = conn.transport.write(&[], &mut conn.stream);
                    }
                    return Err(());
                }
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Err(()),
        }
    }
}

/// Past this many connection slots, an emptied table is freed.
const BURST_CONNECTIONS: usize = 1024;

/// Returns freed heap to the operating system (glibc keeps it otherwise).
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory held by the allocator.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(
            e.raw_os_error(),
            Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
        )
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}
