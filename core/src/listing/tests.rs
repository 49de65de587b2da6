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
