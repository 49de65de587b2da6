//! The W3C extended log writer: a [`LogSink`] for the runtimes, and one thread that
//! formats and writes the records.
//!
//! Sessions never wait for the disk: records go through a bounded channel, and when it is
//! full the record is dropped and counted; the writer notes the count in the file
//! (`#Remark: N records dropped`) and in the diagnostics. Files roll over daily or hourly
//! (`u_exYYMMDD.log`, `u_exYYMMDDHH.log`, UTC, as IIS names them) or by size
//! (`u_extend1.log`, `u_extend2.log`, ...). Each site writes its own file, or every site
//! writes one central file.
//!
//! Every value is escaped so that no file or user name can forge a line or a field:
//! whitespace (including CR, LF and Unicode line separators), control characters and `%`
//! and `+` are percent-encoded as UTF-8 bytes; an empty value is `-` and a value that is
//! exactly `-` is `%2D`.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use wharf_core::log::{Field, LogFields, LogRecord, LogSink};

/// When a log file is closed and the next one started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Daily,
    Hourly,
    /// When the file would grow past this many bytes.
    Size(u64),
}

/// Where and how a site's records (or every site's, for a central log) are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogOutput {
    pub directory: PathBuf,
    pub period: Period,
    pub fields: LogFields,
    /// Records queued for the writer before new ones are dropped.
    pub buffer: usize,
    /// One file for every site (with `s-sitename` telling them apart).
    pub central: bool,
}

enum Msg {
    Record(SystemTime, Box<LogRecord>),
}

/// The runtimes' end: queues a record, or counts it as dropped. Dropping the last handle
/// lets the writer finish what is queued, and waits for it.
#[derive(Debug)]
pub struct W3cLogger {
    tx: Mutex<Option<SyncSender<Msg>>>,
    dropped: Arc<AtomicU64>,
    /// Every record dropped since the start (`dropped` is reset by each remark).
    dropped_total: AtomicU64,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl LogSink for W3cLogger {
    fn log(&self, record: Box<LogRecord>) {
        let now = SystemTime::now();
        let guard = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = guard.as_ref() else { return };
        match tx.try_send(Msg::Record(now, record)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                self.dropped_total.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

impl W3cLogger {
    /// Records dropped so far because the writer could not keep up.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Records dropped since the start (the metric `wharf_w3c_records_dropped_total`).
    pub fn dropped_total(&self) -> u64 {
        self.dropped_total.load(Ordering::Relaxed)
    }

    /// Starts the writer thread. `outputs` maps a site name to its output; a central
    /// output is keyed by `None` and takes every site's records.
    pub fn start(outputs: Vec<(Option<String>, LogOutput)>) -> io::Result<Arc<W3cLogger>> {
        let capacity = outputs.iter().map(|(_, o)| o.buffer).max().unwrap_or(1024);
        for (_, o) in &outputs {
            std::fs::create_dir_all(&o.directory).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("log directory {}: {e}", o.directory.display()),
                )
            })?;
        }
        let (tx, rx) = mpsc::sync_channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        let mut writer = Writer {
            outputs: outputs
                .into_iter()
                .map(|(site, out)| (site, Output::new(out)))
                .collect(),
            dropped: dropped.clone(),
            line: String::with_capacity(512),
        };
        let handle = std::thread::Builder::new()
            .name("wharf-w3c".into())
            .spawn(move || writer.run(rx))?;
        Ok(Arc::new(W3cLogger {
            tx: Mutex::new(Some(tx)),
            dropped,
            dropped_total: AtomicU64::new(0),
            writer: Mutex::new(Some(handle)),
        }))
    }
}

impl Drop for W3cLogger {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has written everything queued.
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        if let Some(h) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = h.join();
        }
    }
}

struct Writer {
    outputs: Vec<(Option<String>, Output)>,
    dropped: Arc<AtomicU64>,
    line: String,
}

impl Writer {
    fn run(&mut self, rx: Receiver<Msg>) {
        // Block for one record, write everything else already queued, then flush: busy
        // periods batch their writes, quiet ones reach the disk at once.
        while let Ok(msg) = rx.recv() {
            self.handle(msg);
            while let Ok(msg) = rx.try_recv() {
                self.handle(msg);
            }
            self.note_dropped();
            for (_, o) in &mut self.outputs {
                o.flush();
            }
        }
        self.note_dropped();
        for (_, o) in &mut self.outputs {
            o.flush();
        }
    }

    fn note_dropped(&mut self) {
        let n = self.dropped.swap(0, Ordering::Relaxed);
        if n == 0 {
            return;
        }
        tracing::warn!(
            dropped = n,
            "W3C log: records dropped, the disk is too slow"
        );
        let remark = format!("#Remark: {n} records dropped (the log writer fell behind)\n");
        for (_, o) in &mut self.outputs {
            o.write_raw(SystemTime::now(), &remark);
        }
    }

    fn handle(&mut self, msg: Msg) {
        let Msg::Record(at, rec) = msg;
        let site = &*rec.site;
        let Some((_, out)) = self
            .outputs
            .iter_mut()
            .find(|(s, _)| s.as_deref().is_none_or(|s| s == site))
        else {
            return;
        };
        self.line.clear();
        format_line(&mut self.line, out.cfg.fields, at, &rec);
        out.write_line(at, &self.line);
    }
}

/// One log file series.
struct Output {
    cfg: LogOutput,
    file: Option<BufWriter<File>>,
    /// Which file is open: the date/hour stamp, or the size series' number.
    key: String,
    size: u64,
    /// Reported once per failure episode.
    failing: bool,
}

impl Output {
    fn new(cfg: LogOutput) -> Output {
        Output {
            cfg,
            file: None,
            key: String::new(),
            size: 0,
            failing: false,
        }
    }

    fn write_line(&mut self, at: SystemTime, line: &str) {
        self.roll(at, line.len() as u64);
        self.write_raw(at, line);
    }

    fn write_raw(&mut self, at: SystemTime, text: &str) {
        if self.file.is_none() {
            self.roll(at, text.len() as u64);
        }
        let Some(f) = &mut self.file else { return };
        match f.write_all(text.as_bytes()) {
            Ok(()) => {
                self.size += text.len() as u64;
                self.failing = false;
            }
            Err(e) => self.failed(&e),
        }
    }

    fn failed(&mut self, e: &io::Error) {
        if !self.failing {
            tracing::error!(dir = %self.cfg.directory.display(), "W3C log write failed: {e}");
            self.failing = true;
        }
        // Reopen on the next record.
        self.file = None;
    }

    fn flush(&mut self) {
        if let Some(f) = &mut self.file {
            if let Err(e) = f.flush() {
                self.failed(&e);
            }
        }
    }

    /// Opens the file `at` belongs in (and that has room for `len` more bytes).
    fn roll(&mut self, at: SystemTime, len: u64) {
        let key = match self.cfg.period {
            Period::Daily => stamp(at, false),
            Period::Hourly => stamp(at, true),
            Period::Size(max) => {
                if self.key.is_empty() {
                    self.key = last_size_index(&self.cfg.directory).to_string();
                    self.size = std::fs::metadata(self.path_for(&self.key)).map_or(0, |m| m.len());
                }
                if self.size > 0 && self.size + len > max {
                    let next = self.key.parse::<u64>().unwrap_or(1) + 1;
                    next.to_string()
                } else {
                    self.key.clone()
                }
            }
        };
        // Shards hand records over in nearly, not exactly, time order: a record stamped
        // just before midnight that arrives after one stamped just after it stays in the
        // new file rather than reopening the old one.
        let older = !matches!(self.cfg.period, Period::Size(_)) && key < self.key;
        if self.file.is_some() && (key == self.key || older) {
            return;
        }
        self.flush();
        let path = self.path_for(&key);
        self.key = key;
        let opened = OpenOptions::new().create(true).append(true).open(&path);
        match opened {
            Ok(f) => {
                self.size = f.metadata().map_or(0, |m| m.len());
                let mut w = BufWriter::with_capacity(64 * 1024, f);
                let header = header(self.cfg.fields, at);
                if let Err(e) = w.write_all(header.as_bytes()) {
                    return self.failed(&e);
                }
                self.size += header.len() as u64;
                self.file = Some(w);
            }
            Err(e) => {
                if !self.failing {
                    tracing::error!(path = %path.display(), "cannot open the W3C log: {e}");
                    self.failing = true;
                }
            }
        }
    }

    fn path_for(&self, key: &str) -> PathBuf {
        let name = match self.cfg.period {
            Period::Size(_) => format!("u_extend{key}.log"),
            _ => format!("u_ex{key}.log"),
        };
        self.cfg.directory.join(name)
    }
}

/// The highest `u_extendN.log` in `dir` (1 when there is none).
fn last_size_index(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            name.strip_prefix("u_extend")?
                .strip_suffix(".log")?
                .parse::<u64>()
                .ok()
        })
        .max()
        .unwrap_or(1)
}

/// The directives every file starts with (again after a restart: W3C allows them
/// anywhere, and the `#Fields:` in force is the last one).
pub fn header(fields: LogFields, at: SystemTime) -> String {
    let (date, time) = date_time(at);
    let names: Vec<&str> = fields.iter().map(Field::name).collect();
    format!(
        "#Software: wharf {}\n#Version: 1.0\n#Date: {date} {time}\n#Fields: {}\n",
        env!("CARGO_PKG_VERSION"),
        names.join(" ")
    )
}

/// `YYMMDD` or `YYMMDDHH` (UTC).
fn stamp(at: SystemTime, hourly: bool) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = wharf_core::listing::civil_from_days((secs / 86_400) as i64);
    let mut s = format!("{:02}{m:02}{d:02}", y.rem_euclid(100));
    if hourly {
        let _ = write!(s, "{:02}", secs % 86_400 / 3600);
    }
    s
}

/// `("YYYY-MM-DD", "HH:MM:SS")`, UTC.
pub fn date_time(at: SystemTime) -> (String, String) {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = wharf_core::listing::civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    (
        format!("{y:04}-{m:02}-{d:02}"),
        format!("{:02}:{:02}:{:02}", t / 3600, t % 3600 / 60, t % 60),
    )
}

/// Appends one record as a line of the selected fields.
pub fn format_line(out: &mut String, fields: LogFields, at: SystemTime, rec: &LogRecord) {
    let mut first = true;
    for f in fields.iter() {
        if !first {
            out.push(' ');
        }
        first = false;
        let num = |out: &mut String, n: u64| {
            let _ = write!(out, "{n}");
        };
        match f {
            Field::Date => out.push_str(&date_time(at).0),
            Field::Time => out.push_str(&date_time(at).1),
            Field::ClientIp => {
                let _ = write!(out, "{}", rec.client.ip().to_canonical());
            }
            Field::ClientPort => num(out, u64::from(rec.client.port())),
            Field::UserName => escape(out, rec.user.as_deref()),
            Field::SiteName => escape(out, Some(&rec.site)),
            Field::ServerIp => {
                let _ = write!(out, "{}", rec.server.ip().to_canonical());
            }
            Field::ServerPort => num(out, u64::from(rec.server.port())),
            Field::Method => escape(out, Some(&rec.method)),
            Field::UriStem => escape(out, rec.uri.as_deref()),
            Field::Status if rec.status == 0 => out.push('-'),
            Field::Status => num(out, u64::from(rec.status)),
            Field::Win32Status => num(out, u64::from(rec.win32)),
            Field::SubStatus => num(out, u64::from(rec.sub.code())),
            Field::BytesSent => num(out, rec.bytes_sent),
            Field::BytesReceived => num(out, rec.bytes_received),
            Field::TimeTaken => num(out, rec.time_taken.as_millis() as u64),
            Field::Host => escape(out, rec.host.as_deref()),
            Field::Session => num(out, rec.session.0),
            Field::FullPath => escape(out, rec.full_path.as_deref()),
            Field::Debug => escape(out, rec.debug.as_deref()),
        }
    }
    out.push('\n');
}

/// Writes a value so it is exactly one field: see the module docs.
pub fn escape(out: &mut String, value: Option<&str>) {
    let v = match value {
        None | Some("") => return out.push('-'),
        Some("-") => return out.push_str("%2D"),
        Some(v) => v,
    };
    for c in v.chars() {
        if c.is_whitespace() || c.is_control() || matches!(c, '%' | '+') {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
}

/// Inverse of [`escape`] for one field (for readers and tests).
pub fn unescape(field: &str) -> Option<String> {
    if field == "-" {
        return Some(String::new());
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
#[path = "w3c_tests.rs"]
mod tests;
