//! The live sessions page in a real headless Chromium (Debian `chromium` and
//! `chromium-driver`), driven through chromedriver's WebDriver HTTP API with curl: two
//! FTP sessions with running downloads show with their progress, a click on one's
//! "disconnect" ends it (its curl reads the 421), the other goes on; a screenshot is
//! kept in `target/tmp/sessions-page-RUNTIME.png`.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{curl, free_port, Wharf, PATIENCE};
use serde_json::{json, Value};

const ADMIN_PASSWORD: &str = "adm1n-pw";

/// Downloads big.bin anonymously from argv[1]:argv[2]; prints how it ended.
const FTPLIB_DOWNLOAD: &str = "
import ftplib, sys
f = ftplib.FTP()
f.connect(sys.argv[1], int(sys.argv[2]), timeout=60)
f.login()
got = 0
def take(b):
    global got
    got += len(b)
try:
    f.retrbinary('RETR big.bin', take)
    print('complete', got)
except ftplib.all_errors as e:
    print('ended', got, e)
";

/// A process the test started, killed by pid when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn need(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{tool} is not installed: .ci/run installs it (Debian chromium, chromium-driver)"
    );
}

/// One WebDriver call: `method` on `path` with `body`; the answer's `value`.
fn webdriver(driver: &str, method: &str, path: &str, body: Option<Value>) -> Value {
    let url = format!("http://{driver}{path}");
    let mut args = vec!["-X", method, "-H", "Content-Type: application/json"];
    let data = body.map(|b| b.to_string());
    if let Some(d) = &data {
        args.extend(["--data-binary", d.as_str()]);
    }
    args.push(&url);
    let out = curl(&args);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("chromedriver {method} {path}: {e}: {out:?}"));
    if v["value"]["error"].is_string() {
        panic!("chromedriver {method} {path}: {}", v["value"]);
    }
    v["value"].clone()
}

/// Runs `script` in the page; its return value.
fn script(driver: &str, session: &str, script: &str) -> Value {
    webdriver(
        driver,
        "POST",
        &format!("/session/{session}/execute/sync"),
        Some(json!({ "script": script, "args": [] })),
    )
}

/// Polls `script` until `done` holds for its value; panics with the last one.
fn until(
    driver: &str,
    session: &str,
    what: &str,
    js: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let v = script(driver, session, js);
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {PATIENCE:?}; last {v}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn sessions_page(runtime: &str) {
    need("chromium");
    need("chromedriver");
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("pub");
    std::fs::create_dir(&root).unwrap();
    // 8 MB at 256 KiB/s (the server paces anonymous transfers): the downloads run for
    // the whole test.
    let big: Vec<u8> = (0..8_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(root.join("big.bin"), &big).unwrap();
    let out = common::run(tmp.path(), &["passwd"], &format!("{ADMIN_PASSWORD}\n"));
    let admin_hash = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let cfg = tmp.path().join("wharf.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nshards = 1\n\n\
             [limits]\nanonymous_bandwidth = 262144\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\npassword_hash = \"{admin_hash}\"\n\n\
             [site]\nname = \"files\"\nroot = \"pub\"\nanonymous = true\n"
        ),
    )
    .unwrap();
    let args = ["--config", cfg.to_str().unwrap(), "--runtime", runtime];
    let mut w = Wharf::start(tmp.path(), &args, &[]);
    let ftp = w.serving();
    let line = w.stdout.expect("saying where the admin listener is", |l| {
        l.contains("admin listener on")
    });
    let admin = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("http://"))
        .unwrap()
        .trim_end_matches('/')
        .to_string();

    // Two downloads by Python's ftplib, which reads the final reply after the data
    // connection ends (curl reports only the short transfer).
    let (host, port) = ftp.rsplit_once(':').unwrap();
    let download = || {
        Command::new("python3")
            .args(["-c", FTPLIB_DOWNLOAD, host, port])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 must be installed (.ci/run installs it)")
    };
    let mut clients = [Guard(download()), Guard(download())];

    let port = free_port();
    let driver = format!("127.0.0.1:{port}");
    let _chromedriver = Guard(
        Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver"),
    );
    let deadline = Instant::now() + PATIENCE;
    while curl(&[&format!("http://{driver}/status")])
        .stdout
        .is_empty()
    {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not answer within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let profile = tmp.path().join("chromium-profile");
    let caps = json!({ "capabilities": { "alwaysMatch": {
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,720", format!("--user-data-dir={}", profile.display())]
        }
    }}});
    let created = webdriver(&driver, "POST", "/session", Some(caps));
    let session = created["sessionId"]
        .as_str()
        .expect("a WebDriver session")
        .to_string();
    struct Quit<'a>(&'a str, String);
    impl Drop for Quit<'_> {
        fn drop(&mut self) {
            let _ = curl(&[
                "-X",
                "DELETE",
                &format!("http://{}/session/{}", self.0, self.1),
            ]);
        }
    }
    let _quit = Quit(&driver, session.clone());
    // The admin's credentials on every request the page makes (as a browser that has
    // been given them once would send them).
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("admin:{ADMIN_PASSWORD}"));
    let cdp = format!("/session/{session}/goog/cdp/execute");
    webdriver(
        &driver,
        "POST",
        &cdp,
        Some(json!({"cmd": "Network.enable", "params": {}})),
    );
    webdriver(
        &driver,
        "POST",
        &cdp,
        Some(json!({"cmd": "Network.setExtraHTTPHeaders",
                    "params": {"headers": {"Authorization": format!("Basic {basic}")}}})),
    );
    webdriver(
        &driver,
        "POST",
        &format!("/session/{session}/url"),
        Some(json!({ "url": format!("http://{admin}/") })),
    );

    // Both sessions, each with its download's progress.
    let rows = until(
        &driver,
        &session,
        "two sessions with running downloads on the page",
        "return { status: document.getElementById('status').textContent,
                  rows: [...document.querySelectorAll('#sessions tbody tr[data-id]')].map(r => ({
            id: r.dataset.id,
            command: r.querySelector('.command').textContent,
            progress: r.querySelector('.progress').textContent,
            site: r.cells[2].textContent })) };",
        |v| {
            let rows = v["rows"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            rows.len() == 2
                && rows.iter().all(|r| {
                    let p = r["progress"].as_str().unwrap_or("");
                    r["command"] == "RETR big.bin" && p.ends_with('%') && p.trim() != "0%"
                })
        },
    );
    let rows = rows["rows"].clone();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["site"] == "files"),
        "{rows}"
    );
    let sites = script(
        &driver,
        &session,
        "return document.querySelector('#sites tbody').textContent;",
    );
    assert!(sites.as_str().unwrap().starts_with("files2"), "{sites}");

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let png = webdriver(
        &driver,
        "GET",
        &format!("/session/{session}/screenshot"),
        None,
    );
    let png = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap())
        .unwrap();
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let shot = shots.join(format!("sessions-page-{runtime}.png"));
    std::fs::write(&shot, &png).unwrap();

    // Click the first session's "disconnect".
    let first = rows[0]["id"].as_str().unwrap().to_string();
    let button = webdriver(
        &driver,
        "POST",
        &format!("/session/{session}/element"),
        Some(
            json!({"using": "css selector", "value": format!("#session-{first} button.disconnect")}),
        ),
    );
    let element = button
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(Value::as_str)
        .expect("the disconnect button")
        .to_string();
    webdriver(
        &driver,
        "POST",
        &format!("/session/{session}/element/{element}/click"),
        Some(json!({})),
    );
    until(
        &driver,
        &session,
        "the disconnected session to leave the page",
        "return [...document.querySelectorAll('#sessions tbody tr[data-id]')].map(r => r.dataset.id);",
        |v| v.as_array().is_some_and(|a| a.len() == 1 && a[0] != first.as_str()),
    );
    // Exactly one client was told 421 and ended; the other still downloads.
    let deadline = Instant::now() + PATIENCE;
    let ended = loop {
        let done: Vec<usize> = (0..2)
            .filter(|&i| matches!(clients[i].0.try_wait(), Ok(Some(_))))
            .collect();
        if !done.is_empty() {
            break done;
        }
        assert!(
            Instant::now() < deadline,
            "no client ended after the disconnect"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(ended.len(), 1, "both clients ended");
    let (mut said, mut err) = (String::new(), String::new());
    use std::io::Read;
    let c = &mut clients[ended[0]].0;
    c.stdout.take().unwrap().read_to_string(&mut said).unwrap();
    c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(
        said.starts_with("ended ") && said.contains("421 Disconnected by the server administrator"),
        "{said}{err}"
    );
    let other = 1 - ended[0];
    assert!(
        matches!(clients[other].0.try_wait(), Ok(None)),
        "the other download stopped too"
    );
    drop(clients);
    assert!(w.terminate().success());
}

#[test]
fn the_sessions_page_shows_live_transfers_and_disconnects_one_mio() {
    sessions_page("mio");
}

#[test]
fn the_sessions_page_shows_live_transfers_and_disconnects_one_smol() {
    sessions_page("smol");
}
