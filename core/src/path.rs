//! Virtual paths: what a client names, resolved against its current directory and
//! confined to its root. A [`VPath`] is always absolute (`/` or `/a/b`), never contains
//! `.`, `..`, empty segments, or NUL, so nothing built from one can name a place above
//! the root it is later joined to.

/// A normalised absolute virtual path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VPath(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path contains a NUL byte")]
    Nul,
}

impl VPath {
    /// `/`.
    pub fn root() -> VPath {
        VPath("/".into())
    }

    /// Resolves client input against `self` (the current directory): an input starting
    /// with `/` starts at the root; `.` and empty segments vanish; `..` goes up but never
    /// above the root (`/..` is `/`). Trailing and repeated slashes are ignored.
    pub fn resolve(&self, input: &str) -> Result<VPath, PathError> {
        if input.contains('\0') {
            return Err(PathError::Nul);
        }
        let mut segs: Vec<&str> = if input.starts_with('/') {
            Vec::new()
        } else {
            self.segments().collect()
        };
        for seg in input.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    segs.pop();
                }
                name => segs.push(name),
            }
        }
        Ok(VPath::from_segments(&segs))
    }

    fn from_segments(segs: &[&str]) -> VPath {
        let len = segs.iter().map(|s| s.len() + 1).sum::<usize>().max(1);
        let mut out = String::with_capacity(len);
        for seg in segs {
            out.push('/');
            out.push_str(seg);
        }
        if out.is_empty() {
            out.push('/');
        }
        VPath(out)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path without its leading `/` (`""` for the root), for joining to a directory.
    pub fn relative(&self) -> &str {
        &self.0[1..]
    }

    pub fn is_root(&self) -> bool {
        self.0.len() == 1
    }

    /// The containing directory; `None` for the root.
    pub fn parent(&self) -> Option<VPath> {
        if self.is_root() {
            return None;
        }
        // A normalised non-root path always has a `/` before its last segment.
        let cut = self.0.rfind('/').unwrap_or(0);
        Some(if cut == 0 {
            VPath::root()
        } else {
            VPath(self.0[..cut].to_owned())
        })
    }

    /// The last segment; `None` for the root.
    pub fn file_name(&self) -> Option<&str> {
        if self.is_root() {
            return None;
        }
        self.0.rsplit('/').next()
    }

    /// The segments, in order (none for the root).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.relative().split('/').filter(|s| !s.is_empty())
    }

    /// `self/name` when `name` is one plain segment (not empty, `.` or `..`, no `/` or
    /// NUL); `None` otherwise.
    pub fn child(&self, name: &str) -> Option<VPath> {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return None;
        }
        Some(if self.is_root() {
            VPath(format!("/{name}"))
        } else {
            VPath(format!("{}/{name}", self.0))
        })
    }

    /// The path without its first segment (`/a/b/c` → `/b/c`; `/a` and `/` → `/`).
    pub fn without_first(&self) -> VPath {
        match self.relative().split_once('/') {
            Some((_, rest)) => VPath(format!("/{rest}")),
            None => VPath::root(),
        }
    }

    /// `self` placed below `base` (`/home` + `/a` = `/home/a`): a jailed user's path as
    /// the storage sees it.
    pub fn under(&self, base: &VPath) -> VPath {
        if base.is_root() {
            self.clone()
        } else if self.is_root() {
            base.clone()
        } else {
            VPath(format!("{}{}", base.0, self.0))
        }
    }

    /// Whether `self` is `base` or below it.
    pub fn starts_with(&self, base: &VPath) -> bool {
        if base.is_root() {
            return true;
        }
        // Segment-wise: `/ab` is not below `/a`, so the prefix must end at a `/`.
        match self.0.strip_prefix(&base.0) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }

    /// `self` with `base` removed from its front (`/home/a` less `/home` = `/a`); `None`
    /// when `self` is not below `base`.
    pub fn strip_base(&self, base: &VPath) -> Option<VPath> {
        if !self.starts_with(base) {
            return None;
        }
        if base.is_root() {
            return Some(self.clone());
        }
        let rest = &self.0[base.0.len()..];
        Some(if rest.is_empty() {
            VPath::root()
        } else {
            VPath(rest.to_owned())
        })
    }
}

impl std::fmt::Display for VPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quickcheck::{quickcheck, Arbitrary, Gen};

    fn vp(s: &str) -> VPath {
        VPath::root().resolve(s).unwrap()
    }

    #[test]
    fn resolve_table() {
        let cases: &[(&str, &str, &str)] = &[
            ("/", "../../etc/passwd", "/etc/passwd"),
            ("/home/u", "../../etc/passwd", "/etc/passwd"),
            ("/home/u", "../../../../../etc/passwd", "/etc/passwd"),
            ("/x", "/./a//b/../c/", "/a/c"),
            ("/", "..", "/"),
            ("/a/b", "..", "/a"),
            ("/a", "a/../../..", "/"),
            ("/a/b", "/", "/"),
            ("/a/b", "", "/a/b"),
            ("/a/b", ".", "/a/b"),
            ("/", "~", "/~"),
            ("/a", "~/x", "/a/~/x"),
            ("/", "my file.txt", "/my file.txt"),
            ("/", " lead and trail ", "/ lead and trail "),
            ("/dir", "日本語/ファイル", "/dir/日本語/ファイル"),
            ("/", "a\\..\\b", "/a\\..\\b"),
            ("/", "...", "/..."),
            ("/", "..a/.b", "/..a/.b"),
            ("/", "a///b////", "/a/b"),
            ("/a", "//", "/"),
            ("/a", "b/./c/.", "/a/b/c"),
        ];
        for &(cwd, input, want) in cases {
            let got = vp(cwd).resolve(input).unwrap();
            assert_eq!(got.as_str(), want, "cwd {cwd:?} input {input:?}");
        }
    }

    #[test]
    fn nul_is_refused() {
        assert_eq!(VPath::root().resolve("a\0b"), Err(PathError::Nul));
        assert_eq!(vp("/a").resolve("\0"), Err(PathError::Nul));
    }

    #[test]
    fn parent_and_file_name() {
        assert_eq!(VPath::root().parent(), None);
        assert_eq!(VPath::root().file_name(), None);
        assert_eq!(vp("/a").parent(), Some(VPath::root()));
        assert_eq!(vp("/a/b c/d").parent(), Some(vp("/a/b c")));
        assert_eq!(vp("/a/b c").file_name(), Some("b c"));
        assert_eq!(vp("/a").file_name(), Some("a"));
        assert_eq!(vp("/a/b").relative(), "a/b");
        assert_eq!(vp("/a/b").segments().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(VPath::root().segments().count(), 0);
    }

    #[test]
    fn under_starts_with_strip() {
        let home = vp("/home");
        assert_eq!(vp("/a").under(&home), vp("/home/a"));
        assert_eq!(VPath::root().under(&home), home);
        assert_eq!(vp("/a").under(&VPath::root()), vp("/a"));
        assert!(vp("/home/a").starts_with(&home));
        assert!(home.starts_with(&home));
        assert!(home.starts_with(&VPath::root()));
        assert!(!vp("/homer").starts_with(&home));
        assert!(!vp("/ab").starts_with(&vp("/a")));
        assert!(!VPath::root().starts_with(&home));
        assert_eq!(vp("/home/a/b").strip_base(&home), Some(vp("/a/b")));
        assert_eq!(home.strip_base(&home), Some(VPath::root()));
        assert_eq!(vp("/homer").strip_base(&home), None);
        assert_eq!(vp("/x").strip_base(&VPath::root()), Some(vp("/x")));
    }

    /// Client input biased towards the pieces that make path handling go wrong.
    #[derive(Debug, Clone)]
    struct Input(String);

    impl Arbitrary for Input {
        fn arbitrary(g: &mut Gen) -> Input {
            const PIECES: &[&str] = &[
                "/", "//", ".", "..", "a", "b", "~", "\\", " ", "é", "..a", "\0", "x y",
            ];
            let n = usize::arbitrary(g) % 12;
            let mut s = String::new();
            for _ in 0..n {
                if bool::arbitrary(g) {
                    s.push_str(g.choose(PIECES).unwrap());
                } else {
                    s.push_str(&String::arbitrary(g));
                }
            }
            Input(s)
        }
    }

    fn cwd_from(input: &Input) -> VPath {
        VPath::root().resolve(&input.0.replace('\0', "")).unwrap()
    }

    fn is_normalised(p: &VPath) -> bool {
        let s = p.as_str();
        s == "/"
            || (s.starts_with('/')
                && !s.ends_with('/')
                && !s.contains('\0')
                && s[1..].split('/').all(|seg| !matches!(seg, "" | "." | "..")))
    }

    quickcheck! {
        fn resolve_is_normalised(cwd: Input, input: Input) -> bool {
            match cwd_from(&cwd).resolve(&input.0) {
                Ok(p) => is_normalised(&p) && VPath::root().resolve(p.as_str()) == Ok(p.clone()),
                Err(PathError::Nul) => input.0.contains('\0'),
            }
        }

        fn jail_holds(jail: Input, cwd: Input, input: Input) -> bool {
            let jail = cwd_from(&jail);
            match cwd_from(&cwd).resolve(&input.0) {
                Ok(p) => {
                    let inside = p.under(&jail);
                    inside.starts_with(&jail) && inside.strip_base(&jail) == Some(p)
                }
                Err(_) => true,
            }
        }

        fn parent_is_prefix(input: Input) -> bool {
            let p = cwd_from(&input);
            match p.parent() {
                None => p.is_root(),
                Some(parent) => {
                    p.starts_with(&parent)
                        && parent.resolve(p.file_name().unwrap()) == Ok(p.clone())
                }
            }
        }
    }
}
