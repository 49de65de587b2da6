//! What the tests of the `wharf` binary share: starting it with a guard that kills it
//! (by its pid) even when the test panics, reading its output line by line with a
//! deadline, and polling for a condition with a bound instead of sleeping.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

pub const WHARF: &str = env!("CARGO_BIN_EXE_wharf");

/// How long anything a test waits for may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The lines a child writes to one of its pipes, read on a thread of their own.
pub struct Lines {
    rx: Receiver<String>,
    /// Every line received so far, for error messages.
    pub seen: Vec<String>,
}

impl Lines {
    pub fn new(pipe: impl Read + Send + 'static) -> Lines {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Lines {
            rx,
            seen: Vec::new(),
        }
    }

    /// The next line that satisfies `pred` (earlier ones are kept in `seen`); panics
    /// with everything seen when none comes within [`PATIENCE`] or the pipe closes.
    pub fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no line {what} within {PATIENCE:?}; seen: {:#?}", self.seen)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the pipe closed before a line {what}; seen: {:#?}",
                        self.seen
                    )
                }
            }
        }
    }

    /// Every remaining line, until the pipe closes (bounded by [`PATIENCE`]).
    pub fn rest(&mut self) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        let mut out = Vec::new();
        while let Ok(line) = self
            .rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line.clone());
            out.push(line);
        }
        out
    }
}

/// A `wharf` process this test started; killed (SIGKILL, by pid) when dropped unless it
/// has exited.
pub struct Wharf {
    pub child: std::process::Child,
    pub stdout: Lines,
    pub stderr: Lines,
}

impl Wharf {
    /// Starts `wharf ARGS` in `dir` with stdout and stderr piped and `env` added.
    pub fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Wharf {
        let mut cmd = Command::new(WHARF);
        cmd.args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("starting wharf");
        let stdout = Lines::new(child.stdout.take().unwrap());
        let stderr = Lines::new(child.stderr.take().unwrap());
        Wharf {
            child,
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child, which has not been reaped (we hold it).
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// The address of the first `wharf: serving ftp://ADDR/` line (waits for it).
    pub fn serving(&mut self) -> String {
        let line = self
            .stdout
            .expect("saying where wharf serves", |l| l.contains("serving ftp"));
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("ftp://"))
            .unwrap();
        url.trim_start_matches("ftp://")
            .trim_end_matches('/')
            .to_string()
    }

    /// Waits (bounded) for the process to exit.
    pub fn exit_status(&mut self) -> ExitStatus {
        wait_exit(&mut self.child)
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.exit_status()
    }
}

impl Drop for Wharf {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits (bounded by [`PATIENCE`]) for `child` to exit.
pub fn wait_exit(child: &mut std::process::Child) -> ExitStatus {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "pid {} did not exit within {PATIENCE:?}",
            child.id()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `cond` every 10 ms until it holds; panics with `what` after [`PATIENCE`].
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not within {PATIENCE:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `wharf ARGS` to completion in `dir`, with `stdin` written to it: the output.
pub fn run(dir: &Path, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = Command::new(WHARF)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting wharf");
    let mut input = child.stdin.take().unwrap();
    let text = stdin.to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    // The output is read on threads, so a chatty child never blocks on a full pipe.
    let out_pipe = child.stdout.take().unwrap();
    let err_pipe = child.stderr.take().unwrap();
    let read_all = |mut p: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = p.read_to_end(&mut v);
            v
        })
    };
    let out = read_all(Box::new(out_pipe));
    let err = read_all(Box::new(err_pipe));
    let status = wait_exit(&mut child);
    let _ = writer.join();
    std::process::Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// A port nothing listens on right now (the OS's pick on 127.0.0.1).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The first line the server at `addr` sends (its greeting).
pub fn greeting(addr: &str) -> String {
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line
}

/// curl ARGS, bounded: the output.
pub fn curl(args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .output()
        .expect("curl must be installed (.ci/run installs it)")
}
