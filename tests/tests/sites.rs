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

/// The walkthrough's directory in `tmp`: the configuration, its users file, a copy of
/// the demo tree, and the two sites' certificates in `tls/`, made as the README makes
/// them (self-signed, CN and DNS name = the site's host name). Returns the
/// configuration's path.
fn walkthrough_dir(tmp: &Path) -> PathBuf {
    copy_tree(&examples().join("iis-demo"), &tmp.join("iis-demo"));
    for file in ["iis-scenarios.toml", "iis-users.toml"] {
        std::fs::copy(examples().join(file), tmp.join(file)).unwrap();
    }
    for host in ["ftpsite01.com", "ftpsite02.com"] {
        wharf_tests::certs::self_signed(&tmp.join("tls"), host);
    }
    tmp.join("iis-scenarios.toml")
}

/// The walkthrough's server on a copy of the demo tree, on 127.0.0.1 with free ports for
/// the shared address (`Fixture::port`) and site 2's implicit FTPS
/// (`Fixture::implicit_port`).
fn scenarios(rt: &'static str) -> Fixture {
    scenarios_edited(rt, |text| text)
}

/// The same, with the configuration text edited first.
fn scenarios_edited(rt: &'static str, edit: impl FnOnce(String) -> String) -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let config = walkthrough_dir(tmp.path());
    let text = edit(std::fs::read_to_string(config).unwrap());
    let base = tmp.path().display().to_string();
    // Two listeners, so real ports (port 0 in a binding means "any port").
    let (shared, implicit) = (free_port(), free_port());
    let replaced = text
        .replace("127.0.0.1:2121:", &format!("127.0.0.1:{shared}:"))
        .replace("127.0.0.1:2990:", &format!("127.0.0.1:{implicit}:"))
        .replace("root = \"iis-demo/", &format!("root = \"{base}/iis-demo/"))
        .replace("= \"tls/", &format!("= \"{base}/tls/"))
        .replace(
            "users_file = \"iis-users.toml\"",
            &format!("users_file = \"{base}/iis-users.toml\""),
        )
        .replace(
            "passive_ports = \"50000-50100\"",
            &format!("passive_ports = \"0-0\"\nshards = 2\nruntime = \"{rt}\""),
        );
    assert!(
        !replaced.contains(":2121:") && !replaced.contains(":2990:"),
        "every binding moved"
    );
    let demo = tmp.path().join("iis-demo");
    let mut f = Fixture::from_toml(rt, tmp, demo, &replaced);
    assert_eq!(f.port, shared);
    f.implicit_port = Some(implicit);
    f
}

/// A site's certificate files (`HOST.crt`, `HOST.key`, `HOST.pub`) in the fixture.
fn cert(f: &Fixture, host: &str) -> PathBuf {
    f.root
        .parent()
        .unwrap()
        .join("tls")
        .join(format!("{host}.crt"))
}

/// The site's public key (PEM), for curl's `--pinnedpubkey`.
fn pubkey(f: &Fixture, host: &str) -> String {
    cert(f, host).with_extension("pub").display().to_string()
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

/// Which certificate answers where: the peer certificate of TLS connections to the
/// shared address (with and without SNI, after HOST) and to site 2's implicit port,
/// compared with each site's certificate file.
const SCENARIO3_CERTIFICATES: &str = r#"
import socket, ssl, sys
port, implicit = int(sys.argv[1]), int(sys.argv[2])
certs = {}
for path in sys.argv[3:]:
    certs[ssl.PEM_cert_to_DER_cert(open(path).read())] = path.rsplit("/", 1)[1][:-4]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE

def read_reply(sock):
    buf = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            raise SystemExit("connection closed after %r" % buf)
        buf += chunk
        if any(len(l) >= 4 and l[:3].isdigit() and l[3:4] == b" " for l in buf.split(b"\r\n")[:-1]):
            return buf.decode()

def cmd(sock, line, code):
    sock.sendall(line.encode() + b"\r\n")
    r = read_reply(sock)
    assert r.startswith(code), (line, r)
    return r

def served(tls):
    der = tls.getpeercert(binary_form=True)
    return certs.get(der, "a certificate of neither site")

def explicit(sni=None, host=None):
    raw = socket.create_connection(("127.0.0.1", port), timeout=30)
    read_reply(raw)
    if host:
        cmd(raw, "HOST " + host, "220")
    cmd(raw, "AUTH TLS", "234")
    return ctx.wrap_socket(raw, server_hostname=sni)

def check(what, tls, want):
    got = served(tls)
    assert got == want, "%s: served %s, expected %s" % (what, got, want)
    print("%s: %s" % (what, got))

# The shared address: the first site bound there answers a client that names none...
tls = explicit()
check("shared, no SNI", tls, "ftpsite01.com")
cmd(tls, "USER ftpsite01.com|user1", "331")
cmd(tls, "PASS pass1", "230")
assert "203,0,113,1" in cmd(tls, "PASV", "227")
tls.close()
check("shared, SNI ftpsite01.com", explicit(sni="ftpsite01.com"), "ftpsite01.com")
# ...and the SNI name picks the site and its certificate, as HOST would.
tls = explicit(sni="ftpsite02.com")
check("shared, SNI ftpsite02.com", tls, "ftpsite02.com")
cmd(tls, "USER user2", "331")
cmd(tls, "PASS pass2", "230")
assert "203,0,113,2" in cmd(tls, "PASV", "227"), "SNI chose site 2"
cmd(tls, "QUIT", "221")
tls.close()
# HOST before AUTH TLS: the named site's certificate.
check("shared, HOST ftpsite02.com", explicit(host="ftpsite02.com"), "ftpsite02.com")
# An unknown SNI name changes nothing.
check("shared, SNI ftpsite03.com", explicit(sni="ftpsite03.com"), "ftpsite01.com")
# Site 2's implicit port: TLS at once, site 2's certificate, then its banner.
raw = socket.create_connection(("127.0.0.1", implicit), timeout=30)
tls = ctx.wrap_socket(raw, server_hostname=None)
check("implicit", tls, "ftpsite02.com")
banner = read_reply(tls)
assert banner.startswith("220") and "ftpsite02.com: isolation demo" in banner, banner
tls.close()
# ftpsite01.com is not served on that port: naming it changes nothing, and the
# certificate is that of the site that answers.
raw = socket.create_connection(("127.0.0.1", implicit), timeout=30)
tls = ctx.wrap_socket(raw, server_hostname="ftpsite01.com")
check("implicit, SNI ftpsite01.com", tls, "ftpsite02.com")
banner = read_reply(tls)
assert "ftpsite02.com: isolation demo" in banner, banner
tls.close()
print("ok")
"#;

/// ftplib's FTP_TLS on the shared address naming site 2 with HOST: the certificate, the
/// login, and PROT P transfers. ftplib's data connections do not resume the control
/// session, which site 2 requires: refused with a reply naming the setting. A subclass
/// that passes the control connection's session to the data connection works.
const SCENARIO3_FTPLIB_TLS: &str = r#"
import ftplib, io, ssl, sys
port, want = int(sys.argv[1]), ssl.PEM_cert_to_DER_cert(open(sys.argv[2]).read())
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE

class ResumingFTP_TLS(ftplib.FTP_TLS):
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host,
                                            session=self.sock.session)
        return conn, size

def session(cls):
    ftp = cls(context=ctx)
    ftp.connect("127.0.0.1", port, timeout=30)
    banner = ftp.sendcmd("HOST ftpsite02.com")
    assert "ftpsite02.com: isolation demo" in banner, banner
    ftp.auth()
    assert ftp.sock.getpeercert(binary_form=True) == want, "not ftpsite02.com's certificate"
    ftp.login("user2", "pass2")
    ftp.prot_p()
    return ftp

ftp = session(ftplib.FTP_TLS)
try:
    ftp.retrlines("RETR readme.txt", lambda l: None)
    raise SystemExit("a data connection that did not resume its session was accepted")
except ftplib.error_perm as e:
    assert str(e).startswith("522") and "require_tls_session_reuse" in str(e), e
ftp.quit()

ftp = session(ResumingFTP_TLS)
lines = []
ftp.retrlines("RETR readme.txt", lines.append)
assert lines == ["home of user2 on ftpsite02.com"], lines
body = bytes(range(256)) * 4001
ftp.storbinary("STOR ftplib.bin", io.BytesIO(body))
got = io.BytesIO()
ftp.retrbinary("RETR ftplib.bin", got.write)
assert got.getvalue() == body
assert sorted(ftp.nlst()) == ["ftplib.bin", "readme.txt"], ftp.nlst()
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
        "set ftp:ssl-allow no; set ftp:prefer-epsv yes; open -u 'ftpsite01.com|user4,pass4' ftp://127.0.0.1:{port}; \
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
        "set ftp:ssl-allow no; set ftp:prefer-epsv yes; open -u 'ftpsite01.com|user3,pass3' ftp://127.0.0.1:{port}; \
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
        "set ftp:ssl-allow no; set ftp:prefer-epsv yes; open -u 'ftpsite02.com|anonymous,guest@example.com' \
         ftp://127.0.0.1:{port}; cd /; cd ..; cat readme.txt; quit",
        port = f.port
    ));
    assert_ok("lftp anonymous", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "public files of ftpsite02.com\n");
    let src = f.scratch().join("mine.txt");
    std::fs::write(&src, b"user4's\n").unwrap();
    let out = lftp(&format!(
        "set ftp:ssl-allow no; set ftp:prefer-epsv yes; open -u 'ftpsite02.com|anonymous,guest@example.com' \
         ftp://127.0.0.1:{port}; put {src}; quit",
        port = f.port,
        src = src.display()
    ));
    assert!(!out.status.success(), "anonymous uploaded");
    let out = lftp(&format!(
        "set ftp:ssl-allow no; set ftp:prefer-epsv yes; open -u 'ftpsite02.com|user4,pass4' ftp://127.0.0.1:{port}; \
         cd ../user1; put {src}; quit",
        port = f.port,
        src = src.display()
    ));
    // `cd ../user1` fails (it is not there), so lftp stops before the upload...
    assert!(!out.status.success(), "{out:?}");
    let out = lftp(&format!(
        "set ftp:ssl-allow no; set ftp:prefer-epsv yes; open -u 'ftpsite02.com|user4,pass4' ftp://127.0.0.1:{port}; \
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
        "set ftp:ssl-allow no; set ftp:prefer-epsv yes; open -u 'ftpsite01.com|user2,pass2' ftp://127.0.0.1:{port}; \
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
        "set ftp:ssl-allow no; set ftp:prefer-epsv no; set ftp:fix-pasv-address no; \
         open -u 'ftpsite01.com|user1,pass1' ftp://127.0.0.1:{port}; cat computer.txt; quit",
        port = f.port
    ));
    assert_ok("lftp over PASV", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "computer file of ftpsite01.com\n");
    f.stop();
}

fn scenario3_explicit_ftps_on_site01_with_curl_and_lftp(rt) {
    let f = scenarios(rt);
    let user = "ftpsite01.com|user1:pass1";
    // curl to 127.0.0.1 sends no SNI name: the shared address's first site, ftpsite01.com,
    // answers AUTH TLS, with its own key (--pinnedpubkey fails on any other).
    let pin01 = pubkey(&f, "ftpsite01.com");
    let ftps = |more: &[&str]| {
        let mut args = vec!["--ssl-reqd", "-k", "--pinnedpubkey", pin01.as_str()];
        args.extend_from_slice(more);
        curl_as(user, &args)
    };
    let out = ftps(&["-l", &f.url("")]);
    assert_ok("curl FTPS list", &out);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("< 234") && err.contains("> PROT P"), "{err}");
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    assert_eq!(names, ["computer.txt", "test.txt"]);
    let out = ftps(&[&f.url("computer.txt")]);
    assert_ok("curl FTPS download", &out);
    assert!(out.stdout == std::fs::read(site01(&f).join("computer.txt")).unwrap());
    let src = f.scratch().join("up.bin");
    let body = random_bytes(300_001, 11);
    std::fs::write(&src, &body).unwrap();
    assert_ok("curl FTPS upload", &ftps(&["-T", src.to_str().unwrap(), &f.url("tls-up.bin")]));
    assert!(std::fs::read(site01(&f).join("tls-up.bin")).unwrap() == body);
    // Site 2's key is not what answers here.
    let pin02 = pubkey(&f, "ftpsite02.com");
    let out = curl_as(user, &["--ssl-reqd", "-k", "--pinnedpubkey", &pin02, &f.url("")]);
    assert_eq!(out.status.code(), Some(90), "curl: pinned key mismatch expected: {out:?}");

    // By name (curl sends SNI ftpsite01.com and checks the name): site 1's certificate
    // verifies, site 2's does not.
    let resolve = format!("ftpsite01.com:{}:127.0.0.1", f.port);
    let url = format!("ftp://ftpsite01.com:{}/computer.txt", f.port);
    let cert01 = cert(&f, "ftpsite01.com").display().to_string();
    let cert02 = cert(&f, "ftpsite02.com").display().to_string();
    let out = curl_as(user, &["--ssl-reqd", "--cacert", &cert01, "--resolve", &resolve, &url]);
    assert_ok("curl FTPS, certificate verified", &out);
    assert_eq!(out.stdout, b"computer file of ftpsite01.com\n");
    let out = curl_as(user, &["--ssl-reqd", "--cacert", &cert02, "--resolve", &resolve, &url]);
    assert_eq!(out.status.code(), Some(60), "curl: verification failure expected: {out:?}");

    // lftp, TLS forced on both channels, verifying the certificate against site 1's
    // (lftp sends no SNI to an address either, so the name is not checked).
    let down = f.scratch().join("computer.txt");
    let lftp_src = f.scratch().join("lftp.bin");
    let lftp_body = random_bytes(150_017, 12);
    std::fs::write(&lftp_src, &lftp_body).unwrap();
    let script = |ca: &str| {
        format!(
            "set ftp:ssl-force true; set ftp:ssl-protect-data true; \
             set ssl:verify-certificate yes; set ssl:check-hostname no; set ssl:ca-file {ca}; \
             open -u 'ftpsite01.com|user1,pass1' ftp://127.0.0.1:{port}; \
             cls -1; get computer.txt -o {down}; put {src} -o lftp.bin; quit",
            port = f.port,
            down = down.display(),
            src = lftp_src.display()
        )
    };
    let out = lftp(&script(&cert01));
    assert_ok("lftp FTPS", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "computer.txt\ntest.txt\ntls-up.bin\n");
    assert_eq!(std::fs::read(&down).unwrap(), b"computer file of ftpsite01.com\n");
    assert!(std::fs::read(site01(&f).join("lftp.bin")).unwrap() == lftp_body);
    // And with verification off, as most people start.
    let out = lftp(&format!(
        "set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:verify-certificate no; \
         open -u 'ftpsite01.com|user1,pass1' ftp://127.0.0.1:{port}; cat computer.txt; quit",
        port = f.port
    ));
    assert_ok("lftp FTPS, not verifying", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "computer file of ftpsite01.com\n");
    // Site 2's certificate does not verify.
    let out = lftp(&script(&cert02));
    assert!(!out.status.success(), "lftp accepted site 2's certificate: {out:?}");
    f.assert_no_temp_files();
    f.stop();
}

fn scenario3_implicit_ftps_on_site02_with_curl(rt) {
    let f = scenarios(rt);
    // Site 2 alone answers its implicit port: no host name needed; TLS from the first
    // byte, data connections protected by default.
    let pin02 = pubkey(&f, "ftpsite02.com");
    let ftps = |more: &[&str]| {
        let mut args = vec!["-k", "--pinnedpubkey", pin02.as_str()];
        args.extend_from_slice(more);
        curl_as("user1:pass1", &args)
    };
    let out = ftps(&["-l", &f.ftps_url("")]);
    assert_ok("curl implicit list", &out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_end(), "readme.txt");
    let out = ftps(&[&f.ftps_url("readme.txt")]);
    assert_ok("curl implicit download", &out);
    assert_eq!(out.stdout, b"home of user1 on ftpsite02.com\n");
    let src = f.scratch().join("up.bin");
    let body = random_bytes(200_003, 13);
    std::fs::write(&src, &body).unwrap();
    assert_ok("curl implicit upload", &ftps(&["-T", src.to_str().unwrap(), &f.ftps_url("implicit.bin")]));
    assert!(std::fs::read(home(&f, "user1").join("implicit.bin")).unwrap() == body);
    let pin01 = pubkey(&f, "ftpsite01.com");
    let out = curl_as("user1:pass1", &["-k", "--pinnedpubkey", &pin01, &f.ftps_url("")]);
    assert_eq!(out.status.code(), Some(90), "curl: pinned key mismatch expected: {out:?}");

    // By name: site 2's certificate verifies for ftpsite02.com, site 1's does not.
    let implicit = f.implicit_port.unwrap();
    let resolve = format!("ftpsite02.com:{implicit}:127.0.0.1");
    let url = format!("ftps://ftpsite02.com:{implicit}/readme.txt");
    let cert01 = cert(&f, "ftpsite01.com").display().to_string();
    let cert02 = cert(&f, "ftpsite02.com").display().to_string();
    let out = curl_as("user1:pass1", &["--cacert", &cert02, "--resolve", &resolve, &url]);
    assert_ok("curl implicit, certificate verified", &out);
    assert_eq!(out.stdout, b"home of user1 on ftpsite02.com\n");
    let out = curl_as("user1:pass1", &["--cacert", &cert01, "--resolve", &resolve, &url]);
    assert_eq!(out.status.code(), Some(60), "curl: verification failure expected: {out:?}");

    // On the shared address, the SNI name curl sends chooses site 2 and its certificate:
    // no `host|` in the user name, no HOST command.
    let resolve = format!("ftpsite02.com:{}:127.0.0.1", f.port);
    let url = format!("ftp://ftpsite02.com:{}/readme.txt", f.port);
    let out = curl_as("user2:pass2", &["--ssl-reqd", "--cacert", &cert02, "--resolve", &resolve, &url]);
    assert_ok("curl explicit, site chosen by SNI", &out);
    assert_eq!(out.stdout, b"home of user2 on ftpsite02.com\n");
    f.assert_no_temp_files();
    f.stop();
}

fn scenario3_each_site_serves_its_own_certificate(rt) {
    let f = scenarios(rt);
    let out = python(
        SCENARIO3_CERTIFICATES,
        &[
            &f.port.to_string(),
            &f.implicit_port.unwrap().to_string(),
            cert(&f, "ftpsite01.com").to_str().unwrap(),
            cert(&f, "ftpsite02.com").to_str().unwrap(),
        ],
    );
    assert!(out.ends_with("ok\n"), "{out}");
    f.stop();
}

fn scenario3_ftplib_ftp_tls_with_host(rt) {
    let f = scenarios(rt);
    let out = python(
        SCENARIO3_FTPLIB_TLS,
        &[&f.port.to_string(), cert(&f, "ftpsite02.com").to_str().unwrap()],
    );
    assert!(out.ends_with("ok\n"), "{out}");
    let body: Vec<u8> = (0..=255u8).collect::<Vec<u8>>().repeat(4001);
    assert!(std::fs::read(home(&f, "user2").join("ftplib.bin")).unwrap() == body);
    f.assert_no_temp_files();
    f.stop();
}

fn scenario3_client_certificates_for_one_site(rt) {
    // ftpsite02.com requires client certificates from a CA; ftpsite01.com, on the same
    // address, asks for none.
    let pki = tempfile::tempdir().unwrap();
    let ca = wharf_tests::certs::TestCa::new(pki.path(), "iis CA");
    let client = ca.client(pki.path(), "user1");
    let ca_path = ca.files.cert.display().to_string();
    let f = scenarios_edited(rt, |text| {
        let site02_key = "private_key = \"tls/ftpsite02.com.key\"\n";
        assert!(text.contains(site02_key));
        text.replace(
            site02_key,
            &format!("{site02_key}client_certificates = \"require\"\nclient_ca = {ca_path:?}\n"),
        )
    });
    let cert = ["--cert", client.cert_str(), "--key", client.key_str()];
    // Implicit port: with the certificate, in; without, not.
    let url = f.ftps_url("readme.txt");
    let out = curl_as("user1:pass1", &[&["-k"][..], &cert, &[url.as_str()]].concat());
    assert_ok("implicit with a certificate", &out);
    assert_eq!(out.stdout, b"home of user1 on ftpsite02.com\n");
    let out = curl_as("user1:pass1", &["-k", &url]);
    assert!(!out.status.success(), "implicit without a certificate: {out:?}");
    // Shared address, site named by SNI: its handshake asks for the certificate.
    let resolve = format!("ftpsite02.com:{}:127.0.0.1", f.port);
    let url = format!("ftp://ftpsite02.com:{}/readme.txt", f.port);
    let sni = ["--ssl-reqd", "-k", "--resolve", resolve.as_str(), url.as_str()];
    let out = curl_as("user2:pass2", &[&cert[..], &sni].concat());
    assert_ok("SNI with a certificate", &out);
    assert_eq!(out.stdout, b"home of user2 on ftpsite02.com\n");
    let out = curl_as("user2:pass2", &sni);
    assert!(!out.status.success(), "SNI without a certificate: {out:?}");
    assert!(!String::from_utf8_lossy(&out.stderr).contains("< 230"));
    // By address, the handshake is ftpsite01.com's (no certificate asked): naming
    // ftpsite02.com afterwards is refused, and says why.
    let out = curl_as(
        "ftpsite02.com|user1:pass1",
        &[&cert[..], &["--ssl-reqd", "-k", &f.url("readme.txt")]].concat(),
    );
    refused("USER host|user after another site's handshake", &out, "530 This site requires a client certificate, but TLS was set up for another site");
    // ftpsite01.com asks for none.
    let out = curl_as("ftpsite01.com|user1:pass1", &["--ssl-reqd", "-k", &f.url("computer.txt")]);
    assert_ok("site 1 without a certificate", &out);
    f.stop();
}
}

/// The walkthrough configuration is valid as shipped, once the certificates the README
/// makes are there (paths relative to it).
#[test]
fn the_walkthrough_config_is_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let c = wharf_server::ServerConfig::from_file(&walkthrough_dir(tmp.path()))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.sites.len(), 2);
    assert_eq!(c.users.len(), 4);
    let listen: Vec<std::net::SocketAddr> = vec![
        "127.0.0.1:2121".parse().unwrap(),
        "127.0.0.1:2990".parse().unwrap(),
    ];
    assert_eq!(c.listen, listen);
    assert!(
        c.sites.iter().all(|s| s.tls.is_some()),
        "both sites offer FTPS"
    );
    let implicit: Vec<_> = c
        .sites
        .iter()
        .flat_map(|s| {
            s.bindings
                .iter()
                .filter(|b| b.implicit_tls)
                .map(|b| (s.name.clone(), b.addr))
        })
        .collect();
    assert_eq!(implicit, [("ftpsite02.com".to_string(), listen[1])]);
}

/// Without the certificates, the error says which file is missing and where it is named.
#[test]
fn the_walkthrough_config_names_missing_certificates() {
    let e = wharf_server::ServerConfig::from_file(&examples().join("iis-scenarios.toml"))
        .expect_err("the repository ships no certificates")
        .to_string();
    for (key, file) in [
        ("sites[0].tls.certificate", "tls/ftpsite01.com.crt"),
        ("sites[0].tls.private_key", "tls/ftpsite01.com.key"),
        ("sites[1].tls.certificate", "tls/ftpsite02.com.crt"),
    ] {
        assert!(
            e.lines()
                .any(|l| l.contains("iis-scenarios.toml:") && l.contains(key) && l.contains(file)),
            "{key} / {file} in:\n{e}"
        );
    }
}
