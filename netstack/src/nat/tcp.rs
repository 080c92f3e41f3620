//! TCP through the gateway: each guest connection is spliced to a host socket.
//!
//! Outbound, the guest's SYN is held until the host's connect to the real
//! destination finishes, so the guest sees the same outcome (established, or
//! RST for a refusal) rather than a connection that dies at once. Inbound
//! (published ports, and in relay mode the guest's mirrored listeners), the
//! host listener accepts first and the gateway stack connects to the guest,
//! from the gateway's address, or in relay mode from the peer's own.
//!
//! Bytes go straight between the host socket and the gateway socket's
//! buffers, in both directions; a FIN becomes `shutdown(SHUT_WR)` on the
//! other side, and a reset or error on either side resets the other.

use std::io::{self, Read, Write};
use std::net::{Shutdown as HostShutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};

use nix::errno::Errno;
use nix::sys::epoll::EpollFlags;
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrStorage, connect, setsockopt, socket, sockopt,
};

use super::{Flow, FlowKey, Nat};
use crate::{Domain, Intercepted, NetError, Protocol, Shutdown, SockOpt, SocketId};

/// One spliced connection.
#[derive(Debug)]
pub(super) struct TcpFlow {
    host: TcpStream,
    /// The gateway's socket, once there is one.
    sock: Option<SocketId>,
    /// The guest's SYN, held while the host connect is under way.
    syn: Option<Intercepted>,
    /// Edge-triggered readiness of the host socket, as last reported.
    host_readable: bool,
    host_writable: bool,
    /// The host sent FIN (passed on to the guest).
    host_eof: bool,
    /// The guest sent FIN (passed on to the host).
    guest_eof: bool,
}

impl TcpFlow {
    pub(super) fn host_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(&self.host)
    }

    fn new(host: TcpStream, sock: Option<SocketId>, syn: Option<Intercepted>) -> Self {
        TcpFlow {
            host,
            sock,
            syn,
            host_readable: false,
            host_writable: false,
            host_eof: false,
            guest_eof: false,
        }
    }
}

/// What the last read or write on a host socket came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostIo {
    /// Bytes moved (or a signal interrupted it: nothing to do).
    Moved,
    /// Nothing more now (EAGAIN): wait for the socket's next edge.
    Again,
    /// A read found the end of the stream.
    Ended,
    /// An error: the connection is over.
    Failed,
}

impl HostIo {
    /// Records how a read or write went; returns the bytes it moved.
    fn took(&mut self, r: io::Result<usize>) -> usize {
        match r {
            Ok(0) => {
                *self = HostIo::Ended;
                0
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *self = HostIo::Again;
                0
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            Err(_) => {
                *self = HostIo::Failed;
                0
            }
        }
    }
}

/// Errors that only mean "not yet": the gateway socket is still connecting or full.
fn not_yet(e: NetError) -> bool {
    matches!(
        e,
        NetError::WouldBlock | NetError::NotConnected | NetError::InProgress | NetError::Already
    )
}

/// A non-blocking connect to `to`, under way or done; from `from` when it
/// is free (relay mode keeps the guest's address and port), else from a
/// port the host picks.
fn connect_host(to: SocketAddr, from: Option<SocketAddr>) -> io::Result<TcpStream> {
    let family = match to {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    if let Some(from) = from {
        // A port the host holds already (a mirrored listener, a socket of
        // the Sentry's own) is left to the host to pick instead.
        let _ = nix::sys::socket::bind(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            &SockaddrStorage::from(from),
        );
    }
    match connect(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(to),
    ) {
        Ok(()) | Err(Errno::EINPROGRESS) => {}
        Err(e) => return Err(e.into()),
    }
    let s = TcpStream::from(fd);
    s.set_nodelay(true)?;
    Ok(s)
}

impl Nat {
    pub(super) fn publish_tcp(&mut self, host: SocketAddr, guest_port: u16) -> io::Result<()> {
        let l = TcpListener::bind(host)?;
        l.set_nonblocking(true)?;
        self.add_flow(Flow::Listener(l, guest_port))
            .map(drop)
            .map_err(|(_, e)| e)
    }

    /// Connections to a published port: each one is opened towards the guest.
    pub(super) fn accept_published(&mut self, key: FlowKey) {
        loop {
            let Some(Flow::Listener(l, port)) = self.flows.get(key) else {
                return;
            };
            let port = *port;
            let Ok((host, peer)) = l.accept() else {
                return;
            };
            if !self.room() {
                continue;
            }
            if host.set_nonblocking(true).is_err() {
                continue;
            }
            let _ = host.set_nodelay(true);
            let to = SocketAddr::V4(SocketAddrV4::new(self.cfg.guest, port));
            let Ok(sock) = self.gw.socket(Domain::Ipv4, Protocol::Tcp) else {
                continue;
            };
            if self.cfg.relay {
                self.speak_for(sock, peer);
            }
            match self.gw.connect(sock, to) {
                Ok(()) | Err(NetError::InProgress) => {}
                Err(_) => {
                    let _ = self.gw.close(sock);
                    continue;
                }
            }
            match self.add_flow(Flow::Tcp(TcpFlow::new(host, Some(sock), None))) {
                Ok(flow) => {
                    self.by_socket.insert(sock, flow);
                }
                Err(_) => {
                    let _ = self.gw.close(sock);
                }
            }
        }
    }

    /// Binds a gateway socket to a peer's address (its port too, when free),
    /// so that the guest sees who really connected. Failing that, the
    /// connection comes from the gateway's address, as in `nat` mode.
    fn speak_for(&mut self, sock: SocketId, peer: SocketAddr) {
        let ip = match peer.ip() {
            std::net::IpAddr::V4(v4) => v4,
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4,
                None => return,
            },
        };
        if ip.is_loopback() || ip.is_unspecified() {
            return;
        }
        let exact = SocketAddr::V4(SocketAddrV4::new(ip, peer.port()));
        if self.gw.bind(sock, exact).is_err() {
            let _ = self.gw.bind(sock, SocketAddr::V4(SocketAddrV4::new(ip, 0)));
        }
    }

    /// A guest's SYN to an address nobody in the gateway listens on.
    pub(super) fn on_syn(&mut self, syn: Intercepted) {
        if self.pending.contains_key(&(syn.local, syn.remote)) {
            // A retransmission: the first copy's connect is still under way.
            return;
        }
        let to = match syn.local {
            SocketAddr::V4(dst) => self.cfg.outbound(dst),
            SocketAddr::V6(_) => None,
        };
        let to = to.filter(|_| self.room());
        let from = self.cfg.relay.then_some(syn.remote);
        let Some(host) = to.and_then(|to| connect_host(to, from).ok()) else {
            self.gw.refuse_intercepted(&syn);
            return;
        };
        let tuple = (syn.local, syn.remote);
        match self.add_flow(Flow::Tcp(TcpFlow::new(host, None, Some(syn)))) {
            Ok(key) => {
                self.pending.insert(tuple, key);
            }
            Err((Flow::Tcp(TcpFlow { syn: Some(syn), .. }), _)) => {
                self.gw.refuse_intercepted(&syn);
            }
            Err(_) => {}
        }
    }

    pub(super) fn on_tcp_event(&mut self, key: FlowKey, ev: EpollFlags) {
        let Some(Flow::Tcp(t)) = self.flows.get_mut(key) else {
            return;
        };
        if ev.intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP) {
            t.host_readable = true;
        }
        if ev.contains(EpollFlags::EPOLLOUT) {
            t.host_writable = true;
        }
        if let Some(syn) = &t.syn {
            let failed = ev.contains(EpollFlags::EPOLLERR)
                || !matches!(t.host.take_error(), Ok(None))
                || t.host.peer_addr().is_err();
            if !failed && !ev.contains(EpollFlags::EPOLLOUT) {
                return;
            }
            let syn = syn.clone();
            self.pending.remove(&(syn.local, syn.remote));
            let accepted = if failed {
                None
            } else {
                self.gw.accept_intercepted(&syn).ok()
            };
            match accepted {
                Some(sock) => {
                    if let Some(Flow::Tcp(t)) = self.flows.get_mut(key) {
                        t.syn = None;
                        t.sock = Some(sock);
                    }
                    self.by_socket.insert(sock, key);
                }
                None => {
                    self.gw.refuse_intercepted(&syn);
                    self.flows.remove(key);
                    return;
                }
            }
        }
        self.service_tcp(key);
    }

    /// Moves what can move, both ways, and ends the flow when both sides are done.
    pub(super) fn service_tcp(&mut self, key: FlowKey) {
        let Some(Flow::Tcp(t)) = self.flows.get_mut(key) else {
            return;
        };
        let Some(sock) = t.sock else {
            return;
        };
        let mut failed = false;
        // Host to guest.
        while t.host_readable && !t.host_eof {
            let mut io = HostIo::Moved;
            let host = &mut t.host;
            let r = self.gw.send_with(sock, |room| {
                // A full buffer offers no room; a read of nothing would
                // return 0 and look like end of file.
                if room.is_empty() {
                    return 0;
                }
                io.took(host.read(room))
            });
            let (eof, err, again) = (
                io == HostIo::Ended,
                io == HostIo::Failed,
                io == HostIo::Again,
            );
            match r {
                Err(e) if not_yet(e) => break,
                Err(_) => {
                    failed = true;
                    break;
                }
                Ok(_) => {}
            }
            if err {
                failed = true;
                break;
            }
            if again {
                t.host_readable = false;
            }
            if eof {
                t.host_eof = true;
                let _ = self.gw.shutdown(sock, Shutdown::Write);
            }
            if matches!(r, Ok(0)) {
                break;
            }
        }
        // Guest to host.
        while !failed && t.host_writable && !t.guest_eof {
            let (mut called, mut io) = (false, HostIo::Moved);
            let host = &mut t.host;
            let r = self.gw.recv_with(sock, |data| {
                called = true;
                io.took(host.write(data))
            });
            let err = io == HostIo::Failed;
            if io == HostIo::Again {
                t.host_writable = false;
            }
            match r {
                Ok(0) if !called => {
                    t.guest_eof = true;
                    let _ = t.host.shutdown(HostShutdown::Write);
                }
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if not_yet(e) => break,
                Err(_) => failed = true,
            }
            if err {
                failed = true;
            }
        }
        if failed {
            self.abort_tcp(key);
        } else if t.host_eof && t.guest_eof {
            let _ = self.gw.close(sock);
            self.by_socket.remove(&sock);
            self.flows.remove(key);
        }
    }

    /// Resets both sides of a flow and forgets it.
    fn abort_tcp(&mut self, key: FlowKey) {
        let Some(Flow::Tcp(t)) = self.flows.remove(key) else {
            return;
        };
        // SO_LINGER 0: closing sends RST, as the other side's reset did.
        let _ = setsockopt(
            &t.host,
            sockopt::Linger,
            &libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        );
        if let Some(sock) = t.sock {
            let _ = self.gw.set_option(sock, SockOpt::Linger(Some(0)));
            let _ = self.gw.close(sock);
            self.by_socket.remove(&sock);
        }
        if let Some(syn) = t.syn {
            self.pending.remove(&(syn.local, syn.remote));
            self.gw.refuse_intercepted(&syn);
        }
    }
}
