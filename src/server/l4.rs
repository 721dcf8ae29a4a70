//! Raw TCP and UDP runs (issue 12) on the server's loop: the first loop
//! holds a UDP socket and a TCP listener beside its HTTP listeners. Each
//! message is checked ([`crate::l4`]), its group looked up and begun in the
//! store, held for `server_delay_ns` on the timer wheel, recorded in the
//! group's record through the store like an HTTP run, and once the store
//! confirms the record, echoed back as it came. What is not ours is counted
//! in `/metrics` and dropped.

use super::{ServerLoop, Timer, Waiting};
use crate::event::clock::{self, Nanos};
use crate::event::datagrams::{Got, RecvBatch, SendBatch};
use crate::event::timer::TimerKey;
use crate::event::Source;
use crate::l4::framing::{Expired, Framer, StreamClock};
use crate::l4::header::{parse_datagram, Header, HEADER_LEN};
use crate::l4::Dropped;
use crate::store::{Op, Reply, Run, StoreError};
use crate::wire::{GroupHeader, L4Ports, Protocol, MAX_DATA_BYTES};
use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::Interest;
use slab::Slab;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use uuid::Uuid;

/// The metrics' index of each transport.
const TCP: usize = 0;
const UDP: usize = 1;
/// [`Source::L4`] numbers: the UDP socket, the listener, then connections.
const UDP_SOCKET: usize = 0;
const LISTENER: usize = 1;
const FIRST_CONN: usize = 2;

/// The raw sockets `Server::bind` made, for the first loop.
#[derive(Debug, Default)]
pub struct L4Sockets {
    pub tcp: Option<std::net::TcpListener>,
    pub udp: Option<std::net::UdpSocket>,
}

/// A raw port that could not be bound: the port and protocol, named in
/// the one line the user sees (carried inside the `io::Error` of
/// `Server::bind`).
#[derive(Debug)]
pub struct L4BindError {
    pub protocol: Protocol,
    pub port: u16,
    pub source: io::Error,
}

impl std::fmt::Display for L4BindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot listen for raw {} runs on port {}: {}",
            self.protocol.name(),
            self.port,
            self.source
        )
    }
}

impl std::error::Error for L4BindError {}

impl L4BindError {
    /// The raw port's error inside `e`, if `e` is one.
    pub fn of(e: &io::Error) -> Option<&L4BindError> {
        e.get_ref()?.downcast_ref()
    }
}

impl L4Sockets {
    /// Binds the ports asked for (0: any free one) on `ip`; an error names
    /// the port ([`L4BindError`]).
    pub fn bind(ip: std::net::IpAddr, tcp: Option<u16>, udp: Option<u16>) -> io::Result<L4Sockets> {
        let named = |protocol, port| {
            move |source: io::Error| {
                let kind = source.kind();
                let e = L4BindError {
                    protocol,
                    port,
                    source,
                };
                io::Error::new(kind, e)
            }
        };
        let tcp = match tcp {
            Some(port) => Some(
                super::bind_listener(SocketAddr::new(ip, port), false)
                    .map_err(named(Protocol::Tcp, port))?,
            ),
            None => None,
        };
        let udp = match udp {
            Some(port) => {
                Some(bind_udp(SocketAddr::new(ip, port)).map_err(named(Protocol::Udp, port))?)
            }
            None => None,
        };
        Ok(L4Sockets { tcp, udp })
    }

    /// The ports bound, for the create answer.
    pub fn ports(&self) -> L4Ports {
        L4Ports {
            tcp_port: self
                .tcp
                .as_ref()
                .and_then(|l| l.local_addr().ok())
                .map(|a| a.port()),
            udp_port: self
                .udp
                .as_ref()
                .and_then(|s| s.local_addr().ok())
                .map(|a| a.port()),
        }
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
    if addr.is_ipv6() && addr.ip().is_unspecified() {
        let _ = socket.set_only_v6(false);
    }
    // Room for a burst of datagrams while the loop is busy.
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    socket.set_nonblocking(true)?;
    crate::event::datagrams::coalesce(&socket);
    Ok(socket.into())
}

/// Where a message came from, so its echo goes back there.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    Udp(SocketAddr),
    Tcp { conn: usize, serial: u64 },
}

impl Peer {
    fn transport(self) -> usize {
        match self {
            Peer::Udp(_) => UDP,
            Peer::Tcp { .. } => TCP,
        }
    }
}

/// One run's message on its way through the server.
#[derive(Debug)]
pub struct L4Msg {
    peer: Peer,
    header: Header,
    /// Header and data, exactly as received: the echo.
    message: Vec<u8>,
    /// When it was read (the run's `server_start`).
    start: Nanos,
}

/// What a store answer for a raw run is for.
#[derive(Debug)]
pub enum L4Wait {
    /// The group looked up: is it known, and of this protocol?
    Check(L4Msg),
    /// The run begun (counted in progress): hold it.
    Begin(L4Msg),
    /// The record confirmed: echo.
    Record {
        peer: Peer,
        echo: Vec<u8>,
        submitted: Nanos,
    },
}

struct L4Conn {
    stream: TcpStream,
    serial: u64,
    framer: Framer,
    /// Echoes not yet written.
    out: Vec<u8>,
    /// The peer closed its side.
    eof: bool,
    /// Runs of this connection not yet echoed.
    held: u32,
    /// Its idle and message deadlines.
    clock: StreamClock,
    /// The armed timer and its deadline.
    timer: Option<(Nanos, TimerKey)>,
}

impl L4Conn {
    /// The server owes the peer something: not idle.
    fn busy(&self) -> bool {
        self.held > 0 || !self.out.is_empty()
    }
}

/// Groups whose headers the loop keeps at most (then it forgets them all).
const MAX_KNOWN_GROUPS: usize = 1024;
/// Echoes a full socket holds back at most; past this, later ones are
/// dropped (lost on the way back, as a full buffer on the path would).
const MAX_HELD_ECHOES: usize = 65_536;

/// The first loop's raw sockets and the runs they carry.
#[derive(Default)]
pub struct L4Side {
    udp: Option<UdpSocket>,
    /// Datagrams read in one call (made with the UDP socket).
    recv: Option<Box<RecvBatch>>,
    /// Datagrams of one read, taken.
    taken: Vec<L4Msg>,
    /// UDP echoes not yet sent: sent in one call per wake-up.
    echoes: SendBatch,
    /// Groups whose runs came here, as the store last said: a group's
    /// config never changes, so its protocol is checked without asking the
    /// store again (which still begins each run, so a deleted group's runs
    /// are refused).
    groups: HashMap<Uuid, Arc<GroupHeader>>,
    listener: Option<TcpListener>,
    conns: Slab<L4Conn>,
    held: Slab<L4Msg>,
    next_serial: u64,
    /// The largest TCP message data (`--max-body`).
    max_message: usize,
    buf: Vec<u8>,
}

impl L4Side {
    /// Runs held for their delay.
    pub fn is_idle(&self) -> bool {
        self.held.is_empty()
    }
}

impl ServerLoop {
    /// Takes the raw sockets onto this loop.
    pub(super) fn add_l4(&mut self, sockets: L4Sockets) -> io::Result<()> {
        let registry = self.poll.registry();
        if let Some(udp) = sockets.udp {
            let mut udp = UdpSocket::from_std(udp);
            registry.register(&mut udp, Source::L4(UDP_SOCKET).token(), Interest::READABLE)?;
            self.l4.udp = Some(udp);
            self.l4.recv = Some(Box::default());
        }
        if let Some(tcp) = sockets.tcp {
            let mut tcp = TcpListener::from_std(tcp);
            registry.register(&mut tcp, Source::L4(LISTENER).token(), Interest::READABLE)?;
            self.l4.listener = Some(tcp);
        }
        self.l4.max_message = self.options.http.max_body as usize;
        self.l4.buf = vec![0; 65_536];
        Ok(())
    }

    /// Stopping: no new connections or datagrams; held runs are echoed.
    pub(super) fn stop_l4(&mut self) {
        if let Some(mut l) = self.l4.listener.take() {
            let _ = self.poll.registry().deregister(&mut l);
        }
        if let Some(udp) = &mut self.l4.udp {
            let _ = self.poll.registry().deregister(udp);
        }
    }

    pub(super) fn l4_event(&mut self, index: usize, now: Nanos) {
        match index {
            UDP_SOCKET => {
                self.udp_read(now);
                self.l4_send_echoes();
            }
            LISTENER => self.tcp_accept(now),
            i => self.tcp_service(i - FIRST_CONN, now),
        }
    }

    /// Reads every datagram waiting, a batch per call, and takes them; the
    /// echoes of each batch leave together.
    fn udp_read(&mut self, now: Nanos) {
        let Some(mut batch) = self.l4.recv.take() else {
            return;
        };
        while self.udp_read_batch(&mut batch, now) {}
        self.l4.recv = Some(batch);
    }

    /// One read; whether more may wait.
    fn udp_read_batch(&mut self, batch: &mut RecvBatch, now: Nanos) -> bool {
        let Some(udp) = &self.l4.udp else {
            return false;
        };
        // An ICMP error of an earlier echo, and the like, is not a run.
        match batch.read(udp) {
            Got::Datagrams => {}
            Got::Again(e) => {
                if let Some(e) = e {
                    crate::debug!("udp: {e}");
                }
                return true;
            }
            Got::Empty => return false,
        }
        let mut taken = std::mem::take(&mut self.l4.taken);
        for (datagram, from) in batch.datagrams() {
            let Some(from) = from else { continue };
            match parse_datagram(datagram, MAX_DATA_BYTES as usize) {
                Ok((header, _)) => taken.push(L4Msg {
                    peer: Peer::Udp(from),
                    header,
                    message: datagram.to_vec(),
                    start: now,
                }),
                Err(why) => self.l4_drop(UDP, why),
            }
        }
        for msg in taken.drain(..) {
            self.l4_check(msg, now);
        }
        self.l4.taken = taken;
        self.l4_send_echoes();
        !batch.drained()
    }

    /// Sends the UDP echoes waiting; a full socket keeps them until it
    /// reports room.
    pub(super) fn l4_send_echoes(&mut self) {
        let Some(udp) = &mut self.l4.udp else { return };
        let echoes = &mut self.l4.echoes;
        while !echoes.is_empty() {
            match echoes.send(udp) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => crate::debug!("udp echo: {e}"),
            }
        }
        let token = Source::L4(UDP_SOCKET).token();
        if let Err(e) = echoes.follow_room(udp, self.poll.registry(), token) {
            crate::debug!("udp echoes: {e}");
        }
    }

    fn l4_drop(&self, transport: usize, why: Dropped) {
        self.api.metrics().l4_dropped(transport, why);
    }

    /// A message that is not ours: counted and dropped; a TCP connection
    /// that carried it is closed (its peer does not speak for a group of
    /// ours).
    fn l4_refuse(&mut self, peer: Peer, why: Dropped) {
        self.l4_drop(peer.transport(), why);
        if let Peer::Tcp { conn, serial } = peer {
            if self.l4.conns.get(conn).is_some_and(|c| c.serial == serial) {
                self.tcp_close(conn);
            }
        }
    }

    /// Looks the message's group up (the store, once per group).
    fn l4_check(&mut self, msg: L4Msg, now: Nanos) {
        let id = msg.header.group;
        match self.l4.groups.get(&id) {
            Some(group) => {
                let group = Arc::clone(group);
                self.l4_checked(msg, &group, now);
            }
            None => self.submit(Op::Header { id }, Waiting::L4(L4Wait::Check(msg)), now),
        }
    }

    /// The message's group is known: of its protocol, within its size, it
    /// is begun.
    fn l4_checked(&mut self, msg: L4Msg, group: &GroupHeader, now: Nanos) {
        let transport = msg.peer.transport();
        let config = &group.config.l4;
        let expected = if transport == UDP {
            Protocol::Udp
        } else {
            Protocol::Tcp
        };
        if config.protocol != expected {
            return self.l4_refuse(msg.peer, Dropped::Protocol);
        }
        let data = &msg.message[HEADER_LEN..];
        if transport == UDP && data.len() as u64 > config.max_data() {
            return self.l4_refuse(msg.peer, Dropped::Oversized);
        }
        self.api
            .metrics()
            .l4_taken(transport, msg.header.checks(data));
        let id = msg.header.group;
        self.submit(Op::Begin { id }, Waiting::L4(L4Wait::Begin(msg)), now);
    }

    pub(super) fn on_l4_reply(&mut self, wait: L4Wait, reply: Reply, now: Nanos) {
        match (wait, reply) {
            (L4Wait::Check(msg), Reply::Group(group)) => {
                if self.l4.groups.len() >= MAX_KNOWN_GROUPS {
                    self.l4.groups.clear();
                }
                self.l4.groups.insert(msg.header.group, Arc::clone(&group));
                self.l4_checked(msg, &group, now);
            }
            (L4Wait::Begin(msg), Reply::Group(group)) => {
                let delay = group.config.server_delay_ns;
                let key = self.l4.held.insert(msg);
                if delay == 0 {
                    self.l4_complete(key, now);
                } else {
                    self.wheel.insert(now + delay, Timer::L4Delay(key));
                }
            }
            (L4Wait::Check(msg) | L4Wait::Begin(msg), Reply::Error(e)) => match e {
                StoreError::UnknownGroup => {
                    self.l4.groups.remove(&msg.header.group);
                    self.l4_refuse(msg.peer, Dropped::UnknownGroup)
                }
                other => {
                    crate::debug!("a raw run refused by the store: {other:?}");
                    self.l4_drop(msg.peer.transport(), Dropped::Refused);
                    self.l4_forget(msg.peer);
                }
            },
            (
                L4Wait::Record {
                    peer,
                    echo,
                    submitted,
                },
                Reply::Done,
            ) => {
                let metrics = self.api.metrics();
                metrics.record_time(now.saturating_sub(submitted));
                metrics.run_recorded();
                self.l4_echo(peer, &echo, now);
            }
            (wait, reply) => {
                crate::debug!("a raw run's store answer {reply:?} to {wait:?}: not echoed");
                if let L4Wait::Check(msg) | L4Wait::Begin(msg) = wait {
                    self.l4_forget(msg.peer);
                } else if let L4Wait::Record { peer, .. } = wait {
                    self.l4_forget(peer);
                }
            }
        }
    }

    /// The run's delay is over: record it; the echo leaves once the store
    /// confirms.
    pub(super) fn l4_complete(&mut self, key: usize, now: Nanos) {
        let Some(msg) = self.l4.held.try_remove(key) else {
            return;
        };
        let record = Run {
            run_id: self.ids.uuid(),
            run_count: msg.header.run_count,
            server_start: clock::wall_i64(self.anchor.wall(msg.start)),
            server_end: clock::wall_i64(self.anchor.wall(now)),
            data: Arc::clone(&self.no_body),
            extra: None,
        };
        let op = Op::Record {
            id: msg.header.group,
            run: record,
            body: msg.message[HEADER_LEN..].to_vec(),
        };
        let waiting = Waiting::L4(L4Wait::Record {
            peer: msg.peer,
            echo: msg.message,
            submitted: clock::now(),
        });
        self.submit(op, waiting, now);
    }

    fn l4_echo(&mut self, peer: Peer, echo: &[u8], now: Nanos) {
        match peer {
            Peer::Udp(to) => {
                if self.l4.echoes.len() < MAX_HELD_ECHOES {
                    self.l4.echoes.push(echo, Some(to));
                } else {
                    crate::debug!("udp echo to {to}: dropped, the socket is full");
                }
            }
            Peer::Tcp { conn, serial } => {
                let Some(c) = self.l4.conns.get_mut(conn).filter(|c| c.serial == serial) else {
                    return;
                };
                c.held = c.held.saturating_sub(1);
                c.out.extend_from_slice(echo);
                c.clock.activity(now, c.framer.pending());
                self.tcp_flush(conn);
                self.tcp_arm(conn);
            }
        }
    }

    /// A TCP run that will not be echoed: its connection no longer waits.
    fn l4_forget(&mut self, peer: Peer) {
        if let Peer::Tcp { conn, serial } = peer {
            if let Some(c) = self.l4.conns.get_mut(conn).filter(|c| c.serial == serial) {
                c.held = c.held.saturating_sub(1);
                self.tcp_flush(conn);
                self.tcp_arm(conn);
            }
        }
    }

    fn tcp_accept(&mut self, now: Nanos) {
        loop {
            if self.l4.conns.len() >= self.options.max_connections {
                return;
            }
            let Some(listener) = &self.l4.listener else {
                return;
            };
            match listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let entry = self.l4.conns.vacant_entry();
                    let token = Source::L4(FIRST_CONN + entry.key()).token();
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if let Err(e) = self.poll.registry().register(&mut stream, token, interest) {
                        crate::warn!("register a raw connection: {e}");
                        continue;
                    }
                    self.l4.next_serial += 1;
                    let limits = &self.options.http;
                    let key = entry.key();
                    entry.insert(L4Conn {
                        stream,
                        serial: self.l4.next_serial,
                        framer: Framer::new(self.l4.max_message),
                        out: Vec::new(),
                        eof: false,
                        held: 0,
                        clock: StreamClock::new(limits.idle_timeout, limits.request_timeout, now),
                        timer: None,
                    });
                    self.tcp_arm(key);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    crate::debug!("accept (tcp runs): {e}");
                    return;
                }
            }
        }
    }

    /// Reads a raw connection's messages and takes them; writes what is owed.
    fn tcp_service(&mut self, key: usize, now: Nanos) {
        let mut messages = Vec::new();
        let mut bad = None;
        let serial;
        {
            let Some(c) = self.l4.conns.get_mut(key) else {
                return;
            };
            serial = c.serial;
            while !c.eof && bad.is_none() {
                match c.stream.read(&mut self.l4.buf) {
                    Ok(0) => {
                        c.eof = true;
                        bad = c.framer.receive_eof();
                    }
                    Ok(n) => c.framer.receive(&self.l4.buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        c.eof = true;
                        c.out.clear();
                        break;
                    }
                }
                while let Some(m) = c.framer.next_message() {
                    match m {
                        Ok(m) => messages.push(m),
                        Err(why) => {
                            bad = Some(why);
                            break;
                        }
                    }
                }
            }
            c.held += messages.len() as u32;
            c.clock.activity(now, c.framer.pending());
        }
        for m in messages {
            let mut message = Vec::with_capacity(HEADER_LEN + m.data.len());
            message.extend_from_slice(&m.header.encode());
            message.extend_from_slice(&m.data);
            let msg = L4Msg {
                peer: Peer::Tcp { conn: key, serial },
                header: m.header,
                message,
                start: now,
            };
            self.l4_check(msg, now);
        }
        if let Some(why) = bad {
            // A stream cannot be read past a bad message: closed.
            self.l4_drop(TCP, why);
            return self.tcp_close(key);
        }
        self.tcp_flush(key);
        self.tcp_arm(key);
    }

    /// Arms the connection's timer for its next deadline; as for HTTP
    /// connections, a later deadline keeps the armed timer (which then
    /// finds nothing due and re-arms): one wheel operation per deadline
    /// moved earlier.
    fn tcp_arm(&mut self, key: usize) {
        let Some(c) = self.l4.conns.get_mut(key) else {
            return;
        };
        let Some(deadline) = c.clock.poll_timeout(c.busy()) else {
            return;
        };
        let serial = c.serial;
        super::arm_before(
            &mut self.wheel,
            &mut c.timer,
            deadline,
            Timer::L4Conn { key, serial },
        );
    }

    /// A raw connection's timer: closed when its time is up (a message
    /// not whole in time is counted), else re-armed.
    pub(super) fn l4_conn_timer(&mut self, key: usize, serial: u64, now: Nanos) {
        let Some(c) = self.l4.conns.get_mut(key).filter(|c| c.serial == serial) else {
            return;
        };
        c.timer = None;
        match c.clock.expired(now, c.busy()) {
            Some(Expired::Partial) => {
                self.l4_drop(TCP, Dropped::Timeout);
                self.tcp_close(key);
            }
            Some(Expired::Idle) => self.tcp_close(key),
            None => self.tcp_arm(key),
        }
    }

    /// Writes what is owed; closes a connection its peer closed once
    /// nothing more is owed.
    fn tcp_flush(&mut self, key: usize) {
        let Some(c) = self.l4.conns.get_mut(key) else {
            return;
        };
        while !c.out.is_empty() {
            match c.stream.write(&c.out) {
                Ok(0) => return self.tcp_close(key),
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.tcp_close(key),
            }
        }
        if c.eof && c.held == 0 {
            self.tcp_close(key);
        }
    }

    fn tcp_close(&mut self, key: usize) {
        if let Some(mut c) = self.l4.conns.try_remove(key) {
            let _ = self.poll.registry().deregister(&mut c.stream);
            if let Some((_, timer)) = c.timer {
                self.wheel.cancel(timer);
            }
        }
    }
}
