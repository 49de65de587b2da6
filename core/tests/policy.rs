//! Policy through whole sessions: request filtering as a matrix of rule x path spelling x
//! command, IP rules and bans at accept, per-address and per-user limits, upload size,
//! minimum data rate, rename without replace, reading uploads in progress, and the log
//! records every command produces.

mod harness;

use std::sync::Arc;
use std::time::Duration;

use harness::{config, origin, DataMode, Harness};
use wharf_core::log::{LogConfig, LogFields, LogRecord, SubStatus};
use wharf_core::policy::limits::ServerRules;
use wharf_core::policy::{
    DenyAction, IpNet, IpRule, IpRules, LogonRestrictions, RequestFiltering, ServerPolicy,
};
use wharf_core::proto::command::Verb;
use wharf_core::{Action, Input, Server, SessionConfig, TransferOutcome};

fn filtering() -> RequestFiltering {
    RequestFiltering {
        hidden_segments: vec!["_private".into()],
        denied_extensions: vec!["exe".into()],
        denied_sequences: vec!["~".into()],
        denied_commands: vec![Verb::Site, Verb::Mfmt],
        max_upload_size: Some(1000),
        ..RequestFiltering::default()
    }
}

fn policy_config() -> SessionConfig {
    SessionConfig {
        filtering: filtering(),
        anonymous_write: true,
        ..config()
    }
}

fn site() -> Harness {
    let mut h = Harness::with_config(policy_config());
    h.storage.add_dir("/_private");
    h.storage.add_file("/_private/private.txt", b"secret");
    h.storage.add_dir("/_private/sub");
    h.storage.add_dir("/x");
    h.storage.add_file("/x/ok.txt", b"fine");
    h.storage.add_file("/x/tool.exe", b"MZ");
    h.storage.add_file("/public.txt", b"hello");
    h.login();
    h
}

/// The first reply code of `replies`.
fn code(replies: &str) -> u16 {
    replies.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// Spellings of `/_private` (and below it) from the root and from `/x`.
const HIDDEN: &[(&str, &str)] = &[
    ("/", "_private"),
    ("/", "./_private"),
    ("/", "x/../_private"),
    ("/", "_PRIVATE"),
    ("/", "_private/"),
    ("/", "_Private."),
    ("/", "_private/private.txt"),
    ("/", "/_private/./private.txt"),
    ("/", "_PRIVATE/PRIVATE.TXT"),
    ("/", "_private/sub"),
    ("/x", "../_private"),
    ("/x", "/_private"),
    ("/x", "../_private/private.txt"),
    ("/x", "./../_PRIVATE/private.txt"),
];

/// Every path-taking command, and whether it needs a data channel first.
const PATH_COMMANDS: &[(&str, bool)] = &[
    ("RETR", true),
    ("STOR", true),
    ("APPE", true),
    ("STOU", true),
    ("LIST", true),
    ("NLST", true),
    ("MLSD", true),
    ("STAT", false),
    ("MLST", false),
    ("SIZE", false),
    ("MDTM", false),
    ("CWD", false),
    ("XCWD", false),
    ("MKD", false),
    ("RMD", false),
    ("DELE", false),
    ("RNFR", false),
    ("RNTO", false),
];

#[test]
fn hidden_segments_are_unreachable_by_every_command_however_spelled() {
    let mut tried = 0;
    for &(cwd, spelled) in HIDDEN {
        for &(verb, data) in PATH_COMMANDS {
            let mut h = site();
            h.expect(&format!("CWD {cwd}"), "250 ");
            if verb == "RNTO" {
                h.expect("RNFR /public.txt", "350 ");
            }
            if data {
                h.expect("PASV", "227 ");
            }
            let got = h.send(&format!("{verb} {spelled}"));
            assert_eq!(code(&got), 550, "{verb} {spelled} from {cwd}: {got:?}");
            assert!(got.contains("No such file"), "{verb} {spelled}: {got:?}");
            // Nothing changed, nothing leaked, and the session goes on.
            assert_eq!(
                h.storage.read_file("/_private/private.txt").unwrap(),
                b"secret"
            );
            assert!(h.storage.exists("/_private/sub"));
            assert!(h.storage.exists("/public.txt"));
            assert!(!h.received.windows(6).any(|w| w == b"secret"));
            h.expect("NOOP", "200 ");
            tried += 1;
        }
    }
    assert_eq!(tried, HIDDEN.len() * PATH_COMMANDS.len());
}

#[test]
fn hidden_segments_are_left_out_of_every_listing() {
    let mut h = site();
    for cmd in ["LIST", "NLST", "MLSD", "LIST -la", "NLST *", "LIST _*"] {
        h.expect("PASV", "227 ");
        let got = h.send(cmd);
        assert!(got.contains("226 "), "{cmd}: {got}");
        let listing = String::from_utf8_lossy(&h.received).to_lowercase();
        assert!(!listing.contains("_private"), "{cmd}: {listing}");
        if !cmd.contains('_') {
            assert!(listing.contains("public.txt"), "{cmd}: {listing}");
        }
    }
    let stat = h.expect("STAT /", "212-");
    assert!(!stat.to_lowercase().contains("_private") && stat.contains("public.txt"));
    // Without the rule, it is there.
    let mut plain = Harness::with_config(config());
    plain.storage.add_dir("/_private");
    plain.login();
    plain.expect("PASV", "227 ");
    plain.expect("NLST", "150 ");
    assert!(String::from_utf8_lossy(&plain.received).contains("_private"));
}

#[test]
fn extension_rules_apply_to_file_commands_in_every_spelling() {
    let spellings = [
        "x/tool.exe",
        "x/TOOL.EXE",
        "x/tool.exe.",
        "x/tool.exe ",
        "x/tool.Exe::$DATA",
    ];
    let file_commands = [
        "RETR", "STOR", "APPE", "DELE", "RNFR", "SIZE", "MDTM", "MLST",
    ];
    for spelled in spellings {
        for verb in file_commands {
            let mut h = site();
            if matches!(verb, "RETR" | "STOR" | "APPE") {
                h.expect("PASV", "227 ");
            }
            let got = h.send(&format!("{verb} {spelled}"));
            assert_eq!(code(&got), 550, "{verb} {spelled}: {got}");
            assert!(
                got.contains("File type not allowed"),
                "{verb} {spelled}: {got}"
            );
            assert_eq!(h.storage.read_file("/x/tool.exe").unwrap(), b"MZ");
        }
    }
    let mut h = site();
    // Renaming into a denied extension is refused; directory commands do not judge it.
    h.expect("RNFR x/ok.txt", "350 ");
    h.expect("RNTO x/ok.exe", "550 File type not allowed");
    h.expect("MKD dir.exe", "257 ");
    h.expect("CWD dir.exe", "250 ");
    h.expect("CWD /", "250 ");
    h.expect("PASV", "227 ");
    h.expect("RETR x/ok.txt", "150 ");
    assert_eq!(h.received, b"fine");
    // The listing still shows .exe files (only hidden segments vanish).
    h.expect("PASV", "227 ");
    h.expect("NLST x", "150 ");
    assert!(String::from_utf8_lossy(&h.received).contains("tool.exe"));
}

#[test]
fn denied_sequences_and_commands() {
    let mut h = site();
    h.expect("CWD ~", "550 Path not allowed");
    h.expect("CWD x/~/..", "550 Path not allowed");
    h.expect("SIZE ~root/.ssh", "550 Path not allowed");
    h.expect("CWD x", "250 ");
    h.expect("CDUP", "250 "); // no argument, nothing to judge
    h.expect("SITE CHMOD 777 x", "502 Command not allowed");
    h.expect("MFMT 20200102030405 public.txt", "502 Command not allowed");
    h.expect("site help", "502 ");
    h.expect("SIZE public.txt", "213 5");
    // A deny-unlisted site allows only its list.
    let strict = SessionConfig {
        filtering: RequestFiltering {
            allow_unlisted_commands: false,
            allowed_commands: vec![Verb::User, Verb::Pass, Verb::Pwd, Verb::Quit],
            ..RequestFiltering::default()
        },
        ..config()
    };
    let mut h = Harness::with_config(strict);
    h.login();
    h.expect("PWD", "257 ");
    h.expect("XPWD", "257 ");
    h.expect("CWD /", "502 ");
    h.expect("NOOP", "502 ");
    h.expect("QUIT", "221 ");
}

#[test]
fn path_and_line_limits() {
    let cfg = SessionConfig {
        filtering: RequestFiltering {
            max_path_length: 20,
            ..RequestFiltering::default()
        },
        max_line: 64,
        ..config()
    };
    let mut h = Harness::with_config(cfg);
    h.login();
    h.expect("MKD 0123456789", "257 ");
    h.expect("CWD 0123456789", "250 ");
    // 21 bytes as resolved: /0123456789/abcdefghi
    h.expect("MKD abcdefghij", "553 Path too long");
    h.expect("MKD /0123456789012345678901", "553 Path too long");
    h.expect(
        &format!("NOOP {}", "x".repeat(100)),
        "500 Command line too long",
    );
    h.expect("NOOP", "200 ");
}

fn upload_site(mode: DataMode) -> Harness {
    let mut h = Harness::with_config(policy_config());
    h.mode = mode;
    h.login();
    h
}

#[test]
fn an_upload_over_the_limit_is_refused_and_nothing_is_left() {
    // The whole body arrives before any progress report.
    let mut h = upload_site(DataMode::Auto);
    h.upload = vec![7; 1001];
    h.expect("PASV", "227 ");
    let got = h.send("STOR big.bin");
    assert!(
        got.contains("552 Upload exceeds the maximum size of 1000 bytes"),
        "{got}"
    );
    assert!(!h.storage.exists("/big.bin"));
    h.upload = vec![7; 1000];
    h.expect("PASV", "227 ");
    assert!(h.send("STOR fits.bin").contains("226 "));
    assert_eq!(h.storage.read_file("/fits.bin").unwrap().len(), 1000);

    // A driver that cut late (it reports more than the limit) is answered the same.
    let mut h = upload_site(DataMode::Manual);
    h.expect("PASV", "");
    let listen = h
        .actions
        .iter()
        .find_map(|a| match a {
            Action::ListenData { conn, .. } => Some(*conn),
            _ => None,
        })
        .unwrap();
    h.input(Input::DataListening {
        conn: listen,
        port: 50000,
    });
    h.input(Input::DataAccepted {
        conn: listen,
        peer: harness::PEER.parse().unwrap(),
    });
    h.expect("STOR huge.bin", "150 ");
    let (xfer, _, _) = h.last_transfer().unwrap();
    let start = h.wire.len();
    h.input(Input::TransferDone {
        xfer,
        outcome: TransferOutcome::Complete { bytes: 1300 },
    });
    let got = String::from_utf8_lossy(&h.wire[start..]).into_owned();
    assert!(got.starts_with("552 "), "{got}");
    assert!(!h.storage.exists("/huge.bin"));
    assert!(h.storage.paths().iter().all(|p| !p.contains("huge")));
}

#[test]
fn the_driver_is_told_the_upload_limit_and_in_place_writes_stop_at_it() {
    // The limit travels in TransferSpec::max_bytes, for uploads only.
    let mut h = upload_site(DataMode::Auto);
    h.storage.add_file("/log.txt", b"abc");
    h.expect("PASV", "227 ");
    h.expect("RETR log.txt", "150 ");
    let spec_max = |h: &Harness| {
        h.actions.iter().rev().find_map(|a| match a {
            Action::StartTransfer { pump, .. } => Some(pump.max_bytes()),
            _ => None,
        })
    };
    assert_eq!(spec_max(&h), Some(None), "downloads have no limit");
    // APPE writes in place: what arrives past the limit never reaches the file, and
    // the upload is refused (what fit stays, as for any in-place write that fails).
    h.upload = (0..1500u32).map(|i| i as u8).collect();
    h.expect("PASV", "227 ");
    let got = h.send("APPE log.txt");
    assert_eq!(spec_max(&h), Some(Some(1000)));
    assert!(got.contains("552 Upload exceeds"), "{got}");
    let file = h.storage.read_file("/log.txt").unwrap();
    assert_eq!(file.len(), 3 + 1000);
    assert_eq!(&file[3..], &h.upload[..1000]);
    // REST+STOR likewise.
    h.expect("REST 1", "350 ");
    h.expect("PASV", "227 ");
    assert!(h.send("STOR log.txt").contains("552 "));
    let file = h.storage.read_file("/log.txt").unwrap();
    assert_eq!(&file[1..1001], &h.upload[..1000]);
    assert_eq!(file.len(), 1003, "nothing written past offset 1 + 1000");
}

/// Connects a manual-mode PASV: listening, then accepted.
fn manual_pasv(h: &mut Harness) {
    let before = h.actions.len();
    h.expect("PASV", "");
    let conn = h.actions[before..]
        .iter()
        .find_map(|a| match a {
            Action::ListenData { conn, .. } => Some(*conn),
            _ => None,
        })
        .unwrap();
    let peer = "192.0.2.7:40001".parse().unwrap();
    h.input(Input::DataListening { conn, port: 50000 });
    h.input(Input::DataAccepted { conn, peer });
}

#[test]
fn a_transfer_below_the_minimum_rate_is_dropped() {
    let cfg = SessionConfig {
        limits: wharf_core::policy::SiteLimits {
            min_bytes_per_second: 240,
            ..Default::default()
        },
        ..config()
    };
    let mut h = Harness::with_config(cfg);
    h.mode = DataMode::Manual;
    h.storage.add_file("/f", &[1; 100_000]);
    h.login();
    manual_pasv(&mut h);
    h.expect("RETR f", "150 ");
    let (xfer, _, _) = h.last_transfer().unwrap();
    // The pump judges the rate (over data-timeout windows); the session says why it
    // ended.
    let min = h.actions.iter().rev().find_map(|a| match a {
        Action::StartTransfer { pump, .. } => Some(pump.min_rate()),
        _ => None,
    });
    assert_eq!(min, Some(Some(240)));
    let start = h.wire.len();
    h.input(Input::TransferDone {
        xfer,
        outcome: TransferOutcome::TooSlow { bytes: 11_000 },
    });
    let got = String::from_utf8_lossy(&h.wire[start..]).into_owned();
    assert!(
        got.starts_with("426 Transfer below the minimum data rate"),
        "{got}"
    );
    h.expect("NOOP", "200 ");
}

#[test]
fn transfers_carry_the_bandwidth_limit_of_site_and_user() {
    let cfg = SessionConfig {
        limits: wharf_core::policy::SiteLimits {
            bandwidth: Some(1_000_000),
            user_bandwidth: [("alice".to_string(), 5_000)].into(),
            anonymous_bandwidth: Some(100),
            ..Default::default()
        },
        ..config()
    };
    for (user, pass, want) in [("alice", "secret", 5_000u64), ("anonymous", "x@y", 100)] {
        let mut h = Harness::with_config(cfg.clone());
        h.storage.add_file("/f", b"abc");
        h.expect(&format!("USER {user}"), "331 ");
        h.expect(&format!("PASS {pass}"), "230 ");
        h.expect("PASV", "227 ");
        h.expect("RETR f", "150 ");
        let rate = h.actions.iter().find_map(|a| match a {
            Action::StartTransfer { pump, .. } => Some(pump.rate_limit()),
            _ => None,
        });
        assert_eq!(rate, Some(Some(want)), "{user}");
    }
}

#[test]
fn rename_does_not_replace_unless_allowed() {
    let mut h = Harness::with_config(config());
    h.storage.add_file("/a", b"A");
    h.storage.add_file("/b", b"B");
    h.login();
    h.expect("RNFR a", "350 ");
    h.expect("RNTO b", "553 File exists");
    assert_eq!(h.storage.read_file("/b").unwrap(), b"B");
    h.expect("RNFR a", "350 ");
    h.expect("RNTO a", "553 ");
    h.expect("RNFR a", "350 ");
    h.expect("RNTO c", "250 ");
    let mut h = Harness::with_config(SessionConfig {
        allow_replace_on_rename: true,
        ..config()
    });
    h.storage.add_file("/a", b"A");
    h.storage.add_file("/b", b"B");
    h.login();
    h.expect("RNFR a", "350 ");
    h.expect("RNTO b", "250 ");
    assert_eq!(h.storage.read_file("/b").unwrap(), b"A");
}

fn shared(rules: ServerRules, cfg: SessionConfig) -> Server {
    Server::new(Arc::new(cfg), 0, 1, 100).with_policy(Arc::new(ServerPolicy::new(rules)))
}

#[test]
fn site_ip_rules_refuse_at_accept() {
    let t0 = origin();
    for (action, reply) in [
        (DenyAction::Refuse421, "421 "),
        (DenyAction::Refuse530, "530 "),
        (DenyAction::Drop, ""),
    ] {
        let cfg = SessionConfig {
            ip_rules: IpRules {
                allow_unlisted: false,
                rules: vec![IpRule {
                    net: IpNet::parse("127.0.0.1").unwrap(),
                    allow: true,
                }],
                deny_action: action,
                ..IpRules::default()
            },
            logging: Some(LogConfig {
                site: "s".into(),
                fields: LogFields::ALL,
                w3c: true,
            }),
            ..config()
        };
        let mut server = Server::new(Arc::new(cfg), 0, 1, 100);
        let refused = Harness::accept(&mut server, "127.0.0.2:5000", t0)
            .err()
            .unwrap();
        assert!(String::from_utf8_lossy(&refused.reply).starts_with(reply));
        assert_eq!(refused.reply.is_empty(), reply.is_empty());
        let rec = refused.log.unwrap();
        assert_eq!(
            (rec.sub, &*rec.method),
            (SubStatus::IpDenied, "ControlChannelOpened")
        );
        assert!(Harness::accept(&mut server, "127.0.0.1:5000", t0).is_ok());
        assert!(Harness::accept(&mut server, "[::ffff:127.0.0.1]:5000", t0).is_ok());
        assert_eq!(server.active_sessions(), 2);
    }
    // Server-wide rules come first.
    let rules = ServerRules {
        ip_rules: IpRules {
            rules: vec![IpRule {
                net: IpNet::parse("192.0.2.0/24").unwrap(),
                allow: false,
            }],
            ..IpRules::default()
        },
        ..ServerRules::default()
    };
    let mut server = shared(rules, config());
    assert!(Harness::accept(&mut server, "192.0.2.9:1", t0).is_err());
    assert!(Harness::accept(&mut server, "198.51.100.9:1", t0).is_ok());
}

fn bans() -> ServerRules {
    ServerRules {
        logon: LogonRestrictions {
            enabled: true,
            ..LogonRestrictions::default()
        },
        ..ServerRules::default()
    }
}

#[test]
fn repeated_failed_logins_ban_the_address_until_the_ban_lifts() {
    let t0 = origin();
    let mut server = shared(bans(), config());
    let attacker = "198.51.100.66:4000";
    // A session of the same address that is half-way through its login.
    let mut waiting = Harness::accept(&mut server, attacker, t0).unwrap();
    waiting.expect("USER alice", "331 ");
    let mut h = Harness::accept(&mut server, attacker, t0).unwrap();
    for _ in 0..2 {
        h.expect("USER alice", "331 ");
        assert!(h.fail_login("wrong").starts_with("530 Login incorrect"));
    }
    h.expect("USER alice", "331 ");
    let closing = h.fail_login("wrong");
    assert!(
        closing.contains("421 "),
        "third failure closes (per-connection limit)"
    );
    let mut h = Harness::accept(&mut server, attacker, t0).unwrap();
    h.expect("USER alice", "331 ");
    let banned = h.fail_login("wrong");
    assert!(
        banned.starts_with("530 ") && banned.contains("421 Too many failed logins"),
        "{banned}"
    );
    assert!(h.session.is_closed());
    // New connections are refused; the one waiting for PASS fails even with the right one.
    let refused = Harness::accept(&mut server, attacker, t0 + Duration::from_secs(1));
    assert!(String::from_utf8_lossy(&refused.err().unwrap().reply).starts_with("421 "));
    let got = waiting.send("PASS secret");
    assert!(got.starts_with("530 Login refused"), "{got}");
    assert!(waiting.session.is_closed());
    // Other addresses are not affected; the ban lifts after 30 s.
    let mut other = Harness::accept(&mut server, "198.51.100.67:4000", t0).unwrap();
    other.login();
    assert!(Harness::accept(&mut server, attacker, t0 + Duration::from_secs(29)).is_err());
    let mut back = Harness::accept(&mut server, attacker, t0 + Duration::from_secs(31)).unwrap();
    back.login();
}

#[test]
fn logging_only_mode_and_exempt_addresses_are_never_banned() {
    let t0 = origin();
    let mut logging_only = bans();
    logging_only.logon.logging_only = true;
    logging_only.logon.exempt = vec![IpNet::parse("10.0.0.0/8").unwrap()];
    for (rules, peer) in [
        (logging_only.clone(), "198.51.100.1:1"),
        (logging_only, "10.1.2.3:1"),
        (
            ServerRules {
                ip_rules: IpRules {
                    rules: vec![IpRule {
                        net: IpNet::parse("192.0.2.0/24").unwrap(),
                        allow: true,
                    }],
                    ..IpRules::default()
                },
                ..bans()
            },
            "192.0.2.5:1",
        ),
    ] {
        let mut server = shared(rules, config());
        for _ in 0..4 {
            let mut h = Harness::accept(&mut server, peer, t0).unwrap();
            for _ in 0..3 {
                h.send("USER alice");
                h.fail_login("wrong");
            }
        }
        let mut h = Harness::accept(&mut server, peer, t0).expect("never banned");
        h.login();
    }
}

#[test]
fn per_address_and_per_user_limits() {
    let t0 = origin();
    let rules = ServerRules {
        max_per_ip: 2,
        max_per_user: 1,
        max_clients_message: "Busy here.".into(),
        ..ServerRules::default()
    };
    let mut server = shared(rules, config());
    let a = Harness::accept(&mut server, "192.0.2.1:1", t0).unwrap();
    let mut b = Harness::accept(&mut server, "192.0.2.1:2", t0).unwrap();
    let refused = Harness::accept(&mut server, "192.0.2.1:3", t0)
        .err()
        .unwrap();
    assert_eq!(refused.reply, b"421 Busy here.\r\n");
    let mut c = Harness::accept(&mut server, "192.0.2.2:1", t0).unwrap();
    drop(a);
    server.session_closed(wharf_core::SessionId(0));
    let _d = Harness::accept(&mut server, "192.0.2.1:4", t0).expect("a slot was freed");

    b.login();
    c.expect("USER alice", "331 ");
    let got = c.send("PASS secret");
    assert!(
        got.starts_with("421 Too many sessions for this user"),
        "{got}"
    );
    b.expect("REIN", "220 ");
    let mut e = Harness::accept(&mut server, "192.0.2.3:1", t0).unwrap();
    e.login();
}

#[test]
fn uploads_in_progress_cannot_be_read_unless_allowed() {
    for allowed in [false, true] {
        let t0 = origin();
        let cfg = SessionConfig {
            allow_read_uploads_in_progress: allowed,
            ..config()
        };
        let mut server = Server::new(Arc::new(cfg), 0, 1, 100);
        let mut writer = Harness::accept(&mut server, "192.0.2.7:1", t0).unwrap();
        let mut reader = Harness::accept(&mut server, "192.0.2.7:2", t0).unwrap();
        reader.storage = writer.storage.clone();
        writer.storage.add_file("/log.txt", b"old");
        writer.mode = DataMode::Manual;
        writer.login();
        reader.login();
        manual_pasv(&mut writer);
        writer.expect("APPE log.txt", "150 ");
        reader.expect("PASV", "227 ");
        let got = reader.send("RETR log.txt");
        match allowed {
            false => assert!(got.starts_with("550 The file is being uploaded"), "{got}"),
            true => assert!(got.starts_with("150 "), "{got}"),
        }
        let (xfer, _, _) = writer.last_transfer().expect("the APPE transfer started");
        writer.input(Input::TransferDone {
            xfer,
            outcome: TransferOutcome::Complete { bytes: 0 },
        });
        assert!(writer.replies().contains("226 "));
        reader.expect("PASV", "227 ");
        reader.expect("RETR log.txt", "150 ");
    }
}

fn logged() -> (Harness, Vec<LogRecord>) {
    let cfg = SessionConfig {
        logging: Some(LogConfig {
            site: "files".into(),
            fields: LogFields::ALL,
            w3c: true,
        }),
        ..policy_config()
    };
    let mut h = Harness::with_config(cfg);
    h.storage.add_dir("/_private");
    h.storage.add_file("/_private/private.txt", b"secret");
    h.storage.add_file("/f.txt", b"12345");
    h.expect("USER alice", "331 ");
    h.expect("PASS secret", "230 ");
    h.expect("PASV", "227 ");
    h.expect("RETR f.txt", "150 ");
    h.advance(Duration::from_millis(250));
    h.expect("PASV", "227 ");
    h.expect("RETR _private/private.txt", "550 ");
    h.expect("SITE X", "502 ");
    h.expect("PASV", "227 ");
    h.upload = vec![1; 2000];
    h.send("STOR big.bin");
    h.expect("QUIT", "221 ");
    let logs = h
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Log(r) => Some((**r).clone()),
            _ => None,
        })
        .collect();
    (h, logs)
}

#[test]
fn every_command_is_logged_with_status_and_substatus() {
    let (_h, logs) = logged();
    let rows: Vec<(&str, u16, SubStatus)> =
        logs.iter().map(|r| (&*r.method, r.status, r.sub)).collect();
    assert_eq!(
        rows,
        [
            ("ControlChannelOpened", 220, SubStatus::None),
            ("USER", 331, SubStatus::None),
            ("PASS", 230, SubStatus::None),
            ("PASV", 227, SubStatus::None),
            ("RETR", 226, SubStatus::None),
            ("PASV", 227, SubStatus::None),
            ("RETR", 550, SubStatus::HiddenSegment),
            ("SITE", 502, SubStatus::CommandDenied),
            ("PASV", 227, SubStatus::None),
            ("STOR", 552, SubStatus::UploadTooLarge),
            ("QUIT", 221, SubStatus::None),
            ("ControlChannelClosed", 0, SubStatus::None),
        ]
    );
    // Every session's records open with ControlChannelOpened; ControlChannelClosed
    // carries the session's totals and how it ended.
    let closed = logs.last().unwrap();
    let sent: u64 = logs[..logs.len() - 1].iter().map(|r| r.bytes_sent).sum();
    let received: u64 = logs[..logs.len() - 1]
        .iter()
        .map(|r| r.bytes_received)
        .sum();
    assert_eq!((closed.bytes_sent, closed.bytes_received), (sent, received));
    assert_eq!(closed.debug.as_deref(), Some("quit"));
    assert_eq!(closed.user.as_deref(), Some("alice"));
    let logs = &logs[1..];
    let pass = &logs[1];
    assert_eq!(
        pass.uri.as_deref(),
        Some("***"),
        "passwords are never logged"
    );
    assert_eq!(logs[0].user.as_deref(), Some("alice"));
    let retr = &logs[3];
    assert_eq!(retr.uri.as_deref(), Some("/f.txt"));
    assert_eq!(retr.full_path.as_deref(), Some("/f.txt"));
    assert!(
        retr.bytes_sent >= 5,
        "data bytes count: {}",
        retr.bytes_sent
    );
    assert_eq!(retr.user.as_deref(), Some("alice"));
    assert_eq!(retr.data_bytes, 5, "the data bytes alone");
    let hidden = &logs[5];
    assert_eq!(hidden.uri.as_deref(), Some("/_private/private.txt"));
    assert_eq!(hidden.debug.as_deref(), Some("hidden-segment"));
    assert!(hidden.time_taken >= Duration::ZERO);
    let stor = &logs[8];
    // Cut at the first byte over the 1000-byte limit, whatever the chunks (plus the
    // command line itself, which cs-bytes counts too).
    assert_eq!(stor.bytes_received, 1001 + "STOR big.bin\r\n".len() as u64);
    assert!(logs
        .iter()
        .all(|r| &*r.site == "files" && r.session == logs[0].session));
}

#[test]
fn time_taken_spans_the_whole_command() {
    let cfg = SessionConfig {
        logging: Some(LogConfig {
            site: "files".into(),
            fields: LogFields::ALL,
            w3c: true,
        }),
        ..config()
    };
    let mut h = Harness::with_config(cfg);
    h.mode = DataMode::Manual;
    h.storage.add_file("/f", b"abc");
    h.login();
    manual_pasv(&mut h);
    h.expect("RETR f", "150 ");
    h.advance(Duration::from_millis(1500));
    let (xfer, _, _) = h.last_transfer().unwrap();
    h.input(Input::TransferDone {
        xfer,
        outcome: TransferOutcome::Complete { bytes: 3 },
    });
    let retr = h
        .actions
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::Log(r) if r.method == "RETR" => Some(r.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(retr.time_taken, Duration::from_millis(1500));
    assert_eq!(retr.status, 226);
}

#[test]
fn a_site_without_logging_emits_no_records() {
    let mut h = site();
    h.expect("PASV", "227 ");
    h.send("RETR public.txt");
    h.send("RETR _private/private.txt");
    h.send("QUIT");
    assert!(!h.actions.iter().any(|a| matches!(a, Action::Log(_))));
}

/// With virtual hosts the site is known only after HOST: the chosen site's IP rules
/// decide at login.
#[test]
fn a_site_chosen_by_host_applies_its_own_ip_rules() {
    use wharf_core::site::{Binding, Sites};
    let local: std::net::SocketAddr = harness::LOCAL.parse().unwrap();
    let bind = |site: usize, host: Option<&str>| Binding {
        ip: local.ip(),
        port: local.port(),
        host: host.map(str::to_string),
        site,
        implicit_tls: false,
    };
    let open = Arc::new(config());
    let closed = Arc::new(SessionConfig {
        site_name: "closed".into(),
        ip_rules: IpRules {
            allow_unlisted: false,
            rules: vec![IpRule {
                net: IpNet::parse("10.0.0.0/8").unwrap(),
                allow: true,
            }],
            deny_action: DenyAction::Refuse530,
            ..IpRules::default()
        },
        ..config()
    });
    let sites = Sites::new(
        vec![open, closed],
        vec![bind(0, None), bind(1, Some("closed.example"))],
    );
    let mut server = Server::with_sites(Arc::new(sites.unwrap()), 0, 1, 10);
    let t0 = origin();
    // The default site admits the client (192.0.2.7) and lets it log in.
    let mut h = Harness::accept(&mut server, harness::PEER, t0).unwrap();
    h.login();
    // Choosing the closed site: refused at login, and closed.
    let mut h = Harness::accept(&mut server, harness::PEER, t0).unwrap();
    h.expect("HOST closed.example", "220");
    h.expect("USER alice", "331 ");
    h.expect("PASS secret", "530 Access denied for your address.");
    assert!(h.session.is_closed());
    let mut h = Harness::accept(&mut server, "10.1.2.3:5000", t0).unwrap();
    h.expect("HOST closed.example", "220");
    h.login();
}

/// An administrator's disconnect (the sessions page): a running transfer is stopped,
/// the client is told 421, the session closes, and its record says why.
#[test]
fn a_disconnect_stops_the_transfer_says_421_and_is_logged() {
    let cfg = SessionConfig {
        logging: Some(LogConfig {
            site: "files".into(),
            fields: LogFields::ALL,
            w3c: true,
        }),
        ..config()
    };
    let mut h = Harness::with_config(cfg);
    h.storage.add_file("/big.bin", &[7; 100_000]);
    h.login();
    h.mode = DataMode::Manual;
    h.expect("PORT 192,0,2,7,200,10", "200 ");
    h.expect("RETR big.bin", "150 ");
    h.connect_data();
    let (xfer, _, _) = h.take_transfer();
    let start = h.wire.len();
    h.input(Input::Disconnect);
    assert_eq!(
        &h.wire[start..],
        b"421 Disconnected by the server administrator.\r\n"
    );
    assert!(h.actions.contains(&Action::AbortTransfer { xfer }));
    assert!(h.actions.contains(&Action::Close));
    assert!(h.session.is_closed());
    let closed = h
        .actions
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::Log(r) if r.method == "ControlChannelClosed" => Some(r.clone()),
            _ => None,
        })
        .expect("a ControlChannelClosed record");
    assert_eq!(closed.sub, SubStatus::AdminDisconnect);
    assert_eq!(closed.debug.as_deref(), Some("admin-disconnect"));
}

/// The live sessions board: an admitted session is on it with what it does, and leaves
/// it when it is dropped.
#[test]
fn the_board_shows_sessions_while_they_live() {
    use wharf_core::monitor::Board;
    let board = Board::new();
    let server = Server::new(Arc::new(config()), 0, 1, 10).with_board(board.clone());
    let mut h = Harness::build(server, "127.0.0.1:21", harness::alice());
    assert_eq!(board.len(), 1);
    h.login();
    let v = board.snapshot();
    assert_eq!(v[0].user.as_deref(), Some("alice"));
    assert!(v[0].logged_in);
    assert_eq!(v[0].command, None, "idle between commands");
    assert_eq!(v[0].site.as_ref(), "default");
    drop(h);
    assert!(board.is_empty());
}
