//! The FTP clients people use, against wharf's default FTPS settings (issue 20): every
//! test starts the real server on loopback with a fresh certificate and drives it with
//! a client nobody here wrote, on both runtimes. What each client needs is in the
//! README's client table.
//!
//! - suppaftp (rustls) runs 50 protected transfers on one login over TLS 1.3: the
//!   control connection sends a fresh ticket with each data channel.
//! - curl moves three files each way in one command over TLS 1.3.
//! - rclone copies and syncs a 200-file tree with its default concurrency: its parallel
//!   control connections share one TLS session cache (the login-binding table).
//! - aioftp handshakes on its data connections before RETR/STOR (the early handshake).
//! - lftp uses active mode over IPv6 (`EPRT |2|::|port|`).
//! - Python's ftplib lists, resumes and manages files, plain and over FTPS.
//! - Node's basic-ftp moves files over FTPS.
//! - ncftp, busybox, wget, tnftp and inetutils' ftp move files over plain FTP (a
//!   sampled matrix of modes, families and sizes); curl's broken active FTPS stores
//!   nothing.

use std::io::Cursor;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use wharf_tests::harness::*;

/// A rustls client configuration that speaks TLS 1.3 only and trusts the fixture.
fn tls13_client(f: &Fixture) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(f.cacert()).unwrap();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// A tree of `n` files under `dir` in nested directories, with names that have spaces
/// and UTF-8, sizes from 0 up to ~70 KiB; returns the relative paths.
fn make_tree(dir: &Path, n: usize, seed: u64) -> Vec<String> {
    let names = ["plain", "with space", "ünïcødé", "日本語", "dash-and.dot"];
    (0..n)
        .map(|i| {
            let sub = format!("d{} {}", i % 7, names[i % names.len()]);
            let rel = format!("{sub}/f{i:03} {}.bin", names[(i / 7) % names.len()]);
            let size = [0, 1, 17, 4096, 70_001][i % 5] + i;
            let path = dir.join(&rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, random_bytes(size, seed + i as u64)).unwrap();
            rel
        })
        .collect()
}

/// Every file under `dir`, by relative path, with its contents.
fn read_tree(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[track_caller]
fn assert_same_tree(want: &Path, got: &Path) {
    let (want, got) = (read_tree(want), read_tree(got));
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    for (k, v) in &want {
        assert!(
            got[k] == *v,
            "{k}: {} bytes, expected {}",
            got[k].len(),
            v.len()
        );
    }
}

/// Runs a client command under `timeout`; `what` names it in failures. A client that is
/// not installed fails the test with one line saying so.
fn client_run(what: &str, cmd: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = Command::new("timeout")
        .arg("180")
        .arg(cmd)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("coreutils' timeout must be installed");
    if out.status.code() == Some(127) {
        panic!("{cmd} is not installed (.ci/run installs it)");
    }
    assert_ok(what, &out);
    out
}

/// A Python 3 that has aioftp (Debian's python3-aioftp is for /usr/bin/python3; another
/// python3 first on PATH may not have it).
fn python_with_aioftp() -> &'static str {
    for py in ["python3", "/usr/bin/python3"] {
        let ok = Command::new(py)
            .args(["-c", "import aioftp"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return py;
        }
    }
    panic!("no python3 with aioftp (.ci/run installs python3-aioftp)");
}

const AIOFTP: &str = r#"
import asyncio, ssl, sys
import aioftp

port, src, dst = int(sys.argv[1]), sys.argv[2], sys.argv[3]

async def main():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    client = aioftp.Client(ssl=ctx, socket_timeout=20)
    await client.connect("127.0.0.1", port)
    await client.login("alice", "s3cret")
    await client.make_directory("aio")
    await client.upload(src, "aio/up.bin", write_into=True)
    await client.download("aio/up.bin", dst, write_into=True)
    names = sorted(str(p) for p, info in await client.list("aio"))
    assert names == ["aio/up.bin"], names
    await client.remove("aio/up.bin")
    await client.quit()
    print("ok")

asyncio.run(asyncio.wait_for(main(), 90))
"#;

wharf_tests::per_runtime! {
fn suppaftp_runs_50_protected_transfers_on_one_login(rt) {
    use suppaftp::types::FileType;
    use suppaftp::{RustlsConnector, RustlsFtpStream};
    let f = Fixture::with_tls(rt, "");
    let ftp = RustlsFtpStream::connect(f.addr()).unwrap();
    let connector = RustlsConnector::from(tls13_client(&f));
    let mut ftp = ftp.into_secure(connector, "localhost").unwrap();
    ftp.login("alice", PASSWORD).unwrap();
    ftp.transfer_type(FileType::Binary).unwrap();
    // 25 uploads and 25 downloads on one login: rustls uses each TLS 1.3 ticket once.
    for i in 0..25u64 {
        let body = random_bytes([0, 1, 1000, 70_000][i as usize % 4] + i as usize, i);
        let name = format!("s{i:02}.bin");
        ftp.put_file(&name, &mut Cursor::new(&body))
            .unwrap_or_else(|e| panic!("upload {i}: {e}"));
        let got = ftp.retr_as_buffer(&name)
            .unwrap_or_else(|e| panic!("download {i}: {e}"))
            .into_inner();
        assert!(got == body, "download {i}");
        assert!(std::fs::read(f.root.join(&name)).unwrap() == body, "upload {i}");
    }
    ftp.quit().unwrap();
    f.assert_no_temp_files();
    f.stop();
}

fn curl_moves_three_files_each_way_in_one_command_over_tls13(rt) {
    let f = Fixture::with_tls(rt, "");
    let src = f.scratch().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let names = ["one.bin", "two.bin", "three.bin"];
    for (i, n) in names.iter().enumerate() {
        std::fs::write(src.join(n), random_bytes(100_000 * i + 17, i as u64)).unwrap();
    }
    let tls = ["--ssl-reqd", "--tlsv1.3", "--cacert", f.cacert(), "-u", "alice:s3cret"];
    let glob = format!("{}/{{{}}}", src.display(), names.join(","));
    let up = f.url("three/");
    curl(&[&tls[..], &["--ftp-create-dirs", "-T", &glob, &up]].concat());
    let down = f.scratch().join("down");
    std::fs::create_dir_all(&down).unwrap();
    let urls = format!("{}{{{}}}", f.url("three/"), names.join(","));
    let out = format!("{}/#1", down.display());
    curl(&[&tls[..], &[&urls, "-o", &out]].concat());
    assert_same_tree(&src, &f.root.join("three"));
    assert_same_tree(&src, &down);
    f.assert_no_temp_files();
    f.stop();
}

fn rclone_copies_and_syncs_a_tree_with_default_concurrency(rt) {
    let f = Fixture::with_tls(rt, "");
    let scratch = f.scratch();
    let src = scratch.join("src");
    let names = make_tree(&src, 200, 7);
    let config = scratch.join("rclone.conf");
    std::fs::write(&config, "").unwrap();
    let config = config.to_str().unwrap();
    let pass = client_run("rclone obscure", "rclone", &["obscure", PASSWORD], &[]);
    let pass = String::from_utf8(pass.stdout).unwrap();
    let remote = format!(
        ":ftp,host=127.0.0.1,port={},user=alice,pass={},explicit_tls=true,\
         no_check_certificate=true:tree",
        f.port,
        pass.trim()
    );
    // Failures must show, not be retried away.
    let strict = ["--config", config, "--retries", "1", "--low-level-retries", "1", "-q"];
    let src_s = src.to_str().unwrap();
    client_run("rclone copy", "rclone", &[&strict[..], &["copy", src_s, &remote]].concat(), &[]);
    assert_same_tree(&src, &f.root.join("tree"));
    // Change the tree: delete, rewrite (new sizes), add; sync mirrors it exactly.
    for rel in names.iter().step_by(9) {
        std::fs::remove_file(src.join(rel)).unwrap();
    }
    for (i, rel) in names.iter().enumerate().skip(4).step_by(11) {
        if src.join(rel).exists() {
            std::fs::write(src.join(rel), random_bytes(5000 + i, 99 + i as u64)).unwrap();
        }
    }
    make_tree(&src.join("new dir"), 12, 500);
    client_run("rclone sync", "rclone", &[&strict[..], &["sync", src_s, &remote]].concat(), &[]);
    assert_same_tree(&src, &f.root.join("tree"));
    f.assert_no_temp_files();
    f.stop();
}

fn aioftp_handshakes_before_its_commands_and_moves_files(rt) {
    // aioftp never resumes a TLS session (Python's ssl needs `session=`), so like
    // ftplib it needs the documented setting; its handshake before RETR/STOR is
    // answered by the early data handshake.
    let f = Fixture::with_implicit_tls(rt, "require_tls_session_reuse = false");
    let src = f.scratch().join("aio-src.bin");
    let dst = f.scratch().join("aio-dst.bin");
    let body = random_bytes(1024 * 1024 + 17, 20);
    std::fs::write(&src, &body).unwrap();
    let port = f.implicit_port.unwrap().to_string();
    let (src_s, dst_s) = (src.to_str().unwrap(), dst.to_str().unwrap());
    let py = python_with_aioftp();
    let out = client_run("aioftp", py, &["-c", AIOFTP, &port, src_s, dst_s], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));
    assert!(std::fs::read(&dst).unwrap() == body, "the download");
    assert!(!f.root.join("aio/up.bin").exists(), "removed");
    f.assert_no_temp_files();
    f.stop();
}

fn lftp_uses_active_mode_over_ipv6(rt) {
    let f = Fixture::with_tls_on(rt, "[::1]:0", "");
    let src = f.scratch().join("v6-src.bin");
    let dst = f.scratch().join("v6-dst.bin");
    let body = random_bytes(1024 * 1024 + 17, 6);
    std::fs::write(&src, &body).unwrap();
    for tls in [
        "set ftp:ssl-allow no",
        "set ftp:ssl-force true; set ftp:ssl-protect-data true; set ssl:verify-certificate no",
    ] {
        let _ = std::fs::remove_file(&dst);
        let script = format!(
            "set ftp:passive-mode off; {tls}; open -u alice,{PASSWORD} ftp://[::1]:{port}; \
             put {src} -o /v6.bin; get /v6.bin -o {dst}; cls /v6.bin; rm /v6.bin; quit",
            port = f.port,
            src = src.display(),
            dst = dst.display()
        );
        let out = lftp(&script);
        assert_ok(&format!("lftp ({tls})"), &out);
        assert!(String::from_utf8_lossy(&out.stdout).contains("v6.bin"), "{tls}");
        assert!(std::fs::read(&dst).unwrap() == body, "{tls}: the download");
        assert!(!f.root.join("v6.bin").exists(), "{tls}: removed");
    }
    f.assert_no_temp_files();
    f.stop();
}
}

/// Runs `cmd args` with `input` on its stdin (for the interactive clients).
fn client_stdin(what: &str, cmd: &str, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    let mut child = Command::new("timeout")
        .arg("180")
        .arg(cmd)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("coreutils' timeout must be installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.code() == Some(127) {
        panic!("{cmd} is not installed (.ci/run installs it)");
    }
    assert_ok(what, &out);
    out
}

/// One cell of the plain-FTP matrix: `client` uploads `up` bytes as `/m/<name>` (unless
/// it cannot upload) and downloads the site's `/m/<name>.src` of `down` bytes, in
/// `mode` ("pasv" or "port") over the fixture's address family.
fn matrix_cell(f: &Fixture, v6: bool, client: &str, mode: &str, up: usize, down: usize) {
    let cell = format!("{client} {mode} {}", if v6 { "IPv6" } else { "IPv4" });
    let name = format!("{client}-{mode}");
    let dir = f.scratch().join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(f.root.join("m")).unwrap();
    let up_body = random_bytes(up, up as u64 + 1);
    let down_body = random_bytes(down, down as u64 + 2);
    let local_up = dir.join(&name);
    std::fs::write(&local_up, &up_body).unwrap();
    std::fs::write(f.root.join(format!("m/{name}.src")), &down_body).unwrap();
    let local_down = dir.join(format!("{name}.src"));
    let host = if v6 { "::1" } else { "127.0.0.1" };
    let url_host = if v6 { "[::1]" } else { "127.0.0.1" };
    let port = f.port.to_string();
    let (lu, ld) = (local_up.to_str().unwrap(), dir.to_str().unwrap());
    let mut uploads = true;
    match client {
        "ncftp" => {
            let m = if mode == "port" { "-E" } else { "-F" };
            let auth = ["-u", "alice", "-p", PASSWORD, "-P", &port, m, host];
            client_run(&cell, "ncftpput", &[&auth[..], &["/m", lu]].concat(), &[]);
            let remote = format!("/m/{name}.src");
            client_run(
                &cell,
                "ncftpget",
                &[&auth[..], &[ld, &remote]].concat(),
                &[],
            );
        }
        "busybox" => {
            let auth = ["-u", "alice", "-p", PASSWORD, "-P", &port, host];
            let remote = format!("/m/{name}");
            client_run(
                &cell,
                "busybox",
                &[&["ftpput"], &auth[..], &[&remote, lu]].concat(),
                &[],
            );
            let src = format!("/m/{name}.src");
            let out = local_down.to_str().unwrap();
            client_run(
                &cell,
                "busybox",
                &[&["ftpget"], &auth[..], &[out, &src]].concat(),
                &[],
            );
        }
        "wget" => {
            uploads = false;
            let url = format!("ftp://alice:{PASSWORD}@{url_host}:{port}/m/{name}.src");
            let active = if mode == "port" {
                "--no-passive-ftp"
            } else {
                "--passive-ftp"
            };
            let out = local_down.to_str().unwrap();
            client_run(&cell, "wget", &["-q", active, "-O", out, &url], &[]);
        }
        "tnftp" | "inetutils-ftp" => {
            let passive = match (client, mode) {
                ("tnftp", "port") => "passive off",
                ("tnftp", _) => "passive on",
                (_, "port") => "sunique off",
                _ => "passive",
            };
            let script = format!(
                "open {host} {port}\nuser alice {PASSWORD}\nbinary\n{passive}\n\
                 put {lu} /m/{name}\nget /m/{name}.src {down}\nquit\n",
                down = local_down.display()
            );
            let args: &[&str] = if client == "tnftp" {
                &["-n"]
            } else {
                &["-n", "-v"]
            };
            let out = client_stdin(&cell, client, args, &script);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                !text.contains("\n5") && !text.starts_with('5'),
                "{cell}: {text}"
            );
        }
        other => panic!("no such client {other}"),
    }
    if uploads {
        let got = std::fs::read(f.root.join(format!("m/{name}"))).unwrap_or_default();
        assert!(
            got == up_body,
            "{cell}: upload of {up} B arrived as {} B",
            got.len()
        );
    }
    let got = std::fs::read(&local_down).unwrap_or_default();
    assert!(
        got == down_body,
        "{cell}: download of {down} B arrived as {} B",
        got.len()
    );
}

const MIB: usize = 1024 * 1024;

wharf_tests::per_runtime! {
fn the_command_line_clients_move_files_over_plain_ftp(rt) {
    // Every client and mode once per run; the sizes rotate over the cells, and the
    // 32 MiB file goes to a different cell on each runtime.
    let cells = [
        ("ncftp", "pasv", false),
        ("ncftp", "port", false),
        ("busybox", "pasv", false),
        ("wget", "pasv", false),
        ("wget", "port", true),
        ("tnftp", "pasv", true),
        ("tnftp", "port", false),
        ("inetutils-ftp", "pasv", false),
        ("inetutils-ftp", "port", false),
    ];
    let sizes = [0, 1, MIB + 17];
    let big = if rt == "mio" { 2 } else { 5 };
    let v4 = Fixture::start(rt);
    let v6 = Fixture::with_tls_on(rt, "[::1]:0", "");
    for (i, &(client, mode, ipv6)) in cells.iter().enumerate() {
        let up = sizes[i % 3];
        let down = if i == big { 32 * MIB } else { sizes[(i + 1) % 3] };
        let f = if ipv6 { &v6 } else { &v4 };
        matrix_cell(f, ipv6, client, mode, up, down);
    }
    v4.assert_no_temp_files();
    v6.assert_no_temp_files();
    v4.stop();
    v6.stop();
}

fn curl_active_mode_over_tls_never_stores_clear_text(rt) {
    // curl 7.87/7.88 breaks active FTPS (curl#10666). Whatever it does, wharf must not
    // store a byte that did not arrive over TLS: either the upload fails and nothing is
    // stored, or the file is exact.
    let f = Fixture::with_tls(rt, "");
    let src = f.scratch().join("active.bin");
    let body = random_bytes(100_000, 9);
    std::fs::write(&src, &body).unwrap();
    let out = curl_output(&[
        "--ssl-reqd", "--cacert", f.cacert(), "-u", "alice:s3cret", "-P", "127.0.0.1",
        "--max-time", "20", "-T", src.to_str().unwrap(), &f.url("active.bin"),
    ]);
    match std::fs::read(f.root.join("active.bin")) {
        Ok(got) => assert!(got == body && out.status.success(), "partial or clear text stored"),
        Err(_) => assert!(!out.status.success(), "curl says it uploaded, but nothing is stored"),
    }
    f.assert_no_temp_files();
    f.stop();
}
}

/// Python's ftplib with the README's session-resuming subclass, default settings: a
/// 200-entry listing with spaces and UTF-8 names, resumed uploads and downloads (the
/// server's part differs from the client's, so a client that sent the whole file again,
/// or a server that wrote at the wrong offset, is caught), mkdir, rename and delete;
/// over explicit FTPS with EPSV, and plain FTP with PASV and PORT.
const FTPLIB: &str = r#"
import ftplib, io, ssl, sys
port, mode, cafile = int(sys.argv[1]), sys.argv[2], sys.argv[3]

class ResumingFTP_TLS(ftplib.FTP_TLS):
    def ntransfercmd(self, cmd, rest=None):
        conn, size = ftplib.FTP.ntransfercmd(self, cmd, rest)
        if self._prot_p:
            conn = self.context.wrap_socket(conn, server_hostname=self.host,
                                            session=self.sock.session)
        return conn, size

def body(n, seed):
    return bytes((i * 31 + seed) % 251 for i in range(n))

if mode == "tls":
    ctx = ssl.create_default_context(cafile=cafile)
    ftp = ResumingFTP_TLS(context=ctx)
    ftp.connect("localhost", port, timeout=30)
    ftp.login("alice", "s3cret")
    ftp.prot_p()
else:
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", port, timeout=30)
    ftp.login("alice", "s3cret")
    ftp.set_pasv(mode == "pasv")

d = "list-" + mode
ftp.mkd(d)
names = sorted("%03d %s" % (i, ["plain", "with space", "ünïcødé", "日本語"][i % 4]) for i in range(200))
for n in names:
    ftp.storbinary("STOR %s/%s" % (d, n), io.BytesIO(n.encode()))
got = sorted(n.split("/")[-1] for n in ftp.nlst(d))
assert got == names, (len(got), got[:3])
facts = {n: f for n, f in ftp.mlsd(d)}
assert all(int(facts[n]["size"]) == len(n.encode()) for n in names)

# Resume an upload: the server holds a first part that differs from the client's, so
# only bytes sent from the offset leave the file as expected.
full = body(1024 * 1024 + 17, 3)
cut = 300007
ftp.storbinary("STOR %s/resume.bin" % d, io.BytesIO(b"\xee" * cut))
src = io.BytesIO(full)
src.seek(cut)
ftp.storbinary("STOR %s/resume.bin" % d, src, rest=cut)
got = io.BytesIO()
ftp.retrbinary("RETR %s/resume.bin" % d, got.write)
assert got.getvalue() == b"\xee" * cut + full[cut:], "resumed upload"
# Resume a download from an offset.
tail = io.BytesIO()
ftp.retrbinary("RETR %s/resume.bin" % d, tail.write, rest=cut + 5)
assert tail.getvalue() == full[cut + 5:], "resumed download"

ftp.rename("%s/resume.bin" % d, "%s/renamed.bin" % d)
ftp.delete("%s/renamed.bin" % d)
for n in names:
    ftp.delete("%s/%s" % (d, n))
ftp.rmd(d)
ftp.quit()
print("ok")
"#;

wharf_tests::per_runtime! {
fn ftplib_lists_resumes_and_manages_files(rt) {
    let f = Fixture::with_tls(rt, "");
    let port = f.port.to_string();
    for mode in ["tls", "pasv", "port"] {
        let out = python(FTPLIB, &[&port, mode, f.cacert()]);
        assert!(out.contains("ok"), "{mode}: {out}");
        assert!(!f.root.join(format!("list-{mode}")).exists(), "{mode}: removed");
    }
    f.assert_no_temp_files();
    f.stop();
}
}

/// Node's basic-ftp over explicit FTPS, default settings (it resumes the control
/// session on its data connections). .ci/run installs it with npm into
/// `target/interop-npm`.
const BASIC_FTP: &str = r#"
const ftp = require("basic-ftp");
const fs = require("fs");
const [port, src, dst, empty] = process.argv.slice(1);
(async () => {
    const c = new ftp.Client(30000);
    await c.access({ host: "127.0.0.1", port: Number(port), user: "alice",
                     password: "s3cret", secure: true,
                     secureOptions: { rejectUnauthorized: false } });
    await c.ensureDir("/node dir");
    await c.uploadFrom(src, "up ü.bin");
    await c.downloadTo(dst, "up ü.bin");
    const names = (await c.list()).map(f => f.name);
    if (JSON.stringify(names) !== JSON.stringify(["up ü.bin"])) throw new Error(names);
    let emptyUpload = "ok";
    try { await c.uploadFrom(empty, "empty.bin"); } catch (e) { emptyUpload = "failed: " + e.message; }
    console.log("empty upload: " + emptyUpload);
    c.close();
    console.log("done");
})().catch(e => { console.error(e); process.exit(1); });
"#;

/// Where .ci/run installs the npm clients (`npm install --prefix target/interop-npm`).
fn node_modules() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/interop-npm/node_modules");
    if !dir.join("basic-ftp").exists() {
        panic!(
            "basic-ftp is not installed in {} (.ci/run installs it with npm)",
            dir.display()
        );
    }
    dir
}

wharf_tests::per_runtime! {
fn basic_ftp_moves_files_over_ftps(rt) {
    let f = Fixture::with_tls(rt, "");
    let modules = node_modules();
    let scratch = f.scratch();
    let (src, dst, empty) = (scratch.join("n-src"), scratch.join("n-dst"), scratch.join("n-0"));
    let body = random_bytes(MIB + 17, 44);
    std::fs::write(&src, &body).unwrap();
    std::fs::write(&empty, b"").unwrap();
    let port = f.port.to_string();
    let paths = [src.to_str().unwrap(), dst.to_str().unwrap(), empty.to_str().unwrap()];
    let env = [("NODE_PATH", modules.to_str().unwrap())];
    let out = client_run("basic-ftp", "node", &[&["-e", BASIC_FTP, &port], &paths[..]].concat(), &env);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("done"), "{text}");
    println!("basic-ftp on {rt}: {text}");
    assert!(std::fs::read(f.root.join("node dir/up ü.bin")).unwrap() == body, "upload");
    assert!(std::fs::read(&dst).unwrap() == body, "download");
    // basic-ftp may end an empty upload without close_notify (a known client bug):
    // then it fails and nothing is stored; if it succeeds, the file is there, empty.
    match std::fs::read(f.root.join("node dir/empty.bin")) {
        Ok(got) => assert!(got.is_empty() && text.contains("empty upload: ok"), "{text}"),
        Err(_) => assert!(text.contains("empty upload: failed"), "{text}"),
    }
    f.assert_no_temp_files();
    f.stop();
}
}
