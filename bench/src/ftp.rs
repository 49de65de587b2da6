//! A minimal blocking FTP client: just what the scenarios need.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::tls::{Conn, Mode, Tls};

/// Every error is a message with context; the scenarios count and sample them.
pub type Res<T> = Result<T, String>;

/// One (possibly multi-line) reply: its code and the text of its last line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

/// Where to connect and as whom.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub user: String,
    pub pass: String,
    pub timeout: Duration,
    /// FTPS, when set: control and data connections are encrypted.
    pub tls: Option<Tls>,
}

/// The three-digit code of a reply line, and whether the line ends the reply
/// (`"230 ok"`) rather than opening a multi-line one (`"230-Welcome"`).
pub fn parse_reply_line(line: &str) -> Option<(u16, bool)> {
    let b = line.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = line[..3].parse().ok()?;
    match b.get(3) {
        None | Some(b' ') | Some(b'\r') | Some(b'\n') => Some((code, true)),
        Some(b'-') => Some((code, false)),
        _ => None,
    }
}

/// The address in a `227` reply, e.g. `227 Entering Passive Mode (127,0,0,1,195,80).`
/// Some servers omit the parentheses: the first run of six comma-separated numbers wins.
pub fn parse_pasv(text: &str) -> Option<SocketAddr> {
    let body = text.get(3..)?;
    let start = body.find(|c: char| c.is_ascii_digit())?;
    let run: String = body[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == ' ')
        .collect();
    let nums: Vec<u8> = run
        .split(',')
        .map(|s| s.trim().parse::<u8>())
        .collect::<Result<_, _>>()
        .ok()?;
    if nums.len() != 6 {
        return None;
    }
    let ip = IpAddr::from([nums[0], nums[1], nums[2], nums[3]]);
    let port = u16::from(nums[4]) << 8 | u16::from(nums[5]);
    Some(SocketAddr::new(ip, port))
}

/// Connect with a timeout, optionally from a given source address (bind before connect,
/// to get past the ephemeral port range of one source address).
///
/// The timeouts are set first and the connect is a blocking one, which Linux bounds by
/// the send timeout: one system call where `connect_timeout` makes six (non-blocking
/// mode on and off, connect, poll), twice per FTP session. The load generator shares
/// the CPUs with the server it measures.
pub fn connect(addr: SocketAddr, src: Option<IpAddr>, timeout: Duration) -> Res<TcpStream> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| format!("socket: {e}"))?;
    sock.set_tcp_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    sock.set_read_timeout(Some(timeout))
        .map_err(|e| format!("timeout: {e}"))?;
    sock.set_write_timeout(Some(timeout))
        .map_err(|e| format!("timeout: {e}"))?;
    if let Some(ip) = src {
        let _ = sock.set_reuse_address(true);
        sock.bind(&SocketAddr::new(ip, 0).into())
            .map_err(|e| format!("bind {ip}: {e}"))?;
    }
    match sock.connect(&addr.into()) {
        Ok(()) => Ok(sock.into()),
        // What a blocking connect returns when the send timeout expires.
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            Err(format!("connect {addr}: timed out"))
        }
        Err(e) => Err(format!("connect {addr}: {e}")),
    }
}

/// A control connection.
pub struct Ctrl {
    reader: BufReader<Conn>,
    line: String,
    tls: Option<Tls>,
    /// The server's address (the one connected to: no `getpeername` per data connection).
    peer: IpAddr,
}

impl Ctrl {
    /// Connect and read the banner (which must be 220); with FTPS, secure the session
    /// (implicit: TLS first; explicit: AUTH TLS, PBSZ 0, PROT P).
    pub fn open(t: &Target, src: Option<IpAddr>) -> Res<Ctrl> {
        let s = connect(t.addr, src, t.timeout)?;
        // Each session remembers only its own TLS session: a data connection must resume
        // its control connection's, not another client thread's.
        let session_tls = t.tls.as_ref().map(Tls::for_session);
        let conn = match &session_tls {
            Some(tls) if tls.mode == Mode::Implicit => tls.wrap(s, t.addr.ip())?,
            _ => Conn::Plain(s),
        };
        let mut c = Ctrl::from_conn(conn, session_tls.clone(), t.addr.ip());
        c.expect_reply(&[220], "banner")?;
        if let Some(tls) = &session_tls {
            if tls.mode == Mode::Explicit {
                c.cmd("AUTH TLS", &[234])?;
                // Nothing is buffered behind the 234: the reader only ever asks for
                // complete replies and the server sends nothing more until we speak.
                let plain = c.reader.into_inner();
                let sock = plain.into_plain().expect("plain before AUTH");
                let conn = tls.wrap(sock, t.addr.ip())?;
                c = Ctrl::from_conn(conn, session_tls.clone(), t.addr.ip());
            }
            c.cmd("PBSZ 0", &[200])?;
            c.cmd("PROT P", &[200])?;
        }
        Ok(c)
    }

    /// Bounds how long a reply may take from now on.
    pub fn set_read_timeout(&self, t: Option<Duration>) {
        let _ = self.reader.get_ref().tcp().set_read_timeout(t);
    }

    #[cfg(test)]
    pub fn from_stream(s: TcpStream) -> Ctrl {
        let peer = s.peer_addr().unwrap().ip();
        Ctrl::from_conn(Conn::Plain(s), None, peer)
    }

    fn from_conn(conn: Conn, tls: Option<Tls>, peer: IpAddr) -> Ctrl {
        Ctrl {
            reader: BufReader::with_capacity(4096, conn),
            line: String::new(),
            tls,
            peer,
        }
    }

    pub fn peer_ip(&self) -> Res<IpAddr> {
        Ok(self.peer)
    }

    /// Read one complete reply.
    pub fn read_reply(&mut self) -> Res<Reply> {
        let mut first: Option<u16> = None;
        loop {
            self.line.clear();
            let n = self
                .reader
                .read_line(&mut self.line)
                .map_err(|e| format!("reading reply: {e}"))?;
            if n == 0 {
                return Err("connection closed while waiting for a reply".into());
            }
            let parsed = parse_reply_line(&self.line);
            match (first, parsed) {
                (None, Some((code, true))) => return Ok(self.reply(code)),
                (None, Some((code, false))) => first = Some(code),
                (None, None) => return Err(format!("not a reply: {:?}", self.line.trim_end())),
                (Some(c), Some((code, true))) if code == c => return Ok(self.reply(code)),
                (Some(_), _) => {} // continuation line of a multi-line reply
            }
        }
    }

    fn reply(&self, code: u16) -> Reply {
        Reply {
            code,
            text: self.line.trim_end().to_string(),
        }
    }

    pub fn send(&mut self, cmd: &str) -> Res<()> {
        let s = self.reader.get_mut();
        let mut buf = Vec::with_capacity(cmd.len() + 2);
        buf.extend_from_slice(cmd.as_bytes());
        buf.extend_from_slice(b"\r\n");
        s.write_all(&buf).map_err(|e| format!("sending {cmd}: {e}"))
    }

    /// Read a reply and fail unless its code is one of `ok`.
    pub fn expect_reply(&mut self, ok: &[u16], what: &str) -> Res<Reply> {
        let r = self.read_reply().map_err(|e| format!("{what}: {e}"))?;
        if ok.contains(&r.code) {
            Ok(r)
        } else {
            Err(format!("{what}: unexpected reply {:?}", r.text))
        }
    }

    /// Send a command and expect one of `ok`.
    pub fn cmd(&mut self, cmd: &str, ok: &[u16]) -> Res<Reply> {
        self.send(cmd)?;
        let what = cmd.split(' ').next().unwrap_or(cmd);
        let what = if what == "PASS" { "PASS" } else { cmd };
        self.expect_reply(ok, what)
    }

    pub fn login(&mut self, user: &str, pass: &str) -> Res<()> {
        let r = self.cmd(&format!("USER {user}"), &[230, 331])?;
        if r.code == 331 {
            self.cmd(&format!("PASS {pass}"), &[230])?;
        }
        Ok(())
    }

    /// PASV, then connect the data channel (to the control peer's IP and the given port).
    pub fn pasv_connect(&mut self, timeout: Duration) -> Res<TcpStream> {
        let r = self.cmd("PASV", &[227])?;
        let addr = parse_pasv(&r.text).ok_or_else(|| format!("bad PASV reply {:?}", r.text))?;
        let addr = SocketAddr::new(self.peer_ip()?, addr.port());
        connect(addr, None, timeout)
    }

    /// Sends a transfer command on a fresh passive connection and, under FTPS, secures
    /// the data connection once the server has answered 150 (it handshakes then).
    fn open_data(&mut self, cmd: &str, timeout: Duration) -> Res<Conn> {
        let data = self.pasv_connect(timeout)?;
        self.cmd(cmd, &[125, 150])?;
        match &self.tls {
            Some(tls) => {
                let ip = self.peer_ip()?;
                tls.wrap(data, ip).map_err(|e| format!("{cmd}: data {e}"))
            }
            None => Ok(Conn::Plain(data)),
        }
    }

    /// Run a command that sends data to us (RETR, LIST, MLSD) and read it all into
    /// `sink`, returning the byte count after the final 226/250.
    pub fn download(
        &mut self,
        cmd: &str,
        timeout: Duration,
        buf: &mut [u8],
        sink: &mut dyn FnMut(&[u8]),
    ) -> Res<u64> {
        let mut data = self.open_data(cmd, timeout)?;
        let mut total = 0u64;
        loop {
            match data.read(buf) {
                Ok(0) => break,
                Ok(n) => {
                    total += n as u64;
                    sink(&buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("{cmd}: reading data: {e}")),
            }
        }
        drop(data);
        self.expect_reply(&[226, 250], cmd)?;
        Ok(total)
    }

    /// STOR `total` bytes taken repeatedly from `chunk`.
    pub fn upload(&mut self, cmd: &str, timeout: Duration, chunk: &[u8], total: u64) -> Res<()> {
        let mut data = self.open_data(cmd, timeout)?;
        let mut left = total;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            data.write_all(&chunk[..n])
                .map_err(|e| format!("{cmd}: writing data: {e}"))?;
            left -= n as u64;
        }
        data.finish_sending()
            .map_err(|e| format!("{cmd}: ending data: {e}"))?;
        drop(data);
        self.expect_reply(&[226, 250], cmd)?;
        Ok(())
    }

    /// QUIT, then wait for the server to close the connection.
    pub fn quit(mut self) -> Res<()> {
        self.cmd("QUIT", &[221])?;
        let mut b = [0u8; 256];
        loop {
            match self.reader.read(&mut b) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(()),
                // After 221 nothing more is owed: a server that closes its TLS control
                // connection without close_notify (vsftpd, pure-ftpd) has still quit.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(format!("waiting for close after QUIT: {e}")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_lines() {
        assert_eq!(parse_reply_line("220 ready\r\n"), Some((220, true)));
        assert_eq!(parse_reply_line("230-Welcome\r\n"), Some((230, false)));
        assert_eq!(parse_reply_line("200\r\n"), Some((200, true)));
        assert_eq!(parse_reply_line("200"), Some((200, true)));
        assert_eq!(parse_reply_line(" 230 indented continuation"), None);
        assert_eq!(parse_reply_line("2x0 nope"), None);
        assert_eq!(parse_reply_line("12"), None);
        assert_eq!(parse_reply_line("1234 too long"), None);
    }

    #[test]
    fn multi_line_reply() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.write_all(
                b"220-hello\r\n230 not the end\r\n 220 nor this\r\n220 done\r\n331 next\r\n",
            )
            .unwrap();
        });
        let s = TcpStream::connect(addr).unwrap();
        let mut c = Ctrl::from_stream(s);
        assert_eq!(
            c.read_reply().unwrap(),
            Reply {
                code: 220,
                text: "220 done".into()
            }
        );
        assert_eq!(c.read_reply().unwrap().code, 331);
        assert!(c.read_reply().is_err());
        t.join().unwrap();
    }

    #[test]
    fn pasv_replies() {
        let want: SocketAddr = "127.0.0.1:50000".parse().unwrap();
        assert_eq!(
            parse_pasv("227 Entering Passive Mode (127,0,0,1,195,80)."),
            Some(want)
        );
        assert_eq!(
            parse_pasv("227 Entering Passive Mode 127,0,0,1,195,80"),
            Some(want)
        );
        assert_eq!(parse_pasv("227 =127,0,0,1,195,80"), Some(want));
        assert_eq!(parse_pasv("227 (127,0,0,1,195)"), None);
        assert_eq!(parse_pasv("227 (127,0,0,1,195,999)"), None);
    }
}
