//! A real OpenLDAP `slapd` for the account tests: started on loopback ports with a
//! generated configuration, schema, directory and TLS certificates, logging every
//! operation (`-d stats`) to a file the tests read, and stopped by its PID when dropped
//! (even when the test panics).
//!
//! The directory (`dc=example,dc=com`) looks like a small Active Directory: users with
//! `sAMAccountName`, `memberOf`, `userAccountControl` and IIS's `msIIS-FTPRoot` /
//! `msIIS-FTPDir` (a small schema of the test's own gives these names equality rules,
//! which the informational `msuser.schema` OpenLDAP ships lacks), groups
//! (`groupOfNames`), and a service account for searches.

use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::certs::TestCa;

/// The password of every directory user.
pub const PASSWORD: &str = "s3cret";
/// The service account that searches.
pub const SERVICE_DN: &str = "cn=wharf,ou=services,dc=example,dc=com";
pub const SERVICE_PASSWORD: &str = "service-pw";
pub const BASE_DN: &str = "dc=example,dc=com";

const SCHEMA: &str = "\
attributetype ( 1.3.6.1.4.1.99999.1.1 NAME 'sAMAccountName' EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.2 NAME 'msIIS-FTPRoot' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.3 NAME 'msIIS-FTPDir' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.4 NAME 'userAccountControl' EQUALITY integerMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.27 SINGLE-VALUE )
attributetype ( 1.3.6.1.4.1.99999.1.5 NAME 'memberOf' EQUALITY distinguishedNameMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 )
objectclass ( 1.3.6.1.4.1.99999.2.1 NAME 'wharfTestAdUser' AUXILIARY MAY ( sAMAccountName $ msIIS-FTPRoot $ msIIS-FTPDir $ userAccountControl $ memberOf ) )
";

/// One directory user.
pub struct User<'a> {
    pub uid: &'a str,
    /// `memberOf` group names (under `ou=groups`).
    pub groups: &'a [&'a str],
    /// `msIIS-FTPRoot` and `msIIS-FTPDir`.
    pub home: Option<(&'a str, &'a str)>,
    /// `userAccountControl` has the ACCOUNTDISABLE bit (2).
    pub disabled: bool,
}

/// The users every test directory has.
pub const USERS: &[User<'static>] = &[
    // A regular user with an IIS home, in FTPUsers and Auditors.
    User {
        uid: "carol",
        groups: &["FTPUsers", "Auditors"],
        home: Some(("\\\\fs01\\ftp", "users\\carol")),
        disabled: false,
    },
    // No home attributes.
    User {
        uid: "dave",
        groups: &["FTPUsers"],
        home: None,
        disabled: false,
    },
    // Disabled, as Active Directory marks it.
    User {
        uid: "erin",
        groups: &["FTPUsers"],
        home: Some(("\\\\fs01\\ftp", "users\\erin")),
        disabled: true,
    },
    // In no group.
    User {
        uid: "grace",
        groups: &[],
        home: Some(("\\\\fs01\\ftp", "users\\grace")),
        disabled: false,
    },
];

/// A running slapd. Dropping it kills it (by PID) and removes its files.
pub struct Slapd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// `ldap://` port (StartTLS offered).
    pub port: u16,
    /// `ldaps://` port.
    pub ldaps_port: u16,
    /// The CA that signed slapd's certificate (PEM), for `ca_file`.
    pub ca: PathBuf,
    log: PathBuf,
}

fn ldif(out: &mut String, lines: &[String]) {
    for l in lines {
        out.push_str(l);
        out.push('\n');
    }
    out.push('\n');
}

impl Slapd {
    /// Starts slapd with the test directory; fails the test with one clear line if it
    /// cannot (not installed, cannot start).
    pub fn start() -> Slapd {
        let slapd = Path::new("/usr/sbin/slapd");
        assert!(
            slapd.exists(),
            "these tests need OpenLDAP's slapd (Debian: apt-get install slapd ldap-utils; .ci/run installs it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // TLS: a CA, and slapd's certificate for localhost and 127.0.0.1.
        let ca = TestCa::new(&d.join("tls"), "wharf-test-ldap-ca");
        let server = ca.server(&d.join("tls"), "slapd", &["localhost", "127.0.0.1"]);
        std::fs::write(d.join("wharf-test.schema"), SCHEMA).unwrap();
        std::fs::create_dir_all(d.join("db")).unwrap();
        let conf = format!(
            "include /etc/ldap/schema/core.schema\n\
             include /etc/ldap/schema/cosine.schema\n\
             include /etc/ldap/schema/inetorgperson.schema\n\
             include {schema}\n\
             modulepath /usr/lib/ldap\n\
             moduleload back_mdb\n\
             TLSCertificateFile {cert}\n\
             TLSCertificateKeyFile {key}\n\
             TLSCACertificateFile {ca}\n\
             database mdb\n\
             maxsize 67108864\n\
             suffix \"{BASE_DN}\"\n\
             rootdn \"cn=admin,{BASE_DN}\"\n\
             directory {db}\n\
             access to attrs=userPassword by anonymous auth by self read by * none\n\
             access to * by users read by * none\n",
            schema = d.join("wharf-test.schema").display(),
            cert = server.cert.display(),
            key = server.key.display(),
            ca = ca.files.cert.display(),
            db = d.join("db").display(),
        );
        std::fs::write(d.join("slapd.conf"), conf).unwrap();
        std::fs::write(d.join("data.ldif"), directory()).unwrap();
        let add = Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-l")
            .arg(d.join("data.ldif"))
            .output()
            .expect("slapadd runs");
        assert!(
            add.status.success(),
            "slapadd could not load the test directory: {}",
            String::from_utf8_lossy(&add.stderr)
        );
        let (port, ldaps_port) = (crate::harness::free_port(), crate::harness::free_port());
        let log = d.join("slapd.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(slapd)
            .arg("-f")
            .arg(d.join("slapd.conf"))
            .arg("-h")
            .arg(format!(
                "ldap://127.0.0.1:{port}/ ldaps://127.0.0.1:{ldaps_port}/"
            ))
            // Foreground, operations logged (stats) to stderr, which goes to the log.
            .args(["-d", "256"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("slapd starts");
        let mut s = Slapd {
            child: Some(child),
            ca: ca.files.cert.clone(),
            dir,
            port,
            ldaps_port,
            log,
        };
        s.wait_listening();
        s
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let up = [self.port, self.ldaps_port]
                .iter()
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok());
            if up {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("slapd exited at start ({status}): {}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "slapd is not listening after 20 s: {}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("slapd runs").id()
    }

    /// Sends `signal` to slapd (SIGSTOP makes it a directory that never answers).
    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on the PID of our own child.
        let rc = unsafe { libc::kill(self.pid() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// Stops slapd now (a directory that is down).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// `ldap://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldaps://127.0.0.1:PORT`.
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// What slapd has logged so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The logged operations (`SRCH`, `BIND`, ...) lines, in order.
    pub fn operations(&self, op: &str) -> Vec<String> {
        let needle = format!(" {op} ");
        self.log_text()
            .lines()
            .filter(|l| l.contains(&needle))
            .map(str::to_string)
            .collect()
    }

    /// The directory the test owns (scratch files beside slapd's).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // A stopped process dies of SIGKILL too.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The LDIF of the test directory.
fn directory() -> String {
    let mut out = String::new();
    let dn = |rdn: &str| format!("dn: {rdn},{BASE_DN}");
    ldif(
        &mut out,
        &[
            format!("dn: {BASE_DN}"),
            "objectClass: dcObject".into(),
            "objectClass: organization".into(),
            "o: Example".into(),
            "dc: example".into(),
        ],
    );
    for ou in ["people", "groups", "services"] {
        ldif(
            &mut out,
            &[
                dn(&format!("ou={ou}")),
                "objectClass: organizationalUnit".into(),
                format!("ou: {ou}"),
            ],
        );
    }
    ldif(
        &mut out,
        &[
            format!("dn: {SERVICE_DN}"),
            "objectClass: organizationalRole".into(),
            "objectClass: simpleSecurityObject".into(),
            "cn: wharf".into(),
            format!("userPassword: {SERVICE_PASSWORD}"),
        ],
    );
    let user_dn = |uid: &str| format!("uid={uid},ou=people,{BASE_DN}");
    let group_dn = |g: &str| format!("cn={g},ou=groups,{BASE_DN}");
    for u in USERS {
        let mut lines = vec![
            format!("dn: {}", user_dn(u.uid)),
            "objectClass: inetOrgPerson".into(),
            "objectClass: wharfTestAdUser".into(),
            format!("uid: {}", u.uid),
            format!("cn: {}", u.uid),
            format!("sn: {}", u.uid),
            format!("sAMAccountName: {}", u.uid),
            format!("userPassword: {PASSWORD}"),
            format!("userAccountControl: {}", if u.disabled { 514 } else { 512 }),
        ];
        for g in u.groups {
            lines.push(format!("memberOf: {}", group_dn(g)));
        }
        if let Some((root, dir)) = u.home {
            lines.push(format!("msIIS-FTPRoot: {root}"));
            lines.push(format!("msIIS-FTPDir: {dir}"));
        }
        ldif(&mut out, &lines);
    }
    for g in ["FTPUsers", "Auditors"] {
        let mut lines = vec![
            format!("dn: {}", group_dn(g)),
            "objectClass: groupOfNames".into(),
            format!("cn: {g}"),
        ];
        for u in USERS.iter().filter(|u| u.groups.contains(&g)) {
            lines.push(format!("member: {}", user_dn(u.uid)));
        }
        ldif(&mut out, &lines);
    }
    out
}
