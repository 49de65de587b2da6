//! Sites, virtual hosts, authorization rules, isolation, firewall addresses and
//! messages, through whole sessions over `MemStorage`.

mod harness;

use std::sync::Arc;

use harness::{Harness, LOCAL};
use wharf_core::memfs::MemUsers;
use wharf_core::proto::Verb;
use wharf_core::{
    Binding, IpNet, Isolation, Messages, PasvAddress, Request, Rule, Rules, Server, SessionConfig,
    Sites, VPath, VirtualDir, Who,
};

fn vp(s: &str) -> VPath {
    VPath::root().resolve(s).unwrap()
}

fn site(name: &str, f: impl FnOnce(&mut SessionConfig)) -> Arc<SessionConfig> {
    let mut c = SessionConfig {
        site_name: name.into(),
        banner: format!("{name} here"),
        storage_root: vp(&format!("/{name}")),
        allow_anonymous: true,
        passive_ports: 50000..=50010,
        ..SessionConfig::default()
    };
    f(&mut c);
    Arc::new(c)
}

fn bind(site: usize, host: &str) -> Binding {
    let local: std::net::SocketAddr = LOCAL.parse().unwrap();
    Binding {
        ip: local.ip(),
        port: local.port(),
        host: (!host.is_empty()).then(|| host.to_string()),
        site,
        implicit_tls: false,
    }
}

fn users() -> MemUsers {
    MemUsers::new()
        .with("alice", "secret", &["staff"])
        .with("user1", "pw", &["FTPUsersA"])
        .with("user3", "pw", &["FTPUsersB"])
        .with("CONTOSO\\bob", "pw", &[])
}

fn harness(sites: Vec<Arc<SessionConfig>>, bindings: Vec<Binding>) -> Harness {
    let sites = Arc::new(Sites::new(sites, bindings).unwrap());
    let h = Harness::build(Server::with_sites(sites, 0, 1, 10), LOCAL, users());
    h.storage.add_file("/one/a.txt", b"in one");
    h.storage.add_file("/two/b.txt", b"in two");
    h
}

/// `one` answers without a host name, `two` as `two.example`.
fn two_sites() -> Harness {
    harness(
        vec![site("one", |_| {}), site("two", |_| {})],
        vec![bind(0, ""), bind(1, "two.example")],
    )
}

fn nlst(h: &mut Harness) -> String {
    h.expect("PASV", "227 ");
    h.expect("NLST", "150 ");
    String::from_utf8(h.received.clone()).unwrap()
}

#[test]
fn the_blank_host_site_answers_without_a_host() {
    let mut h = two_sites();
    assert_eq!(h.replies(), "220 one here\r\n");
    h.login();
    assert_eq!(nlst(&mut h), "a.txt\r\n");
    h.expect("HOST two.example", "503 Already logged in");
}

#[test]
fn host_chooses_the_site_and_resets_the_session() {
    let mut h = two_sites();
    h.expect(
        "HOST nowhere.example",
        "504 Unknown host \"nowhere.example\"",
    );
    h.expect("HOST", "501 ");
    assert_eq!(h.send("HOST Two.Example"), "220 two here\r\n");
    h.expect("USER alice", "331 ");
    h.expect("HOST two.example", "503 HOST must come before USER.");
    h.expect("PASS secret", "230 ");
    h.expect("STAT", "211-two FTP server status:");
    assert_eq!(nlst(&mut h), "b.txt\r\n");
    // REIN forgets the host: the default site again.
    h.expect("REIN", "220 ");
    h.login();
    assert_eq!(nlst(&mut h), "a.txt\r\n");
}

#[test]
fn user_host_pipe_user_chooses_the_site() {
    let mut h = two_sites();
    h.expect("USER nowhere.example|alice", "530 Unknown host");
    h.expect("USER |alice", "501 ");
    h.expect("USER two.example|", "501 ");
    h.expect("USER two.example|alice", "331 Password required for alice.");
    h.expect("PASS secret", "230 User alice logged in.");
    assert_eq!(nlst(&mut h), "b.txt\r\n");

    // After HOST, a different host in USER is refused; the same one is fine.
    let mut h = two_sites();
    h.expect("HOST two.example", "220 ");
    h.expect("USER one.example|alice", "530 Unknown host");
    h.expect("USER TWO.EXAMPLE|alice", "331 ");
}

#[test]
fn without_a_blank_host_binding_a_host_is_required() {
    let mut h = harness(
        vec![site("one", |_| {}), site("two", |_| {})],
        vec![bind(0, "one.example"), bind(1, "two.example")],
    );
    assert!(h.replies().starts_with("220 "), "{}", h.replies());
    assert!(h.replies().contains("HOST"), "{}", h.replies());
    h.expect(
        "USER alice",
        "530 Several sites share this address: send HOST name first, or log in as USER host|user.",
    );
    h.expect("USER anonymous", "530 Several sites");
    h.expect("HOST one.example", "220 one here");
    h.login();
    assert_eq!(nlst(&mut h), "a.txt\r\n");
}

#[test]
fn anonymous_is_per_site() {
    let mut h = harness(
        vec![
            site("one", |c| c.allow_anonymous = false),
            site("two", |_| {}),
        ],
        vec![bind(0, ""), bind(1, "two.example")],
    );
    h.expect(
        "USER anonymous",
        "530 Anonymous access is not allowed here.",
    );
    h.expect("USER two.example|anonymous", "331 ");
    h.expect("PASS x@y", "230 ");
}

#[test]
fn messages_banner_welcome_exit_and_max_clients() {
    let messages = Messages {
        welcome: Some("Welcome to one.\nBe nice.".into()),
        exit: Some("See you.".into()),
        max_clients: Some("Site one is full.".into()),
    };
    let one = site("one", |c| {
        c.banner = "Line one\nLine two".into();
        c.messages = messages;
    });
    let sites = Arc::new(Sites::new(vec![one], vec![bind(0, "")]).unwrap());
    let mut h = Harness::build(Server::with_sites(sites.clone(), 0, 1, 10), LOCAL, users());
    assert_eq!(h.replies(), "220-Line one\r\n220 Line two\r\n");
    h.expect("USER alice", "331 ");
    assert_eq!(
        h.send("PASS secret"),
        "230-Welcome to one.\r\nBe nice.\r\n230 User alice logged in.\r\n"
    );
    assert_eq!(h.send("QUIT"), "221 See you.\r\n");

    let mut full = Server::with_sites(sites, 0, 1, 0);
    #[allow(clippy::disallowed_methods)]
    let now = std::time::Instant::now();
    let refusal = full
        .accept(now, harness::PEER.parse().unwrap(), LOCAL.parse().unwrap())
        .err()
        .expect("refused");
    assert_eq!(refusal.reply, b"421 Site one is full.\r\n");
    let refusal = full
        .accept(
            now,
            harness::PEER.parse().unwrap(),
            "192.0.2.99:21".parse().unwrap(),
        )
        .err()
        .expect("refused");
    assert!(String::from_utf8_lossy(&refusal.reply).starts_with("421 No site"));
}

/// `one` (blank host, at most `one_max` connections) and `two` (`two.example`, at
/// most one), logging, on one address; sessions share one server.
fn limited_sites(one_max: u32, blank_host: bool) -> Server {
    let limited = |max: u32, message: &str| {
        let message = message.to_string();
        move |c: &mut SessionConfig| {
            c.limits.max_connections = max;
            c.messages.max_clients = Some(message);
            c.logging = Some(wharf_core::log::LogConfig {
                site: c.site_name.as_str().into(),
                fields: wharf_core::log::LogFields::ALL,
                w3c: true,
            });
        }
    };
    let first = if blank_host {
        bind(0, "")
    } else {
        bind(0, "one.example")
    };
    let sites = Sites::new(
        vec![
            site("one", limited(one_max, "One is full.")),
            site("two", limited(1, "Two is full.\nTry later.")),
        ],
        vec![first, bind(1, "two.example")],
    )
    .unwrap();
    Server::with_sites(Arc::new(sites), 0, 1, 100)
}

fn connect(server: &mut Server, port: u16) -> Harness {
    let peer = format!("192.0.2.7:{port}");
    Harness::accept(server, &peer, harness::origin()).expect("admitted")
}

fn substatus(h: &Harness) -> Vec<u16> {
    h.actions
        .iter()
        .filter_map(|a| match a {
            wharf_core::Action::Log(r) => Some(r.sub.code()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_blank_host_site_counts_its_connections_from_accept() {
    let mut server = limited_sites(2, true);
    let a = connect(&mut server, 1);
    let mut b = connect(&mut server, 2);
    let refusal = Harness::accept(&mut server, "192.0.2.7:3", harness::origin())
        .err()
        .expect("the site is full");
    assert_eq!(refusal.reply, b"421 One is full.\r\n");
    let rec = refusal.log.expect("the site logs");
    assert_eq!((rec.status, rec.sub.code()), (421, 54));
    assert_eq!(server.policy().connections_to("one"), 2);
    // A session that moves to another site by HOST frees its place on `one`.
    b.expect("HOST two.example", "220 two here");
    assert_eq!(server.policy().connections_to("one"), 1);
    assert_eq!(server.policy().connections_to("two"), 1);
    let mut c = connect(&mut server, 4);
    // `two` is full now: HOST and USER host|user are refused with its message.
    assert_eq!(
        c.send("HOST two.example"),
        "421-Two is full.\r\n421 Try later.\r\n"
    );
    assert!(c.session.is_closed());
    assert!(substatus(&c).contains(&54), "{:?}", substatus(&c));
    drop(c);
    let mut d = connect(&mut server, 5);
    d.expect("USER two.example|alice", "421-Two is full.");
    assert!(d.session.is_closed());
    drop(d);
    // Dropping a session (however it ended) releases its site.
    drop(a);
    drop(b);
    assert_eq!(server.policy().connections_to("one"), 0);
    assert_eq!(server.policy().connections_to("two"), 0);
    let mut e = connect(&mut server, 6);
    e.expect("USER two.example|alice", "331 ");
    e.expect("PASS secret", "230 ");
}

#[test]
fn a_host_chosen_site_counts_when_chosen_and_rein_lets_go() {
    let mut server = limited_sites(1, false);
    // No blank-host site: a connection counts for no site until it names one.
    let mut a = connect(&mut server, 1);
    let mut b = connect(&mut server, 2);
    assert_eq!(server.policy().connections_to("one"), 0);
    a.expect("HOST one.example", "220 one here");
    a.expect("HOST one.example", "220 one here"); // the same site again is free
    assert_eq!(server.policy().connections_to("one"), 1);
    b.expect("HOST one.example", "421 One is full.");
    assert!(b.session.is_closed());
    // REIN forgets the host, and the place on `one` with it.
    a.expect("REIN", "220 ");
    assert_eq!(server.policy().connections_to("one"), 0);
    let mut c = connect(&mut server, 3);
    c.expect("USER one.example|alice", "331 ");
    c.expect("PASS secret", "230 ");
    a.expect("USER one.example|alice", "421 One is full.");
}

#[test]
fn rein_back_to_a_full_blank_host_site_is_refused() {
    let mut server = limited_sites(1, true);
    let mut a = connect(&mut server, 1);
    a.expect("HOST two.example", "220 two here");
    let _b = connect(&mut server, 2); // takes the place a left on `one`
    a.expect("REIN", "421 One is full.");
    assert!(a.session.is_closed());
    assert_eq!(
        server.policy().connections_to("two"),
        1,
        "until the session is gone"
    );
    drop(a);
    assert_eq!(server.policy().connections_to("two"), 0);
}

fn scenario1_rules() -> Rules {
    let rw = |path: &str, allow, who, read, write| Rule {
        path: vp(path),
        allow,
        who,
        read,
        write,
    };
    Rules::new(vec![
        rw("/", true, vec![Who::Anonymous], true, false),
        rw(
            "/",
            true,
            vec![
                Who::Group("FTPUsersA".into()),
                Who::Group("FTPUsersB".into()),
            ],
            true,
            true,
        ),
        rw(
            "/test.txt",
            false,
            vec![Who::User("user3".into())],
            true,
            true,
        ),
    ])
}

#[test]
fn scenario1_rules_through_sessions() {
    let one = || site("one", |c| c.rules = Some(scenario1_rules()));
    let mk = || {
        let h = harness(vec![one()], vec![bind(0, "")]);
        h.storage.add_file("/one/test.txt", b"test");
        h.storage.add_file("/one/computer.txt", b"computer");
        h
    };
    // user3: computer.txt yes, test.txt no (read or write); uploads elsewhere fine.
    let mut h = mk();
    h.expect("USER user3", "331 ");
    h.expect("PASS pw", "230 ");
    h.expect("PASV", "227 ");
    h.expect("RETR computer.txt", "150 ");
    assert_eq!(h.received, b"computer");
    h.expect("PASV", "227 ");
    h.expect("RETR TEST.txt", "550 Permission denied.");
    // A refused transfer command spends its data channel.
    h.expect("PASV", "227 ");
    h.expect("RETR /test.txt", "550 Permission denied.");
    h.expect("SIZE test.txt", "550 ");
    h.expect("DELE test.txt", "550 ");
    h.expect("RNFR computer.txt", "350 ");
    h.expect("RNTO test.txt", "550 ");
    h.upload = b"new".to_vec();
    h.expect("PASV", "227 ");
    h.expect("STOR new.txt", "150 ");
    assert_eq!(h.storage.read_file("/one/new.txt").unwrap(), b"new");
    // MLSD offers changes where the rules allow them, per entry.
    h.expect("PASV", "227 ");
    h.expect("MLSD", "150 ");
    let listing = String::from_utf8(h.received.clone()).unwrap();
    let line = |name: &str| {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap()
            .to_string()
    };
    assert!(line("computer.txt").contains("perm=adfrw;"), "{listing}");
    assert!(line("test.txt").contains("perm=r;"), "{listing}");

    // user1 may read test.txt and write.
    let mut h = mk();
    h.expect("USER user1", "331 ");
    h.expect("PASS pw", "230 ");
    h.expect("PASV", "227 ");
    h.expect("RETR test.txt", "150 ");
    assert_eq!(h.received, b"test");
    h.expect("MKD sub", "257 ");

    // Anonymous reads, never writes; alice (in neither group) gets nothing.
    let mut h = mk();
    h.expect("USER anonymous", "331 ");
    h.expect("PASS a@b", "230 ");
    h.expect("PASV", "227 ");
    h.expect("RETR test.txt", "150 ");
    h.expect("MKD sub", "550 ");
    h.expect("PASV", "227 ");
    h.expect("STOR x", "550 ");
    let mut h = mk();
    h.login();
    h.expect("CWD /", "550 ");
    h.expect("PASV", "227 ");
    h.expect("LIST", "550 ");
}

fn isolated(mode: Isolation) -> Harness {
    let one = site("one", |c| {
        c.isolation = mode;
        c.virtual_dirs = vec![VirtualDir {
            name: "shared".into(),
            storage_root: vp("/shared-store"),
        }];
    });
    let h = harness(vec![one], vec![bind(0, "")]);
    for home in [
        "LocalUser/alice",
        "LocalUser/user1",
        "LocalUser/Public",
        "CONTOSO/bob",
    ] {
        h.storage
            .add_file(&format!("/one/{home}/mine.txt"), home.as_bytes());
    }
    h.storage.add_file("/one/alice/start.txt", b"");
    h.storage.add_file("/shared-store/s.txt", b"shared");
    h
}

/// Every storage request after login stays below `prefixes`.
fn requests_stay_below(h: &Harness, prefixes: &[&str]) {
    for r in &h.requests {
        let paths: Vec<&VPath> = match r {
            Request::Stat { path }
            | Request::ReadDir { path }
            | Request::OpenRead { path, .. }
            | Request::OpenWrite { path, .. }
            | Request::MakeDir { path }
            | Request::RemoveDir { path }
            | Request::RemoveFile { path }
            | Request::SetModified { path, .. } => vec![path],
            Request::Rename { from, to, .. } => vec![from, to],
            Request::Authenticate { .. }
            | Request::CloseFile { .. }
            | Request::ReverseLookup { .. } => vec![],
        };
        for p in paths {
            assert!(
                prefixes.iter().any(|pre| p.starts_with(&vp(pre))),
                "{p} escapes {prefixes:?}"
            );
        }
    }
}

#[test]
fn isolation_jails_users_to_their_homes() {
    for mode in [
        Isolation::IsolateAllDirectories,
        Isolation::IsolateRootDirectoryOnly,
    ] {
        let mut h = isolated(mode);
        h.login();
        h.expect("PWD", "257 \"/\"");
        assert_eq!(nlst(&mut h).lines().next(), Some("mine.txt"));
        for escape in [
            "/",
            "..",
            "../user1",
            "../../LocalUser/user1",
            "/../..",
            "../../one",
        ] {
            let r = h.send(&format!("CWD {escape}"));
            assert!(
                r.starts_with("250 ") || r.starts_with("550 "),
                "{escape}: {r}"
            );
            h.expect("PWD", "257 \"/");
        }
        h.expect("PASV", "227 ");
        h.expect("RETR ../user1/mine.txt", "550 ");
        h.expect("PASV", "227 ");
        h.expect("RETR /../../LocalUser/user1/mine.txt", "550 ");
        h.expect("PASV", "227 ");
        h.expect("RETR mine.txt", "150 ");
        assert_eq!(h.received, b"LocalUser/alice");
        // The jail's root itself cannot be renamed, removed or replaced.
        for cmd in ["RNFR /", "RNFR ..", "RMD /", "DELE .", "MKD /"] {
            h.expect(cmd, "550 ");
        }
        h.expect("RNFR mine.txt", "350 ");
        h.expect("RNTO /", "550 ");
        let shared = h.send("CWD /shared");
        requests_stay_below(&h, &["/one/LocalUser/alice", "/shared-store"]);
        if mode == Isolation::IsolateAllDirectories {
            // Global virtual directories are hidden: "shared" is just a missing folder.
            assert!(shared.starts_with("550 "), "{shared}");
            requests_stay_below(&h, &["/one/LocalUser/alice"]);
        } else {
            assert!(shared.starts_with("250 "), "{shared}");
            h.expect("CWD /", "250 ");
            assert!(nlst(&mut h).contains("shared\r\n"));
            h.expect("PASV", "227 ");
            h.expect("RETR shared/s.txt", "150 ");
            assert_eq!(h.received, b"shared");
        }
    }
}

#[test]
fn anonymous_and_domain_users_get_their_own_homes() {
    let mut h = isolated(Isolation::IsolateAllDirectories);
    h.expect("USER anonymous", "331 ");
    h.expect("PASS a@b", "230 ");
    h.expect("PASV", "227 ");
    h.expect("RETR mine.txt", "150 ");
    assert_eq!(h.received, b"LocalUser/Public");

    let mut h = isolated(Isolation::IsolateAllDirectories);
    h.expect("USER CONTOSO\\bob", "331 ");
    h.expect("PASS pw", "230 ");
    h.expect("PASV", "227 ");
    h.expect("RETR mine.txt", "150 ");
    assert_eq!(h.received, b"CONTOSO/bob");
}

#[test]
fn a_missing_home_refuses_the_login() {
    let mut h = isolated(Isolation::IsolateRootDirectoryOnly);
    h.expect("USER user3", "331 ");
    h.expect(
        "PASS pw",
        "530 User cannot log in, home directory inaccessible.",
    );
    h.expect("PWD", "530 ");
    // Not a wrong password: the session stays open for another try.
    h.login();
    h.expect("PWD", "257 \"/\"");
}

#[test]
fn start_in_users_directory_starts_at_home_but_can_leave() {
    let mut h = isolated(Isolation::StartInUsersDirectory);
    h.login();
    h.expect("PWD", "257 \"/alice\"");
    h.expect("CWD /LocalUser/user1", "250 ");
    // No /user1 directory: user1 starts at the root.
    let mut h = isolated(Isolation::StartInUsersDirectory);
    h.expect("USER user1", "331 ");
    h.expect("PASS pw", "230 ");
    h.expect("PWD", "257 \"/\"");
    assert!(nlst(&mut h).contains("shared\r\n"));
}

#[test]
fn passive_address_by_client_network_then_external_then_local() {
    let mk = |pasv: Vec<PasvAddress>, external: Option<&str>| {
        let one = site("one", |c| {
            c.pasv_addresses = pasv;
            c.external_ip = external.map(|e| e.parse().unwrap());
        });
        let mut h = harness(vec![one], vec![bind(0, "")]);
        h.login();
        h.send("PASV")
    };
    // The harness client is 192.0.2.7 and connected to 192.0.2.1.
    assert!(mk(vec![], None).starts_with("227 Entering Passive Mode (192,0,2,1,"));
    assert!(mk(vec![], Some("203.0.113.5")).starts_with("227 Entering Passive Mode (203,0,113,5,"));
    let private = |net: &str, ip: Option<&str>| PasvAddress {
        network: IpNet::parse(net).unwrap(),
        ip: ip.map(|i| i.parse().unwrap()),
    };
    let r = mk(vec![private("192.0.2.0/24", None)], Some("203.0.113.5"));
    assert!(
        r.starts_with("227 Entering Passive Mode (192,0,2,1,"),
        "{r}"
    );
    let r = mk(
        vec![
            private("10.0.0.0/8", None),
            private("192.0.2.0/28", Some("10.9.9.9")),
        ],
        Some("203.0.113.5"),
    );
    assert!(r.starts_with("227 Entering Passive Mode (10,9,9,9,"), "{r}");
    let r = mk(vec![private("10.0.0.0/8", None)], Some("203.0.113.5"));
    assert!(
        r.starts_with("227 Entering Passive Mode (203,0,113,5,"),
        "{r}"
    );
}

// ---------------------------------------------------------------------------------
// Every command that takes a path goes through the authorize chokepoint.

/// The verbs whose argument names a path, and the permission each needs.
const PATH_VERBS: &[Verb] = &[
    Verb::Cwd,
    Verb::Cdup,
    Verb::Mkd,
    Verb::Rmd,
    Verb::Dele,
    Verb::Rnfr,
    Verb::Rnto,
    Verb::Size,
    Verb::Mdtm,
    Verb::Mfmt,
    Verb::Mlst,
    Verb::Retr,
    Verb::Stor,
    Verb::Appe,
    Verb::Stou,
    Verb::List,
    Verb::Nlst,
    Verb::Mlsd,
    Verb::Stat,
];

/// Arguments that exercise every form a path-taking verb accepts.
const ARGS: &[&str] = &[
    "",
    "x",
    "/",
    "secret",
    "/secret/deeper",
    "-la secret",
    "secret/*.txt",
    "20200101000000 secret",
];

fn rule(path: &str, allow: bool, read: bool, write: bool) -> Rule {
    Rule {
        path: vp(path),
        allow,
        who: vec![Who::All],
        read,
        write,
    }
}

/// A fresh logged-in session on a site with `rules`, with a passive data connection
/// ready (so transfer commands get as far as authorization), then RNFR of an allowed
/// file when `rnfr`.
fn session_with(rules: Rules, rnfr: bool) -> Harness {
    let one = site("one", |c| c.rules = Some(rules));
    let mut h = harness(vec![one], vec![bind(0, "")]);
    h.storage.add_file("/one/ok.txt", b"ok");
    h.storage.add_file("/one/secret/deeper", b"s");
    h.storage.add_file("/one/x", b"x");
    h.login();
    h.expect("PASV", "227 ");
    if rnfr {
        h.expect("RNFR ok.txt", "350 ");
    }
    h.requests.clear();
    h
}

fn storage_requests(h: &Harness) -> Vec<&Request> {
    h.requests
        .iter()
        .filter(|r| !matches!(r, Request::Authenticate { .. }))
        .collect()
}

#[test]
fn with_everything_denied_no_command_reaches_storage() {
    let deny_all = || Rules::new(vec![rule("/", false, true, true)]);
    let mut refused = std::collections::BTreeSet::new();
    for &verb in Verb::ALL {
        if verb == Verb::Quit {
            continue;
        }
        for arg in ARGS {
            let mut h = session_with(deny_all(), false);
            let line = format!("{} {arg}", verb.name());
            let reply = h.send(line.trim_end());
            let touched = storage_requests(&h);
            assert!(
                touched.is_empty(),
                "{line:?} reached storage under deny-all: {touched:?} ({reply:?})"
            );
            if reply.starts_with("550 ") {
                refused.insert(verb);
            }
        }
    }
    // Every path verb was refused by the rules for some argument (RNTO needs RNFR first,
    // which is refused: the next test covers it).
    for verb in PATH_VERBS {
        if *verb != Verb::Rnto {
            assert!(refused.contains(verb), "{verb:?} was never refused");
        }
    }
    // And nothing else answered 550: no other verb looks at paths.
    for verb in &refused {
        assert!(PATH_VERBS.contains(verb), "{verb:?} answered 550");
    }
}

#[test]
fn every_path_verb_is_checked_against_a_denied_folder() {
    // Everything is allowed except /secret (read and write).
    let rules = || {
        Rules::new(vec![
            rule("/", true, true, true),
            rule("/secret", false, true, true),
        ])
    };
    let names_secret = |r: &Request| -> bool {
        let secret = vp("/one/secret");
        match r {
            Request::Stat { path }
            | Request::ReadDir { path }
            | Request::OpenRead { path, .. }
            | Request::OpenWrite { path, .. }
            | Request::MakeDir { path }
            | Request::RemoveDir { path }
            | Request::RemoveFile { path }
            | Request::SetModified { path, .. } => path.starts_with(&secret),
            Request::Rename { from, to, .. } => {
                from.starts_with(&secret) || to.starts_with(&secret)
            }
            Request::Authenticate { .. }
            | Request::CloseFile { .. }
            | Request::ReverseLookup { .. } => false,
        }
    };
    for &verb in Verb::ALL {
        if verb == Verb::Quit {
            continue;
        }
        for arg in ARGS {
            let mut h = session_with(rules(), verb == Verb::Rnto);
            if verb == Verb::Cdup {
                h.expect("CWD secret", "550 ");
                h.requests.clear();
            }
            let line = format!("{} {arg}", verb.name());
            let reply = h.send(line.trim_end());
            let leaked: Vec<&Request> = h.requests.iter().filter(|r| names_secret(r)).collect();
            assert!(
                leaked.is_empty(),
                "{line:?} reached /secret: {leaked:?} ({reply:?})"
            );
            // Which arguments name /secret for this verb: LIST, NLST and STAT take `-la`
            // flags; MDTM and MFMT take a time first; elsewhere both are part of the name.
            let about_secret = if arg.starts_with("-la") {
                matches!(verb, Verb::List | Verb::Nlst | Verb::Stat)
            } else if arg.starts_with("2020") {
                matches!(verb, Verb::Mdtm | Verb::Mfmt)
            } else {
                // MFMT without a time is a syntax error, not a path.
                arg.contains("secret") && verb != Verb::Mfmt
            };
            if PATH_VERBS.contains(&verb) && about_secret && verb != Verb::Cdup {
                assert!(reply.starts_with("550 "), "{line:?} answered {reply:?}");
            }
        }
    }
}

/// A reload swaps the sites for new connections; running sessions keep theirs, and a
/// site's connection count follows its name, wherever the new table puts it.
#[test]
fn a_reload_serves_new_sites_and_counts_follow_site_names() {
    let one = |banner: &str| {
        let banner = banner.to_string();
        site("one", move |c| {
            c.limits.max_connections = 1;
            c.banner = banner;
        })
    };
    let live = Arc::new(wharf_core::live::Live::new(Arc::new(
        Sites::new(
            vec![one("one, first"), site("two", |_| {})],
            vec![bind(0, ""), bind(1, "two.example")],
        )
        .unwrap(),
    )));
    let mut server = Server::with_live_sites(live.clone(), 0, 1, 100);
    let mut a = connect(&mut server, 1);
    assert!(a.replies().starts_with("220 one, first"));
    // The new table lists `two` first; `one` keeps its count of one, and is full.
    live.replace(Arc::new(
        Sites::new(
            vec![site("two", |_| {}), one("one, second")],
            vec![bind(1, ""), bind(0, "two.example")],
        )
        .unwrap(),
    ));
    let refusal = Harness::accept(&mut server, "192.0.2.7:2", harness::origin())
        .err()
        .expect("one is still full");
    assert!(refusal.reply.starts_with(b"421 "));
    assert_eq!(server.policy().connections_to("one"), 1);
    // The running session is unaffected: still its own site and settings.
    a.expect("USER anonymous", "331 ");
    a.expect("PASS x", "230 ");
    drop(a);
    assert_eq!(server.policy().connections_to("one"), 0);
    let b = connect(&mut server, 3);
    assert!(
        b.replies().starts_with("220 one, second"),
        "{}",
        b.replies()
    );
}
