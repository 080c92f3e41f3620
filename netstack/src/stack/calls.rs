//! The caller-facing socket calls (`connect`, `send`, `recv`, options, ...):
//! each checks the handle and dispatches by protocol to the socket layer,
//! which moves the data and marks the socket dirty for the next `poll`.

use std::net::SocketAddr;

use smoltcp::wire::IpEndpoint;

use super::Stack;
use crate::error::{NetError, Result};
use crate::socket::tcp::TcpState;
use crate::socket::{
    Binding, Datagram, Domain, Kind, Protocol, Readiness, RecvFlags, Shutdown, SockOpt,
    SockOptName, SocketId, clamp_buffer,
};

impl Stack {
    /// Connects a socket (`connect(2)`). TCP answers [`NetError::InProgress`]
    /// and completes in the background; watch [`Stack::readiness`] and
    /// [`Stack::take_error`], or call again: `Ok` once connected.
    pub fn connect(&mut self, id: SocketId, addr: SocketAddr) -> Result<()> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_connect(id, addr),
            Kind::Udp(_) => self.udp_connect(id, addr),
            Kind::Icmp(_) => self.icmp_connect(id, addr),
        }
    }

    /// Dissolves a datagram socket's association (`connect` with AF_UNSPEC).
    /// (On TCP, Linux aborts the connection; that is not supported yet.)
    pub fn disconnect(&mut self, id: SocketId) -> Result<()> {
        match self.get(id)?.kind {
            Kind::Udp(_) => self.udp_disconnect(id),
            Kind::Icmp(_) => self.icmp_disconnect(id),
            Kind::Tcp(_) => Err(NetError::NotSupported),
        }
    }

    /// Marks a TCP socket as accepting connections (`listen(2)`).
    pub fn listen(&mut self, id: SocketId, backlog: i32) -> Result<()> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_listen(id, backlog),
            _ => Err(NetError::NotSupported),
        }
    }

    /// Takes a pending connection (`accept(2)`): the new socket and its peer.
    pub fn accept(&mut self, id: SocketId) -> Result<(SocketId, SocketAddr)> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_accept(id),
            _ => Err(NetError::NotSupported),
        }
    }

    /// Sends on a connected socket; returns how many bytes were taken.
    pub fn send(&mut self, id: SocketId, data: &[u8]) -> Result<usize> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_send(id, data),
            Kind::Udp(_) => self.udp_send_to(id, data, None),
            Kind::Icmp(_) => self.icmp_send_to(id, data, None),
        }
    }

    /// Sends a datagram to `to` (for TCP, `to` is ignored as Linux does).
    pub fn send_to(&mut self, id: SocketId, data: &[u8], to: SocketAddr) -> Result<usize> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_send(id, data),
            Kind::Udp(_) => self.udp_send_to(id, data, Some(to)),
            Kind::Icmp(_) => self.icmp_send_to(id, data, Some(to)),
        }
    }

    /// Sends a datagram whose hop limit or traffic class, where given, is
    /// its own rather than the socket's (`IP_TTL`, `IP_TOS`,
    /// `IPV6_HOPLIMIT`, `IPV6_TCLASS` control messages); UDP only, other
    /// sockets send as [`Stack::send_to`] does.
    pub fn send_marked(
        &mut self,
        id: SocketId,
        data: &[u8],
        to: Option<SocketAddr>,
        marks: crate::socket::IpMarks,
    ) -> Result<usize> {
        let udp = matches!(self.get(id)?.kind, Kind::Udp(_));
        match to {
            _ if udp => self.udp_send_marked(id, data, to, marks),
            Some(to) => self.send_to(id, data, to),
            None => self.send(id, data),
        }
    }

    /// Sends on a TCP connection without an intermediate copy: `fill` is
    /// handed the free room of the send buffer (at most twice, as the room
    /// may wrap around) and returns how many bytes it wrote there.
    /// `WouldBlock` when there is no room at all; other errors as [`Stack::send`].
    pub fn send_with(
        &mut self,
        id: SocketId,
        mut fill: impl FnMut(&mut [u8]) -> usize,
    ) -> Result<usize> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_send_with(id, &mut fill),
            _ => Err(NetError::NotSupported),
        }
    }

    /// Receives from a TCP connection without an intermediate copy: `take`
    /// is handed the queued bytes (at most twice, as the queue may wrap
    /// around) and returns how many it consumed. `Ok(0)` without a call to
    /// `take` is end of file; errors as [`Stack::recv`].
    pub fn recv_with(
        &mut self,
        id: SocketId,
        mut take: impl FnMut(&[u8]) -> usize,
    ) -> Result<usize> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_recv_with(id, &mut take),
            _ => Err(NetError::NotSupported),
        }
    }

    /// Receives from a stream (or a datagram, without its source).
    /// `Ok(0)` on a stream is end of file.
    pub fn recv(&mut self, id: SocketId, buf: &mut [u8], flags: RecvFlags) -> Result<usize> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_recv(id, buf, flags),
            Kind::Udp(_) | Kind::Icmp(_) => Ok(self.recv_from(id, buf, flags)?.copied),
        }
    }

    /// Receives one datagram with its source.
    pub fn recv_from(
        &mut self,
        id: SocketId,
        buf: &mut [u8],
        flags: RecvFlags,
    ) -> Result<Datagram> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => {
                let copied = self.tcp_recv(id, buf, flags)?;
                let from = self.peer_addr(id)?;
                Ok(Datagram {
                    copied,
                    len: copied,
                    from,
                    to: None,
                    marks: crate::socket::IpMarks::default(),
                })
            }
            Kind::Udp(_) => self.udp_recv_from(id, buf, flags),
            Kind::Icmp(_) => self.icmp_recv_from(id, buf, flags),
        }
    }

    /// Shuts down one or both directions (`shutdown(2)`).
    pub fn shutdown(&mut self, id: SocketId, how: Shutdown) -> Result<()> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_shutdown(id, how),
            Kind::Udp(_) | Kind::Icmp(_) => self.dgram_shutdown(id, how),
        }
    }

    /// Closes a socket (`close(2)` of its last descriptor). A TCP connection
    /// finishes in the background (FIN, or RST with `SO_LINGER` 0 or unread data).
    pub fn close(&mut self, id: SocketId) -> Result<()> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_close(id),
            Kind::Udp(_) | Kind::Icmp(_) => {
                self.free(id);
                Ok(())
            }
        }
    }

    /// The local address (`getsockname(2)`); the wildcard with port 0 when unbound.
    pub fn local_addr(&self, id: SocketId) -> Result<SocketAddr> {
        let sock = self.get(id)?;
        if let Kind::Tcp(TcpState::Conn(c)) = &sock.kind {
            return Ok(sock.sockaddr(c.key.0));
        }
        if let Kind::Udp(u) = &sock.kind
            && let Some(src) = u.connected_src
            && let Some(b) = sock.binding
        {
            return Ok(sock.sockaddr(IpEndpoint::new(src, b.port)));
        }
        if let Kind::Icmp(i) = &sock.kind {
            return Ok(i.local_addr(sock));
        }
        Ok(match sock.binding {
            Some(Binding {
                addr: Some(a),
                port,
                ..
            }) => sock.sockaddr(IpEndpoint::new(a, port)),
            Some(b) => sock.unspecified(b.port),
            None => sock.unspecified(0),
        })
    }

    /// The peer address (`getpeername(2)`).
    pub fn peer_addr(&self, id: SocketId) -> Result<SocketAddr> {
        let sock = self.get(id)?;
        match &sock.kind {
            Kind::Tcp(TcpState::Conn(c)) if c.established => Ok(sock.sockaddr(c.key.1)),
            Kind::Udp(u) => u
                .peer
                .map(|p| sock.sockaddr(p))
                .ok_or(NetError::NotConnected),
            Kind::Icmp(i) => i
                .peer
                .map(|p| sock.sockaddr(IpEndpoint::new(p, 0)))
                .ok_or(NetError::NotConnected),
            _ => Err(NetError::NotConnected),
        }
    }

    /// Takes the pending error, if any (`getsockopt(SO_ERROR)`).
    pub fn take_error(&mut self, id: SocketId) -> Result<Option<NetError>> {
        Ok(self.get_mut(id)?.error.take())
    }

    /// What a poll on the socket would report now.
    pub fn readiness(&mut self, id: SocketId) -> Result<Readiness> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_readiness(id),
            Kind::Udp(_) => self.udp_readiness(id),
            Kind::Icmp(_) => self.icmp_readiness(id),
        }
    }

    /// Bytes (stream) or the next datagram's size waiting to be read (`FIONREAD`).
    pub fn recv_queue(&mut self, id: SocketId) -> Result<usize> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_queues(id).map(|q| q.0),
            Kind::Udp(_) => self.udp_next_len(id),
            Kind::Icmp(_) => Ok(0),
        }
    }

    /// Bytes sent but not yet acknowledged, plus unsent (`SIOCOUTQ`).
    pub fn send_queue(&mut self, id: SocketId) -> Result<usize> {
        match self.get(id)?.kind {
            Kind::Tcp(_) => self.tcp_queues(id).map(|q| q.1),
            _ => Ok(0),
        }
    }

    /// Sets a socket option.
    pub fn set_option(&mut self, id: SocketId, opt: SockOpt) -> Result<()> {
        let sock = self.get_mut(id)?;
        let proto = sock.protocol();
        let tcp_only = |ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(NetError::NoProtocolOption)
            }
        };
        match opt {
            SockOpt::ReuseAddr(v) => sock.opts.reuse_addr = v,
            SockOpt::ReusePort(v) => sock.opts.reuse_port = v,
            SockOpt::KeepAlive(v) => sock.opts.keepalive = v,
            SockOpt::Linger(v) => sock.opts.linger = v,
            SockOpt::RecvBuffer(v) => sock.opts.recv_buffer = clamp_buffer(v),
            SockOpt::SendBuffer(v) => sock.opts.send_buffer = clamp_buffer(v),
            SockOpt::Broadcast(v) => sock.opts.broadcast = v,
            SockOpt::NoDelay(v) => {
                tcp_only(proto == Protocol::Tcp)?;
                sock.opts.nodelay = v;
            }
            SockOpt::Cork(v) => {
                tcp_only(proto == Protocol::Tcp)?;
                sock.opts.cork = v;
            }
            SockOpt::KeepIdle(v) | SockOpt::KeepInterval(v) => {
                tcp_only(proto == Protocol::Tcp)?;
                if !(1..=32767).contains(&v) {
                    return Err(NetError::InvalidInput);
                }
                if matches!(opt, SockOpt::KeepIdle(_)) {
                    sock.opts.keep_idle = v;
                } else {
                    sock.opts.keep_interval = v;
                }
            }
            SockOpt::KeepCount(v) => {
                tcp_only(proto == Protocol::Tcp)?;
                if !(1..=127).contains(&v) {
                    return Err(NetError::InvalidInput);
                }
                sock.opts.keep_count = v;
            }
            SockOpt::Ttl(v) => {
                if v == 0 {
                    return Err(NetError::InvalidInput);
                }
                sock.opts.ttl = Some(v);
            }
            SockOpt::Tos(v) => sock.opts.tos = v,
            SockOpt::V6Only(v) => {
                if sock.domain != Domain::Ipv6 {
                    return Err(NetError::NoProtocolOption);
                }
                if sock.binding.is_some() {
                    return Err(NetError::InvalidInput);
                }
                sock.opts.v6only = v;
            }
        }
        // A listener's new buffer sizes reach its children through its
        // options, which each SYN's connection is made from.
        self.apply_options(id);
        Ok(())
    }

    /// Reads a socket option.
    pub fn option(&self, id: SocketId, name: SockOptName) -> Result<SockOpt> {
        let sock = self.get(id)?;
        let o = &sock.opts;
        let is_tcp = sock.protocol() == Protocol::Tcp;
        // Linux: getsockopt of a TCP option on another kind of socket is
        // EOPNOTSUPP (setsockopt says ENOPROTOOPT).
        let tcp_only = |v: SockOpt| {
            if is_tcp {
                Ok(v)
            } else {
                Err(NetError::NotSupported)
            }
        };
        Ok(match name {
            SockOptName::ReuseAddr => SockOpt::ReuseAddr(o.reuse_addr),
            SockOptName::ReusePort => SockOpt::ReusePort(o.reuse_port),
            SockOptName::KeepAlive => SockOpt::KeepAlive(o.keepalive),
            SockOptName::Linger => SockOpt::Linger(o.linger),
            SockOptName::RecvBuffer => SockOpt::RecvBuffer(o.recv_buffer),
            SockOptName::SendBuffer => SockOpt::SendBuffer(o.send_buffer),
            SockOptName::Broadcast => SockOpt::Broadcast(o.broadcast),
            SockOptName::NoDelay => tcp_only(SockOpt::NoDelay(o.nodelay))?,
            SockOptName::Cork => tcp_only(SockOpt::Cork(o.cork))?,
            SockOptName::KeepIdle => tcp_only(SockOpt::KeepIdle(o.keep_idle))?,
            SockOptName::KeepInterval => tcp_only(SockOpt::KeepInterval(o.keep_interval))?,
            SockOptName::KeepCount => tcp_only(SockOpt::KeepCount(o.keep_count))?,
            SockOptName::Ttl => SockOpt::Ttl(o.ttl.unwrap_or(64)),
            SockOptName::Tos => SockOpt::Tos(o.tos),
            SockOptName::V6Only => {
                if sock.domain != Domain::Ipv6 {
                    return Err(NetError::NoProtocolOption);
                }
                SockOpt::V6Only(o.v6only)
            }
        })
    }

    fn apply_options(&mut self, id: SocketId) {
        let Some(sock) = self.sockets.get_mut(id) else {
            return;
        };
        let opts = sock.opts.clone();
        match &mut sock.kind {
            Kind::Tcp(t) => t.apply_options(&opts),
            Kind::Udp(u) => u.apply_options(&opts),
            Kind::Icmp(i) => i.apply_options(&opts),
        }
        self.mark_dirty(id);
    }
}
