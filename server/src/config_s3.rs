//! `root = "s3://bucket/prefix"` with a `[site.s3]` (or `[sites.s3]`) table: a site whose
//! files live in an S3-compatible bucket.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{Checker, ServerConfig};
use crate::s3::S3Settings;

/// `[site.s3]`: how to reach the bucket `root` names.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawS3 {
    endpoint: Spanned<String>,
    region: Option<String>,
    access_key_id: Option<Spanned<String>>,
    secret_access_key: Option<Spanned<String>>,
    path_style: Option<bool>,
    part_size_mib: Option<Spanned<u64>>,
    parallel_parts: Option<Spanned<u64>>,
    timeout_seconds: Option<Spanned<u64>>,
}

/// The smallest part S3 accepts (but for the last one), and its largest.
const MIN_PART_MIB: u64 = 5;
const MAX_PART_MIB: u64 = 5 * 1024;

/// Checks a site's root: a directory on disk, or `s3://` with its table. Returns the
/// root as shown (the path, or the URL) and the bucket's settings for an `s3://` root.
pub(super) fn check_site_root(
    c: &mut Checker<'_>,
    root: &Spanned<String>,
    s3: Option<&RawS3>,
    base: &std::path::Path,
) -> Option<(PathBuf, Option<S3Settings>)> {
    let Some(parsed) = S3Settings::parse_root(root.get_ref()) else {
        if let Some(t) = s3 {
            c.error(
                t.endpoint.span(),
                "an [s3] table is for a root of the form \"s3://bucket/prefix\"",
            );
        }
        let path = c.check(root, |r| super::check_root(base, r))?;
        return Some((path, None));
    };
    let (bucket, prefix) = c.check(root, |_| parsed)?;
    let Some(t) = s3 else {
        c.error(
            root.span(),
            "an s3:// root needs an [s3] table beside it (endpoint, region, credentials)",
        );
        return None;
    };
    let endpoint = c.check(&t.endpoint, |e| match e.parse::<url::Url>() {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
            Ok(e.trim_end_matches('/').to_string())
        }
        Ok(_) => Err(format!("{e:?} is not an http:// or https:// address")),
        Err(err) => Err(format!("{e:?} is not an address: {err}")),
    });
    let key = credential(
        c,
        t.access_key_id.as_ref(),
        "access_key_id",
        "AWS_ACCESS_KEY_ID",
        root,
    );
    let secret = credential(
        c,
        t.secret_access_key.as_ref(),
        "secret_access_key",
        "AWS_SECRET_ACCESS_KEY",
        root,
    );
    let part_size = match &t.part_size_mib {
        Some(p) => c.check(p, |&mib| match mib {
            MIN_PART_MIB..=MAX_PART_MIB => Ok(mib as usize * 1024 * 1024),
            _ => Err(format!(
                "part_size_mib must be between {MIN_PART_MIB} and {MAX_PART_MIB} (S3's part sizes)"
            )),
        })?,
        None => 8 * 1024 * 1024,
    };
    let parallel_parts = match &t.parallel_parts {
        Some(n) => c.check(n, |&n| match n {
            1..=16 => Ok(n as usize),
            _ => Err("parallel_parts must be between 1 and 16".to_string()),
        })?,
        None => 2,
    };
    let timeout = match &t.timeout_seconds {
        Some(s) => c.check(s, |&s| match s {
            1..=3600 => Ok(Duration::from_secs(s)),
            _ => Err("timeout_seconds must be between 1 and 3600".to_string()),
        })?,
        None => Duration::from_secs(30),
    };
    let region = t
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok())
        .unwrap_or_else(|| "us-east-1".into());
    let settings = S3Settings {
        endpoint: endpoint?,
        region,
        bucket,
        prefix,
        access_key_id: key?,
        secret_access_key: secret?,
        path_style: t.path_style.unwrap_or(false),
        part_size,
        parallel_parts,
        timeout,
    };
    Some((PathBuf::from(root.get_ref()), Some(settings)))
}

/// A credential from the table, else from the environment.
fn credential(
    c: &mut Checker<'_>,
    value: Option<&Spanned<String>>,
    name: &str,
    env: &str,
    root: &Spanned<String>,
) -> Option<String> {
    match value {
        Some(v) if v.get_ref().is_empty() => {
            c.error(v.span(), format!("{name} is empty"));
            None
        }
        Some(v) => Some(v.get_ref().clone()),
        None => match std::env::var(env) {
            Ok(v) if !v.is_empty() => Some(v),
            _ => {
                c.error(
                    root.span(),
                    format!("no {name} for this s3:// root: set it in the [s3] table or in the environment ({env})"),
                );
                None
            }
        },
    }
}

impl ServerConfig {
    /// The sites whose root is a bucket: their mount name and settings.
    pub fn object_mounts(&self) -> Vec<(String, S3Settings)> {
        self.sites
            .iter()
            .filter_map(|s| {
                let settings = s.object_root.clone()?;
                Some((super::mount_name(&s.session.storage_root), settings))
            })
            .collect()
    }
}
