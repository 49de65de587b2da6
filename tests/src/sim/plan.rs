//! What a model client does next: random operations, each a few command lines with the
//! meaning the checker needs to judge the replies.

use super::client::{Client, ClientCx};
use super::model::{normalize, Look};

/// A command as the checker understands it. Paths are already resolved (`None` when the
/// argument cannot be a path, e.g. it holds NUL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Greeting {
        admitted: bool,
    },
    User {
        anon: bool,
    },
    Pass {
        good: bool,
    },
    /// A command whose reply codes are fixed.
    Fixed(&'static [u16]),
    Type {
        ascii: bool,
    },
    Pwd,
    Cwd {
        path: Option<String>,
    },
    Mkd {
        path: Option<String>,
    },
    Rmd {
        path: Option<String>,
    },
    Dele {
        path: Option<String>,
    },
    Rnfr {
        path: Option<String>,
    },
    Rnto {
        path: Option<String>,
    },
    Size {
        path: Option<String>,
    },
    Mdtm {
        path: Option<String>,
    },
    StatPath {
        path: Option<String>,
    },
    Pasv {
        extended: bool,
    },
    Port {
        ok: bool,
    },
    Rest {
        offset: u64,
    },
    List {
        verb: ListVerb,
        path: Option<String>,
    },
    Retr {
        path: Option<String>,
        abort: bool,
    },
    Store {
        path: Option<String>,
        how: How,
        data: Data,
        abort: bool,
    },
    Abor,
    /// AUTH TLS: the control channel goes to TLS once 234 is read.
    Auth,
    /// PROT P (`private`) or PROT C, after PBSZ 0.
    Prot {
        private: bool,
    },
    Quit,
    /// Not a command: the client closes (FIN) or resets its side.
    Fin {
        reset: bool,
    },
}

/// Upload bytes, shown by length in failure messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Data(pub Vec<u8>);

impl std::fmt::Debug for Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListVerb {
    List,
    Nlst,
    Mlsd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    Stor,
    Appe,
    Stou,
}

impl Kind {
    pub fn is_transfer(&self) -> bool {
        matches!(
            self,
            Kind::List { .. } | Kind::Retr { .. } | Kind::Store { .. }
        )
    }

    pub fn mutates(&self) -> bool {
        matches!(
            self,
            Kind::Store { .. }
                | Kind::Mkd { .. }
                | Kind::Rmd { .. }
                | Kind::Dele { .. }
                | Kind::Rnto { .. }
        )
    }
}

#[derive(Debug, Clone)]
pub struct Step {
    pub line: Vec<u8>,
    pub kind: Kind,
    /// Sent without waiting for the replies to earlier steps.
    pub pipeline: bool,
}

/// Whether clients send over-long lines (off while the framer-reset bug is open).
const LONG_LINES: bool = !super::known_bugs::LONG_LINE_TAIL;

/// Names inside the client's own directory; few, so operations collide.
const NAMES: &[&str] = &[
    "a",
    "b.txt",
    "d1",
    "d1/x",
    "d1/y",
    "d2",
    "sp ace",
    "\u{fc}.txt",
    "q\"t",
];
/// Paths that try to leave the tree or name things that are not there.
const HOSTILE: &[&str] = &[
    "../../..",
    "/..",
    "../../etc/passwd",
    "/etc",
    "/etc/passwd",
    "..\\..\\x",
    "~root",
    "//..//x",
    "/nonexistent/y/z",
    "./../.././pub",
    "C:\\",
    "%2e%2e%2f",
    "/pub/../../..",
];
/// Hostile targets for writes: each has a missing parent, so nothing may be created.
const HOSTILE_WRITES: &[&str] = &[
    "/etc/passwd",
    "../../../etc/shadow",
    "/nonexistent/y/z",
    "/pub/nope/x",
];

impl Client {
    fn step(&mut self, line: impl Into<Vec<u8>>, kind: Kind) {
        let mut line = line.into();
        line.extend_from_slice(b"\r\n");
        self.steps.push_back(Step {
            line,
            kind,
            pipeline: false,
        });
    }

    /// Pipelines the last planned step behind the previous one.
    fn pipelined(&mut self) {
        if let Some(s) = self.steps.back_mut() {
            s.pipeline = true;
        }
    }

    fn resolve(&self, arg: &str) -> Option<String> {
        normalize(&self.cwd, arg)
    }

    /// A path argument in the own directory, absolute or relative to where we are.
    fn own_arg(&mut self) -> String {
        let name = *self.rng.pick(NAMES);
        let own = self.model.own.clone();
        if self.cwd == own && self.rng.chance(50) {
            name.to_string()
        } else {
            format!("{own}/{name}")
        }
    }

    fn read_arg(&mut self, cx: &ClientCx<'_>) -> String {
        match self.rng.range(0, 9) {
            0..=3 => self.own_arg(),
            4..=5 => self.rng.pick(super::model::PUB_FILES).0.to_string(),
            6 if cx.swarm.hostile => (*self.rng.pick(HOSTILE)).to_string(),
            7 => format!("/c{}/a", self.rng.range(0, cx.swarm.sessions as u64 - 1)),
            _ => self.model.own.clone(),
        }
    }

    pub fn plan_next(&mut self, cx: &ClientCx<'_>) {
        if self.ops_left == 0 {
            return self.plan_end(cx);
        }
        self.ops_left -= 1;
        if cx.swarm.tls && self.ctl_tls.is_none() && !self.logged_in && self.rng.chance(70) {
            // Alone: nothing may be pipelined behind AUTH (the core refuses it).
            return self.step("AUTH TLS", Kind::Auth);
        }
        if !self.logged_in && self.rng.chance(80) {
            return self.plan_login(cx);
        }
        if self.secured && self.rng.chance(15) {
            let private = self.rng.chance(80);
            self.step("PBSZ 0", Kind::Fixed(&[200]));
            let line = if private { "PROT P" } else { "PROT C" };
            return self.step(line, Kind::Prot { private });
        }
        match self.rng.range(0, 19) {
            0 => self.plan_simple(cx),
            1 | 2 => self.plan_cwd(cx),
            3 => {
                let path = Some(self.model.own.clone());
                let arg = self.model.own.clone();
                self.step(
                    format!("MKD {arg}/d1"),
                    Kind::Mkd {
                        path: path.map(|p| p + "/d1"),
                    },
                );
            }
            4 => self.plan_path_cmd(cx),
            5 => self.plan_rename(),
            6..=8 => self.plan_list(cx),
            9..=12 => self.plan_retr(cx),
            _ => self.plan_store(cx),
        }
        if cx.swarm.control_drops && self.rng.chance(3) {
            let reset = self.rng.chance(50);
            self.steps.push_back(Step {
                line: Vec::new(),
                kind: Kind::Fin { reset },
                pipeline: true,
            });
        }
    }

    fn plan_end(&mut self, cx: &ClientCx<'_>) {
        let drop = cx.swarm.control_drops && self.rng.chance(30);
        if !drop || self.rng.chance(50) {
            self.step("QUIT", Kind::Quit);
        }
        if drop {
            let reset = self.rng.chance(50);
            self.steps.push_back(Step {
                line: Vec::new(),
                kind: Kind::Fin { reset },
                pipeline: true,
            });
        }
    }

    fn plan_login(&mut self, cx: &ClientCx<'_>) {
        let i = self.idx;
        match self.rng.range(0, 9) {
            0 | 1 => {
                self.step("USER anonymous", Kind::User { anon: true });
                self.step("PASS sim@example.com", Kind::Pass { good: true });
            }
            2 => {
                self.step(format!("USER u{i}"), Kind::User { anon: false });
                self.step("PASS wrong", Kind::Pass { good: false });
            }
            3 if cx.swarm.hostile => self.plan_garbage(cx),
            _ => {
                self.step(format!("USER u{i}"), Kind::User { anon: false });
                self.step(format!("PASS pw{i}"), Kind::Pass { good: true });
            }
        }
        if self.rng.chance(40) {
            self.pipelined();
        }
    }

    fn plan_garbage(&mut self, cx: &ClientCx<'_>) {
        match self.rng.range(0, 4) {
            0 => self.step("HELLO world", Kind::Fixed(&[500])),
            1 => self.step("", Kind::Fixed(&[500])),
            2 => self.step(b"RETR \xc3\x28".to_vec(), Kind::Fixed(&[501])),
            // Disabled until the core keeps discarding an over-long line's tail across
            // reads (see `long_line_tail_is_not_a_command` in tests/core_bugs.rs).
            3 if LONG_LINES => self.step(vec![b'X'; cx.cfg.max_line + 10], Kind::Fixed(&[500])),
            3 => self.step("NOOP", Kind::Fixed(&[200])),
            _ => self.step("SITE EXEC /bin/sh", Kind::Fixed(&[502, 530])),
        }
    }

    fn plan_simple(&mut self, cx: &ClientCx<'_>) {
        match self.rng.range(0, 6) {
            0 => self.step("NOOP", Kind::Fixed(&[200])),
            1 => self.step("PWD", Kind::Pwd),
            2 => self.step("SYST", Kind::Fixed(&[215])),
            3 => self.step("FEAT", Kind::Fixed(&[211])),
            4 => {
                let ascii = self.rng.chance(30);
                self.step(
                    if ascii { "TYPE A" } else { "TYPE I" },
                    Kind::Type { ascii },
                );
            }
            5 => self.step("STAT", Kind::Fixed(&[211])),
            _ => self.plan_garbage(cx),
        }
    }

    fn plan_cwd(&mut self, cx: &ClientCx<'_>) {
        if self.rng.chance(20) {
            let path = self.resolve("..");
            return self.step("CDUP", Kind::Cwd { path });
        }
        let arg = match self.rng.range(0, 3) {
            0 => self.model.own.clone(),
            1 => "..".into(),
            _ => self.read_arg(cx),
        };
        let path = self.resolve(&arg);
        self.step(format!("CWD {arg}"), Kind::Cwd { path });
    }

    fn plan_path_cmd(&mut self, cx: &ClientCx<'_>) {
        let hostile = cx.swarm.hostile && self.rng.chance(15);
        let arg = if hostile {
            (*self.rng.pick(HOSTILE_WRITES)).to_string()
        } else {
            self.own_arg()
        };
        let path = self.resolve(&arg);
        let (verb, kind) = match self.rng.range(0, 5) {
            0 => ("MKD", Kind::Mkd { path }),
            1 => ("RMD", Kind::Rmd { path }),
            2 => ("DELE", Kind::Dele { path }),
            3 => ("SIZE", Kind::Size { path }),
            4 => ("MDTM", Kind::Mdtm { path }),
            _ => ("STAT", Kind::StatPath { path }),
        };
        self.step(format!("{verb} {arg}"), kind);
    }

    fn plan_rename(&mut self) {
        let (from, to) = (self.own_arg(), self.own_arg());
        let (pf, pt) = (self.resolve(&from), self.resolve(&to));
        self.step(format!("RNFR {from}"), Kind::Rnfr { path: pf });
        self.step(format!("RNTO {to}"), Kind::Rnto { path: pt });
        if self.rng.chance(30) {
            self.pipelined();
        }
    }

    /// PASV/EPSV/PORT/EPRT, as fits the address family (and sometimes not).
    fn plan_data(&mut self, cx: &ClientCx<'_>) {
        let ip4 = format!("198.51.100.{}", self.idx + 10);
        let ip6 = format!("2001:db8::{}", self.idx + 10);
        let port = 20_000 + self.rng.range(0, 40_000) as u16;
        let (hi, lo) = (port >> 8, port & 0xff);
        match self.rng.range(0, 5) {
            0 => self.step("PASV", Kind::Pasv { extended: false }),
            1 | 2 => self.step("EPSV", Kind::Pasv { extended: true }),
            3 if self.v6 => self.step(format!("EPRT |2|{ip6}|{port}|"), Kind::Port { ok: true }),
            3 => self.step(format!("EPRT |1|{ip4}|{port}|"), Kind::Port { ok: true }),
            4 if cx.swarm.hostile && self.rng.chance(30) => {
                // Bounce attempts: someone else's address, or a privileged port.
                let line = match self.rng.range(0, 2) {
                    0 => format!("PORT 10,0,0,1,{hi},{lo}"),
                    1 => format!("PORT {},0,21", ip4.replace('.', ",")),
                    _ => "EPRT |1|127.0.0.1|8080|".to_string(),
                };
                self.step(line, Kind::Port { ok: false });
            }
            _ => {
                let ok = !self.v6;
                self.step(
                    format!("PORT {},{hi},{lo}", ip4.replace('.', ",")),
                    Kind::Port { ok },
                );
            }
        }
    }

    fn plan_list(&mut self, cx: &ClientCx<'_>) {
        if self.rng.chance(15) {
            let arg = self.read_arg(cx);
            let path = self.resolve(&arg);
            return self.step(format!("STAT {arg}"), Kind::StatPath { path });
        }
        self.plan_data(cx);
        let (verb, word) = *self.rng.pick(&[
            (ListVerb::List, "LIST"),
            (ListVerb::Nlst, "NLST"),
            (ListVerb::Mlsd, "MLSD"),
        ]);
        let arg = match self.rng.range(0, 3) {
            0 => String::new(),
            1 => self.model.own.clone(),
            2 => "/pub".into(),
            _ => self.read_arg(cx),
        };
        let path = self.resolve(if arg.is_empty() { "." } else { &arg });
        let line = if arg.is_empty() {
            word.to_string()
        } else {
            format!("{word} {arg}")
        };
        self.step(line, Kind::List { verb, path });
        if self.rng.chance(30) {
            self.pipelined();
        }
    }

    fn plan_rest(&mut self, max: usize) {
        if self.rng.chance(30) {
            let offset = self.rng.range(0, max as u64 + 5);
            self.step(format!("REST {offset}"), Kind::Rest { offset });
        }
    }

    fn plan_retr(&mut self, cx: &ClientCx<'_>) {
        self.plan_data(cx);
        let arg = self.read_arg(cx);
        let path = self.resolve(&arg);
        let len = match path.as_deref().map(|p| self.model.look(p)) {
            Some(Look::File(b)) => b.len(),
            _ => 100,
        };
        self.plan_rest(len);
        let abort = self.rng.chance(10);
        self.step(format!("RETR {arg}"), Kind::Retr { path, abort });
        if self.rng.chance(25) {
            self.pipelined();
        }
    }

    fn plan_store(&mut self, cx: &ClientCx<'_>) {
        self.plan_data(cx);
        let hostile = cx.swarm.hostile && self.rng.chance(10);
        let arg = if hostile {
            (*self.rng.pick(HOSTILE_WRITES)).to_string()
        } else {
            self.own_arg()
        };
        let path = self.resolve(&arg);
        let how = *self.rng.pick(&[How::Stor, How::Stor, How::Appe, How::Stou]);
        let len = if self.rng.chance(10) {
            self.rng.range(0, 30_000)
        } else {
            self.rng.range(0, 2_000)
        };
        let data = self.rng.bytes(len as usize);
        if how == How::Stor {
            let old = match path.as_deref().map(|p| self.model.look(p)) {
                Some(Look::File(b)) => b.len(),
                _ => 0,
            };
            self.plan_rest(old);
        }
        let verb = match how {
            How::Stor => "STOR",
            How::Appe => "APPE",
            How::Stou => "STOU",
        };
        let abort = self.rng.chance(10);
        self.step(
            format!("{verb} {arg}"),
            Kind::Store {
                path,
                how,
                data: Data(data),
                abort,
            },
        );
    }
}
