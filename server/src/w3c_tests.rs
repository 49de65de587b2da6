use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use wharf_core::log::SubStatus;
use wharf_core::SessionId;

use super::*;

fn record(user: &str, uri: &str) -> Box<LogRecord> {
    let client: SocketAddr = "[::ffff:192.0.2.7]:40000".parse().unwrap();
    let server: SocketAddr = "192.0.2.1:21".parse().unwrap();
    let mut r = LogRecord::new(SessionId(42), "files".into(), client, server, "RETR".into());
    r.user = Some(user.into());
    r.uri = Some(uri.into());
    r.full_path = Some(format!("/srv{uri}"));
    r.status = 550;
    r.win32 = 2;
    r.sub = SubStatus::HiddenSegment;
    r.bytes_sent = 30;
    r.bytes_received = 20;
    r.time_taken = Duration::from_millis(1234);
    r.debug = Some(Cow::Borrowed(SubStatus::HiddenSegment.slug()));
    Box::new(r)
}

const HOSTILE: &[&str] = &[
    "plain",
    "with space",
    "tab\there",
    "cr\rlf\nboth\r\n",
    "\r\n2024-01-01 00:00:00 10.0.0.1 - forged 226",
    "percent%20already",
    "plus+sign",
    "-",
    "--",
    "",
    "ümlaut and 日本語",
    "line\u{2028}sep\u{0085}nel\u{000b}vt",
    "nul\0byte",
    "#Fields: date",
];

#[test]
fn escaping_keeps_every_value_one_field_and_round_trips() {
    for v in HOSTILE {
        let mut out = String::new();
        escape(&mut out, Some(v));
        assert!(!out.is_empty());
        assert!(
            !out.chars().any(|c| c.is_whitespace() || c.is_control()),
            "{v:?} -> {out:?}"
        );
        assert_eq!(unescape(&out).as_deref(), Some(*v), "{v:?} -> {out:?}");
    }
    let mut out = String::new();
    escape(&mut out, None);
    assert_eq!(out, "-");
}

#[test]
fn a_hostile_name_cannot_forge_a_line() {
    let fields = LogFields::ALL;
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for v in HOSTILE {
        let mut line = String::new();
        format_line(&mut line, fields, at, &record(v, &format!("/{v}")));
        assert_eq!(line.matches('\n').count(), 1, "{line:?}");
        assert!(line.ends_with('\n') && !line.starts_with('#'));
        let parts: Vec<&str> = line.trim_end_matches('\n').split(' ').collect();
        assert_eq!(parts.len(), 20, "{line:?}");
        assert_eq!(unescape(parts[4]).as_deref(), Some(*v), "cs-username");
    }
}

#[test]
fn formats_the_iis_fields() {
    let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000); // 2023-11-14 22:13:20 UTC
    let mut line = String::new();
    format_line(
        &mut line,
        LogFields::ALL,
        at,
        &record("alice", "/_private/x.txt"),
    );
    assert_eq!(
        line,
        "2023-11-14 22:13:20 192.0.2.7 40000 alice files 192.0.2.1 21 RETR /_private/x.txt \
         550 2 8 30 20 1234 - 42 /srv/_private/x.txt hidden-segment\n"
    );
    let h = header(LogFields::ALL, at);
    assert!(h.starts_with("#Software: wharf "), "{h}");
    assert!(h.contains("#Version: 1.0\n#Date: 2023-11-14 22:13:20\n"));
    assert!(h.ends_with(
        "#Fields: date time c-ip c-port cs-username s-sitename s-ip s-port cs-method \
         cs-uri-stem sc-status sc-win32-status sc-substatus sc-bytes cs-bytes time-taken \
         cs-host x-session x-fullpath x-debug\n"
    ));
}

#[test]
fn calendar_dates() {
    assert_eq!(wharf_core::listing::civil_from_days(0), (1970, 1, 1));
    assert_eq!(wharf_core::listing::civil_from_days(11_016), (2000, 2, 29));
    assert_eq!(wharf_core::listing::civil_from_days(19_675), (2023, 11, 14));
    assert_eq!(wharf_core::listing::civil_from_days(-1), (1969, 12, 31));
    assert_eq!(
        stamp(UNIX_EPOCH + Duration::from_secs(1_700_000_000), true),
        "23111422"
    );
}

fn output(dir: &Path, period: Period) -> LogOutput {
    LogOutput {
        directory: dir.to_path_buf(),
        period,
        fields: LogFields::ALL,
        buffer: 1024,
        central: false,
    }
}

#[test]
fn writer_writes_headers_and_lines_and_finishes_on_drop() {
    let tmp = tempfile::tempdir().unwrap();
    let logger = W3cLogger::start(vec![(
        Some("files".into()),
        output(tmp.path(), Period::Daily),
    )])
    .unwrap();
    for i in 0..100 {
        logger.log(record("alice", &format!("/f{i}")));
    }
    // A record of another site has no output here and is not written.
    let mut other = record("bob", "/x");
    other.site = "other".into();
    logger.log(other);
    drop(logger);
    let files: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
    assert_eq!(files.len(), 1);
    let name = files[0].file_name().into_string().unwrap();
    assert!(
        name.starts_with("u_ex") && name.ends_with(".log") && name.len() == 14,
        "{name}"
    );
    let text = std::fs::read_to_string(files[0].path()).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 100);
    assert!(lines.iter().all(|l| l.contains(" alice files ")));
    assert_eq!(text.matches("#Fields:").count(), 1);
}

#[test]
fn size_period_rolls_over() {
    let tmp = tempfile::tempdir().unwrap();
    let out = output(tmp.path(), Period::Size(2_000));
    let logger = W3cLogger::start(vec![(None, out)]).unwrap();
    for i in 0..50 {
        logger.log(record("alice", &format!("/file-{i}")));
    }
    drop(logger);
    let mut names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.len() > 3, "{names:?}");
    let mut total = 0;
    for n in &names {
        assert!(n.starts_with("u_extend"), "{n}");
        let text = std::fs::read_to_string(tmp.path().join(n)).unwrap();
        assert!(text.len() <= 2_000 + 200, "{n} is {} bytes", text.len());
        assert!(text.starts_with("#Software:"));
        total += text.lines().filter(|l| !l.starts_with('#')).count();
    }
    assert_eq!(total, 50);
}

#[test]
fn a_full_queue_drops_and_counts_and_the_count_is_remarked() {
    let (tx, _rx) = mpsc::sync_channel(2);
    let logger = W3cLogger {
        tx: Mutex::new(Some(tx)),
        dropped: Arc::new(AtomicU64::new(0)),
        dropped_total: AtomicU64::new(0),
        writer: Mutex::new(None),
    };
    for _ in 0..5 {
        logger.log(record("a", "/x"));
    }
    assert_eq!(logger.dropped(), 3);
    assert_eq!(logger.dropped_total(), 3);

    let tmp = tempfile::tempdir().unwrap();
    let mut writer = Writer {
        outputs: vec![(None, Output::new(output(tmp.path(), Period::Hourly)))],
        dropped: Arc::new(AtomicU64::new(7)),
        line: String::new(),
    };
    let (tx, rx) = mpsc::sync_channel(4);
    tx.send(Msg::Record(SystemTime::now(), record("a", "/x")))
        .unwrap();
    drop(tx);
    writer.run(rx);
    let file = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .next()
        .unwrap();
    let text = std::fs::read_to_string(file.path()).unwrap();
    assert!(text.contains("#Remark: 7 records dropped"), "{text}");
}

#[test]
fn a_late_record_does_not_reopen_yesterdays_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut writer = Writer {
        outputs: vec![(None, Output::new(output(tmp.path(), Period::Daily)))],
        dropped: Arc::new(AtomicU64::new(0)),
        line: String::new(),
    };
    let midnight = UNIX_EPOCH + Duration::from_secs(19_676 * 86_400);
    let (tx, rx) = mpsc::sync_channel(8);
    for at in [
        midnight - Duration::from_secs(2),
        midnight + Duration::from_secs(1),
        midnight - Duration::from_secs(1),
    ] {
        tx.send(Msg::Record(at, record("a", "/x"))).unwrap();
    }
    drop(tx);
    writer.run(rx);
    let mut names: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["u_ex231114.log", "u_ex231115.log"]);
    let old = std::fs::read_to_string(tmp.path().join(&names[0])).unwrap();
    let new = std::fs::read_to_string(tmp.path().join(&names[1])).unwrap();
    assert_eq!(old.lines().filter(|l| !l.starts_with('#')).count(), 1);
    assert_eq!(new.lines().filter(|l| !l.starts_with('#')).count(), 2);
    assert_eq!(new.matches("#Fields").count(), 1);
}
