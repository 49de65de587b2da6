//! [`S3Store`]: a site root (or virtual directory) in an S3-compatible bucket, as a
//! [`wharf_core::Storage`].
//!
//! Requests are signed with `rusty-s3` (sans-IO: it builds presigned URLs and parses the
//! XML answers) and sent with `ureq` (blocking HTTP): no async runtime joins the
//! server's. Every [`Storage`] call runs where the runtimes run storage calls, on their
//! worker pools, never on an event loop; file bodies move in the background
//! ([`crate::s3_stream`]) so that the pump's reads and writes never wait on the network.
//!
//! The namespace: a path is a key below the configured prefix; a directory is the set of
//! keys below `dir/`, plus an empty "folder marker" object `dir/` that MKD writes (so an
//! empty directory exists). Listings use the `/` delimiter and are paged. What object
//! storage cannot do is refused with its reason: APPE and REST+STOR (objects are written
//! whole), renaming a directory, MFMT. RNFR/RNTO of a file is a copy and a delete: not
//! atomic (a reader may see both names for a moment; a failure between the two leaves
//! both).

use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rusty_s3::actions::{
    CreateMultipartUpload, DeleteObject, HeadObject, ListObjectsV2, PutObject, S3Action,
};
use rusty_s3::{Bucket, Credentials, UrlStyle};
use ureq::http::Response;
use ureq::Body;
use wharf_core::backend::{Download, Upload};
use wharf_core::{DirEntry, FileKind, FsError, Metadata, Storage, VPath, WriteMode};

use crate::s3_stream::{S3Download, S3Upload};

/// The longest key S3 stores, in bytes.
pub const MAX_KEY: usize = 1024;
/// How long a presigned request stays valid (it is sent at once).
const SIGN_FOR: Duration = Duration::from_secs(15 * 60);
/// Attempts for a request the store answered with a retryable failure (5xx, 429,
/// SlowDown, a transport error), as S3 clients make them.
const ATTEMPTS: u32 = 4;

/// Where a site's files live: `s3://bucket/prefix` and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// `http(s)://host:port` of the S3 API.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    /// Keys start with this (no leading or trailing `/`; empty: the whole bucket).
    pub prefix: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// `http://host/bucket/key` rather than `http://bucket.host/key`.
    pub path_style: bool,
    /// Bytes per multipart part.
    pub part_size: usize,
    /// Parts of one upload sent at once: an upload holds `1 + parallel_parts` parts.
    pub parallel_parts: usize,
    /// Each request's deadline (connect, response, each read of a body).
    pub timeout: Duration,
}

impl S3Settings {
    /// Splits `s3://bucket/prefix` into bucket and prefix.
    pub fn parse_root(root: &str) -> Option<Result<(String, String), String>> {
        let rest = root.strip_prefix("s3://")?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        if bucket.is_empty() {
            return Some(Err(format!(
                "{root:?} names no bucket (s3://bucket/prefix)"
            )));
        }
        if prefix.split('/').any(|s| s == "." || s == "..") || prefix.contains("//") {
            return Some(Err(format!(
                "{root:?}: the prefix must be plain names separated by single slashes"
            )));
        }
        Some(Ok((bucket.to_string(), prefix.to_string())))
    }
}

/// The connection to one bucket and prefix, shared by the store and its transfers.
pub(crate) struct Client {
    bucket: Bucket,
    creds: Credentials,
    agent: ureq::Agent,
    /// `prefix/`, or empty.
    prefix: String,
    pub part_size: usize,
    pub parallel_parts: usize,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("bucket", &self.bucket.name())
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// A failed request, judged: retry it, or give this error.
enum Failure {
    Retry(String),
    Final(FsError),
}

impl Client {
    pub(crate) fn key(&self, rel: &str) -> Result<String, FsError> {
        let key = format!("{}{rel}", self.prefix);
        if key.len() > MAX_KEY || rel.contains('\0') {
            return Err(FsError::BadName);
        }
        Ok(key)
    }

    /// Sends a request (built afresh for each attempt), retrying what S3 clients retry,
    /// with a short exponential backoff; answers the response of a 2xx.
    pub(crate) fn send(
        &self,
        what: &str,
        attempt: impl Fn(&ureq::Agent) -> Result<Response<Body>, ureq::Error>,
    ) -> Result<Response<Body>, FsError> {
        let mut last = String::new();
        for n in 0..ATTEMPTS {
            if n > 0 {
                std::thread::sleep(Duration::from_millis(50 << (2 * n)));
            }
            let failure = match attempt(&self.agent) {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => judge(resp),
                Err(e) => Failure::Retry(e.to_string()),
            };
            match failure {
                Failure::Final(e) => return Err(e),
                Failure::Retry(why) => {
                    tracing::debug!(what, attempt = n + 1, %why, "object store request failed");
                    last = why;
                }
            }
        }
        tracing::warn!(what, why = %last, "object store unavailable");
        Err(FsError::Io(format!("object store unavailable: {last}")))
    }

    fn head(&self, key: &str) -> Result<Option<Head>, FsError> {
        let url = HeadObject::new(&self.bucket, Some(&self.creds), key).sign(SIGN_FOR);
        match self.send("HEAD", |a| a.head(url.as_str()).call()) {
            Ok(resp) => Ok(Some(Head::of(&resp))),
            Err(FsError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One page of `prefix` with the `/` delimiter.
    fn list_page(
        &self,
        prefix: &str,
        token: Option<&str>,
        max: usize,
    ) -> Result<rusty_s3::actions::list_objects_v2::ListObjectsV2Response, FsError> {
        let mut action = ListObjectsV2::new(&self.bucket, Some(&self.creds));
        action.with_prefix(prefix);
        action.with_delimiter("/");
        action.with_max_keys(max);
        if let Some(t) = token {
            action.with_continuation_token(t);
        }
        let url = action.sign(SIGN_FOR);
        let mut resp = self.send("LIST", |a| a.get(url.as_str()).call())?;
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| FsError::Io(format!("object store listing: {e}")))?;
        ListObjectsV2::parse_response(&text)
            .map_err(|e| FsError::Io(format!("object store listing does not parse: {e}")))
    }

    /// Whether any key starts with `dir/` (the marker counts).
    fn dir_exists(&self, dir_prefix: &str) -> Result<bool, FsError> {
        if dir_prefix.is_empty() {
            return Ok(true);
        }
        let page = self.list_page(dir_prefix, None, 1)?;
        Ok(!page.contents.is_empty() || !page.common_prefixes.is_empty())
    }

    pub(crate) fn put(&self, key: &str, body: &[u8]) -> Result<(), FsError> {
        let url = PutObject::new(&self.bucket, Some(&self.creds), key).sign(SIGN_FOR);
        self.send("PUT", |a| a.put(url.as_str()).send(body))
            .map(drop)
    }

    fn delete(&self, key: &str) -> Result<(), FsError> {
        let url = DeleteObject::new(&self.bucket, Some(&self.creds), key).sign(SIGN_FOR);
        self.send("DELETE", |a| a.delete(url.as_str()).call())
            .map(drop)
    }

    fn copy(&self, from: &str, to: &str) -> Result<(), FsError> {
        let source = format!("/{}/{}", self.bucket.name(), encode_key(from));
        let mut action = PutObject::new(&self.bucket, Some(&self.creds), to);
        action
            .headers_mut()
            .insert("x-amz-copy-source", source.clone());
        let url = action.sign(SIGN_FOR);
        self.send("COPY", |a| {
            a.put(url.as_str())
                .header("x-amz-copy-source", &source)
                .send_empty()
        })
        .map(drop)
    }

    pub(crate) fn create_multipart(&self, key: &str) -> Result<String, FsError> {
        let url = CreateMultipartUpload::new(&self.bucket, Some(&self.creds), key).sign(SIGN_FOR);
        let mut resp = self.send("CREATE MULTIPART", |a| a.post(url.as_str()).send_empty())?;
        let text = resp
            .body_mut()
            .read_to_string()
            .map_err(|e| FsError::Io(format!("object store: {e}")))?;
        CreateMultipartUpload::parse_response(&text)
            .map(|r| r.upload_id().to_string())
            .map_err(|e| FsError::Io(format!("object store answer does not parse: {e}")))
    }

    pub(crate) fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u16,
        body: &[u8],
    ) -> Result<String, FsError> {
        use rusty_s3::actions::UploadPart;
        let url =
            UploadPart::new(&self.bucket, Some(&self.creds), key, number, upload_id).sign(SIGN_FOR);
        let resp = self.send("UPLOAD PART", |a| a.put(url.as_str()).send(body))?;
        resp.headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| FsError::Io("object store: a part without an ETag".into()))
    }

    pub(crate) fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        etags: &[String],
    ) -> Result<(), FsError> {
        use rusty_s3::actions::CompleteMultipartUpload;
        let action = CompleteMultipartUpload::new(
            &self.bucket,
            Some(&self.creds),
            key,
            upload_id,
            etags.iter().map(String::as_str),
        );
        let url = action.sign(SIGN_FOR);
        let body = action.body();
        self.send("COMPLETE MULTIPART", |a| {
            a.post(url.as_str()).send(body.as_bytes())
        })
        .map(drop)
    }

    pub(crate) fn abort_multipart(&self, key: &str, upload_id: &str) {
        use rusty_s3::actions::AbortMultipartUpload;
        let url = AbortMultipartUpload::new(&self.bucket, Some(&self.creds), key, upload_id)
            .sign(SIGN_FOR);
        if let Err(e) = self.send("ABORT MULTIPART", |a| a.delete(url.as_str()).call()) {
            tracing::warn!(key, error = %e, "an aborted upload's parts may stay in the bucket");
        }
    }

    /// A GET of `key` from `offset`, only while the object is still `etag`.
    pub(crate) fn get_from(
        &self,
        key: &str,
        offset: u64,
        etag: Option<&str>,
    ) -> Result<Box<dyn Read + Send>, FsError> {
        use rusty_s3::actions::GetObject;
        let url = GetObject::new(&self.bucket, Some(&self.creds), key).sign(SIGN_FOR);
        let range = format!("bytes={offset}-");
        let resp = self.send("GET", |a| {
            let mut req = a.get(url.as_str()).header("range", &range);
            if let Some(tag) = etag {
                req = req.header("if-match", tag);
            }
            req.call()
        })?;
        Ok(Box::new(resp.into_body().into_reader()))
    }
}

/// Percent-encodes a key for `x-amz-copy-source` (slashes stay).
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// What a non-2xx answer means: retryable, or the FTP error it becomes.
fn judge(mut resp: Response<Body>) -> Failure {
    let status = resp.status().as_u16();
    let text = resp
        .body_mut()
        .with_config()
        .limit(64 << 10)
        .read_to_string()
        .unwrap_or_default();
    let code = xml_field(&text, "Code").unwrap_or_default();
    let message = xml_field(&text, "Message").unwrap_or_default();
    let why = format!("HTTP {status} {code} {message}").trim().to_string();
    match status {
        404 if code != "NoSuchBucket" => Failure::Final(FsError::NotFound),
        412 => Failure::Final(FsError::Io("the object changed during the transfer".into())),
        416 => Failure::Final(FsError::NotFound),
        408 | 429 | 500..=599 => Failure::Retry(why),
        _ if code == "SlowDown" || code == "RequestTimeout" => Failure::Retry(why),
        401 | 403 => {
            tracing::warn!(%why, "the object store refused wharf's credentials or access");
            Failure::Final(FsError::Io(format!("object store refused access: {why}")))
        }
        _ => Failure::Final(FsError::Io(format!("object store: {why}"))),
    }
}

/// The text of the first `<tag>` of an S3 error document.
fn xml_field(text: &str, tag: &str) -> Option<String> {
    let start = text.find(&format!("<{tag}>"))? + tag.len() + 2;
    let end = text[start..].find(&format!("</{tag}>"))? + start;
    Some(text[start..end].to_string())
}

/// An object's facts from HEAD.
pub(crate) struct Head {
    pub size: u64,
    pub modified: Option<SystemTime>,
    pub etag: Option<String>,
}

impl Head {
    fn of(resp: &Response<Body>) -> Head {
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok());
        Head {
            size: header("content-length")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            modified: header("last-modified").and_then(|v| httpdate::parse_http_date(v).ok()),
            etag: header("etag").map(str::to_string),
        }
    }

    fn metadata(&self) -> Metadata {
        file_meta(self.size, self.modified)
    }
}

fn file_meta(size: u64, modified: Option<SystemTime>) -> Metadata {
    Metadata {
        kind: FileKind::File,
        size,
        modified,
        mode: 0o644,
        unique: None,
        nlink: 1,
    }
}

fn dir_meta() -> Metadata {
    Metadata {
        kind: FileKind::Dir,
        size: 0,
        modified: None,
        mode: 0o755,
        unique: None,
        nlink: 2,
    }
}

/// A bucket and prefix served as storage.
#[derive(Debug, Clone)]
pub struct S3Store {
    client: Arc<Client>,
}

impl S3Store {
    /// Builds the client; nothing is sent until the first request.
    pub fn new(s: &S3Settings) -> Result<S3Store, String> {
        let endpoint: url::Url = s
            .endpoint
            .parse()
            .map_err(|e| format!("endpoint {:?}: {e}", s.endpoint))?;
        let style = match s.path_style {
            true => UrlStyle::Path,
            false => UrlStyle::VirtualHost,
        };
        let bucket = Bucket::new(endpoint, style, s.bucket.clone(), s.region.clone())
            .map_err(|e| format!("bucket {:?} at {:?}: {e}", s.bucket, s.endpoint))?;
        let creds = Credentials::new(s.access_key_id.clone(), s.secret_access_key.clone());
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(s.timeout))
            .timeout_recv_response(Some(s.timeout))
            .timeout_per_read(Some(s.timeout))
            .timeout_send_body(Some(s.timeout))
            .max_idle_connections_per_host(64)
            .build()
            .into();
        let prefix = match s.prefix.is_empty() {
            true => String::new(),
            false => format!("{}/", s.prefix),
        };
        Ok(S3Store {
            client: Arc::new(Client {
                bucket,
                creds,
                agent,
                prefix,
                part_size: s.part_size,
                parallel_parts: s.parallel_parts.max(1),
            }),
        })
    }

    /// The key prefix of the directory `rel` (`rel/` below the store's prefix).
    fn dir_prefix(&self, rel: &str) -> Result<String, FsError> {
        match rel.is_empty() {
            true => Ok(self.client.prefix.clone()),
            false => self.client.key(&format!("{rel}/")),
        }
    }

    /// Fails unless the directory holding `rel` exists.
    fn parent_exists(&self, path: &VPath) -> Result<(), FsError> {
        let parent = path.parent().unwrap_or_else(VPath::root);
        if parent.is_root() {
            return Ok(());
        }
        match self
            .client
            .dir_exists(&self.dir_prefix(parent.relative())?)?
        {
            true => Ok(()),
            false => Err(FsError::NotFound),
        }
    }

    fn is_dir(&self, path: &VPath) -> Result<bool, FsError> {
        self.client.dir_exists(&self.dir_prefix(path.relative())?)
    }

    fn write_new(&self, path: &VPath) -> Result<(Box<dyn Upload>, VPath), FsError> {
        let key = self.client.key(path.relative())?;
        let up = S3Upload::new(self.client.clone(), key);
        Ok((Box::new(up), path.clone()))
    }
}

impl Storage for S3Store {
    fn stat(&self, path: &VPath) -> Result<Metadata, FsError> {
        if path.is_root() {
            return Ok(dir_meta());
        }
        if let Some(head) = self.client.head(&self.client.key(path.relative())?)? {
            return Ok(head.metadata());
        }
        match self.is_dir(path)? {
            true => Ok(dir_meta()),
            false => Err(FsError::NotFound),
        }
    }

    fn read_dir(&self, path: &VPath) -> Result<Vec<DirEntry>, FsError> {
        let prefix = self.dir_prefix(path.relative())?;
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        let mut any = false;
        loop {
            let page = self.client.list_page(&prefix, token.as_deref(), 1000)?;
            any |= !page.contents.is_empty() || !page.common_prefixes.is_empty();
            for c in page.contents {
                let name = &c.key[prefix.len().min(c.key.len())..];
                // The folder marker, and keys no FTP name can reach (`a//b`).
                if name.is_empty() || name.contains('/') {
                    continue;
                }
                let modified = c
                    .last_modified
                    .as_deref()
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .map(SystemTime::from);
                out.push(DirEntry {
                    name: name.to_string(),
                    meta: file_meta(c.size.unwrap_or(0), modified),
                });
            }
            for p in page.common_prefixes {
                let name = p.prefix[prefix.len().min(p.prefix.len())..].trim_end_matches('/');
                if name.is_empty() || name.contains('/') {
                    continue;
                }
                out.push(DirEntry {
                    name: name.to_string(),
                    meta: dir_meta(),
                });
            }
            token = page.next_continuation_token;
            if token.is_none() {
                break;
            }
        }
        if !any && !path.is_root() {
            return match self.client.head(&self.client.key(path.relative())?)? {
                Some(_) => Err(FsError::NotADirectory),
                None => Err(FsError::NotFound),
            };
        }
        Ok(out)
    }

    fn open_read(&self, path: &VPath, offset: u64) -> Result<(Box<dyn Download>, u64), FsError> {
        if path.is_root() {
            return Err(FsError::IsADirectory);
        }
        let key = self.client.key(path.relative())?;
        let Some(head) = self.client.head(&key)? else {
            return match self.is_dir(path)? {
                true => Err(FsError::IsADirectory),
                false => Err(FsError::NotFound),
            };
        };
        let body = S3Download::start(self.client.clone(), key, offset, head.size, head.etag);
        Ok((Box::new(body), head.size))
    }

    fn open_write(
        &self,
        path: &VPath,
        mode: WriteMode,
    ) -> Result<(Box<dyn Upload>, VPath), FsError> {
        if path.is_root() {
            return Err(FsError::IsADirectory);
        }
        match mode {
            WriteMode::Append | WriteMode::At(_) => {
                return Err(FsError::Unsupported(
                    "Object storage cannot append to or restart an upload: send the whole file.",
                ))
            }
            WriteMode::Replace | WriteMode::Unique => {}
        }
        self.parent_exists(path)?;
        if self.is_dir(path)? {
            return Err(FsError::IsADirectory);
        }
        if mode == WriteMode::Replace {
            return self.write_new(path);
        }
        // STOU: the first free name of `name`, `name.1`, ... (checked, not reserved:
        // object storage has no create-if-absent; a racing writer may take it).
        let name = path.file_name().unwrap_or("file");
        let parent = path.parent().unwrap_or_else(VPath::root);
        for n in 0..1000 {
            let candidate = match n {
                0 => path.clone(),
                n => parent
                    .child(&format!("{name}.{n}"))
                    .ok_or(FsError::BadName)?,
            };
            let key = self.client.key(candidate.relative())?;
            if self.client.head(&key)?.is_none() && !self.is_dir(&candidate)? {
                return self.write_new(&candidate);
            }
        }
        Err(FsError::AlreadyExists)
    }

    fn make_dir(&self, path: &VPath) -> Result<(), FsError> {
        if path.is_root() {
            return Err(FsError::AlreadyExists);
        }
        let key = self.client.key(path.relative())?;
        if self.client.head(&key)?.is_some() || self.is_dir(path)? {
            return Err(FsError::AlreadyExists);
        }
        self.parent_exists(path)?;
        self.client.put(&self.dir_prefix(path.relative())?, &[])
    }

    fn remove_dir(&self, path: &VPath) -> Result<(), FsError> {
        if path.is_root() {
            return Err(FsError::PermissionDenied);
        }
        let prefix = self.dir_prefix(path.relative())?;
        let page = self.client.list_page(&prefix, None, 2)?;
        let marker = page.contents.iter().any(|c| c.key == prefix);
        let others =
            page.contents.iter().any(|c| c.key != prefix) || !page.common_prefixes.is_empty();
        if others {
            return Err(FsError::NotEmpty);
        }
        if !marker {
            return match self.client.head(&self.client.key(path.relative())?)? {
                Some(_) => Err(FsError::NotADirectory),
                None => Err(FsError::NotFound),
            };
        }
        self.client.delete(&prefix)
    }

    fn remove_file(&self, path: &VPath) -> Result<(), FsError> {
        let key = self.client.key(path.relative())?;
        if path.is_root() || self.client.head(&key)?.is_none() {
            return match !path.is_root() && self.is_dir(path)? {
                true => Err(FsError::IsADirectory),
                false if path.is_root() => Err(FsError::IsADirectory),
                false => Err(FsError::NotFound),
            };
        }
        self.client.delete(&key)
    }

    fn rename(&self, from: &VPath, to: &VPath) -> Result<(), FsError> {
        if from.is_root() || to.is_root() {
            return Err(FsError::PermissionDenied);
        }
        let (src, dst) = (
            self.client.key(from.relative())?,
            self.client.key(to.relative())?,
        );
        if self.client.head(&src)?.is_none() {
            return match self.is_dir(from)? {
                true => Err(FsError::Unsupported(
                    "Object storage cannot rename a directory.",
                )),
                false => Err(FsError::NotFound),
            };
        }
        if from == to {
            return Ok(());
        }
        self.parent_exists(to)?;
        if self.is_dir(to)? {
            return Err(FsError::IsADirectory);
        }
        self.client.copy(&src, &dst)?;
        self.client.delete(&src)
    }

    fn set_modified(&self, _path: &VPath, _modified: SystemTime) -> Result<(), FsError> {
        Err(FsError::Unsupported(
            "Object storage keeps its own modification times.",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_split_into_bucket_and_prefix() {
        let ok = |s: &str| S3Settings::parse_root(s).unwrap().unwrap();
        assert_eq!(ok("s3://b"), ("b".into(), "".into()));
        assert_eq!(ok("s3://b/"), ("b".into(), "".into()));
        assert_eq!(ok("s3://b/p/q/"), ("b".into(), "p/q".into()));
        assert!(S3Settings::parse_root("/srv/ftp").is_none());
        assert!(S3Settings::parse_root("s3:///p").unwrap().is_err());
        assert!(S3Settings::parse_root("s3://b/p/../q").unwrap().is_err());
        assert!(S3Settings::parse_root("s3://b/p//q").unwrap().is_err());
    }

    #[test]
    fn error_documents_give_their_code() {
        let doc = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>Please reduce</Message></Error>";
        assert_eq!(xml_field(doc, "Code").as_deref(), Some("SlowDown"));
        assert_eq!(xml_field(doc, "Message").as_deref(), Some("Please reduce"));
        assert_eq!(xml_field(doc, "Nope"), None);
    }

    #[test]
    fn copy_sources_are_encoded() {
        assert_eq!(encode_key("a/b c/ü.txt"), "a/b%20c/%C3%BC.txt");
    }
}
