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

/// Received datagrams: the bytes and sender of each.
pub struct RecvBatch {
    bufs: Vec<u8>,
    lens: [usize; BATCH],
    from: [Option<SocketAddr>; BATCH],
    count: usize,
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
        RecvBatch {
            bufs: vec![0; BATCH * SLOT],
            lens: [0; BATCH],
            from: [None; BATCH],
            count: 0,
            // SAFETY: all-zero is a valid value of these plain C structs.
            #[cfg(target_os = "linux")]
            names: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            #[cfg(target_os = "linux")]
            iovs: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
            #[cfg(target_os = "linux")]
            msgs: (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect(),
        }
    }
}

impl RecvBatch {
    /// Datagrams of the last read.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether the last read left nothing in the socket: it had room for
    /// more than it got.
    pub fn drained(&self) -> bool {
        self.count < BATCH
    }

    /// Datagram `i` of the last read, and its sender.
    pub fn get(&self, i: usize) -> (&[u8], Option<SocketAddr>) {
        let start = i * SLOT;
        (&self.bufs[start..start + self.lens[i]], self.from[i])
    }

    /// Reads what is waiting, up to [`BATCH`] datagrams; `WouldBlock` when
    /// none is.
    #[cfg(target_os = "linux")]
    pub fn recv(&mut self, socket: &mio::net::UdpSocket) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
        let base = self.bufs.as_mut_ptr();
        let (names, iovs, msgs) = (&mut self.names, &mut self.iovs, &mut self.msgs);
        for i in 0..BATCH {
            iovs[i] = libc::iovec {
                // SAFETY: slot i lies within `bufs` (BATCH * SLOT bytes).
                iov_base: unsafe { base.add(i * SLOT) }.cast(),
                iov_len: SLOT,
            };
            let hdr = &mut msgs[i].msg_hdr;
            hdr.msg_name = (&mut names[i] as *mut libc::sockaddr_storage).cast();
            hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as _;
            hdr.msg_iov = &mut iovs[i];
            hdr.msg_iovlen = 1;
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
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        for i in 0..n {
            self.lens[i] = (msgs[i].msg_len as usize).min(SLOT);
            self.from[i] = socket_addr(&names[i], msgs[i].msg_hdr.msg_namelen);
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
}

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

    /// Sends what waits, in order, in one call of up to [`BATCH`]
    /// datagrams, and forgets what left. Returns how many left; on an
    /// error, the datagram it concerns is forgotten too (and the error
    /// returned), except for `WouldBlock` (the socket is full) which leaves
    /// them all.
    pub fn send(&mut self, socket: &mio::net::UdpSocket) -> io::Result<usize> {
        let (gone, result) = match self.send_some(socket, 0) {
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

    /// One call: datagrams from `first` on.
    #[cfg(target_os = "linux")]
    fn send_some(&self, socket: &mio::net::UdpSocket, first: usize) -> io::Result<usize> {
        use std::os::fd::AsRawFd;
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
    fn send_some(&self, socket: &mio::net::UdpSocket, first: usize) -> io::Result<usize> {
        let start = if first == 0 {
            0
        } else {
            self.ends[first - 1].0
        };
        let (end, to) = &self.ends[first];
        let bytes = &self.bytes[start..*end];
        match to.as_ref().and_then(|a| a.as_socket()) {
            Some(to) => socket.send_to(bytes, to)?,
            None => socket.send(bytes)?,
        };
        Ok(1)
    }
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

    /// Real sockets on loopback: a batch sent arrives whole and in order,
    /// each datagram from its sender, and a read with room to spare says
    /// the socket is drained.
    #[test]
    fn a_batch_goes_and_comes_whole() {
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let (a, b) = (
            mio::net::UdpSocket::from_std(a),
            mio::net::UdpSocket::from_std(b),
        );
        let to = b.local_addr().unwrap();
        let mut out = SendBatch::default();
        let count = BATCH + 6;
        for i in 0..count {
            out.push(&vec![i as u8; i + 1], Some(to));
        }
        assert_eq!(out.send(&a).unwrap(), BATCH);
        assert_eq!(out.len(), 6);
        assert_eq!(out.send(&a).unwrap(), 6);
        assert!(out.is_empty());
        let mut got = Vec::new();
        let mut batch = RecvBatch::default();
        let mut reads = 0;
        // Loopback delivers at once; a few reads cover it.
        while got.len() < count && reads < 1000 {
            reads += 1;
            match batch.recv(&b) {
                Ok(n) => {
                    for i in 0..n {
                        let (bytes, from) = batch.get(i);
                        assert_eq!(from, Some(a.local_addr().unwrap()));
                        got.push(bytes.to_vec());
                    }
                }
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::WouldBlock),
            }
        }
        assert_eq!(got.len(), count);
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d, &vec![i as u8; i + 1]);
        }
        assert!(batch.drained());
        assert_eq!(
            batch.recv(&b).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
    }
}
