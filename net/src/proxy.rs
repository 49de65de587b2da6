//! Reading a PROXY protocol header off a data connection, exactly: the header is
//! peeked at, judged by the core ([`wharf_core::proxy::parse`]), and only its own bytes
//! are taken, so the client's bytes behind it (an upload's first bytes, a TLS
//! ClientHello) stay in the socket for the transfer.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use wharf_core::proxy::{self, Parsed};

/// How far a header read got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderRead {
    /// Not all of it has arrived: try again when the socket is readable.
    Pending,
    /// The client it names (`peer` for a `LOCAL` header), or `None`: malformed, the
    /// connection ended or failed first.
    Done(Option<SocketAddr>),
}

/// Reads the header of a non-blocking connection from `peer` (the balancer), taking no
/// byte past it.
pub fn read_proxy_header(sock: &impl AsRawFd, peer: SocketAddr) -> HeaderRead {
    let mut buf = vec![0u8; proxy::V2_MAX];
    let n = match recv(sock, &mut buf, libc::MSG_PEEK) {
        Ok(0) => return HeaderRead::Done(None),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return HeaderRead::Pending,
        Err(e) if e.kind() == io::ErrorKind::Interrupted => return HeaderRead::Pending,
        Err(_) => return HeaderRead::Done(None),
    };
    match proxy::parse(&buf[..n]) {
        Parsed::Incomplete => HeaderRead::Pending,
        Parsed::Invalid(why) => {
            tracing::info!(%peer, why, "bad PROXY protocol header on a data connection");
            HeaderRead::Done(None)
        }
        Parsed::Done { header, len } => {
            // The bytes are queued already (peeked): this takes them at once.
            let mut taken = 0;
            while taken < len {
                match recv(sock, &mut buf[taken..len], 0) {
                    Ok(0) => return HeaderRead::Done(None),
                    Ok(k) => taken += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return HeaderRead::Done(None),
                }
            }
            HeaderRead::Done(Some(header.source_or(peer)))
        }
    }
}

fn recv(sock: &impl AsRawFd, buf: &mut [u8], flags: libc::c_int) -> io::Result<usize> {
    // SAFETY: `buf` is valid for `buf.len()` bytes and the descriptor outlives the call.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        (c, s)
    }

    /// Polls, with a deadline, for the bytes to arrive on loopback.
    fn read_until_done(s: &TcpStream, peer: SocketAddr) -> HeaderRead {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            match read_proxy_header(s, peer) {
                HeaderRead::Pending => std::thread::yield_now(),
                done => return done,
            }
        }
        HeaderRead::Pending
    }

    #[test]
    fn takes_the_header_and_leaves_the_rest() {
        let (mut c, s) = pair();
        let client: SocketAddr = "203.0.113.5:4000".parse().unwrap();
        let mut bytes = proxy::encode_v2(client, "127.0.0.11:50001".parse().unwrap(), &[]);
        bytes.extend_from_slice(b"upload bytes");
        c.write_all(&bytes).unwrap();
        let peer = c.local_addr().unwrap();
        assert_eq!(read_until_done(&s, peer), HeaderRead::Done(Some(client)));
        drop(c);
        s.set_nonblocking(false).unwrap();
        let mut rest = Vec::new();
        (&s).read_to_end(&mut rest).unwrap();
        assert_eq!(rest, b"upload bytes");
    }

    #[test]
    fn a_split_header_waits_and_garbage_is_refused() {
        let (mut c, s) = pair();
        let peer = c.local_addr().unwrap();
        let header = proxy::encode_v1("192.0.2.1:1".parse().unwrap(), peer);
        c.write_all(&header[..10]).unwrap();
        c.flush().unwrap();
        assert_eq!(read_proxy_header(&s, peer), HeaderRead::Pending);
        c.write_all(&header[10..]).unwrap();
        let want = HeaderRead::Done(Some("192.0.2.1:1".parse().unwrap()));
        assert_eq!(read_until_done(&s, peer), want);

        let (mut c, s) = pair();
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert_eq!(read_until_done(&s, peer), HeaderRead::Done(None));
        let (c, s) = pair();
        drop(c);
        assert_eq!(read_until_done(&s, peer), HeaderRead::Done(None));
    }
}
