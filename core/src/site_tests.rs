use super::*;
use quickcheck::{quickcheck, Arbitrary, Gen};

fn vp(s: &str) -> VPath {
    VPath::root().resolve(s).unwrap()
}

fn site(name: &str) -> Arc<SessionConfig> {
    Arc::new(SessionConfig {
        site_name: name.into(),
        storage_root: vp(&format!("/{name}")),
        ..SessionConfig::default()
    })
}

fn bind(addr: &str, host: &str, site: usize) -> Binding {
    let a: SocketAddr = addr.parse().unwrap();
    Binding {
        ip: a.ip(),
        port: a.port(),
        host: (!host.is_empty()).then(|| host.to_string()),
        site,
        implicit_tls: false,
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn three() -> Vec<Arc<SessionConfig>> {
    vec![site("one"), site("two"), site("three")]
}

#[test]
fn ambiguous_and_duplicate_bindings_are_refused() {
    let err = Sites::new(
        three(),
        vec![bind("0.0.0.0:21", "", 0), bind("0.0.0.0:21", "", 1)],
    )
    .unwrap_err();
    assert!(matches!(
        err,
        SitesError::AmbiguousDefault {
            binding: 1,
            other: 0,
            ..
        }
    ));
    assert!(err.to_string().contains("one and two"), "{err}");

    let err = Sites::new(
        three(),
        vec![
            bind("10.0.0.1:21", "A.example", 0),
            bind("10.0.0.1:21", "a.EXAMPLE", 2),
        ],
    )
    .unwrap_err();
    assert!(
        matches!(err, SitesError::DuplicateHost { binding: 1, .. }),
        "{err}"
    );

    let mut tls = bind("10.0.0.1:990", "b", 1);
    tls.implicit_tls = true;
    let err = Sites::new(three(), vec![bind("10.0.0.1:990", "a", 0), tls.clone()]).unwrap_err();
    assert!(matches!(err, SitesError::MixedTls { .. }), "{err}");
    // A wildcard on the same port receives the same connections: the same rule.
    let err = Sites::new(three(), vec![bind("0.0.0.0:990", "a", 0), tls]).unwrap_err();
    assert!(matches!(err, SitesError::MixedTls { .. }), "{err}");

    let err = Sites::new(three(), vec![bind("10.0.0.1:21", "", 7)]).unwrap_err();
    assert_eq!(
        err,
        SitesError::NoSuchSite {
            binding: 0,
            site: 7
        }
    );
    assert_eq!(
        Sites::new(Vec::new(), Vec::new()).unwrap_err(),
        SitesError::NoSites
    );

    // Not ambiguous: different ports, different addresses, a wildcard and an exact
    // address, IPv4 and IPv6 wildcards.
    Sites::new(
        three(),
        vec![
            bind("0.0.0.0:21", "", 0),
            bind("0.0.0.0:2121", "", 1),
            bind("10.0.0.1:21", "", 2),
            bind("[::]:21", "", 1),
            bind("0.0.0.0:21", "x", 1),
        ],
    )
    .unwrap();
}

#[test]
fn the_local_address_selects_the_bindings() {
    let sites = Sites::new(
        three(),
        vec![
            bind("0.0.0.0:21", "", 0),
            bind("0.0.0.0:21", "two.example", 1),
            bind("10.0.0.1:21", "three.example", 2),
            bind("[::]:2121", "", 1),
        ],
    )
    .unwrap();
    // Wildcard only.
    let l = sites.listener(addr("192.0.2.1:21")).unwrap();
    assert_eq!((l.default, l.fallback, l.named), (Some(0), 0, true));
    assert_eq!(sites.by_host(addr("192.0.2.1:21"), "TWO.example"), Some(1));
    assert_eq!(sites.by_host(addr("192.0.2.1:21"), "three.example"), None);
    // On the exact address its own host names come first, then the wildcard's.
    let l = sites.listener(addr("10.0.0.1:21")).unwrap();
    assert_eq!((l.default, l.fallback, l.named), (Some(0), 0, true));
    assert_eq!(sites.by_host(addr("10.0.0.1:21"), "three.example"), Some(2));
    assert_eq!(sites.by_host(addr("10.0.0.1:21"), "two.example"), Some(1));
    // v4-mapped local addresses count as IPv4.
    assert_eq!(
        sites.by_host(addr("[::ffff:10.0.0.1]:21"), "three.example"),
        Some(2)
    );
    // An exact blank-host binding beats the wildcard's.
    let exact = Sites::new(
        three(),
        vec![bind("0.0.0.0:21", "", 0), bind("10.0.0.1:21", "", 2)],
    )
    .unwrap();
    assert_eq!(
        exact.listener(addr("10.0.0.1:21")).unwrap().default,
        Some(2)
    );
    assert_eq!(
        exact.listener(addr("10.0.0.2:21")).unwrap().default,
        Some(0)
    );
    // Only host names here: no default, and the first binding's settings apply.
    let named = Sites::new(
        three(),
        vec![bind("10.0.0.1:21", "b", 1), bind("10.0.0.1:21", "a", 0)],
    )
    .unwrap();
    let l = named.listener(addr("10.0.0.1:21")).unwrap();
    assert_eq!((l.default, l.fallback, l.named), (None, 1, true));
    // IPv6 wildcard; no virtual hosts there, so any HOST name selects the default.
    let l = sites.listener(addr("[2001:db8::1]:2121")).unwrap();
    assert_eq!((l.default, l.named), (Some(1), false));
    assert_eq!(
        sites.by_host(addr("[2001:db8::1]:2121"), "whatever"),
        Some(1)
    );
    // Nothing bound.
    assert_eq!(sites.listener(addr("192.0.2.1:22")), None);
    assert_eq!(sites.listener(addr("192.0.2.1:2121")), None);
}

#[test]
fn single_site_answers_everywhere() {
    let sites = Sites::single(site("only"));
    for a in ["127.0.0.1:2121", "[::1]:21", "192.0.2.1:990"] {
        let l = sites.listener(addr(a)).unwrap();
        assert_eq!(
            (l.default, l.named, l.implicit_tls),
            (Some(0), false, false)
        );
        assert_eq!(sites.by_host(addr(a), "anything"), Some(0));
    }
}

fn user(name: &str) -> Principal {
    Principal::user(name, Vec::new())
}

/// A user whose account store gives it `home`.
fn homed(name: &str, home: &str) -> Principal {
    Principal {
        home: Some(vp(home)),
        ..user(name)
    }
}

#[test]
fn homes_by_isolation_mode() {
    let anon = Principal {
        name: "anonymous".into(),
        anonymous: true,
        ..Principal::default()
    };
    use Isolation::*;
    type Row<'a> = (Isolation, &'a Principal, Option<(&'a str, bool)>);
    let table: &[Row<'_>] = &[
        (None, &user("bob"), Option::None),
        (StartInUsersDirectory, &user("bob"), Some(("/bob", false))),
        (StartInUsersDirectory, &anon, Some(("/default", false))),
        (
            IsolateRootDirectoryOnly,
            &user("bob"),
            Some(("/LocalUser/bob", true)),
        ),
        (
            IsolateAllDirectories,
            &anon,
            Some(("/LocalUser/Public", true)),
        ),
        (
            IsolateAllDirectories,
            &user("CONTOSO\\bob"),
            Some(("/CONTOSO/bob", true)),
        ),
        // A home from the account store: where AD isolation jails, and where
        // "start in users directory" starts; the name-based modes ignore it.
        (
            ActiveDirectory,
            &homed("CONTOSO\\bob", "/ftp/users/bob"),
            Some(("/ftp/users/bob", true)),
        ),
        (ActiveDirectory, &homed("bob", "/"), Some(("/", true))),
        (
            StartInUsersDirectory,
            &homed("bob", "/home/bob"),
            Some(("/home/bob", false)),
        ),
        (
            IsolateAllDirectories,
            &homed("bob", "/elsewhere"),
            Some(("/LocalUser/bob", true)),
        ),
        (None, &homed("bob", "/elsewhere"), Option::None),
    ];
    for (mode, who, want) in table {
        let got = home_for(*mode, who).unwrap();
        let want = want.map(|(p, required)| Home {
            path: vp(p),
            required,
        });
        assert_eq!(got, want, "{mode:?} {}", who.name);
    }
    for bad in [
        "..", ".", "a/b", "x\\..", "\\bob", "dom\\", "a\\b\\c", "nul\0",
    ] {
        assert_eq!(
            home_for(IsolateAllDirectories, &user(bad)),
            Err(BadHomeName(bad.into())),
            "{bad:?}"
        );
    }
    // AD isolation refuses users the store gives no home, and anonymous users (as IIS
    // does: they have no directory entry).
    assert_eq!(
        home_for(ActiveDirectory, &user("bob")),
        Err(BadHomeName("bob".into()))
    );
    let anon_with_home = Principal {
        home: Some(vp("/pub")),
        ..anon.clone()
    };
    assert!(home_for(ActiveDirectory, &anon_with_home).is_err());
    assert!(ActiveDirectory.jails() && !ActiveDirectory.shows_virtual_dirs());
}

fn with_vdirs() -> SessionConfig {
    SessionConfig {
        storage_root: vp("/s0"),
        virtual_dirs: vec![VirtualDir {
            name: "Shared".into(),
            storage_root: vp("/s0.v0"),
        }],
        ..SessionConfig::default()
    }
}

#[test]
fn map_path_table() {
    let cfg = with_vdirs();
    let open = View::default();
    let jail = View {
        root: vp("/LocalUser/u1"),
        virtual_dirs: false,
    };
    let jail_vd = View {
        root: vp("/LocalUser/u1"),
        virtual_dirs: true,
    };
    let table: &[(&View, &str, &str, &str)] = &[
        (&open, "/", "/", "/s0"),
        (&open, "/a/b", "/a/b", "/s0/a/b"),
        (&open, "/shared", "/Shared", "/s0.v0"),
        (&open, "/SHARED/x", "/Shared/x", "/s0.v0/x"),
        (&open, "/sharedx", "/sharedx", "/s0/sharedx"),
        (&jail, "/", "/LocalUser/u1", "/s0/LocalUser/u1"),
        (
            &jail,
            "/shared/x",
            "/LocalUser/u1/shared/x",
            "/s0/LocalUser/u1/shared/x",
        ),
        (&jail_vd, "/shared/x", "/Shared/x", "/s0.v0/x"),
        (&jail_vd, "/f", "/LocalUser/u1/f", "/s0/LocalUser/u1/f"),
    ];
    for (view, shown, site, storage) in table {
        assert_eq!(
            map_path(&cfg, view, &vp(shown)),
            (vp(site), vp(storage)),
            "{view:?} {shown}"
        );
    }
}

/// Client input biased towards what breaks jails.
#[derive(Debug, Clone)]
struct Input(String);

impl Arbitrary for Input {
    fn arbitrary(g: &mut Gen) -> Input {
        const PIECES: &[&str] = &[
            "/",
            "..",
            ".",
            "../..",
            "LocalUser",
            "u1",
            "user2",
            "shared",
            "SHARED",
            "Public",
            "\\",
            "~",
            "a",
        ];
        let n = usize::arbitrary(g) % 10;
        let mut s = String::new();
        for _ in 0..n {
            if bool::arbitrary(g) {
                s.push('/');
            }
            s.push_str(g.choose(PIECES).unwrap());
        }
        Input(s)
    }
}

quickcheck! {
    /// Whatever a jailed user types, from wherever they stand, the site path stays in
    /// the home (or a visible virtual directory) and the storage path below the site's
    /// or that virtual directory's storage root.
    fn the_jail_holds(cwd: Input, input: Input, vdirs: bool) -> bool {
        let cfg = with_vdirs();
        let home = vp("/LocalUser/u1");
        let view = View { root: home.clone(), virtual_dirs: vdirs };
        let Ok(cwd) = VPath::root().resolve(&cwd.0) else { return true };
        let Ok(shown) = cwd.resolve(&input.0) else { return true };
        let (site, storage) = map_path(&cfg, &view, &shown);
        let in_vdir = vdirs && site.starts_with(&vp("/Shared")) && storage.starts_with(&vp("/s0.v0"));
        let in_home = site.starts_with(&home) && storage.starts_with(&vp("/s0/LocalUser/u1"));
        in_home || in_vdir
    }
}
