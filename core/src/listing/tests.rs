use super::*;
use crate::backend::Metadata;
use quickcheck::{quickcheck, Arbitrary, Gen};

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn entry(name: &str, kind: FileKind, size: u64, mode: u32, mtime: Option<u64>) -> DirEntry {
    DirEntry {
        name: name.into(),
        meta: Metadata {
            kind,
            size,
            modified: mtime.map(at),
            mode,
            unique: Some((0x801, 0x1a2b)),
            nlink: if kind == FileKind::Dir { 2 } else { 1 },
        },
    }
}

fn file(name: &str, size: u64, mtime: u64) -> DirEntry {
    entry(name, FileKind::File, size, 0o644, Some(mtime))
}

fn render(f: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut out = Vec::new();
    f(&mut out);
    String::from_utf8(out).unwrap()
}

/// 2025-06-01 12:00:00 UTC.
const NOW: u64 = 1_748_779_200;

#[test]
fn unix_lines() {
    let cases: &[(DirEntry, u64, &str)] = &[
        (
            file("name", 1234, 1_740_787_200),
            NOW,
            "-rw-r--r--    1 ftp      ftp          1234 Mar 01 00:00 name\r\n",
        ),
        (
            file("old", 5, 1_577_934_245),
            NOW,
            "-rw-r--r--    1 ftp      ftp             5 Jan 02  2020 old\r\n",
        ),
        (
            file("soon", 0, NOW + 3540),
            NOW,
            "-rw-r--r--    1 ftp      ftp             0 Jun 01 12:59 soon\r\n",
        ),
        (
            file("hour", 0, NOW + 3600),
            NOW,
            "-rw-r--r--    1 ftp      ftp             0 Jun 01 13:00 hour\r\n",
        ),
        (
            file("future", 0, NOW + 7200),
            NOW,
            "-rw-r--r--    1 ftp      ftp             0 Jun 01  2025 future\r\n",
        ),
        (
            file("edge", 0, NOW - 15_778_476),
            NOW,
            "-rw-r--r--    1 ftp      ftp             0 Nov 30  2024 edge\r\n",
        ),
        (
            file("inside", 0, NOW - 15_778_475),
            NOW,
            "-rw-r--r--    1 ftp      ftp             0 Nov 30 21:05 inside\r\n",
        ),
        (
            file("leap", 7, 1_709_251_199),
            NOW,
            "-rw-r--r--    1 ftp      ftp             7 Feb 29  2024 leap\r\n",
        ),
        (
            file("y2038", 1, 2_147_483_648),
            NOW,
            "-rw-r--r--    1 ftp      ftp             1 Jan 19  2038 y2038\r\n",
        ),
        (
            file("y2038", 1, 2_147_483_648),
            2_147_483_648 + 60,
            "-rw-r--r--    1 ftp      ftp             1 Jan 19 03:14 y2038\r\n",
        ),
        (
            file("big", 123_456_789_012, 4_133_937_600),
            NOW,
            "-rw-r--r--    1 ftp      ftp      123456789012 Dec 31  2100 big\r\n",
        ),
        (
            entry("d i r", FileKind::Dir, 0, 0o755, Some(NOW - 60)),
            NOW,
            "drwxr-xr-x    2 ftp      ftp             0 Jun 01 11:59 d i r\r\n",
        ),
        (
            entry("ln", FileKind::Symlink, 3, 0o777, None),
            NOW,
            "lrwxrwxrwx    1 ftp      ftp             3 Jan 01  1970 ln\r\n",
        ),
        (
            entry("s", FileKind::File, 0, 0o4755, Some(NOW)),
            NOW,
            "-rwsr-xr-x    1 ftp      ftp             0 Jun 01 12:00 s\r\n",
        ),
        (
            entry("t", FileKind::Dir, 0, 0o1777, Some(NOW)),
            NOW,
            "drwxrwxrwt    2 ftp      ftp             0 Jun 01 12:00 t\r\n",
        ),
        (
            entry("g", FileKind::File, 0, 0o2640, Some(NOW)),
            NOW,
            "-rw-r-S---    1 ftp      ftp             0 Jun 01 12:00 g\r\n",
        ),
    ];
    for (e, now, want) in cases {
        assert_eq!(render(|o| unix_line(e, at(*now), o)), *want);
    }
}

#[test]
fn msdos_lines() {
    let cases: &[(DirEntry, &str)] = &[
        (
            entry("dir", FileKind::Dir, 0, 0o755, Some(1_696_288_860)),
            "10-02-23  11:21PM       <DIR>          dir\r\n",
        ),
        (
            file("name", 1234, 1_696_288_860),
            "10-02-23  11:21PM                 1234 name\r\n",
        ),
        (
            file("midnight", 0, 1_696_205_100),
            "10-02-23  12:05AM                    0 midnight\r\n",
        ),
        (
            file("noon", 1, 1_696_249_800),
            "10-02-23  12:30PM                    1 noon\r\n",
        ),
        (
            file("leap", 1, 1_709_251_199),
            "02-29-24  11:59PM                    1 leap\r\n",
        ),
        (
            file("y2100", 9, 4_133_937_600),
            "12-31-00  12:00PM                    9 y2100\r\n",
        ),
        (
            entry("none", FileKind::File, 2, 0o644, None),
            "01-01-70  12:00AM                    2 none\r\n",
        ),
    ];
    for (e, want) in cases {
        assert_eq!(render(|o| msdos_line(e, o)), *want);
    }
}

#[test]
fn mlsx_lines() {
    let f = file("a b", 3, 1_577_934_245);
    let d = entry("sub", FileKind::Dir, 0, 0o755, Some(1_577_934_245));
    let all = Facts::default();
    let cases: &[(&DirEntry, Facts, bool, &str)] = &[
        (&f, all, false,
         "type=file;size=3;modify=20200102030405;perm=r;unique=801U1a2b;UNIX.mode=0644; a b\r\n"),
        (&f, all, true,
         "type=file;size=3;modify=20200102030405;perm=adfrw;unique=801U1a2b;UNIX.mode=0644; a b\r\n"),
        (&d, all, true,
         "type=dir;modify=20200102030405;perm=cdeflmp;unique=801U1a2b;UNIX.mode=0755; sub\r\n"),
        (&d, all, false,
         "type=dir;modify=20200102030405;perm=el;unique=801U1a2b;UNIX.mode=0755; sub\r\n"),
        (&f, Facts::select("SIZE;Type;bogus;"), true, "type=file;size=3; a b\r\n"),
        (&f, Facts::select(""), true, " a b\r\n"),
    ];
    for (e, facts, w, want) in cases {
        assert_eq!(render(|o| mlsx_line(e, *facts, *w, o)), *want);
    }
    let mut bare = entry("x", FileKind::Symlink, 1, 0o104777, None);
    bare.meta.unique = None;
    assert_eq!(
        render(|o| mlsx_line(&bare, all, false, o)),
        "type=file;size=1;perm=r;UNIX.mode=4777; x\r\n"
    );
}

#[test]
fn facts_lines() {
    let all = Facts::default();
    assert_eq!(
        all.feat_line(),
        "MLST type*;size*;modify*;perm*;unique*;UNIX.mode*;"
    );
    assert_eq!(
        all.selected_names(),
        "type;size;modify;perm;unique;UNIX.mode;"
    );
    let some = Facts::select(" unix.MODE ; modify;nope");
    assert_eq!(
        some.feat_line(),
        "MLST type;size;modify*;perm;unique;UNIX.mode*;"
    );
    assert_eq!(some.selected_names(), "modify;UNIX.mode;");
    assert_eq!(Facts::select("").selected_names(), "");
}

#[test]
fn time_codec() {
    assert_eq!(format_time(at(0)), "19700101000000");
    assert_eq!(format_time(at(1_577_934_245)), "20200102030405");
    assert_eq!(format_time(at(1_709_251_199)), "20240229235959");
    assert_eq!(format_time(at(2_147_483_648)), "20380119031408");
    assert_eq!(
        format_time(UNIX_EPOCH - Duration::from_secs(86_400)),
        "19700101000000"
    );
    assert_eq!(parse_time("20200102030405"), Some(at(1_577_934_245)));
    assert_eq!(parse_time("20240229235959"), Some(at(1_709_251_199)));
    assert_eq!(parse_time("20380119031408"), Some(at(2_147_483_648)));
    let ms = |s, ms| Some(at(s) + Duration::from_millis(ms));
    assert_eq!(parse_time("20200102030405.5"), ms(1_577_934_245, 500));
    assert_eq!(parse_time("20200102030405.123"), ms(1_577_934_245, 123));
    assert_eq!(parse_time("20200102030405.123999"), ms(1_577_934_245, 123));
    assert_eq!(parse_time("20200102030460"), Some(at(1_577_934_300)));
    assert_eq!(
        parse_time("19691231235959"),
        Some(UNIX_EPOCH - Duration::from_secs(1))
    );
    for bad in [
        "",
        "2020010203040",
        "202001020304050",
        "20201302030405",
        "20200002030405",
        "20200100030405",
        "20200132030405",
        "20230229000000",
        "21000229000000",
        "20200431000000",
        "20200102240000",
        "20200102036000",
        "20200102030461",
        "20200102030405.",
        "20200102030405.x",
        "2020010203040a",
        "+2020010203040",
        "20200102 30405",
        "20200102030405Z",
        "２０２００１０２０３０４０５",
    ] {
        assert_eq!(parse_time(bad), None, "{bad:?}");
    }
    assert!(parse_time("20000229000000").is_some());
}

/// A valid `YYYYMMDDHHMMSS` from 1970 to 9999.
#[derive(Debug, Clone)]
struct Stamp(String);

impl Arbitrary for Stamp {
    fn arbitrary(g: &mut Gen) -> Stamp {
        let pick = |g: &mut Gen, lo: u32, n: u32| lo + u32::arbitrary(g) % n;
        let year = i64::from(pick(g, 1970, 8030));
        let month = pick(g, 1, 12);
        let day = pick(g, 1, days_in_month(year, month));
        let (h, m, s) = (pick(g, 0, 24), pick(g, 0, 60), pick(g, 0, 60));
        Stamp(format!("{year:04}{month:02}{day:02}{h:02}{m:02}{s:02}"))
    }
}

quickcheck! {
    fn time_round_trip(s: Stamp) -> bool {
        parse_time(&s.0).map(format_time) == Some(s.0.clone())
    }

    fn days_round_trip(days: u32) -> bool {
        let days = i64::from(days % 3_000_000);
        let (y, m, d) = civil_from_days(days);
        days_from_civil(y, m, d) == days && d <= days_in_month(y, m)
    }
}

/// The `format!`-based renderers the hand-rolled writers replaced, kept verbatim as the
/// reference the writers must match byte for byte.
mod reference {
    use super::super::{civil, unix_secs, FUTURE_SLACK, MONTHS, SIX_MONTHS};
    use crate::backend::{DirEntry, FileKind};
    use crate::listing::Facts;
    use std::time::SystemTime;

    fn type_char(entry: &DirEntry) -> char {
        match entry.meta.kind {
            FileKind::Dir => 'd',
            FileKind::File => '-',
            FileKind::Symlink => 'l',
        }
    }

    fn mode_string(mode: u32) -> String {
        let mut out = String::with_capacity(9);
        let specials = [(0o4000, 's', 'S'), (0o2000, 's', 'S'), (0o1000, 't', 'T')];
        for (i, (bit, on_x, off_x)) in specials.into_iter().enumerate() {
            let triple = mode >> (6 - 3 * i);
            out.push(if triple & 4 != 0 { 'r' } else { '-' });
            out.push(if triple & 2 != 0 { 'w' } else { '-' });
            out.push(match (triple & 1 != 0, mode & bit != 0) {
                (true, true) => on_x,
                (false, true) => off_x,
                (true, false) => 'x',
                (false, false) => '-',
            });
        }
        out
    }

    pub fn unix_line(entry: &DirEntry, now: SystemTime) -> String {
        let m = &entry.meta;
        let mtime = unix_secs(m.modified);
        let now = unix_secs(Some(now));
        let c = civil(mtime);
        let recent =
            mtime > now.saturating_sub(SIX_MONTHS) && mtime <= now.saturating_add(FUTURE_SLACK);
        let when = if recent {
            format!("{:02}:{:02}", c.hour, c.min)
        } else {
            format!(" {:04}", c.year)
        };
        format!(
            "{}{} {:>4} ftp      ftp      {:>8} {} {:02} {} {}\r\n",
            type_char(entry),
            mode_string(m.mode),
            m.nlink,
            m.size,
            MONTHS[c.month as usize - 1],
            c.day,
            when,
            entry.name,
        )
    }

    pub fn msdos_line(entry: &DirEntry) -> String {
        let c = civil(unix_secs(entry.meta.modified));
        let (hour12, half) = match c.hour {
            0 => (12, "AM"),
            h @ 1..=11 => (h, "AM"),
            12 => (12, "PM"),
            h => (h - 12, "PM"),
        };
        let what = if entry.meta.is_dir() {
            "       <DIR>         ".to_owned()
        } else {
            format!(" {:>20}", entry.meta.size)
        };
        format!(
            "{:02}-{:02}-{:02}  {:02}:{:02}{}{} {}\r\n",
            c.month,
            c.day,
            c.year.rem_euclid(100),
            hour12,
            c.min,
            half,
            what,
            entry.name,
        )
    }

    pub fn format_time(t: SystemTime) -> String {
        let c = civil(unix_secs(Some(t)));
        format!(
            "{:04}{:02}{:02}{:02}{:02}{:02}",
            c.year, c.month, c.day, c.hour, c.min, c.sec
        )
    }

    pub fn mlsx_line(entry: &DirEntry, facts: Facts, writable: bool) -> String {
        let m = &entry.meta;
        let dir = m.is_dir();
        let mut line = String::with_capacity(96 + entry.name.len());
        if facts.kind {
            line.push_str(if dir { "type=dir;" } else { "type=file;" });
        }
        if facts.size && !dir {
            line.push_str(&format!("size={};", m.size));
        }
        if let (true, Some(t)) = (facts.modify, m.modified) {
            line.push_str(&format!("modify={};", format_time(t)));
        }
        if facts.perm {
            let perm = match (dir, writable) {
                (true, true) => "cdeflmp",
                (true, false) => "el",
                (false, true) => "adfrw",
                (false, false) => "r",
            };
            line.push_str(&format!("perm={perm};"));
        }
        if let (true, Some((dev, ino))) = (facts.unique, m.unique) {
            line.push_str(&format!("unique={dev:x}U{ino:x};"));
        }
        if facts.unix_mode {
            line.push_str(&format!("UNIX.mode={:04o};", m.mode & 0o7777));
        }
        line.push(' ');
        line.push_str(&entry.name);
        line.push_str("\r\n");
        line
    }
}

/// Numbers of every digit count from 0 to 20 (u64::MAX), with the edges around each
/// power of ten and of sixteen.
fn interesting_u64s() -> Vec<u64> {
    let mut v = vec![0, 1, 7, 9, 15, 16, 17, u64::MAX, u64::MAX - 1];
    let mut p: u64 = 1;
    while let Some(next) = p.checked_mul(10) {
        p = next;
        v.extend([p - 1, p, p + 1, p.saturating_add(p / 2)]);
    }
    for shift in 1..64 {
        let p = 1u64 << shift;
        v.extend([p - 1, p, p + 1]);
    }
    v
}

/// Times from the epoch to far beyond 9999: every month boundary of a few years
/// (leap and not, 12 AM/PM edges), each digit count of the year, and the clamp.
fn interesting_times() -> Vec<Option<SystemTime>> {
    let mut v = vec![None, Some(UNIX_EPOCH - Duration::from_secs(1))];
    for secs in [
        0u64,
        1,
        59,
        3_599,
        3_600,
        43_199,
        43_200,
        46_800,
        86_399,
        951_782_400,     // 2000-02-29
        1_577_934_245,   // 2020-01-02 03:04:05
        1_709_251_199,   // 2024-02-29 23:59:59
        2_147_483_648,   // 2038-01-19
        4_102_444_800,   // 2100-01-01
        253_402_300_799, // 9999-12-31 23:59:59
        253_402_300_800, // 10000-01-01
        i64::MAX as u64 / 4,
        i64::MAX as u64,
        u64::MAX / 2 + 12_345,
    ] {
        v.push(UNIX_EPOCH.checked_add(Duration::from_secs(secs)));
    }
    for year in [1970i64, 1999, 2000, 2023, 2024, 2025, 2100, 2400] {
        for month in 1..=12 {
            for (day, secs) in [(1, 0), (1, 43_200), (days_in_month(year, month), 86_399)] {
                let t = days_from_civil(year, month, day) * 86_400 + secs;
                v.push(Some(at(t as u64)));
            }
        }
    }
    v
}

#[test]
fn writers_match_the_format_reference() {
    let now = at(NOW);
    let mut n = 0;
    let names = ["", "a", "a b", "ünï cødé", "x\u{1F600}y"];
    let modes = [
        0, 0o644, 0o755, 0o777, 0o7777, 0o4755, 0o2644, 0o1777, 0o104777,
    ];
    let sizes = interesting_u64s();
    let times = interesting_times();
    for (i, &size) in sizes.iter().enumerate() {
        for (j, &modified) in times.iter().enumerate() {
            let kind = [FileKind::File, FileKind::Dir, FileKind::Symlink][(i + j) % 3];
            let e = DirEntry {
                name: names[(i * 7 + j) % names.len()].to_string(),
                meta: Metadata {
                    kind,
                    size,
                    modified,
                    mode: modes[(i + 3 * j) % modes.len()],
                    unique: (j % 5 != 0).then(|| (sizes[j % sizes.len()], size)),
                    nlink: sizes[(i + j) % sizes.len()],
                },
            };
            // "now" at the test's date and at the entry's own time (recent lines).
            for now in [now, modified.unwrap_or(now)] {
                assert_eq!(
                    render(|o| unix_line(&e, now, o)),
                    reference::unix_line(&e, now),
                    "{e:?} at {now:?}"
                );
            }
            assert_eq!(
                render(|o| msdos_line(&e, o)),
                reference::msdos_line(&e),
                "{e:?}"
            );
            for facts in [
                Facts::default(),
                Facts::select("size;unique;"),
                Facts::select(""),
            ] {
                for w in [false, true] {
                    assert_eq!(
                        render(|o| mlsx_line(&e, facts, w, o)),
                        reference::mlsx_line(&e, facts, w),
                        "{e:?}"
                    );
                }
            }
            if let Some(t) = modified {
                assert_eq!(format_time(t), reference::format_time(t));
            }
            n += 1;
        }
    }
    assert!(n > 10_000, "{n} cases");
}

quickcheck! {
    fn writers_match_the_reference_on_arbitrary_entries(
        size: u64, secs: u64, mode: u32, nlink: u64, unique: (u64, u64), now_kind: (u32, u8)
    ) -> bool {
        let (now, kind) = now_kind;
        let kind = [FileKind::File, FileKind::Dir, FileKind::Symlink][usize::from(kind % 3)];
        let e = DirEntry {
            name: "n".into(),
            meta: Metadata {
                kind,
                size,
                modified: UNIX_EPOCH.checked_add(Duration::from_secs(secs % (1 << 40))),
                mode,
                unique: Some(unique),
                nlink,
            },
        };
        let now = at(u64::from(now));
        render(|o| unix_line(&e, now, o)) == reference::unix_line(&e, now)
            && render(|o| msdos_line(&e, o)) == reference::msdos_line(&e)
            && render(|o| mlsx_line(&e, Facts::default(), true, o))
                == reference::mlsx_line(&e, Facts::default(), true)
    }
}
