//! Per-command state never outlives the command it belongs to, whatever that command's
//! fate (issue 12): REST and the data channel are spent by the next transfer command
//! (refused or not), RNFR's source by the very next line, a failed login attempt takes
//! its user name and its `USER host|user` site choice with it, and a refused setting
//! (TYPE, PBSZ, PROT, HOST, AUTH) changes nothing. One test per piece of state, one case
//! per way its command can fail.

mod harness;

use std::sync::Arc;
use std::time::Duration;

use harness::{config, DataMode, Harness, LOCAL};
use wharf_core::memfs::{Faults, MemUsers};
use wharf_core::policy::RequestFiltering;
use wharf_core::proto::Verb;
use wharf_core::{Action, Binding, Input, Server, SessionConfig, Sites, VPath};

const FILE: &[u8] = b"0123456789";

fn base_config() -> SessionConfig {
    SessionConfig {
        filtering: RequestFiltering {
            hidden_segments: vec!["_private".into()],
            denied_extensions: vec!["exe".into()],
            denied_sequences: vec!["~".into()],
            ..RequestFiltering::default()
        },
        ..config()
    }
}

fn session(tweak: fn(&mut SessionConfig)) -> Harness {
    session_denying(tweak, None)
}

fn session_denying(tweak: fn(&mut SessionConfig), deny: Option<Verb>) -> Harness {
    let mut cfg = base_config();
    tweak(&mut cfg);
    cfg.filtering.denied_commands.extend(deny);
    let mut h = Harness::with_config(cfg);
    h.storage.add_file("/f", FILE);
    h.storage.add_file("/_private/p", b"secret");
    h.storage.add_file("/tool.exe", b"MZ");
    h.storage.add_dir("/d");
    h.login();
    h
}

/// How a case proves REST was spent: a plain STOR over `/f` replaces it (the issue's
/// corruption), or, where the case's site allows no writes, a RETR sends all of it.
#[derive(Clone, Copy, Debug)]
enum Check {
    Stor,
    Retr,
}

/// One way a transfer command fails.
struct Case {
    what: &'static str,
    tweak: fn(&mut SessionConfig),
    /// Whether PASV comes before the command (else there is no data channel).
    pasv: bool,
    /// Injected I/O errors while the command runs.
    io_error: bool,
    /// A verb the site's command filtering denies.
    deny: Option<Verb>,
    line: &'static str,
    /// The failure's reply.
    want: &'static str,
    check: Check,
}

fn none(_: &mut SessionConfig) {}
fn read_only(c: &mut SessionConfig) {
    c.user_write = false;
}
fn cases() -> Vec<Case> {
    let case = |what, line, want, check| Case {
        what,
        tweak: none,
        pasv: true,
        io_error: false,
        deny: None,
        line,
        want,
        check,
    };
    let mut out = vec![
        case("missing file", "RETR missing", "550 ", Check::Stor),
        case("a directory", "RETR d", "550 ", Check::Stor),
        case("hidden segment", "RETR _private/p", "550 ", Check::Stor),
        case("denied extension", "RETR tool.exe", "550 ", Check::Stor),
        case("denied sequence", "RETR a~b", "550 ", Check::Stor),
        case("no file name", "RETR", "501 ", Check::Stor),
        case("NUL in the name", "RETR a\0b", "501 ", Check::Stor),
        case("missing folder", "STOR nodir/x", "550 ", Check::Retr),
        case("onto a directory", "STOR d", "550 ", Check::Retr),
        case("hidden segment", "STOR _private/x", "550 ", Check::Retr),
        case("denied extension", "STOR x.exe", "550 ", Check::Retr),
        case("no file name", "STOR", "501 ", Check::Retr),
        case("missing folder", "APPE nodir/x", "550 ", Check::Retr),
        case("onto a directory", "APPE d", "550 ", Check::Retr),
        case("no file name", "APPE", "501 ", Check::Retr),
        case("missing folder", "STOU nodir/x", "550 ", Check::Retr),
        case("missing folder", "LIST nodir", "550 ", Check::Stor),
        case("hidden segment", "NLST _private", "550 ", Check::Stor),
        case("missing folder", "MLSD nodir", "550 ", Check::Stor),
        case("a file", "MLSD f", "501 ", Check::Stor),
    ];
    let verbs = [
        ("RETR f", Verb::Retr, Check::Stor),
        ("STOR x", Verb::Stor, Check::Retr),
        ("APPE x", Verb::Appe, Check::Retr),
        ("STOU x", Verb::Stou, Check::Retr),
        ("LIST", Verb::List, Check::Retr),
        ("NLST", Verb::Nlst, Check::Retr),
        ("MLSD", Verb::Mlsd, Check::Retr),
    ];
    for (line, verb, check) in verbs {
        out.push(Case {
            pasv: false,
            ..case("no data channel", line, "425 ", check)
        });
        out.push(Case {
            deny: Some(verb),
            ..case("command filtering", line, "502 ", check)
        });
        out.push(Case {
            io_error: true,
            ..case("i/o error", line, "451 ", check)
        });
    }
    for line in ["STOR x", "APPE x", "STOU x"] {
        out.push(Case {
            tweak: read_only,
            ..case("read-only site", line, "550 ", Check::Retr)
        });
    }
    out
}

/// Runs a case with REST armed; the failure must leave no offset behind.
fn rest_is_spent(case: &Case) {
    let mut h = session_denying(case.tweak, case.deny);
    h.expect("REST 4", "350 ");
    if case.pasv {
        h.expect("PASV", "227 ");
    }
    let io = Faults {
        io_error: case.io_error,
        ..Faults::default()
    };
    h.storage.set_faults(io);
    let got = h.send(case.line);
    h.storage.set_faults(Faults::default());
    assert!(
        got.starts_with(case.want),
        "{} ({}): expected {:?}, got {got:?}",
        case.line.escape_debug(),
        case.what,
        case.want
    );
    h.expect("PASV", "227 ");
    match case.check {
        Check::Stor => {
            h.upload = b"ab".to_vec();
            h.expect("STOR f", "150 ");
            assert_eq!(
                h.storage.read_file("/f").unwrap(),
                b"ab",
                "{} ({}): the next STOR wrote at a stale REST offset",
                case.line.escape_debug(),
                case.what
            );
        }
        Check::Retr => {
            h.expect("RETR f", "150 ");
            assert_eq!(
                h.received,
                FILE,
                "{} ({}): the next RETR started at a stale REST offset",
                case.line.escape_debug(),
                case.what
            );
        }
    }
}

/// Runs a case after PASV; the failure must close the listener, and the next transfer
/// command must need a new PASV.
fn data_channel_is_spent(case: &Case) {
    if !case.pasv {
        return;
    }
    let mut h = session_denying(case.tweak, case.deny);
    h.expect("PASV", "227 ");
    let listener = h
        .actions
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::ListenData { conn, .. } => Some(*conn),
            _ => None,
        })
        .unwrap();
    h.storage.set_faults(Faults {
        io_error: case.io_error,
        ..Faults::default()
    });
    let got = h.send(case.line);
    h.storage.set_faults(Faults::default());
    assert!(got.starts_with(case.want), "{}: {got:?}", case.line);
    assert!(
        h.actions.contains(&Action::CloseData { conn: listener }),
        "{} ({}): the refused command left its listener open",
        case.line.escape_debug(),
        case.what
    );
    let next = match case.check {
        Check::Stor => "STOR f",
        Check::Retr => "RETR f",
    };
    h.expect(next, "425 ");
}

#[test]
fn a_refused_transfer_command_spends_rest() {
    for case in cases() {
        rest_is_spent(&case);
    }
}

#[test]
fn a_refused_transfer_command_spends_the_data_channel() {
    for case in cases() {
        data_channel_is_spent(&case);
    }
}

/// The transcript: a 1000-byte file, REST 100, RETR of a missing file (550),
/// then a plain STOR of 50 bytes must leave exactly those 50 bytes.
#[test]
fn rest_then_a_missing_retr_then_stor_replaces_the_file() {
    let mut h = session(none);
    let old: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    h.storage.add_file("/up.bin", &old);
    h.expect("REST 100", "350 ");
    h.expect("PASV", "227 ");
    h.expect("RETR missing", "550 ");
    h.upload = vec![b'n'; 50];
    h.expect("PASV", "227 ");
    let r = h.send("STOR up.bin");
    assert!(r.starts_with("150 ") && r.contains("226 "), "{r}");
    assert_eq!(h.storage.read_file("/up.bin").unwrap(), vec![b'n'; 50]);
    // Without a data channel (425) too.
    h.expect("REST 100", "350 ");
    h.expect("RETR missing", "425 ");
    h.upload = vec![b'm'; 50];
    h.expect("PASV", "227 ");
    h.expect("STOR up.bin", "150 ");
    assert_eq!(h.storage.read_file("/up.bin").unwrap(), vec![b'm'; 50]);
}

/// A file being written in place (APPE) cannot be read: that refusal spends REST too.
#[test]
fn a_retr_refused_for_an_upload_in_progress_spends_rest() {
    let t0 = harness::origin();
    let mut server = Server::new(Arc::new(base_config()), 0, 1, 100);
    let mut writer = Harness::accept(&mut server, "192.0.2.7:1", t0).unwrap();
    let mut reader = Harness::accept(&mut server, "192.0.2.7:2", t0).unwrap();
    reader.storage = writer.storage.clone();
    writer.storage.add_file("/log.txt", b"old");
    writer.storage.add_file("/f", FILE);
    writer.mode = DataMode::Manual;
    writer.login();
    reader.login();
    writer.expect("PORT 192,0,2,7,156,65", "200 ");
    writer.expect("APPE log.txt", "150 ");
    reader.expect("REST 3", "350 ");
    reader.expect("PASV", "227 ");
    reader.expect("RETR log.txt", "550 The file is being uploaded");
    reader.expect("RETR f", "425 ");
    reader.expect("PASV", "227 ");
    reader.expect("RETR f", "150 ");
    assert_eq!(reader.received, FILE);
}

/// REST is taken when the transfer opens, so failures after the 150 (the data
/// connection never comes, the client's connect is refused) leave none either.
#[test]
fn a_transfer_that_fails_after_150_spends_rest() {
    let mut h = session(none);
    h.mode = DataMode::Manual;
    h.expect("REST 4", "350 ");
    h.expect("PORT 192,0,2,7,156,65", "200 ");
    h.expect("RETR f", "150 ");
    let r = h.advance(Duration::from_secs(31));
    assert!(r.starts_with("425 "), "{r}");
    h.expect("PORT 192,0,2,7,156,65", "200 ");
    h.expect("STOR f", "150 ");
    let conn = h.last_connect();
    h.input(Input::DataFailed {
        conn,
        error: wharf_core::DataError::Refused,
    });
    assert!(h.replies().ends_with("425 Connection refused.\r\n"));
    h.mode = DataMode::Auto;
    h.expect("PASV", "227 ");
    h.expect("RETR f", "150 ");
    assert_eq!(h.received, FILE);
}

/// A refused REST leaves no offset behind, not even an earlier accepted one.
#[test]
fn a_refused_rest_clears_the_offset() {
    for bad in ["x", "-1", "", "18446744073709551616"] {
        let mut h = session(none);
        h.expect("REST 4", "350 ");
        h.expect(&format!("REST {bad}"), "501 ");
        h.upload = b"ab".to_vec();
        h.expect("PASV", "227 ");
        h.expect("STOR f", "150 ");
        assert_eq!(h.storage.read_file("/f").unwrap(), b"ab", "REST {bad:?}");
    }
}

/// A data-channel command replaces the data channel whatever its fate: a refused PASV,
/// EPSV, PORT or EPRT leaves none, never the one set up before it.
#[test]
fn a_refused_data_channel_command_leaves_no_data_channel() {
    let refusals = [
        ("PORT 1,2,3", "501 "),
        ("PORT 192,0,2,7,0,21", "504 "),
        ("PORT 10,0,0,1,156,65", "504 "),
        ("EPRT |3|x|1|", "522 "),
        ("EPRT |1|192.0.2.7|21|", "504 "),
        ("EPSV 2", "522 "),
    ];
    for (line, want) in refusals {
        for first in ["PASV", "PORT 192,0,2,7,156,65"] {
            let mut h = session(none);
            h.expect(first, "2");
            h.expect(line, want);
            h.expect("RETR f", "425 ");
        }
    }
    // After EPSV ALL, PASV and PORT are refused, and they too drop the EPSV channel.
    for line in ["PASV", "PORT 192,0,2,7,156,65"] {
        let mut h = session(none);
        h.expect("EPSV", "229 ");
        h.expect("EPSV ALL", "200 ");
        h.expect(line, "503 ");
        h.expect("RETR f", "425 ");
    }
}

/// ABOR with no transfer running closes the data connection (RFC 959).
#[test]
fn abor_without_a_transfer_closes_the_data_channel() {
    let mut h = session(none);
    h.expect("PASV", "227 ");
    h.expect("ABOR", "225 ");
    assert!(h
        .actions
        .iter()
        .any(|a| matches!(a, Action::CloseData { .. })));
    h.expect("RETR f", "425 ");
}

/// RNFR's source is for the very next line, whatever that line is: unknown, too long,
/// malformed, refused by a filter, another RNFR that fails, or an RNTO that fails.
#[test]
fn rnfr_lasts_exactly_one_line() {
    let long = format!("NOOP {}", "x".repeat(5000));
    let between: Vec<(&str, &str)> = vec![
        ("XYZZY", "500 "),
        ("", "500 "),
        (&long, "500 "),
        ("NOOP a\0b", "501 "),
        ("NOOP", "200 "),
        ("SITE CHMOD 777 f", "502 "),
        ("RNFR missing", "550 "),
        ("RNFR _private/p", "550 "),
        ("RNFR", "501 "),
        ("RNTO", "501 "),
        ("RNTO a~b", "550 "),
        ("RNTO _private/x", "550 "),
        ("RNTO nodir/x", "550 "),
    ];
    for (line, want) in between {
        let mut h = session(none);
        h.expect("RNFR f", "350 ");
        let got = h.send(line);
        assert!(got.starts_with(want), "{line:.20}: {got:?}");
        h.expect("RNTO g", "503 ");
        assert_eq!(h.storage.read_file("/f").unwrap(), FILE, "{line:.20}");
        assert!(!h.storage.exists("/g"));
    }
    // The rename itself failing spends it too.
    let mut h = session(none);
    h.storage.add_file("/g", b"g");
    h.expect("RNFR f", "350 ");
    h.storage.set_faults(Faults {
        io_error: true,
        ..Faults::default()
    });
    h.expect("RNTO h", "451 ");
    h.storage.set_faults(Faults::default());
    h.expect("RNTO h", "503 ");
}

/// A refused TYPE (504, 501) keeps the type in force; the transfer shows which.
#[test]
fn a_refused_type_keeps_the_type() {
    for (set, refused, ascii) in [
        ("TYPE A", "TYPE E", true),
        ("TYPE A", "TYPE X", true),
        ("TYPE A", "TYPE A T", true),
        ("TYPE I", "TYPE L 7", false),
        ("TYPE I", "TYPE", false),
    ] {
        let mut h = session(none);
        h.storage.add_file("/t", b"a\nb\n");
        h.expect(set, "200 ");
        let got = h.send(refused);
        assert!(got.starts_with("50"), "{refused}: {got:?}");
        let stat = h.send("STAT");
        let shown = if ascii { "TYPE: ASCII" } else { "TYPE: BINARY" };
        assert!(stat.contains(shown), "{set} then {refused}: {stat}");
        h.expect("PASV", "227 ");
        h.expect("RETR t", "150 ");
        let want: &[u8] = if ascii { b"a\r\nb\r\n" } else { b"a\nb\n" };
        assert_eq!(h.received, want, "{set} then {refused}");
    }
}

/// A refused USER (no name, anonymous not allowed) forgets the user an earlier USER
/// named, so a PASS cannot complete the earlier attempt; a failed PASS forgets it too.
#[test]
fn a_failed_user_or_pass_leaves_no_login_attempt() {
    let mut cfg = config();
    cfg.allow_anonymous = false;
    for refused in [("USER", "501 "), ("USER anonymous", "530 ")] {
        let mut h = Harness::with_config(cfg.clone());
        h.expect("USER alice", "331 ");
        h.expect(refused.0, refused.1);
        h.expect("PASS secret", "503 ");
        h.login();
    }
    let mut h = Harness::with_config(cfg);
    h.expect("USER alice", "331 ");
    assert_eq!(h.fail_login("wrong"), "530 Login incorrect.\r\n");
    h.expect("PASS secret", "503 ");
    h.login();
}

fn site(name: &str, anonymous: bool) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        site_name: name.into(),
        banner: format!("{name} here"),
        storage_root: VPath::root().child(name).unwrap(),
        allow_anonymous: anonymous,
        passive_ports: 50000..=50010,
        ..SessionConfig::default()
    })
}

fn bind(site: usize, host: &str) -> Binding {
    let local: std::net::SocketAddr = LOCAL.parse().unwrap();
    Binding {
        ip: local.ip(),
        port: local.port(),
        host: Some(host.to_string()),
        site,
        implicit_tls: false,
    }
}

/// Two sites on one address, neither answering without a host name.
fn shared_address() -> Harness {
    let sites = vec![site("one", false), site("two", true)];
    let bindings = vec![bind(0, "one.example"), bind(1, "two.example")];
    let sites = Arc::new(Sites::new(sites, bindings).unwrap());
    let users = MemUsers::new().with("alice", "secret", &[]);
    let h = Harness::build(Server::with_sites(sites, 0, 1, 10), LOCAL, users);
    h.storage.add_dir("/one");
    h.storage.add_dir("/two");
    h
}

/// The site a `USER host|user` chose lasts as long as its login attempt: after a
/// refused USER or a failed PASS, another host may be named, and a USER without one is
/// refused as it was before (the address has no blank-host site).
#[test]
fn a_failed_login_attempt_forgets_its_user_host_site() {
    // The USER itself refused after choosing the site (no anonymous on "one").
    let mut h = shared_address();
    h.expect(
        "USER one.example|anonymous",
        "530 Anonymous access is not allowed",
    );
    h.expect("USER alice", "530 Several sites share this address");
    h.expect("USER two.example|anonymous", "331 ");
    h.expect("PASS me@example.com", "230 ");
    // A failed PASS.
    let mut h = shared_address();
    h.expect("USER one.example|alice", "331 ");
    assert!(h.fail_login("wrong").starts_with("530 "));
    h.expect("USER alice", "530 Several sites share this address");
    h.expect("USER two.example|alice", "331 ");
    h.expect("PASS secret", "230 ");
    // A second USER starts over: its own host, not the first attempt's.
    let mut h = shared_address();
    h.expect("USER one.example|alice", "331 ");
    h.expect("USER two.example|alice", "331 ");
    h.expect("PASS secret", "230 ");
    h.expect("PWD", "257 ");
    // A site chosen by HOST stays: HOST is a command of its own that succeeded.
    let mut h = shared_address();
    h.expect("HOST one.example", "220 one here");
    h.expect("USER one.example|anonymous", "530 ");
    h.expect(
        "USER two.example|alice",
        "530 Host \"two.example\" in USER differs",
    );
    h.expect("USER alice", "331 ");
    h.expect("PASS secret", "230 ");
}

/// A refused HOST (unknown name, no name) keeps the site an earlier HOST chose; HOST
/// after USER is refused and the attempt goes on.
#[test]
fn a_refused_host_changes_nothing() {
    let mut h = shared_address();
    h.expect("HOST two.example", "220 two here");
    h.expect("HOST nowhere.example", "504 ");
    h.expect("HOST", "501 ");
    h.expect("USER anonymous", "331 ");
    h.expect("HOST one.example", "503 ");
    h.expect("PASS me@example.com", "230 ");
}

/// Without TLS configured, AUTH is refused and PBSZ/PROT stay refused after it.
#[test]
fn a_refused_auth_secures_nothing() {
    let mut h = session(none);
    h.expect("AUTH TLS", "502 ");
    h.expect("PBSZ 0", "503 ");
    h.expect("PROT P", "503 ");
    h.expect("PASV", "227 ");
    h.expect("RETR f", "150 ");
}
