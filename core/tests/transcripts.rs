//! Exact-reply transcripts: bytes in, replies and actions out, for every command.

mod harness;

use std::time::Duration;

use harness::Body;
use harness::{DataMode, Harness};
use wharf_core::{Action, Input, TransferOutcome};

#[test]
fn greeting_and_login() {
    let mut h = Harness::new();
    assert_eq!(h.replies(), "220 wharf FTP server ready\r\n");
    h.expect("PASS x", "503 ");
    h.expect("USER alice", "331 Password required for alice.");
    assert_eq!(h.fail_login("wrong"), "530 Login incorrect.\r\n");
    h.expect("USER alice", "331 ");
    h.expect("PASS secret", "230 User alice logged in.");
    h.expect("USER bob", "530 ");
    h.expect("PASS again", "503 ");
}

#[test]
fn anonymous_login_asks_for_an_email() {
    let mut h = Harness::new();
    h.expect(
        "USER anonymous",
        "331 Anonymous login ok, send your e-mail address as password.",
    );
    h.expect("PASS me@example.com", "230 ");
    let mut cfg = harness::config();
    cfg.allow_anonymous = false;
    let mut h = Harness::with_config(cfg);
    h.expect("USER ftp", "530 Anonymous access is not allowed");
}

#[test]
fn three_wrong_passwords_close_the_connection() {
    let mut h = Harness::new();
    for _ in 0..2 {
        h.expect("USER alice", "331 ");
        assert!(h.fail_login("nope").starts_with("530 "));
    }
    h.expect("USER alice", "331 ");
    let r = h.fail_login("nope");
    assert!(r.contains("530 ") && r.contains("421 "), "{r}");
    assert!(h.session.is_closed());
    assert!(h.actions.contains(&Action::Close));
}

#[test]
fn commands_before_login_are_refused() {
    let mut h = Harness::new();
    for cmd in [
        "PWD",
        "CWD /",
        "LIST",
        "RETR x",
        "STOR x",
        "PASV",
        "PORT 1,2,3,4,5,6",
        "SIZE x",
        "STAT /",
    ] {
        h.expect(cmd, "530 ");
    }
    for (cmd, code) in [
        ("SYST", "215 UNIX Type: L8"),
        ("NOOP", "200 "),
        ("FEAT", "211-"),
        ("HELP", "214-"),
        ("STAT", "211-"),
    ] {
        h.expect(cmd, code);
    }
}

#[test]
fn unknown_unimplemented_and_malformed() {
    let mut h = Harness::new();
    h.login();
    h.expect("FOO", "500 Unknown command.");
    h.expect("SITE CHMOD 777 x", "502 ");
    h.expect("SMNT x", "502 ");
    h.expect("", "500 ");
    assert!(h.send_raw(b"CWD \xff\xfe\r\n").starts_with("501 "));
    h.expect("RNTO x", "503 RNFR required first.");
    h.expect("ACCT x", "202 ");
}

#[test]
fn verbs_are_case_insensitive_and_x_aliases_work() {
    let mut h = Harness::new();
    h.login();
    h.expect("pwd", "257 \"/\" is the current directory.");
    h.expect("xpwd", "257 ");
    h.storage.add_dir("/docs");
    h.expect("xcwd docs", "250 ");
    h.expect("XCUP", "250 ");
    h.expect("Pwd", "257 \"/\"");
}

#[test]
fn feat_lists_exactly_what_is_implemented() {
    let mut h = Harness::new();
    let feat = h.send("FEAT");
    assert!(feat.starts_with("211-Features:\r\n"));
    assert!(feat.ends_with("211 End\r\n"));
    for f in [
        "EPRT",
        "EPSV",
        "HOST",
        "MDTM",
        "MFMT",
        "MLST type*;size*;modify*;perm*;",
        "PASV",
        "REST STREAM",
        "SIZE",
        "UTF8",
    ] {
        assert!(
            feat.contains(&format!("\r\n {f}")),
            "FEAT lacks {f}: {feat}"
        );
    }
    assert!(
        !feat.contains("AUTH"),
        "no TLS configured, so no AUTH: {feat}"
    );
}

#[test]
fn opts_utf8_and_mlst() {
    let mut h = Harness::new();
    h.expect("OPTS UTF8 ON", "200 ");
    h.expect("OPTS UTF8 OFF", "200 ");
    h.expect("OPTS UTF8 MAYBE", "501 ");
    h.expect("OPTS MLST type;size;", "200 MLST OPTS type;size;");
    let feat = h.send("FEAT");
    assert!(feat.contains(" MLST type*;size*;modify;perm;"), "{feat}");
    h.expect("OPTS NOPE", "501 ");
}

#[test]
fn type_mode_stru() {
    let mut h = Harness::new();
    h.login();
    h.expect("TYPE A", "200 Type set to A.");
    h.expect("TYPE A N", "200 Type set to A.");
    h.expect("TYPE I", "200 Type set to I.");
    h.expect("TYPE L 8", "200 Type set to I.");
    h.expect("TYPE E", "504 ");
    h.expect("TYPE L 7", "504 ");
    h.expect("TYPE X", "501 ");
    h.expect("MODE S", "200 ");
    h.expect("MODE B", "504 ");
    h.expect("MODE Q", "501 ");
    h.expect("STRU F", "200 ");
    h.expect("STRU R", "504 ");
    h.expect("ALLO 1000", "200 ");
}

#[test]
fn host_is_only_before_login() {
    let mut h = Harness::new();
    h.expect("HOST", "501 ");
    h.expect("HOST ftp.example.com", "220 ");
    h.expect("USER alice", "331 ");
    h.expect("HOST ftp.example.com", "503 ");
}

#[test]
fn navigation_and_pwd_quoting() {
    let mut h = Harness::new();
    h.storage.add_dir("/a \"quoted\" dir");
    h.storage.add_file("/file.txt", b"x");
    h.login();
    h.expect("CWD /a \"quoted\" dir", "250 ");
    h.expect(
        "PWD",
        "257 \"/a \"\"quoted\"\" dir\" is the current directory.",
    );
    h.expect("CDUP", "250 ");
    h.expect("CDUP", "250 ");
    h.expect("PWD", "257 \"/\"");
    h.expect("CWD ../../..", "250 ");
    h.expect("PWD", "257 \"/\"");
    h.expect("CWD missing", "550 No such file or directory.");
    h.expect("CWD file.txt", "550 Not a directory.");
    h.expect("CWD", "501 ");
}

#[test]
fn mkd_rmd_dele_rename() {
    let mut h = Harness::new();
    h.login();
    h.expect("MKD new", "257 \"/new\" created.");
    h.expect("MKD new", "550 File exists.");
    h.storage.add_file("/new/f", b"1");
    h.expect("RMD new", "550 Directory not empty.");
    h.expect("RNFR /new/f", "350 ");
    h.expect("RNTO /g", "250 ");
    assert_eq!(h.storage.read_file("/g").as_deref(), Some(&b"1"[..]));
    h.expect("RMD new", "250 ");
    h.expect("DELE g", "250 ");
    h.expect("DELE g", "550 ");
    h.expect("RNFR nothing", "550 ");
    h.expect("RNTO x", "503 ");
    // The root is never renamed.
    h.expect("RNFR /", "550 ");
    // RNFR holds for the very next command only.
    h.storage.add_file("/h", b"2");
    h.expect("RNFR h", "350 ");
    h.expect("NOOP", "200 ");
    h.expect("RNTO x", "503 ");
    h.expect("MKD", "501 ");
}

#[test]
fn size_mdtm_mfmt_mlst() {
    let mut h = Harness::new();
    h.storage.add_file("/f.bin", &[0u8; 1234]);
    h.storage.add_dir("/d");
    h.login();
    h.expect("SIZE f.bin", "213 1234\r\n");
    h.expect("SIZE d", "550 ");
    h.expect("SIZE nope", "550 ");
    let mdtm = h.expect("MDTM f.bin", "213 ");
    assert_eq!(mdtm.trim_end().len(), "213 YYYYMMDDHHMMSS".len(), "{mdtm}");
    h.expect(
        "MFMT 20200102030405 f.bin",
        "213 Modify=20200102030405; /f.bin",
    );
    h.expect("MDTM f.bin", "213 20200102030405\r\n");
    h.expect("MFMT 2020 f.bin", "501 ");
    h.expect("MDTM 20210102030405 f.bin", "213 ");
    h.expect("MDTM f.bin", "213 20210102030405\r\n");
    let mlst = h.expect(
        "MLST f.bin",
        "250-Listing /f.bin\r\n type=file;size=1234;modify=20210102030405;perm=",
    );
    assert!(mlst.ends_with(" /f.bin\r\n250 End\r\n"), "{mlst}");
}

#[test]
fn anonymous_cannot_write() {
    let mut h = Harness::new();
    h.storage.add_file("/f", b"1");
    h.expect("USER anonymous", "331 ");
    h.expect("PASS a@b", "230 ");
    for cmd in [
        "MKD x",
        "RMD x",
        "DELE f",
        "RNFR f",
        "MFMT 20200101000000 f",
    ] {
        h.expect(cmd, "550 Permission denied.");
    }
    h.expect("EPSV", "229 ");
    h.expect("STOR x", "550 Permission denied.");
    h.expect("SIZE f", "213 1");
}

#[test]
fn pasv_and_epsv_replies() {
    let mut h = Harness::new();
    h.mode = DataMode::Manual;
    h.login();
    h.send("PASV");
    let Some(&Action::ListenData {
        conn,
        ip,
        ref ports,
    }) = h.actions.last()
    else {
        panic!("no ListenData: {:?}", h.actions)
    };
    assert_eq!(ip.to_string(), "192.0.2.1");
    assert_eq!(*ports, 50000..=50010);
    let start = h.wire.len();
    h.input(Input::DataListening { conn, port: 50001 });
    let r = String::from_utf8_lossy(&h.wire[start..]).into_owned();
    assert_eq!(r, "227 Entering Passive Mode (192,0,2,1,195,81).\r\n");
    h.send("EPSV");
    assert!(
        h.actions.contains(&Action::CloseData { conn }),
        "old listener closed"
    );
    let Some(&Action::ListenData { conn, .. }) = h.actions.last() else {
        panic!()
    };
    let start = h.wire.len();
    h.input(Input::DataListening { conn, port: 50002 });
    assert_eq!(
        &h.wire[start..],
        b"229 Entering Extended Passive Mode (|||50002|)\r\n"
    );
    h.expect("EPSV 2", "522 ");
    h.expect("EPSV ALL", "200 ");
    h.expect("PASV", "503 ");
    h.expect("PORT 192,0,2,7,200,10", "503 ");
    h.expect("EPRT |1|192.0.2.7|50000|", "503 ");
}

#[test]
fn pasv_advertises_the_external_ip() {
    let mut cfg = harness::config();
    cfg.external_ip = Some("203.0.113.9".parse().unwrap());
    let mut h = Harness::with_config(cfg);
    h.mode = DataMode::Manual;
    h.login();
    h.send("PASV");
    let Some(&Action::ListenData { conn, .. }) = h.actions.last() else {
        panic!()
    };
    let start = h.wire.len();
    h.input(Input::DataListening { conn, port: 1024 });
    assert_eq!(
        &h.wire[start..],
        b"227 Entering Passive Mode (203,0,113,9,4,0).\r\n"
    );
}

#[test]
fn port_and_eprt_refuse_bounces() {
    let mut h = Harness::new();
    h.login();
    h.expect("PORT 10,0,0,1,200,10", "504 ");
    h.expect("PORT 192,0,2,7,0,21", "504 ");
    h.expect("PORT 192,0,2,7,300,1", "501 ");
    h.expect("PORT nonsense", "501 ");
    h.expect("EPRT |1|10.0.0.1|5000|", "504 ");
    h.expect("EPRT |3|x|5000|", "522 ");
    h.expect("EPRT |2|::1|5000|", "504 ");
    h.expect("PORT 192,0,2,7,200,10", "200 PORT command successful.");
    h.expect("EPRT |1|192.0.2.7|5000|", "200 EPRT command successful.");
    assert!(
        !h.actions
            .iter()
            .any(|a| matches!(a, Action::ConnectData { .. })),
        "no connect before a transfer"
    );
}

/// lftp over IPv6 sends `EPRT |2|::|port|`: the unspecified address names no host but
/// the client's own, in either command and family. A privileged port stays refused.
#[test]
fn the_unspecified_address_means_the_client() {
    for (cmd, port) in [
        ("EPRT |2|::|40001|", 40001),
        ("EPRT |1|0.0.0.0|40002|", 40002),
        ("PORT 0,0,0,0,156,67", 40003),
    ] {
        let mut h = Harness::new();
        h.storage.add_file("/hello.txt", b"hello world\n");
        h.login();
        h.expect("EPRT |2|::|21|", "504 ");
        h.expect(cmd, "200 ");
        let r = h.send("RETR hello.txt");
        assert!(r.ends_with("226 Transfer complete.\r\n"), "{cmd}: {r}");
        let target = h.actions.iter().find_map(|a| match a {
            Action::ConnectData { target, .. } => Some(target.to_string()),
            _ => None,
        });
        assert_eq!(target, Some(format!("192.0.2.7:{port}")), "{cmd}");
    }
}

#[test]
fn retr_over_port_connects_to_the_client() {
    let mut h = Harness::new();
    h.storage.add_file("/hello.txt", b"hello world\n");
    h.login();
    h.expect("PORT 192,0,2,7,200,10", "200 ");
    let r = h.send("RETR hello.txt");
    assert_eq!(
        r,
        "150 Opening BINARY mode data connection for /hello.txt (12 bytes).\r\n226 Transfer complete.\r\n"
    );
    assert_eq!(h.received, b"hello world\n");
    let target = h.actions.iter().find_map(|a| match a {
        Action::ConnectData { target, .. } => Some(target.to_string()),
        _ => None,
    });
    assert_eq!(target.as_deref(), Some("192.0.2.7:51210"));
    h.expect("RETR hello.txt", "425 Use PORT");
}

#[test]
fn retr_missing_file_is_550_without_a_data_connection() {
    let mut h = Harness::new();
    h.login();
    h.expect("PASV", "227 ");
    h.expect("RETR nope", "550 No such file or directory.");
    h.expect("RETR", "501 ");
}

#[test]
fn stor_then_retr_round_trips_and_ascii_converts() {
    let mut h = Harness::new();
    h.login();
    h.upload = b"line one\nline two\n".to_vec();
    h.expect("EPSV", "229 ");
    let r = h.send("STOR up.txt");
    assert_eq!(
        r,
        "150 Opening BINARY mode data connection for /up.txt.\r\n226 Transfer complete.\r\n"
    );
    assert_eq!(
        h.storage.read_file("/up.txt").unwrap(),
        b"line one\nline two\n"
    );
    h.expect("TYPE A", "200 ");
    h.expect("EPSV", "229 ");
    h.expect("RETR up.txt", "150 Opening ASCII mode");
    assert_eq!(h.received, b"line one\r\nline two\r\n");
    h.upload = b"a\r\nb\r\n".to_vec();
    h.expect("EPSV", "229 ");
    h.expect("STOR crlf.txt", "150 ");
    assert_eq!(h.storage.read_file("/crlf.txt").unwrap(), b"a\nb\n");
}

#[test]
fn rest_resumes_retr_and_stor_then_clears() {
    let mut h = Harness::new();
    h.storage.add_file("/f", b"0123456789");
    h.login();
    h.expect("REST 4", "350 Restarting at 4.");
    h.expect("EPSV", "229 ");
    h.expect("RETR f", "150 ");
    assert_eq!(h.received, b"456789");
    h.expect("EPSV", "229 ");
    h.expect("RETR f", "150 ");
    assert_eq!(
        h.received, b"0123456789",
        "REST applies to one transfer only"
    );
    h.upload = b"AB".to_vec();
    h.expect("REST 3", "350 ");
    h.expect("EPSV", "229 ");
    h.expect("STOR f", "150 ");
    assert_eq!(h.storage.read_file("/f").unwrap(), b"012AB56789");
    h.expect("REST x", "501 ");
}

#[test]
fn appe_and_stou() {
    let mut h = Harness::new();
    h.storage.add_file("/log", b"one\n");
    h.login();
    h.upload = b"two\n".to_vec();
    h.expect("EPSV", "229 ");
    h.expect("APPE log", "150 ");
    assert_eq!(h.storage.read_file("/log").unwrap(), b"one\ntwo\n");
    h.expect("EPSV", "229 ");
    let r = h.send("STOU log");
    let name = r
        .lines()
        .next()
        .unwrap()
        .strip_prefix("150 FILE: ")
        .expect(&r)
        .to_string();
    assert_ne!(name, "log");
    assert!(
        r.contains(&format!(
            "226 Transfer complete (unique file name: {name})."
        )),
        "{r}"
    );
    assert_eq!(h.storage.read_file(&format!("/{name}")).unwrap(), b"two\n");
    assert_eq!(h.storage.read_file("/log").unwrap(), b"one\ntwo\n");
}

#[test]
fn list_nlst_mlsd_and_flags() {
    let mut h = Harness::new();
    h.storage.add_file("/b.txt", b"12");
    h.storage.add_file("/a.log", b"1");
    h.storage.add_dir("/sub");
    h.login();
    h.expect("EPSV", "229 ");
    h.expect(
        "NLST",
        "150 Here comes the directory listing.\r\n226 Directory send OK.\r\n",
    );
    assert_eq!(h.received, b"a.log\r\nb.txt\r\nsub\r\n");
    h.expect("EPSV", "229 ");
    h.expect("LIST -la", "150 ");
    let text = String::from_utf8(h.received.clone()).unwrap();
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("-rw-r--r--") && lines[0].ends_with(" a.log"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("drwxr-xr-x") && lines[2].ends_with(" sub"),
        "{text}"
    );
    h.expect("EPSV", "229 ");
    h.expect("MLSD", "150 ");
    let text = String::from_utf8(h.received.clone()).unwrap();
    assert!(
        text.contains("type=file;size=2;") && text.contains(" b.txt\r\n"),
        "{text}"
    );
    assert!(text.contains("type=dir;"), "{text}");
    h.expect("EPSV", "229 ");
    h.expect("NLST *.txt", "150 ");
    assert_eq!(h.received, b"b.txt\r\n");
    h.expect("EPSV", "229 ");
    h.expect("LIST b.txt", "150 ");
    assert!(String::from_utf8_lossy(&h.received).ends_with(" b.txt\r\n"));
    h.expect("EPSV", "229 ");
    h.expect("MLSD b.txt", "501 ");
    // Each refusal spent the data channel: a listing needs a new one every time.
    h.expect("LIST missing", "425 ");
    h.expect("EPSV", "229 ");
    h.expect("LIST missing", "550 ");
    h.expect("EPSV", "229 ");
    h.expect("LIST", "150 ");
    h.expect("NLST", "425 ");
}

#[test]
fn stat_with_a_path_lists_over_the_control_channel() {
    let mut h = Harness::new();
    h.storage.add_file("/x", b"1");
    h.login();
    let r = h.expect("STAT /", "212-Status follows:\r\n");
    assert!(
        r.contains(" x\r\n") && r.ends_with("212 End of status.\r\n"),
        "{r}"
    );
    h.expect("STAT x", "213-");
}

#[test]
fn abor_when_idle_and_mid_transfer() {
    let mut h = Harness::new();
    h.storage.add_file("/big", &[7u8; 1000]);
    h.login();
    h.expect("ABOR", "225 ");
    h.mode = DataMode::Manual;
    h.expect("PORT 192,0,2,7,200,10", "200 ");
    h.expect("RETR big", "150 ");
    h.connect_data();
    let (xfer, _, _) = h.last_transfer().unwrap();
    assert_eq!(
        h.send_raw(b"\xff\xf4\xff\xf2ABOR\r\n"),
        "",
        "replies wait for the transfer's end"
    );
    assert!(h.actions.contains(&Action::AbortTransfer { xfer }));
    let start = h.wire.len();
    h.input(Input::TransferDone {
        xfer,
        outcome: TransferOutcome::Aborted { bytes: 100 },
    });
    assert_eq!(
        &h.wire[start..],
        b"426 Transfer aborted.\r\n226 ABOR successful.\r\n"
    );
    h.expect("NOOP", "200 ");
}

/// ABOR that arrives after an upload had completed: the upload is kept, so the client
/// is told it completed (226), then ABOR's own 226 (RFC 959), never a 426 for a file
/// that was stored.
#[test]
fn abor_after_an_upload_completed_says_226_and_keeps_it() {
    let mut h = Harness::new();
    h.login();
    h.mode = DataMode::Manual;
    h.expect("PORT 192,0,2,7,200,10", "200 ");
    h.expect("STOR done.txt", "150 ");
    h.connect_data();
    let (xfer, file, mut pump) = h.take_transfer();
    h.send_raw(b"ABOR\r\n");
    assert!(h.actions.contains(&Action::AbortTransfer { xfer }));
    // The pump had already read the whole body and its FIN.
    let peer = harness::Peer {
        upload: b"all of it",
        close_notify: false,
    };
    let seen = h.run_pump(&mut pump, file, harness::Client::Plain, peer);
    assert_eq!(seen.outcome, TransferOutcome::Complete { bytes: 9 });
    let start = h.wire.len();
    h.input(Input::TransferDone {
        xfer,
        outcome: seen.outcome,
    });
    assert_eq!(
        &h.wire[start..],
        b"226 Transfer complete.\r\n226 ABOR successful.\r\n"
    );
    assert_eq!(
        h.storage.read_file("/done.txt").as_deref(),
        Some(&b"all of it"[..])
    );
}

#[test]
fn commands_during_a_transfer_wait_but_quit_waits_for_the_final_reply() {
    let mut h = Harness::new();
    h.storage.add_file("/f", b"data");
    h.login();
    h.mode = DataMode::Manual;
    h.expect("PORT 192,0,2,7,200,10", "200 ");
    h.expect("RETR f", "150 ");
    h.connect_data();
    assert_eq!(h.send("PWD"), "", "PWD waits for the transfer");
    assert!(h.send("STAT").starts_with("213 Transfer in progress"));
    h.input(Input::TransferProgress {
        xfer: h.last_transfer().unwrap().0,
        bytes: 2,
    });
    let (xfer, _, _) = h.last_transfer().unwrap();
    let start = h.wire.len();
    h.input(Input::TransferDone {
        xfer,
        outcome: TransferOutcome::Complete { bytes: 4 },
    });
    assert_eq!(
        String::from_utf8_lossy(&h.wire[start..]),
        "226 Transfer complete.\r\n257 \"/\" is the current directory.\r\n"
    );
    h.expect("PORT 192,0,2,7,200,10", "200 ");
    h.expect("RETR f", "150 ");
    h.connect_data();
    let (xfer, _, _) = h.last_transfer().unwrap();
    assert_eq!(h.send("QUIT"), "");
    assert!(!h.session.is_closed());
    let start = h.wire.len();
    h.input(Input::TransferDone {
        xfer,
        outcome: TransferOutcome::Complete { bytes: 4 },
    });
    assert_eq!(
        &h.wire[start..],
        b"226 Transfer complete.\r\n221 Goodbye.\r\n"
    );
    assert!(h.session.is_closed());
}

#[test]
fn pipelined_commands_are_answered_in_order() {
    let mut h = Harness::new();
    let r = h.send_raw(b"USER alice\r\nPASS secret\r\nPWD\nSYST\r\nNOOP\r\n");
    assert_eq!(
        r,
        "331 Password required for alice.\r\n230 User alice logged in.\r\n257 \"/\" is the current directory.\r\n215 UNIX Type: L8\r\n200 NOOP ok.\r\n"
    );
}

#[test]
fn overlong_line_is_500_and_the_parser_recovers() {
    let mut h = Harness::new();
    let mut line = vec![b'A'; 5000];
    line.extend_from_slice(b"\r\nNOOP\r\n");
    let r = h.send_raw(&line);
    assert_eq!(r, "500 Command line too long.\r\n200 NOOP ok.\r\n");
}

#[test]
fn passive_connection_from_a_foreign_address_is_ignored() {
    let mut h = Harness::new();
    h.storage.add_file("/f", b"secret");
    h.mode = DataMode::Manual;
    h.login();
    h.send("PASV");
    let Some(&Action::ListenData { conn, .. }) = h.actions.last() else {
        panic!()
    };
    h.input(Input::DataListening { conn, port: 50000 });
    h.input(Input::DataAccepted {
        conn,
        peer: "198.51.100.1:5555".parse().unwrap(),
    });
    h.expect("RETR f", "150 ");
    assert!(
        h.last_transfer().is_none(),
        "the thief's connection is never used"
    );
    h.input(Input::DataAccepted {
        conn,
        peer: "192.0.2.7:5555".parse().unwrap(),
    });
    assert!(matches!(h.last_transfer(), Some((_, c, Body::Send(_))) if c == conn));
}

#[test]
fn data_connection_timeout_gives_425() {
    let mut h = Harness::new();
    h.storage.add_file("/f", b"x");
    h.mode = DataMode::Manual;
    h.login();
    h.expect("PORT 192,0,2,7,200,10", "200 ");
    h.expect("RETR f", "150 ");
    let r = h.advance(Duration::from_secs(31));
    assert!(r.starts_with("425 "), "{r}");
    assert!(h
        .actions
        .iter()
        .any(|a| matches!(a, Action::CloseData { .. })));
    h.expect("NOOP", "200 ");
}

#[test]
fn failed_connect_gives_425_and_releases_the_file() {
    let mut h = Harness::new();
    h.storage.add_file("/f", b"x");
    h.mode = DataMode::Manual;
    h.login();
    h.expect("PORT 192,0,2,7,200,10", "200 ");
    h.expect("RETR f", "150 ");
    let conn = h.last_connect();
    let start = h.wire.len();
    h.input(Input::DataFailed {
        conn,
        error: wharf_core::DataError::Refused,
    });
    assert!(String::from_utf8_lossy(&h.wire[start..]).starts_with("425 "));
    assert!(h.files.is_empty(), "the opened file was closed");
}

#[test]
fn stalled_transfer_is_aborted_with_426() {
    let mut h = Harness::new();
    h.mode = DataMode::Manual;
    h.login();
    h.expect("PORT 192,0,2,7,200,10", "200 ");
    h.expect("STOR f", "150 ");
    h.connect_data();
    let (xfer, file, mut pump) = h.take_transfer();
    // The pump keeps the stall timer: 10 bytes at 20 s re-arm it, silence does not.
    let mut f = h.files.remove(&file.unwrap()).unwrap();
    let mut io = harness::MemIo {
        incoming: Vec::new(),
        incoming_eof: false,
        outgoing: Vec::new(),
        shut: false,
        file: Some(&mut f),
    };
    let start = h.now;
    assert_eq!(pump.run(start, &mut io, 1 << 20), wharf_core::Run::Readable);
    assert_eq!(pump.poll_timeout(), Some(start + Duration::from_secs(30)));
    io.incoming.extend_from_slice(&[b'x'; 10]);
    let t = start + Duration::from_secs(20);
    assert_eq!(pump.run(t, &mut io, 1 << 20), wharf_core::Run::Readable);
    assert_eq!(pump.poll_timeout(), Some(t + Duration::from_secs(30)));
    pump.handle_timeout(t + Duration::from_secs(29));
    assert_eq!(pump.run(t, &mut io, 1 << 20), wharf_core::Run::Readable);
    pump.handle_timeout(t + Duration::from_secs(30));
    assert_eq!(pump.run(t, &mut io, 1 << 20), wharf_core::Run::Done);
    let outcome = std::iter::from_fn(|| pump.poll_input())
        .find_map(|i| match i {
            Input::TransferDone { outcome, .. } => Some(outcome),
            _ => None,
        })
        .unwrap();
    assert_eq!(outcome, TransferOutcome::Stalled { bytes: 10 });
    h.files.insert(file.unwrap(), f);
    let start = h.wire.len();
    h.input(Input::TransferDone { xfer, outcome });
    assert!(String::from_utf8_lossy(&h.wire[start..]).starts_with("426 No progress"));
    assert!(
        !h.storage.exists("/f"),
        "a failed upload leaves nothing behind"
    );
}

#[test]
fn broken_upload_is_discarded_unless_configured_to_keep() {
    for keep in [false, true] {
        let mut cfg = harness::config();
        cfg.keep_partial_uploads = keep;
        let mut h = Harness::with_config(cfg);
        h.mode = DataMode::Manual;
        h.login();
        h.expect("PORT 192,0,2,7,200,10", "200 ");
        h.expect("STOR part", "150 ");
        h.connect_data();
        let (xfer, _, body) = h.last_transfer().unwrap();
        let Body::Receive(file) = body else { panic!() };
        if let Some(wharf_core::backend::OpenFile::Write(w)) = h.files.get_mut(&file) {
            std::io::Write::write_all(w, b"half").unwrap();
        }
        let start = h.wire.len();
        h.input(Input::TransferDone {
            xfer,
            outcome: TransferOutcome::ConnectionLost { bytes: 4 },
        });
        assert!(String::from_utf8_lossy(&h.wire[start..]).starts_with("426 "));
        assert_eq!(
            h.storage.exists("/part"),
            keep,
            "keep_partial_uploads = {keep}"
        );
    }
}

#[test]
fn full_disk_is_452() {
    let mut h = Harness::new();
    h.storage.set_faults(wharf_core::memfs::Faults {
        capacity: Some(3),
        ..Default::default()
    });
    h.login();
    h.upload = b"too many bytes".to_vec();
    h.expect("EPSV", "229 ");
    let r = h.send("STOR big");
    assert!(r.contains("\r\n452 "), "{r}");
    assert!(!h.storage.exists("/big"));
}

#[test]
fn login_and_idle_timeouts() {
    let mut h = Harness::new();
    assert_eq!(h.advance(Duration::from_secs(29)), "");
    let r = h.advance(Duration::from_secs(2));
    assert!(r.starts_with("421 Login timeout"), "{r}");
    assert!(h.session.is_closed());
    let mut h = Harness::new();
    h.login();
    h.advance(Duration::from_secs(100));
    h.expect("NOOP", "200 ");
    assert_eq!(
        h.advance(Duration::from_secs(100)),
        "",
        "NOOP reset the idle timer"
    );
    let r = h.advance(Duration::from_secs(21));
    assert!(r.starts_with("421 Timeout (120 seconds)"), "{r}");
    assert!(h.session.is_closed());
    assert_eq!(h.session.poll_timeout(), None);
}

#[test]
fn rein_and_quit() {
    let mut h = Harness::new();
    h.login();
    h.expect("REIN", "220 ");
    h.expect("PWD", "530 ");
    h.login();
    h.expect("QUIT", "221 Goodbye.");
    assert!(h.session.is_closed());
    assert_eq!(h.send("NOOP"), "", "nothing after close");
}

#[test]
fn shutdown_says_421_and_control_eof_closes_quietly() {
    let mut h = Harness::new();
    h.login();
    let start = h.wire.len();
    h.input(Input::Shutdown);
    assert!(String::from_utf8_lossy(&h.wire[start..]).starts_with("421 Server shutting down"));
    assert!(h.session.is_closed());
    let mut h = Harness::new();
    h.login();
    let start = h.wire.len();
    h.input(Input::ControlEof);
    assert_eq!(h.wire.len(), start);
    assert!(h.session.is_closed());
}

#[test]
fn security_verbs_without_tls() {
    let mut h = Harness::new();
    h.expect("AUTH TLS", "502 ");
    h.expect("PBSZ 0", "503 ");
    h.expect("PROT P", "503 ");
    h.expect("CCC", "533 ");
}

#[test]
fn replies_never_carry_raw_line_breaks_from_file_names() {
    let mut h = Harness::new();
    h.login();
    // A CR inside a name is refused before it could reach a reply or a listing.
    let r = h.send_raw(b"MKD evil\r226 fake\r\n");
    assert_eq!(r, "501 Argument contains CR or NUL.\r\n");
    assert!(!h.storage.exists("/evil\r226 fake"));
}

#[test]
fn the_tail_of_an_overlong_line_is_never_a_command() {
    let mut cfg = harness::config();
    cfg.max_line = 100;
    let mut h = Harness::with_config(cfg);
    assert_eq!(h.send_raw(&[b'X'; 150]), "500 Command line too long.\r\n");
    assert_eq!(
        h.send_raw(b"USER smuggled\r\n"),
        "",
        "still the same over-long line"
    );
    assert_eq!(h.send("NOOP"), "200 NOOP ok.\r\n");
}

#[test]
fn the_idle_timer_spares_a_running_transfer() {
    let mut cfg = harness::config();
    cfg.timeouts.idle = Duration::from_secs(5);
    let mut h = Harness::with_config(cfg);
    h.mode = DataMode::Manual;
    h.login();
    h.expect("PORT 192,0,2,7,200,10", "200 ");
    h.expect("STOR f", "150 ");
    h.connect_data();
    let (xfer, _, _) = h.last_transfer().unwrap();
    for second in 1..=20 {
        assert_eq!(h.advance(Duration::from_secs(1)), "", "second {second}");
        h.input(Input::TransferProgress {
            xfer,
            bytes: second * 1000,
        });
    }
    assert!(!h.session.is_closed());
}

#[test]
fn cr_or_nul_inside_an_argument_is_refused() {
    let mut h = Harness::new();
    assert!(h
        .send_raw(b"USER alice\r\x0bPASS x\r\n")
        .starts_with("501 "));
    assert!(h.send_raw(b"USER al\0ice\r\n").starts_with("501 "));
}

#[test]
fn an_ipv4_mapped_eprt_target_is_the_peer_in_the_control_connections_family() {
    // The peer is 192.0.2.7 on an IPv4 connection: `::ffff:192.0.2.7` is the peer, and
    // the driver, which connects from the IPv4 local address, is given the IPv4 form.
    let mut h = Harness::new();
    h.storage.add_file("/f", b"x");
    h.login();
    h.expect("EPRT |2|::ffff:192.0.2.7|50000|", "200 ");
    h.expect("RETR f", "150 ");
    let target = h.actions.iter().find_map(|a| match a {
        Action::ConnectData { target, .. } => Some(target.to_string()),
        _ => None,
    });
    assert_eq!(target.as_deref(), Some("192.0.2.7:50000"));
    h.expect("EPRT |2|::ffff:10.0.0.1|50000|", "504 ");
}

#[test]
fn rest_edges() {
    let mut h = Harness::new();
    h.storage.add_file("/f", b"0123456789");
    h.login();
    for bad in ["-1", "x", "18446744073709551616", "", "1e3", "0x10"] {
        h.expect(&format!("REST {bad}"), "501 ");
    }
    // Past the end: the upload is refused before any byte moves, the file is as it was,
    // and nothing is created for a missing one.
    for offset in ["11", "9223372036854775807", "18446744073709551615"] {
        for target in ["f", "new"] {
            h.expect(&format!("REST {offset}"), "350 ");
            h.expect("EPSV", "229 ");
            let r = h.send(&format!("STOR {target}"));
            assert!(
                r.starts_with('4') || r.starts_with('5'),
                "{offset} {target}: {r}"
            );
            assert_eq!(h.storage.read_file("/f").unwrap(), b"0123456789");
            assert!(!h.storage.exists("/new"));
        }
    }
    // REST applies once: a plain STOR after a refused one replaces.
    h.upload = b"AB".to_vec();
    h.expect("REST 10", "350 ");
    h.expect("EPSV", "229 ");
    h.expect("STOR f", "150 ");
    assert_eq!(h.storage.read_file("/f").unwrap(), b"0123456789AB");
    h.expect("EPSV", "229 ");
    h.expect("RETR f", "150 ");
    assert_eq!(h.received, b"0123456789AB");
}

/// The core, not the driver, judges a passive connection: a stranger (port theft) is
/// refused and the listener stays armed; the client's own connection stops the listener
/// and carries the transfer.
#[test]
fn a_passive_connection_from_a_stranger_is_refused_and_the_client_still_gets_in() {
    let mut h = Harness::new();
    h.mode = DataMode::Manual;
    h.login();
    h.storage.add_file("/f", b"mine");
    h.send("PASV");
    let Some(&Action::ListenData { conn, .. }) = h.actions.last() else {
        panic!("no ListenData")
    };
    h.input(Input::DataListening { conn, port: 50001 });
    let before = h.actions.len();
    h.input(Input::DataAccepted {
        conn,
        peer: "203.0.113.66:31337".parse().unwrap(),
    });
    assert_eq!(h.actions[before..], [Action::RefuseData { conn }]);
    let r = h.send("RETR f");
    assert!(r.starts_with("150 "), "{r}");
    assert!(h.last_transfer().is_none(), "the stranger carries nothing");
    let before = h.actions.len();
    h.input(Input::DataAccepted {
        conn,
        peer: "192.0.2.7:40001".parse().unwrap(),
    });
    assert!(matches!(h.actions[before], Action::StopListening { conn: c } if c == conn));
    assert!(matches!(h.last_transfer(), Some((_, c, Body::Send(_))) if c == conn));
    // With the check off (a site behind a proxy that hides addresses), anyone gets in.
    let mut cfg = harness::config();
    cfg.match_pasv_peer = false;
    let mut h = Harness::with_config(cfg);
    h.mode = DataMode::Manual;
    h.login();
    h.send("PASV");
    let Some(&Action::ListenData { conn, .. }) = h.actions.last() else {
        panic!("no ListenData")
    };
    h.input(Input::DataListening { conn, port: 50001 });
    let before = h.actions.len();
    h.input(Input::DataAccepted {
        conn,
        peer: "203.0.113.66:31337".parse().unwrap(),
    });
    assert_eq!(h.actions[before..], [Action::StopListening { conn }]);
}
