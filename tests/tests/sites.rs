//! The issue's three IIS scenarios, end to end, from the configuration the README
//! walkthrough uses (`server/examples/iis-scenarios.toml`, its users file and demo
//! tree), driven by curl, lftp and Python's ftplib.

use std::path::{Path, PathBuf};
use std::process::Output;

use wharf_tests::harness::*;

/// `server/examples`.
fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/examples")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// The walkthrough's server on a copy of the demo tree, on 127.0.0.1 with an OS-chosen
/// port.
fn scenarios(rt: &'static str) -> Fixture {
    scenarios_edited(rt, |text| text)
}

/// The same, with the configuration text edited first.
fn scenarios_edited(rt: &'static str, edit: impl FnOnce(String) -> String) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let demo = tmp.path().join("iis-demo");
    copy_tree(&examples().join("iis-demo"), &demo);
    std::fs::copy(
        examples().join("iis-users.toml"),
        tmp.path().join("iis-users.toml"),
    )
    .unwrap();
    let text = edit(std::fs::read_to_string(examples().join("iis-scenarios.toml")).unwrap());
    let base = tmp.path().display().to_string();
    let replaced = text
        .replace("127.0.0.1:2121:", "127.0.0.1:0:")
        .replace("root = \"iis-demo/", &format!("root = \"{base}/iis-demo/"))
        .replace(
            "users_file = \"iis-users.toml\"",
            &format!("users_file = \"{base}/iis-users.toml\""),
        )
        .replace(
            "passive_ports = \"50000-50100\"",
            &format!("passive_ports = \"0-0\"\nshards = 2\nruntime = \"{rt}\""),
        );
    assert!(!replaced.contains(":2121"), "every binding moved to port 0");
    Fixture::from_toml(rt, tmp, demo, &replaced)
}

fn site01(f: &Fixture) -> PathBuf {
    f.root.join("ftpsite01")
}

fn home(f: &Fixture, user: &str) -> PathBuf {
    f.root.join("ftpsite02/LocalUser").join(user)
}

/// curl with `-u user:password` (verbose, so refusals show the server's reply);
/// returns the whole output.
fn curl_as(user: &str, args: &[&str]) -> Output {
    let mut all = vec!["-v", "-u", user];
    all.extend_from_slice(args);
    curl_output(&all)
}

#[track_caller]
fn refused(what: &str, out: &Output, code: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{what}: succeeded");
    assert!(
        err.lines().any(|l| l.starts_with(&format!("< {code}"))),
        "{what}: expected a {code} reply in {err}"
    );
}

const SCENARIO1_FTPLIB: &str = r#"
import ftplib, io, sys
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", int(sys.argv[1]), timeout=30)
# No site answers this address without a host name.
try:
    ftp.login("user3", "pass3")
    raise SystemExit("logged in without choosing a site")
except ftplib.error_perm as e:
    assert str(e).startswith("530") and "HOST" in str(e), e
assert ftp.sendcmd("HOST ftpsite01.com").startswith("220"), "HOST"
welcome = ftp.login("user3", "pass3")
assert "Welcome to ftpsite01.com." in welcome, welcome
buf = io.BytesIO()
ftp.retrbinary("RETR computer.txt", buf.write)
assert buf.getvalue() == b"computer file of ftpsite01.com\n", buf.getvalue()
for cmd in ("RETR test.txt", "RETR TEST.TXT", "RETR /sub/../test.txt"):
    try:
        ftp.retrbinary(cmd, lambda b: None)
        raise SystemExit(cmd + " was allowed")
    except ftplib.error_perm as e:
        assert str(e).startswith("550"), e
for call in (lambda: ftp.storbinary("STOR test.txt", io.BytesIO(b"x")),
             lambda: ftp.delete("test.txt"),
             lambda: ftp.size("test.txt")):
    try:
        call()
        raise SystemExit("test.txt was reachable")
    except ftplib.error_perm as e:
        assert str(e).startswith("550"), e
ftp.storbinary("STOR from-user3.txt", io.BytesIO(b"user3 was here\n"))
assert "test.txt" in ftp.nlst()
bye = ftp.quit()
assert bye.startswith("221") and "Bye from ftpsite01.com." in bye, bye
print("ok")
"#;

const SCENARIO2_FTPLIB: &str = r#"
import ftplib, io, sys
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", int(sys.argv[1]), timeout=30)
ftp.sendcmd("HOST ftpsite02.com")
ftp.login("user1", "pass1")
assert ftp.pwd() == "/", ftp.pwd()
assert ftp.nlst() == ["readme.txt"], ftp.nlst()
for target in ("/", "..", "../..", "/LocalUser"):
    try:
        ftp.cwd(target)
    except ftplib.error_perm:
        pass
    assert ftp.nlst() == ["readme.txt"], (target, ftp.nlst())
for target in ("../user2", "/../user2", "../../LocalUser/user2", "/LocalUser/user2"):
    try:
        ftp.cwd(target)
        raise SystemExit("left the home with CWD " + target)
    except ftplib.error_perm as e:
        assert str(e).startswith("550"), e
    assert ftp.pwd() == "/", ftp.pwd()
for path in ("../user2/readme.txt", "/../../LocalUser/user2/readme.txt", "../Public/readme.txt"):
    try:
        ftp.retrbinary("RETR " + path, lambda b: None)
        raise SystemExit("read " + path)
    except ftplib.error_perm as e:
        assert str(e).startswith("550"), e
lines = []
ftp.retrlines("RETR readme.txt", lines.append)
assert lines == ["home of user1 on ftpsite02.com"], lines
ftp.storbinary("STOR ../../escape.txt", io.BytesIO(b"mine\n"))
ftp.quit()

# A user without a home directory cannot log in.
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", int(sys.argv[1]), timeout=30)
try:
    ftp.login("ftpsite02.com|user3", "pass3")
    raise SystemExit("user3 logged in without a home")
except ftplib.error_perm as e:
    assert str(e).startswith("530") and "home directory" in str(e), e
ftp.close()
print("ok")
"#;

const SCENARIO3_FTPLIB: &str = r#"
import ftplib, io, sys
port = int(sys.argv[1])
expect_private = sys.argv[2] == "private"

def pasv_host(ftp):
    reply = ftp.sendcmd("PASV")
    assert reply.startswith("227"), reply
    return ".".join(reply.split("(")[1].split(")")[0].split(",")[:4])

# HOST: the site, its banner and its external address.
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", port, timeout=30)
try:
    ftp.sendcmd("HOST ftpsite03.com")
    raise SystemExit("an unknown host was accepted")
except ftplib.error_perm as e:
    assert str(e).startswith("504") and "ftpsite03.com" in str(e), e
banner = ftp.sendcmd("HOST ftpsite02.com")
assert banner.startswith("220") and "ftpsite02.com: isolation demo" in banner, banner
ftp.login("user2", "pass2")
assert pasv_host(ftp) == "203.0.113.2", "site 2's external address"
# ftplib connects to the control peer, not to the advertised address.
lines = []
ftp.retrlines("RETR readme.txt", lines.append)
assert lines == ["home of user2 on ftpsite02.com"], lines
try:
    ftp.sendcmd("HOST ftpsite01.com")
    raise SystemExit("HOST after login was accepted")
except ftplib.error_perm as e:
    assert str(e).startswith("503"), e
ftp.quit()

# USER host|user: the other site on the same address.
ftp = ftplib.FTP()
ftp.connect("127.0.0.1", port, timeout=30)
ftp.login("ftpsite01.com|user1", "pass1")
want = "127.0.0.1" if expect_private else "203.0.113.1"
assert pasv_host(ftp) == want, "site 1's passive address"
assert sorted(ftp.nlst()) == ["computer.txt", "test.txt"], ftp.nlst()
ftp.quit()
print("ok")
"#;

wharf_tests::per_runtime! {
fn scenario1_rules_with_curl(rt) {
    let f = scenarios(rt);
    let url = |p: &str| f.url(p);
    // Anonymous reads, never writes.
    let anon = "ftpsite01.com|anonymous:guest@example.com";
    let out = curl_as(anon, &[&url("test.txt")]);
    assert_ok("anonymous RETR", &out);
    assert_eq!(out.stdout, b"test file of ftpsite01.com\n");
    let src = f.scratch().join("up.txt");
    std::fs::write(&src, b"upload\n").unwrap();
    let out = curl_as(anon, &["-T", src.to_str().unwrap(), &url("anon.txt")]);
    refused("anonymous STOR", &out, "550 Permission denied.");
    assert!(!site01(&f).join("anon.txt").exists());

    // FTPUsersA: read and write.
    let out = curl_as("ftpsite01.com|user1:pass1", &[&url("test.txt")]);
    assert_ok("user1 RETR", &out);
    let out = curl_as("ftpsite01.com|user1:pass1", &["-T", src.to_str().unwrap(), &url("up.txt")]);
    assert_ok("user1 STOR", &out);
    assert_eq!(std::fs::read(site01(&f).join("up.txt")).unwrap(), b"upload\n");

    // user3 (FTPUsersB): everything but test.txt.
    let u3 = "ftpsite01.com|user3:pass3";
    let out = curl_as(u3, &[&url("computer.txt")]);
    assert_ok("user3 RETR computer.txt", &out);
    assert_eq!(out.stdout, b"computer file of ftpsite01.com\n");
    refused("user3 RETR test.txt", &curl_as(u3, &[&url("test.txt")]), "550 Permission denied.");
    let out = curl_as(u3, &["-T", src.to_str().unwrap(), &url("test.txt")]);
    refused("user3 STOR test.txt", &out, "550");
    assert_eq!(
        std::fs::read(site01(&f).join("test.txt")).unwrap(),
        b"test file of ftpsite01.com\n"
    );
    let out = curl_as(u3, &["-Q", "DELE test.txt", &url("")]);
    refused("user3 DELE test.txt", &out, "550");
    assert!(site01(&f).join("test.txt").exists());
    f.stop();
}

fn scenario1_rules_with_lftp_and_ftplib(rt) {
    let f = scenarios(rt);
    // user4 (FTPUsersB) is not user3: test.txt is theirs to read and replace.
    let down = f.scratch().join("t.txt");
    let src = f.scratch().join("new-test.txt");
    std::fs::write(&src, b"replaced by user4\n").unwrap();
    let out = lftp(&format!(
        "set ftp:prefer-epsv yes; open -u 'ftpsite01.com|user4,pass4' ftp://127.0.0.1:{port}; \
         get test.txt -o {down}; put {src} -o test.txt; quit",
        port = f.port,
        down = down.display(),
        src = src.display()
    ));
    assert_ok("lftp user4", &out);
    assert_eq!(std::fs::read(&down).unwrap(), b"test file of ftpsite01.com\n");
    assert_eq!(
        std::fs::read(site01(&f).join("test.txt")).unwrap(),
        b"replaced by user4\n"
    );
    // user3 through lftp: the same refusal.
    let out = lftp(&format!(
        "set ftp:prefer-epsv yes; open -u 'ftpsite01.com|user3,pass3' ftp://127.0.0.1:{port}; \
         get test.txt -o {down}2; quit",
        port = f.port,
        down = down.display(),
    ));
    assert!(!out.status.success(), "lftp user3 read test.txt");
    assert!(String::from_utf8_lossy(&out.stderr).contains("550"), "{out:?}");
    // ftplib: HOST first, then the same rules; messages along the way.
    python(SCENARIO1_FTPLIB, &[&f.port.to_string()]);
    assert_eq!(
        std::fs::read(site01(&f).join("from-user3.txt")).unwrap(),
        b"user3 was here\n"
    );
    f.assert_no_temp_files();
    f.stop();
}

fn scenario2_isolation_with_curl_lftp_and_ftplib(rt) {
    let f = scenarios(rt);
    // user3's home is removed: the login must be refused.
    std::fs::remove_dir_all(home(&f, "user3")).unwrap();
    python(SCENARIO2_FTPLIB, &[&f.port.to_string()]);
    // The upload to "../../escape.txt" landed in user1's home.
    assert_eq!(std::fs::read(home(&f, "user1").join("escape.txt")).unwrap(), b"mine\n");
    assert!(!f.root.join("ftpsite02/escape.txt").exists());

    // curl: each user's / is their home; `..` (sent as is) does not leave it.
    let listing = curl_as("ftpsite02.com|user2:pass2", &["-l", &f.url("")]);
    assert_ok("curl list", &listing);
    assert_eq!(String::from_utf8_lossy(&listing.stdout).trim_end(), "readme.txt");
    let out = curl_as(
        "ftpsite02.com|user2:pass2",
        &["--path-as-is", &f.url("../user1/readme.txt")],
    );
    refused("curl ../user1", &out, "550");
    let out = curl_as("ftpsite02.com|user2:pass2", &["--path-as-is", &f.url("../../readme.txt")]);
    assert_ok("curl ../../readme.txt", &out);
    assert_eq!(out.stdout, b"home of user2 on ftpsite02.com\n");

    // lftp: anonymous lands in Public, read-only; user4 in their own home.
    let out = lftp(&format!(
        "set ftp:prefer-epsv yes; open -u 'ftpsite02.com|anonymous,guest@example.com' \
         ftp://127.0.0.1:{port}; cd /; cd ..; cat readme.txt; quit",
        port = f.port
    ));
    assert_ok("lftp anonymous", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "public files of ftpsite02.com\n");
    let src = f.scratch().join("mine.txt");
    std::fs::write(&src, b"user4's\n").unwrap();
    let out = lftp(&format!(
        "set ftp:prefer-epsv yes; open -u 'ftpsite02.com|anonymous,guest@example.com' \
         ftp://127.0.0.1:{port}; put {src}; quit",
        port = f.port,
        src = src.display()
    ));
    assert!(!out.status.success(), "anonymous uploaded");
    let out = lftp(&format!(
        "set ftp:prefer-epsv yes; open -u 'ftpsite02.com|user4,pass4' ftp://127.0.0.1:{port}; \
         cd ../user1; put {src}; quit",
        port = f.port,
        src = src.display()
    ));
    // `cd ../user1` fails (it is not there), so lftp stops before the upload...
    assert!(!out.status.success(), "{out:?}");
    let out = lftp(&format!(
        "set ftp:prefer-epsv yes; open -u 'ftpsite02.com|user4,pass4' ftp://127.0.0.1:{port}; \
         put {src}; quit",
        port = f.port,
        src = src.display()
    ));
    assert_ok("lftp user4 put", &out);
    // ...and the plain upload lands in user4's home, nowhere else.
    assert_eq!(std::fs::read(home(&f, "user4").join("mine.txt")).unwrap(), b"user4's\n");
    assert!(!home(&f, "user1").join("mine.txt").exists());
    f.assert_no_temp_files();
    f.stop();
}

fn scenario3_virtual_hosts_and_external_addresses(rt) {
    let f = scenarios(rt);
    python(SCENARIO3_FTPLIB, &[&f.port.to_string(), "external"]);
    // curl and lftp transfer over EPSV, which needs no address.
    let out = curl_as("ftpsite02.com|user1:pass1", &[&f.url("readme.txt")]);
    assert_ok("curl site 2", &out);
    assert_eq!(out.stdout, b"home of user1 on ftpsite02.com\n");
    let out = curl_as("ftpsite01.com|user1:pass1", &[&f.url("computer.txt")]);
    assert_ok("curl site 1", &out);
    let out = curl_as("ftpsite09.com|user1:pass1", &[&f.url("")]);
    assert!(!out.status.success(), "an unknown host let curl in");
    let out = curl_as("user1:pass1", &[&f.url("")]);
    assert!(!out.status.success(), "no host, no site");
    let out = lftp(&format!(
        "set ftp:prefer-epsv yes; open -u 'ftpsite01.com|user2,pass2' ftp://127.0.0.1:{port}; \
         cat computer.txt; quit",
        port = f.port
    ));
    assert_ok("lftp site 1", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "computer file of ftpsite01.com\n");
    f.stop();
}

fn scenario3_private_clients_get_the_private_address(rt) {
    // Clients on 127.0.0.0/8 are "inside": site 1 advertises the address they reached.
    let f = scenarios_edited(rt, |text| {
        assert!(text.contains("external_ip = \"203.0.113.1\"\n"));
        text.replace(
            "external_ip = \"203.0.113.1\"\n",
            "external_ip = \"203.0.113.1\"\npassive_addresses = [{ networks = [\"127.0.0.0/8\"] }]\n",
        )
    });
    python(SCENARIO3_FTPLIB, &[&f.port.to_string(), "private"]);
    // A client that believes the 227 address (lftp with plain PASV) works too.
    let out = lftp(&format!(
        "set ftp:prefer-epsv no; set ftp:fix-pasv-address no; \
         open -u 'ftpsite01.com|user1,pass1' ftp://127.0.0.1:{port}; cat computer.txt; quit",
        port = f.port
    ));
    assert_ok("lftp over PASV", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "computer file of ftpsite01.com\n");
    f.stop();
}
}

/// The shipped walkthrough configuration is valid as it stands (paths relative to it).
#[test]
fn the_walkthrough_config_is_valid() {
    let c = wharf_server::ServerConfig::from_file(&examples().join("iis-scenarios.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.sites.len(), 2);
    assert_eq!(c.users.len(), 4);
    assert_eq!(c.listen, vec!["127.0.0.1:2121".parse().unwrap()]);
}
