//! A real Garage cluster for the object-storage tests: three nodes on loopback ports
//! (replication factor 3, quorum reads and writes), each with its own metadata and data
//! directories, joined into one layout, with a key and a bucket the key owns. Dropping
//! the cluster kills every node by its PID (even when the test panics) and removes its
//! files.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The region every test cluster answers for.
pub const REGION: &str = "garage";

/// One node: its configuration file, its S3 port, its process.
pub struct Node {
    pub config: PathBuf,
    pub s3_port: u16,
    child: Option<Child>,
    log: PathBuf,
}

/// A running three-node cluster with a bucket.
pub struct Garage {
    pub nodes: Vec<Node>,
    pub bucket: String,
    pub key_id: String,
    pub secret: String,
    binary: PathBuf,
    _dir: tempfile::TempDir,
}

/// The `garage` binary: on the PATH or where `cargo install` puts it; fails the test
/// with one clear line when it is missing.
pub fn binary() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin")));
    for dir in candidates {
        let p = dir.join("garage");
        if p.is_file() {
            return p;
        }
    }
    panic!("these tests need Garage (cargo install --locked garage --no-default-features --features bundled-libs,lmdb; .ci/run installs it)");
}

/// Hex digits nobody else's run will have.
fn random_hex(n: usize) -> String {
    let mut out = String::new();
    while out.len() < n {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("random bytes");
        for b in bytes {
            out.push_str(&format!("{b:02x}"));
        }
    }
    out.truncate(n);
    out
}

impl Garage {
    /// Starts the cluster and makes `bucket`; ready for S3 requests when it returns.
    pub fn start() -> Garage {
        let binary = binary();
        let dir = tempfile::tempdir().unwrap();
        let rpc_secret = random_hex(64);
        let mut nodes = Vec::new();
        for i in 0..3 {
            let (rpc, s3, admin) = (
                crate::harness::free_port(),
                crate::harness::free_port(),
                crate::harness::free_port(),
            );
            let home = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(home.join("meta")).unwrap();
            std::fs::create_dir_all(home.join("data")).unwrap();
            let config = home.join("garage.toml");
            let text = format!(
                "metadata_dir = {meta:?}\n\
                 data_dir = {data:?}\n\
                 db_engine = \"lmdb\"\n\
                 metadata_fsync = false\n\
                 data_fsync = false\n\
                 replication_factor = 3\n\
                 consistency_mode = \"consistent\"\n\
                 rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_secret = \"{rpc_secret}\"\n\
                 [s3_api]\n\
                 s3_region = \"{REGION}\"\n\
                 api_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.localhost\"\n\
                 [admin]\n\
                 api_bind_addr = \"127.0.0.1:{admin}\"\n",
                meta = home.join("meta").display().to_string(),
                data = home.join("data").display().to_string(),
            );
            std::fs::write(&config, text).unwrap();
            let log = home.join("garage.log");
            let child = Command::new(&binary)
                .arg("-c")
                .arg(&config)
                .arg("server")
                .env("RUST_LOG", "garage=warn")
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::create(home.join("garage.err")).unwrap())
                .spawn()
                .unwrap_or_else(|e| panic!("garage does not start: {e}"));
            nodes.push(Node {
                config,
                s3_port: s3,
                child: Some(child),
                log,
            });
        }
        let mut g = Garage {
            nodes,
            bucket: "wharf".into(),
            key_id: format!("GK{}", random_hex(24)),
            secret: random_hex(64),
            binary,
            _dir: dir,
        };
        g.form_cluster();
        g
    }

    /// Runs the CLI against node `i`.
    pub fn cli(&self, i: usize, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg("60")
            .arg(&self.binary)
            .arg("-c")
            .arg(&self.nodes[i].config)
            .args(args)
            .output()
            .expect("garage runs")
    }

    /// Runs the CLI and fails the test unless it succeeds; its stdout.
    fn must(&self, i: usize, args: &[&str]) -> String {
        let out = self.cli(i, args);
        assert!(
            out.status.success(),
            "garage {args:?}: {}\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Polls `f` until it returns `Some` or the deadline passes (then fails with `what`
    /// and the nodes' logs).
    fn poll<T>(&mut self, what: &str, secs: u64, mut f: impl FnMut(&Garage) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            for (i, n) in self.nodes.iter_mut().enumerate() {
                if let Some(status) = n.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    n.child = None;
                    panic!(
                        "garage node {i} exited ({status}) while {what}: {}",
                        self.logs()
                    );
                }
            }
            assert!(
                Instant::now() < deadline,
                "garage: {what} after {secs} s: {}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn form_cluster(&mut self) {
        let ids: Vec<String> = (0..3)
            .map(|i| {
                self.poll("no node id", 30, |g| {
                    let out = g.cli(i, &["node", "id", "-q"]);
                    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
                    (out.status.success() && text.contains('@')).then_some(text)
                })
            })
            .collect();
        for id in &ids[1..] {
            self.poll("nodes do not connect", 30, |g| {
                g.cli(0, &["node", "connect", id])
                    .status
                    .success()
                    .then_some(())
            });
        }
        for id in &ids {
            let short = id.split('@').next().unwrap_or(id);
            self.must(0, &["layout", "assign", "-z", "dc1", "-c", "1G", short]);
        }
        self.must(0, &["layout", "apply", "--version", "1"]);
        let (key, secret) = (self.key_id.clone(), self.secret.clone());
        self.must(0, &["key", "import", "--yes", "-n", "wharf", &key, &secret]);
        let bucket = self.bucket.clone();
        self.poll("the bucket cannot be made", 30, |g| {
            g.cli(0, &["bucket", "create", &bucket])
                .status
                .success()
                .then_some(())
        });
        self.must(
            0,
            &[
                "bucket", "allow", "--read", "--write", "--owner", &bucket, "--key", &key,
            ],
        );
        // Every node answers S3 once its layout has reached it: until then writes
        // are refused (503).
        for i in 0..3 {
            let port = self.nodes[i].s3_port;
            self.poll("the S3 API is not listening", 30, |_| {
                TcpStream::connect(("127.0.0.1", port)).ok().map(drop)
            });
            self.poll("the S3 API does not take writes", 60, |g| {
                let key = format!(".ready-{i}");
                g.try_put(i, &key, b"ready").ok()?;
                g.try_delete(i, &key).ok()
            });
        }
    }

    /// `http://127.0.0.1:port` of node `i`'s S3 API.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].s3_port)
    }

    /// The `[site.s3]` table for node `i` (path style, this cluster's key).
    pub fn site_table(&self, i: usize, extra: &str) -> String {
        format!(
            "endpoint = \"{}\"\nregion = \"{REGION}\"\naccess_key_id = \"{}\"\n\
             secret_access_key = \"{}\"\npath_style = true\n{extra}\n",
            self.endpoint(i),
            self.key_id,
            self.secret
        )
    }

    /// A signed S3 request of our own (not wharf's client), for checking the bucket.
    fn bucket_handle(&self, node: usize) -> (rusty_s3::Bucket, rusty_s3::Credentials) {
        let url = self.endpoint(node).parse().expect("an endpoint URL");
        let bucket =
            rusty_s3::Bucket::new(url, rusty_s3::UrlStyle::Path, self.bucket.clone(), REGION)
                .expect("a bucket");
        (
            bucket,
            rusty_s3::Credentials::new(self.key_id.clone(), self.secret.clone()),
        )
    }

    fn get_text(url: &str) -> String {
        let mut resp = ureq::get(url)
            .call()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        resp.body_mut().read_to_string().expect("a text body")
    }

    /// Stores `body` at `key` through node `node` (our own signed PUT).
    pub fn put(&self, node: usize, key: &str, body: &[u8]) {
        if let Err(e) = self.try_put(node, key, body) {
            panic!("PUT {key}: {e}");
        }
    }

    fn try_put(&self, node: usize, key: &str, body: &[u8]) -> Result<(), ureq::Error> {
        use rusty_s3::S3Action;
        let (bucket, creds) = self.bucket_handle(node);
        let url = rusty_s3::actions::PutObject::new(&bucket, Some(&creds), key)
            .sign(Duration::from_secs(600));
        ureq::put(url.as_str()).send(body).map(drop)
    }

    fn try_delete(&self, node: usize, key: &str) -> Result<(), ureq::Error> {
        use rusty_s3::S3Action;
        let (bucket, creds) = self.bucket_handle(node);
        let url = rusty_s3::actions::DeleteObject::new(&bucket, Some(&creds), key)
            .sign(Duration::from_secs(600));
        ureq::delete(url.as_str()).call().map(drop)
    }

    /// Every key in the bucket (asked of node `node`), in order.
    pub fn keys(&self, node: usize) -> Vec<String> {
        use rusty_s3::S3Action;
        let (bucket, creds) = self.bucket_handle(node);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut list = rusty_s3::actions::ListObjectsV2::new(&bucket, Some(&creds));
            if let Some(t) = &token {
                list.with_continuation_token(t.clone());
            }
            let text = Garage::get_text(list.sign(Duration::from_secs(600)).as_str());
            let page = rusty_s3::actions::ListObjectsV2::parse_response(&text).expect("a listing");
            out.extend(page.contents.into_iter().map(|c| c.key));
            token = page.next_continuation_token;
            if token.is_none() {
                return out;
            }
        }
    }

    /// The keys of multipart uploads begun and neither completed nor aborted.
    pub fn pending_uploads(&self, node: usize) -> Vec<String> {
        use rusty_s3::S3Action;
        let (bucket, creds) = self.bucket_handle(node);
        // ListMultipartUploads is `GET /bucket/?uploads`: a GetObject of the empty key
        // with that query signs exactly it.
        let mut get = rusty_s3::actions::GetObject::new(&bucket, Some(&creds), "");
        get.query_mut().insert("uploads", "");
        let text = Garage::get_text(get.sign(Duration::from_secs(600)).as_str());
        assert!(
            text.contains("ListMultipartUploadsResult"),
            "not an uploads listing: {text}"
        );
        text.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next())
            .map(str::to_string)
            .collect()
    }

    /// Kills node `i` (SIGKILL) and waits for it.
    pub fn stop_node(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every node's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (i, n) in self.nodes.iter().enumerate() {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let err =
                std::fs::read_to_string(n.log.with_file_name("garage.err")).unwrap_or_default();
            let tail = |s: &str| {
                s.chars()
                    .rev()
                    .take(2000)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<String>()
            };
            out.push_str(&format!(
                "\n--- node {i} ---\n{}{}",
                tail(&text),
                tail(&err)
            ));
        }
        out
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.stop_node(i);
        }
    }
}
