//! Datagrams in batches: one `recvmmsg` reads every datagram waiting (up to
//! a batch) and one `sendmmsg` sends a batch, on Linux. Besides the calls a
//! batch saves under load, a read that returns fewer datagrams than it had
//! room for has drained the socket (the kernel stopped at "would block"), so
//! an edge-triggered loop needs no extra read to learn that: a ping-pong
//! costs one read per datagram, not two. Elsewhere, one datagram per call.

use std::io;
use std::net::SocketAddr;

/// Datagrams one call reads or sends at most.
pub const BATCH: usize = 64;
/// Room for the largest UDP datagram (65 507 bytes of payload) and more, so
/// none is cut short. Pages of a slot are touched only as far as a datagram
/// fills them.
const SLOT: usize = 65_536;

/// Received datagrams: the bytes and sender of each. With [`coalesce`]d
/// receiving, one message may hold several datagrams of one sender, cut at
/// the segment size the kernel reports; [`RecvBatch::datagrams`] cuts them.
pub struct RecvBatch {
    bufs: Vec<u8>,
    lens: [usize; BATCH],
    from: [Option<SocketAddr>; BATCH],
    /// Each message's segment size (0: one datagram).
    segs: [usize; BATCH],
    count: usize,
    #[cfg(target_os = "linux")]
    controls: Vec<[u64; 4]>,
    /// Headers whose lengths the kernel may have rewritten since they were
    /// last reset.
    #[cfg(target_os = "linux")]
    touched: usize,
    /// The call's headers, kept so a read does not clear 13 KiB of them.
    #[cfg(target_os = "linux")]
    names: Vec<libc::sockaddr_storage>,
    #[cfg(target_os = "linux")]
    iovs: Vec<libc::iovec>,
    #[cfg(target_os = "linux")]
    msgs: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers in the kept headers point into the batch's own
// buffers and are written anew before each call; nothing is shared.
#[cfg(target_os = "linux")]
unsafe impl Send for RecvBatch {}

impl Default for RecvBatch {
    fn default() -> Self {
        #[cfg_attr(not(target_os = "linux"), allow(unused_mut))]
        let mut batch = RecvBatch {
            bufs: vec![0; BATCH * SLOT],
            lens: [0; BATCH],
            from: [None; BATCH],
            segs: [0; BATCH],
            count: 0,
            #[cfg(target_os = "linux")]
            controls: vec![[0; 4]; BATCH],
            #[cfg(target_os = "linux")]
            touched: BATCH,
            // SAFETY: all-zero is a valid value of these plain C structs.
            #[cfg(target_os = "linux")]
            names: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            #[cfg(target_os = "linux")]
            iovs: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            #[cfg(target_os = "linux")]
            msgs: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
        };
        #[cfg(target_os = "linux")]
        batch.wire();
        batch
    }
}

/// What one [`RecvBatch::read`] found.
#[derive(Debug)]
pub enum Got {
    /// Datagrams, in [`RecvBatch::datagrams`]; more may wait unless
    /// [`RecvBatch::drained`].
    Datagrams,
    /// Nothing this time but more may wait: an interrupted call, or the
    /// error an earlier datagram left (an ICMP port unreachable, say),
    /// which concerns no datagram here (the caller may log it).
    Again(Option<io::Error>),
    /// Nothing waits.
    Empty,
}

impl RecvBatch {
    /// One read, its errors sorted: no error ends a socket's reading.
    pub fn read(&mut self, socket: &mio::net::UdpSocket) -> Got {
        match self.recv(socket) {
            Ok(_) => Got::Datagrams,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Got::Empty,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Got::Again(None),
            Err(e) => Got::Again(Some(e)),
        }
    }

    /// Whether the last read left nothing in the socket: it had room for
    /// more than it got.
    pub fn drained(&self) -> bool {
        self.count < BATCH
    }

    /// The datagrams of the last read, in order, each with its sender.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], Option<SocketAddr>)> {
        (0..self.count).flat_map(move |i| {
            let start = i * SLOT;
            let message = &self.bufs[start..start + self.lens[i]];
            let seg = match self.segs[i] {
                0 => message.len().max(1),
                n => n,
            };
            let from = self.from[i];
            // An empty datagram is one datagram still.
            let parts = message.len().div_ceil(seg).max(1);
            (0..parts).map(move |k| {
                let end = ((k + 1) * seg).min(message.len());
                (&message[(k * seg).min(end)..end], from)
            })
        })
    }

    /// Reads what is waiting, up to [`BATCH`] datagrams; `WouldBlock` when
    /// none is.
    /// Points each header at its slot, name and control buffer, once: the
    /// buffers are heap allocations that stay where they are.
    #[cfg(target_os = "linux")]
    fn wire(&mut self) {
        let base = self.bufs.as_mut_ptr();
        for i in 0..BATCH {
            self.iovs[i] = libc::iovec {
                // SAFETY: slot i lies within `bufs` (BATCH * SLOT bytes).
                iov_base: unsafe { base.add(i * SLOT) }.cast(),
                iov_len: SLOT,
            };
            let hdr = &mut self.msgs[i].msg_hdr;
            hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_iov = &mut self.iovs[i];
            hdr.msg_iovlen = 1;
            hdr.msg_control = self.controls[i].as_mut_ptr().cast();
        }
    }

    #[cfg(target_os = "linux")]
    pub fn recv(&mut self, socket: &mio::net::UdpSocket) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let msgs = &mut self.msgs;
        for m in msgs.iter_mut().take(self.touched) {
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            m.msg_hdr.msg_controllen = std::mem::size_of::<[u64; 4]>() as _;
        }
        self.count = 0;
        // SAFETY: every header points at live buffers of the lengths given,
        // which outlive the call; the socket is non-blocking.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as _,
                0,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.touched = 0;
            return Err(io::Error::last_os_error());
        }
        let n = (n as usize).min(BATCH);
        // The kernel rewrote the lengths of what it read, and no more.
        self.touched = n;
        for (i, m) in msgs.iter().take(n).enumerate() {
            self.lens[i] = (m.msg_len as usize).min(SLOT);
            self.from[i] = socket_addr(&self.names[i], m.msg_hdr.msg_namelen);
            self.segs[i] = segment_size(&m.msg_hdr);
        }
        self.count = n;
        Ok(n)
    }

    #[cfg(not(target_os = "linux"))]
    pub fn recv(&mut self, socket: &mio::net::UdpSocket) -> io::Result<usize> {
        self.count = 0;
        let (n, from) = socket.recv_from(&mut self.bufs[..SLOT])?;
        self.lens[0] = n;
        self.from[0] = Some(from);
        self.segs[0] = 0;
        self.count = 1;
        Ok(1)
    }
}

/// Datagrams waiting to be sent, each to its own address (or to the
/// connected peer).
#[derive(Default)]
pub struct SendBatch {
    bytes: Vec<u8>,
    /// Where each datagram ends in `bytes`, and its address.
    ends: Vec<(usize, Option<socket2::SockAddr>)>,
    /// The socket's writable readiness is asked for.
    room_asked: bool,
    /// The kernel refused a segmented send once: batches go as sendmmsg.
    #[cfg(target_os = "linux")]
    no_gso: bool,
}

/// `UDP_SEGMENT` (linux/udp.h): the size each segment of a send is cut to.
#[cfg(target_os = "linux")]
const UDP_SEGMENT: libc::c_int = 103;
/// Segments one segmented send carries at most (the kernel's
/// `UDP_MAX_SEGMENTS` is 64 or more), and its bytes at most.
#[cfg(target_os = "linux")]
const GSO_SEGMENTS: usize = 64;
#[cfg(target_os = "linux")]
const GSO_BYTES: usize = 65_000;

impl SendBatch {
    pub fn push(&mut self, datagram: &[u8], to: Option<SocketAddr>) {
        self.bytes.extend_from_slice(datagram);
        self.ends.push((self.bytes.len(), to.map(Into::into)));
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Forgets every datagram waiting (their runs ended).
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    /// Sends what waits, in order, in one call of up to [`BATCH`]
    /// datagrams, and forgets what left. Returns how many left; on an
    /// error, the datagram it concerns is forgotten too (and the error
    /// returned), except for `WouldBlock` (the socket is full) which leaves
    /// them all.
    pub fn send(&mut self, socket: &mio::net::UdpSocket) -> io::Result<usize> {
        let (gone, result) = match self.send_some(socket) {
            Ok(n) => (n, Ok(n)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                (0, Err(e))
            }
            Err(e) => (1, Err(e)),
        };
        if gone > 0 {
            let cut = self.ends[gone - 1].0;
            self.bytes.drain(..cut);
            self.ends.drain(..gone);
            for end in &mut self.ends {
                end.0 -= cut;
            }
        }
        result
    }

    /// Asks for the socket's writable readiness while datagrams wait for
    /// room, and stops asking once none does. Asking all the time would
    /// wake the loop after each send (a UDP socket reports room each time
    /// a datagram leaves its buffer).
    pub fn follow_room(
        &mut self,
        socket: &mut mio::net::UdpSocket,
        registry: &mio::Registry,
        token: mio::Token,
    ) -> io::Result<()> {
        let want = !self.is_empty();
        if want != self.room_asked {
            let interest = match want {
                true => mio::Interest::READABLE | mio::Interest::WRITABLE,
                false => mio::Interest::READABLE,
            };
            registry.reregister(socket, token, interest)?;
            self.room_asked = want;
        }
        Ok(())
    }

    /// The bytes of datagram `k`.
    fn datagram(&self, k: usize) -> &[u8] {
        let start = if k == 0 { 0 } else { self.ends[k - 1].0 };
        &self.bytes[start..self.ends[k].0]
    }

    /// One call from the first datagram on: a segmented send (UDP GSO) of
    /// the leading datagrams when several go to one address with one size
    /// (the last may be shorter), else `sendmmsg`. Segmentation is the
    /// kernel's: each segment leaves as a datagram of its own, exactly as
    /// if sent alone; it saves the sender the path per datagram.
    #[cfg(target_os = "linux")]
    fn send_some(&mut self, socket: &mio::net::UdpSocket) -> io::Result<usize> {
        if self.ends.len() == 1 {
            return self.send_one(socket);
        }
        let run = self.segmentable();
        if run >= 2 && !self.no_gso {
            match self.send_segmented(socket, run) {
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::EIO | libc::ENOPROTOOPT | libc::EOPNOTSUPP)
                    ) =>
                {
                    // Sent datagram by datagram from now on.
                    self.no_gso = true;
                }
                other => return other,
            }
        }
        self.send_many(socket)
    }

    /// How many leading datagrams one segmented send can carry.
    #[cfg(target_os = "linux")]
    fn segmentable(&self) -> usize {
        let Some((_, to)) = self.ends.first() else {
            return 0;
        };
        let size = self.datagram(0).len();
        let mut total = 0;
        let mut count = 0;
        while count < self.ends.len().min(GSO_SEGMENTS) {
            let len = self.datagram(count).len();
            if self.ends[count].1 != *to || len > size || len == 0 || total + len > GSO_BYTES {
                break;
            }
            total += len;
            count += 1;
            if len < size {
                break;
            }
        }
        count
    }

    /// The first `count` datagrams in one `sendmsg` cut into segments.
    #[cfg(target_os = "linux")]
    fn send_segmented(&self, socket: &mio::net::UdpSocket, count: usize) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let bytes = &self.bytes[..self.ends[count - 1].0];
        let mut iov = libc::iovec {
            iov_base: bytes.as_ptr() as *mut _,
            iov_len: bytes.len(),
        };
        // Room for one control message holding a u16, aligned for cmsghdr.
        let mut control = [0u64; 4];
        // SAFETY: all-zero is a valid msghdr.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        if let Some(to) = &self.ends[0].1 {
            msg.msg_name = to.as_ptr() as *mut _;
            msg.msg_namelen = to.len();
        }
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        // SAFETY: CMSG_SPACE only computes a length.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as _;
        let size = self.datagram(0).len() as u16;
        // SAFETY: the control buffer holds CMSG_SPACE(2) bytes, so the first
        // header and its 2 data bytes lie within it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_UDP;
            (*cmsg).cmsg_type = UDP_SEGMENT;
            (*cmsg).cmsg_len = libc::CMSG_LEN(2) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), size);
        }
        // SAFETY: msg points at the bytes, address and control buffer
        // borrowed for the call; sendmsg only reads them.
        let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(count)
    }

    /// One `sendmmsg` of up to [`BATCH`] datagrams.
    #[cfg(target_os = "linux")]
    fn send_many(&self, socket: &mio::net::UdpSocket) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let first = 0;
        let count = (self.ends.len() - first).min(BATCH);
        // SAFETY: all-zero is a valid value of these plain C structs.
        let mut iovs: [libc::iovec; BATCH] = unsafe { std::mem::zeroed() };
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..count {
            let k = first + i;
            let start = if k == 0 { 0 } else { self.ends[k - 1].0 };
            let (end, to) = &self.ends[k];
            iovs[i] = libc::iovec {
                iov_base: self.bytes[start..*end].as_ptr() as *mut _,
                iov_len: end - start,
            };
            let hdr = &mut msgs[i].msg_hdr;
            if let Some(to) = to {
                hdr.msg_name = to.as_ptr() as *mut _;
                hdr.msg_namelen = to.len();
            }
            hdr.msg_iov = &mut iovs[i];
            hdr.msg_iovlen = 1;
        }
        // SAFETY: every header points at bytes and addresses borrowed from
        // `self` for the call; sendmmsg only reads them.
        let n = unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), count as _, 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    #[cfg(not(target_os = "linux"))]
    fn send_some(&mut self, socket: &mio::net::UdpSocket) -> io::Result<usize> {
        self.send_one(socket)
    }

    /// The first datagram alone: the lightest call.
    fn send_one(&self, socket: &mio::net::UdpSocket) -> io::Result<usize> {
        let bytes = self.datagram(0);
        match self.ends[0].1.as_ref().and_then(|a| a.as_socket()) {
            Some(to) => socket.send_to(bytes, to)?,
            None => socket.send(bytes)?,
        };
        Ok(1)
    }
}

/// `UDP_GRO` (linux/udp.h): receive a sender's datagrams coalesced.
#[cfg(target_os = "linux")]
const UDP_GRO: libc::c_int = 104;

/// Asks the kernel to hand over a sender's datagrams coalesced into one
/// message where it can (UDP GRO: a segmented send on loopback, a NIC's
/// coalescing); [`RecvBatch`] cuts them apart again. Best effort: without
/// it, each datagram comes alone.
#[cfg(unix)]
pub fn coalesce(socket: &impl std::os::fd::AsRawFd) {
    #[cfg(target_os = "linux")]
    {
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads an int from a live local.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_UDP,
                UDP_GRO,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as _,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = socket;
}

/// No coalescing where sockets are not file descriptors (Windows).
#[cfg(not(unix))]
pub fn coalesce<S>(_socket: &S) {}

/// The segment size of a coalesced message's `UDP_GRO` control message;
/// 0 when it holds one datagram.
#[cfg(target_os = "linux")]
fn segment_size(hdr: &libc::msghdr) -> usize {
    // SAFETY: the kernel wrote `msg_controllen` bytes of control messages
    // into the buffer `hdr` points at; the CMSG macros stay within them.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                return usize::try_from(size).unwrap_or(0);
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    0
}

#[cfg(target_os = "linux")]
fn socket_addr(name: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
    // SAFETY: the storage is large and aligned enough for either family,
    // and the kernel filled `len` bytes of it.
    unsafe {
        match name.ss_family as libc::c_int {
            libc::AF_INET if len as usize >= std::mem::size_of::<libc::sockaddr_in>() => {
                let a = &*(name as *const _ as *const libc::sockaddr_in);
                Some(SocketAddr::from((
                    u32::from_be(a.sin_addr.s_addr).to_be_bytes(),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 if len as usize >= std::mem::size_of::<libc::sockaddr_in6>() => {
                let a = &*(name as *const _ as *const libc::sockaddr_in6);
                Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                    a.sin6_addr.s6_addr.into(),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `datagrams` from one socket to another in batches and reads
    /// them back: what came, in order, each from the sender.
    fn round_trip(datagrams: &[Vec<u8>], coalesced: bool) -> Vec<Vec<u8>> {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        if coalesced {
            coalesce(&b);
        }
        let (a, b) = (
            mio::net::UdpSocket::from_std(a),
            mio::net::UdpSocket::from_std(b),
        );
        let to = b.local_addr().unwrap();
        let mut out = SendBatch::default();
        for d in datagrams {
            out.push(d, Some(to));
        }
        assert_eq!(out.len(), datagrams.len());
        let mut calls = 0;
        while !out.is_empty() {
            calls += 1;
            assert!(out.send(&a).unwrap() > 0);
        }
        assert!(
            calls <= datagrams.len().div_ceil(BATCH) + 1,
            "{calls} calls"
        );
        let mut got = Vec::new();
        let mut batch = RecvBatch::default();
        let mut reads = 0;
        // Loopback delivers at once; a few reads cover it.
        while got.len() < datagrams.len() && reads < 1000 {
            reads += 1;
            match batch.recv(&b) {
                Ok(_) => {
                    for (bytes, from) in batch.datagrams() {
                        assert_eq!(from, Some(a.local_addr().unwrap()));
                        got.push(bytes.to_vec());
                    }
                }
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
            }
        }
        assert_eq!(
            batch.recv(&b).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        assert!(batch.drained());
        got
    }

    /// Real sockets on loopback: datagrams of any sizes, of one size (sent
    /// segmented), and of one size but the last (likewise), arrive whole
    /// and in order, received one by one or coalesced.
    #[test]
    fn batches_go_and_come_whole() {
        let varied: Vec<Vec<u8>> = (0..BATCH + 6).map(|i| vec![i as u8; i + 1]).collect();
        let mut equal: Vec<Vec<u8>> = (0..150).map(|i| vec![i as u8; 72]).collect();
        for coalesced in [false, true] {
            assert_eq!(round_trip(&varied, coalesced), varied);
            assert_eq!(round_trip(&equal, coalesced), equal);
        }
        equal.push(vec![7; 10]);
        equal.push(vec![8; 0]);
        for coalesced in [false, true] {
            assert_eq!(round_trip(&equal, coalesced), equal);
        }
    }
}
