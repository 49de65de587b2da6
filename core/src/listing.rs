//! Directory listing formats: Unix `ls -l`, MS-DOS (IIS), NLST names, and RFC 3659
//! MLSD/MLST facts; plus the `YYYYMMDDHHMMSS` time codec of MDTM/MFMT/`modify`.
//! Wall-clock "now" comes in as data.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::backend::{DirEntry, FileKind};

/// Which MLST facts are on (OPTS MLST selects them; all are on by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub kind: bool,
    pub size: bool,
    pub modify: bool,
    pub perm: bool,
    pub unique: bool,
    pub unix_mode: bool,
}

impl Default for Facts {
    fn default() -> Self {
        Facts {
            kind: true,
            size: true,
            modify: true,
            perm: true,
            unique: true,
            unix_mode: true,
        }
    }
}

impl Facts {
    /// Fact names in the order fact lines and FEAT list them, with their flags.
    fn named(&self) -> [(&'static str, bool); 6] {
        [
            ("type", self.kind),
            ("size", self.size),
            ("modify", self.modify),
            ("perm", self.perm),
            ("unique", self.unique),
            ("UNIX.mode", self.unix_mode),
        ]
    }

    /// Applies `OPTS MLST type;size;` (case-insensitive, unknown names ignored).
    pub fn select(list: &str) -> Facts {
        let mut f = Facts {
            kind: false,
            size: false,
            modify: false,
            perm: false,
            unique: false,
            unix_mode: false,
        };
        for name in list.split(';').map(str::trim) {
            let flag = match name.to_ascii_lowercase().as_str() {
                "type" => &mut f.kind,
                "size" => &mut f.size,
                "modify" => &mut f.modify,
                "perm" => &mut f.perm,
                "unique" => &mut f.unique,
                "unix.mode" => &mut f.unix_mode,
                _ => continue,
            };
            *flag = true;
        }
        f
    }

    /// The FEAT line: `MLST type*;size*;modify*;perm*;unique*;UNIX.mode*;` with `*` on
    /// the selected facts.
    pub fn feat_line(&self) -> String {
        let mut out = String::from("MLST ");
        for (name, on) in self.named() {
            out.push_str(name);
            if on {
                out.push('*');
            }
            out.push(';');
        }
        out
    }

    /// The reply to OPTS MLST: the selected facts, `;`-terminated.
    pub fn selected_names(&self) -> String {
        let mut out = String::new();
        for (name, on) in self.named() {
            if on {
                out.push_str(name);
                out.push(';');
            }
        }
        out
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// GNU ls's "six months" (half of an average Gregorian year).
const SIX_MONTHS: i64 = 15_778_476;
/// Clock skew tolerated before an mtime counts as "in the future".
const FUTURE_SLACK: i64 = 3_600;

/// A UTC broken-down time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    min: u32,
    sec: u32,
}

/// Seconds since the epoch; anything before it (or unknown) is the epoch, since listings
/// have no sign to show.
pub(crate) fn unix_secs(t: Option<SystemTime>) -> i64 {
    t.and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Howard Hinnant's `civil_from_days`: the proleptic Gregorian `(year, month, day)` of a
/// day number (days since 1970-01-01). Public for the server's log file names and dates.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The inverse of [`civil_from_days`].
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = year - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil(secs: i64) -> Civil {
    // Clamp so day arithmetic cannot overflow for absurd far-future times.
    let secs = secs.clamp(0, i64::MAX / 2);
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400) as u32;
    Civil {
        year,
        month,
        day,
        hour: rem / 3600,
        min: rem / 60 % 60,
        sec: rem % 60,
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn type_char(entry: &DirEntry) -> u8 {
    match entry.meta.kind {
        FileKind::Dir => b'd',
        FileKind::File => b'-',
        FileKind::Symlink => b'l',
    }
}

/// `rwxr-xr-x`, with setuid/setgid/sticky shown the way `ls` does.
fn mode_string(mode: u32) -> [u8; 9] {
    let mut out = [b'-'; 9];
    let specials = [
        (0o4000, b's', b'S'),
        (0o2000, b's', b'S'),
        (0o1000, b't', b'T'),
    ];
    for (i, (bit, on_x, off_x)) in specials.into_iter().enumerate() {
        let triple = mode >> (6 - 3 * i);
        if triple & 4 != 0 {
            out[3 * i] = b'r';
        }
        if triple & 2 != 0 {
            out[3 * i + 1] = b'w';
        }
        out[3 * i + 2] = match (triple & 1 != 0, mode & bit != 0) {
            (true, true) => on_x,
            (false, true) => off_x,
            (true, false) => b'x',
            (false, false) => b'-',
        };
    }
    out
}

// Listings are rendered straight into the output buffer: a 10,000-entry directory is
// 10,000 lines, and `format!` cost an allocation and a trip through `core::fmt` per
// field. These writers produce exactly what the `format!` specs named beside them did
// (the tests compare them over many values).

/// The decimal digits of `v`, right-aligned at the end of a 20-byte buffer (u64::MAX has
/// 20 digits); returns the buffer and where the digits start.
fn dec_digits(mut v: u64) -> ([u8; 20], usize) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return (buf, i);
        }
    }
}

/// `{v}`.
fn put_dec(out: &mut Vec<u8>, v: u64) {
    let (buf, i) = dec_digits(v);
    out.extend_from_slice(&buf[i..]);
}

/// `{v:>width$}`: right-aligned with spaces, never truncated.
fn put_dec_right(out: &mut Vec<u8>, v: u64, width: usize) {
    let (buf, i) = dec_digits(v);
    let digits = &buf[i..];
    out.resize(out.len() + width.saturating_sub(digits.len()), b' ');
    out.extend_from_slice(digits);
}

/// `{v:02}` for `v` < 100.
fn put_2(out: &mut Vec<u8>, v: u32) {
    debug_assert!(v < 100);
    out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]);
}

/// `{v:04}` for a year since 1970 (`civil` clamps to the epoch, so never negative).
fn put_year(out: &mut Vec<u8>, year: i64) {
    let year = u64::try_from(year).unwrap_or(0);
    let (buf, i) = dec_digits(year);
    out.resize(out.len() + 4usize.saturating_sub(buf.len() - i), b'0');
    out.extend_from_slice(&buf[i..]);
}

/// `{v:x}`.
fn put_hex(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 16];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b"0123456789abcdef"[(v & 0xf) as usize];
        v >>= 4;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// `YYYYMMDDHHMMSS` (`{:04}{:02}{:02}{:02}{:02}{:02}`).
fn put_time(out: &mut Vec<u8>, c: &Civil) {
    put_year(out, c.year);
    for v in [c.month, c.day, c.hour, c.min, c.sec] {
        put_2(out, v);
    }
}

/// One `ls -l` line with CRLF: `drwxr-xr-x 1 ftp ftp 4096 Jan 02 03:04 name` for recent
/// entries, `... Jan 02  2020 name` for entries older than six months or in the future.
///
/// Column widths are vsftpd's: `-rw-r--r--    1 ftp      ftp          1234 Jan 02 03:04 x`.
pub fn unix_line(entry: &DirEntry, now: SystemTime, out: &mut Vec<u8>) {
    unix_line_at(entry, unix_secs(Some(now)), out)
}

/// [`unix_line`] with "now" already in seconds since the epoch (once per listing).
pub(crate) fn unix_line_at(entry: &DirEntry, now: i64, out: &mut Vec<u8>) {
    let m = &entry.meta;
    let mtime = unix_secs(m.modified);
    let c = civil(mtime);
    let recent =
        mtime > now.saturating_sub(SIX_MONTHS) && mtime <= now.saturating_add(FUTURE_SLACK);
    out.reserve(64 + entry.name.len());
    // "{}{} {:>4} ftp      ftp      {:>8} {} {:02} {} {}\r\n"
    out.push(type_char(entry));
    out.extend_from_slice(&mode_string(m.mode));
    out.push(b' ');
    put_dec_right(out, m.nlink, 4);
    out.extend_from_slice(b" ftp      ftp      ");
    put_dec_right(out, m.size, 8);
    out.push(b' ');
    out.extend_from_slice(MONTHS[c.month as usize - 1].as_bytes());
    out.push(b' ');
    put_2(out, c.day);
    out.push(b' ');
    if recent {
        // "{:02}:{:02}"
        put_2(out, c.hour);
        out.push(b':');
        put_2(out, c.min);
    } else {
        // " {:04}"
        out.push(b' ');
        put_year(out, c.year);
    }
    out.push(b' ');
    out.extend_from_slice(entry.name.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// One MS-DOS line with CRLF: `10-02-23  11:21PM       <DIR>          name` or
/// `10-02-23  11:21PM                 1234 name`.
pub fn msdos_line(entry: &DirEntry, out: &mut Vec<u8>) {
    let c = civil(unix_secs(entry.meta.modified));
    let (hour12, half) = match c.hour {
        0 => (12, b"AM"),
        h @ 1..=11 => (h, b"AM"),
        12 => (12, b"PM"),
        h => (h - 12, b"PM"),
    };
    out.reserve(64 + entry.name.len());
    // "{:02}-{:02}-{:02}  {:02}:{:02}{}{} {}\r\n"
    put_2(out, c.month);
    out.push(b'-');
    put_2(out, c.day);
    out.push(b'-');
    put_2(out, c.year.rem_euclid(100) as u32);
    out.extend_from_slice(b"  ");
    put_2(out, hour12);
    out.push(b':');
    put_2(out, c.min);
    out.extend_from_slice(half);
    if entry.meta.is_dir() {
        out.extend_from_slice(b"       <DIR>         ");
    } else {
        // " {:>20}"
        out.push(b' ');
        put_dec_right(out, entry.meta.size, 20);
    }
    out.push(b' ');
    out.extend_from_slice(entry.name.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// One MLSD/MLST fact line with CRLF: `type=file;size=3;modify=20200102030405;perm=r;
/// unique=801U1;UNIX.mode=0644; name`. `writable` decides the perm letters.
///
/// `modify` is left out when the storage does not know the time (RFC 3659 §7.1: facts
/// that are unavailable are omitted); symlinks are reported as `file`.
pub fn mlsx_line(entry: &DirEntry, facts: Facts, writable: bool, out: &mut Vec<u8>) {
    let m = &entry.meta;
    let dir = m.is_dir();
    out.reserve(128 + entry.name.len());
    if facts.kind {
        out.extend_from_slice(if dir { b"type=dir;" } else { b"type=file;" });
    }
    if facts.size && !dir {
        out.extend_from_slice(b"size=");
        put_dec(out, m.size);
        out.push(b';');
    }
    if let (true, Some(t)) = (facts.modify, m.modified) {
        out.extend_from_slice(b"modify=");
        put_time(out, &civil(unix_secs(Some(t))));
        out.push(b';');
    }
    if facts.perm {
        let perm: &[u8] = match (dir, writable) {
            (true, true) => b"perm=cdeflmp;",
            (true, false) => b"perm=el;",
            (false, true) => b"perm=adfrw;",
            (false, false) => b"perm=r;",
        };
        out.extend_from_slice(perm);
    }
    if let (true, Some((dev, ino))) = (facts.unique, m.unique) {
        out.extend_from_slice(b"unique=");
        put_hex(out, dev);
        out.push(b'U');
        put_hex(out, ino);
        out.push(b';');
    }
    if facts.unix_mode {
        // "UNIX.mode={:04o};": four octal digits of the permission bits.
        let mode = m.mode & 0o7777;
        out.extend_from_slice(b"UNIX.mode=");
        out.extend_from_slice(&[9, 6, 3, 0].map(|s| b'0' + ((mode >> s) & 7) as u8));
        out.push(b';');
    }
    out.push(b' ');
    out.extend_from_slice(entry.name.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// `YYYYMMDDHHMMSS` in UTC (MDTM, MLSD `modify`). Times before 1970 show as the epoch.
pub fn format_time(t: SystemTime) -> String {
    let mut out = Vec::with_capacity(14);
    put_time(&mut out, &civil(unix_secs(Some(t))));
    String::from_utf8(out).unwrap_or_default()
}

/// Parses `YYYYMMDDHHMMSS` with optional `.fff` fraction (MFMT, MDTM-set).
///
/// The fraction may have any number of digits; it is kept to the millisecond. A leap
/// second (`60`) is accepted and lands on the next minute's first second.
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let (main, frac) = match s.split_once('.') {
        Some((main, frac)) => (main, Some(frac)),
        None => (s, None),
    };
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = main.get(r)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if main.len() != 14 {
        return None;
    }
    let year = i64::from(digits(0..4)?);
    let (month, day) = (digits(4..6)?, digits(6..8)?);
    let (hour, min, sec) = (digits(8..10)?, digits(10..12)?, digits(12..14)?);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || min > 59
        || sec > 60
    {
        return None;
    }
    let millis = match frac {
        None => 0,
        Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => f
            .bytes()
            .chain(std::iter::repeat(b'0'))
            .take(3)
            .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0')),
        Some(_) => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400 + i64::from(hour * 3600 + min * 60 + sec);
    let base = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    base?.checked_add(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests;
