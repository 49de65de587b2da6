//! IIS-style authorization rules: ordered `allow`/`deny` rules for users, groups
//! (roles), `?` (anonymous) and `*` (everyone), granting `read` and/or `write`, attached to
//! the site root, a folder or a single file.
//!
//! # How a decision is made
//!
//! For a path `P` (a *site path*: what the rules are written against, see
//! [`crate::site`]) and one permission:
//!
//! 1. Only rules whose location is `P` or an ancestor of `P` count; locations are matched
//!    segment by segment, case-insensitively (`/Docs` covers `/docs/a.txt`).
//! 2. Only rules naming the principal and mentioning the permission count.
//! 3. The deepest location with at least one such rule decides: a `deny` there wins over
//!    any `allow` there; otherwise the `allow` grants. Deeper locations thus inherit from
//!    their parents and may override them.
//! 4. When no rule decides, access is denied (IIS's default).

use crate::backend::Principal;
use crate::path::VPath;

/// What a command wants to do to a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// RETR, LIST, NLST, MLSD, MLST, SIZE, MDTM, CWD, STAT with a path.
    Read,
    /// STOR, APPE, STOU, DELE, MKD, RMD, RNFR, RNTO, MFMT (and MDTM with a time).
    Write,
}

/// Whom a rule is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// `*`: every user, anonymous ones included.
    All,
    /// `?`: anonymous users.
    Anonymous,
    /// A user by name (case-insensitive).
    User(String),
    /// A group (IIS "role") by name (case-insensitive).
    Group(String),
}

impl Who {
    fn matches(&self, p: &Principal) -> bool {
        match self {
            Who::All => true,
            Who::Anonymous => p.anonymous,
            Who::User(name) => !p.anonymous && p.name.eq_ignore_ascii_case(name),
            Who::Group(name) => {
                !p.anonymous && p.groups.iter().any(|g| g.eq_ignore_ascii_case(name))
            }
        }
    }
}

/// One rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Where it is attached (site path): `/` for the whole site, a folder or a file.
    pub path: VPath,
    /// `true` for allow, `false` for deny.
    pub allow: bool,
    /// Whom it is about; it applies if any entry matches.
    pub who: Vec<Who>,
    pub read: bool,
    pub write: bool,
}

impl Rule {
    fn covers(&self, access: Access) -> bool {
        match access {
            Access::Read => self.read,
            Access::Write => self.write,
        }
    }
}

/// A site's rules, in configuration order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    rules: Vec<Rule>,
    /// Each rule's location, lower-cased and split into segments, for matching.
    folded: Vec<Vec<String>>,
}

/// The outcome of [`Rules::decide`], with the rule that decided (an index into the
/// configured list) for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed {
        rule: usize,
    },
    Denied {
        rule: usize,
    },
    /// No rule applies: denied by default.
    NoRule,
}

impl Decision {
    pub fn allowed(self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

fn fold(path: &VPath) -> Vec<String> {
    path.segments().map(str::to_lowercase).collect()
}

impl Rules {
    pub fn new(rules: Vec<Rule>) -> Rules {
        let folded = rules.iter().map(|r| fold(&r.path)).collect();
        Rules { rules, folded }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `who` may `access` the site path `path`.
    pub fn allows(&self, who: &Principal, path: &VPath, access: Access) -> bool {
        self.decide(who, path, access).allowed()
    }

    /// The decision and the rule that made it.
    pub fn decide(&self, who: &Principal, path: &VPath, access: Access) -> Decision {
        let target = fold(path);
        let mut best: Option<(usize, Decision)> = None;
        for (i, (rule, loc)) in self.rules.iter().zip(&self.folded).enumerate() {
            if !rule.covers(access) || !is_prefix(loc, &target) {
                continue;
            }
            if !rule.who.iter().any(|w| w.matches(who)) {
                continue;
            }
            let depth = loc.len();
            let here = if rule.allow {
                Decision::Allowed { rule: i }
            } else {
                Decision::Denied { rule: i }
            };
            best = match best {
                None => Some((depth, here)),
                Some((d, _)) if depth > d => Some((depth, here)),
                // Same location: deny wins; among equals the first rule is reported.
                Some((d, Decision::Allowed { .. })) if depth == d && !rule.allow => {
                    Some((depth, here))
                }
                keep => keep,
            };
        }
        best.map_or(Decision::NoRule, |(_, d)| d)
    }
}

fn is_prefix(loc: &[String], target: &[String]) -> bool {
    loc.len() <= target.len() && loc.iter().zip(target).all(|(a, b)| a == b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vp(s: &str) -> VPath {
        VPath::root().resolve(s).unwrap()
    }

    fn user(name: &str, groups: &[&str]) -> Principal {
        Principal {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            anonymous: false,
            home: None,
        }
    }

    fn anon() -> Principal {
        Principal {
            name: "anonymous".into(),
            groups: Vec::new(),
            anonymous: true,
            home: None,
        }
    }

    fn rule(path: &str, allow: bool, who: Vec<Who>, perms: &str) -> Rule {
        Rule {
            path: vp(path),
            allow,
            who,
            read: perms.contains('r'),
            write: perms.contains('w'),
        }
    }

    /// The issue's scenario 1: anonymous read-only; FTPUsersA and FTPUsersB read/write;
    /// user3 denied test.txt only.
    fn scenario1() -> Rules {
        Rules::new(vec![
            rule("/", true, vec![Who::Anonymous], "r"),
            rule(
                "/",
                true,
                vec![
                    Who::Group("FTPUsersA".into()),
                    Who::Group("FTPUsersB".into()),
                ],
                "rw",
            ),
            rule("/test.txt", false, vec![Who::User("user3".into())], "rw"),
        ])
    }

    #[test]
    fn scenario1_matrix() {
        let rules = scenario1();
        let u1 = user("user1", &["FTPUsersA"]);
        let u3 = user("user3", &["FTPUsersB"]);
        let outsider = user("mallory", &[]);
        use Access::{Read as R, Write as W};
        let table: &[(&Principal, &str, Access, bool)] = &[
            (&anon(), "/test.txt", R, true),
            (&anon(), "/computer.txt", R, true),
            (&anon(), "/test.txt", W, false),
            (&anon(), "/new.txt", W, false),
            (&u1, "/test.txt", R, true),
            (&u1, "/test.txt", W, true),
            (&u1, "/deep/er/x", W, true),
            (&u3, "/test.txt", R, false),
            (&u3, "/test.txt", W, false),
            (&u3, "/TEST.TXT", R, false),
            (&u3, "/computer.txt", R, true),
            (&u3, "/computer.txt", W, true),
            (&outsider, "/test.txt", R, false),
            (&outsider, "/", R, false),
        ];
        for (who, path, access, want) in table {
            assert_eq!(
                rules.allows(who, &vp(path), *access),
                *want,
                "{} {path} {access:?}",
                who.name
            );
        }
    }

    #[test]
    fn deeper_overrides_and_same_level_deny_wins() {
        let alice = user("alice", &["staff"]);
        let rules = Rules::new(vec![
            rule("/", false, vec![Who::All], "w"),
            rule("/", true, vec![Who::All], "r"),
            rule("/upload", true, vec![Who::Group("STAFF".into())], "w"),
            rule("/upload/locked", true, vec![Who::User("alice".into())], "w"),
            rule(
                "/upload/locked",
                false,
                vec![Who::Group("staff".into())],
                "w",
            ),
        ]);
        assert!(!rules.allows(&alice, &vp("/a"), Access::Write));
        assert!(rules.allows(&alice, &vp("/upload/a"), Access::Write));
        assert!(rules.allows(&alice, &vp("/Upload/A"), Access::Write));
        // Read at /upload is inherited from /.
        assert!(rules.allows(&alice, &vp("/upload/a"), Access::Read));
        // Same level: the deny for her group beats the allow for her name.
        assert_eq!(
            rules.decide(&alice, &vp("/upload/locked/x"), Access::Write),
            Decision::Denied { rule: 4 }
        );
        // A sibling whose name merely starts the same is not below /upload.
        assert!(!rules.allows(&alice, &vp("/uploads/a"), Access::Write));
    }

    #[test]
    fn star_includes_anonymous_and_names_never_match_anonymous() {
        let rules = Rules::new(vec![
            rule("/", true, vec![Who::All], "r"),
            rule("/", true, vec![Who::User("anonymous".into())], "w"),
        ]);
        assert!(rules.allows(&anon(), &vp("/x"), Access::Read));
        assert!(!rules.allows(&anon(), &vp("/x"), Access::Write));
        assert_eq!(
            Rules::default().decide(&anon(), &vp("/"), Access::Read),
            Decision::NoRule
        );
    }

    /// A generated matrix: for every principal × rule set × path × access, the decision
    /// equals a direct transcription of the documented algorithm.
    #[test]
    fn generated_matrix_agrees_with_the_reference() {
        let principals = [
            anon(),
            user("user1", &["A"]),
            user("user3", &["B"]),
            user("zed", &[]),
        ];
        let whos = [
            Who::All,
            Who::Anonymous,
            Who::User("USER3".into()),
            Who::Group("a".into()),
        ];
        let locations = ["/", "/d", "/d/f.txt", "/e"];
        let paths = ["/", "/d", "/D/F.txt", "/d/g", "/e/x", "/z"];
        // Every rule set of up to two rules drawn from locations × allow × who × perms.
        let mut singles = Vec::new();
        for loc in locations {
            for allow in [true, false] {
                for who in &whos {
                    for perms in ["r", "w", "rw"] {
                        singles.push(rule(loc, allow, vec![who.clone()], perms));
                    }
                }
            }
        }
        let mut checked = 0;
        for a in &singles {
            for b in singles.iter().step_by(7) {
                let rules = Rules::new(vec![a.clone(), b.clone()]);
                for p in &principals {
                    for path in paths {
                        for access in [Access::Read, Access::Write] {
                            let want = reference(rules.rules(), p, path, access);
                            assert_eq!(
                                rules.allows(p, &vp(path), access),
                                want,
                                "{a:?} {b:?} {} {path} {access:?}",
                                p.name
                            );
                            checked += 1;
                        }
                    }
                }
            }
        }
        assert!(checked > 50_000, "{checked}");
    }

    /// The algorithm of the module docs, written the slow and obvious way.
    fn reference(rules: &[Rule], p: &Principal, path: &str, access: Access) -> bool {
        let target: Vec<String> = vp(path).segments().map(|s| s.to_lowercase()).collect();
        let applicable: Vec<&Rule> = rules
            .iter()
            .filter(|r| {
                let loc: Vec<String> = r.path.segments().map(|s| s.to_lowercase()).collect();
                target.starts_with(&loc)
                    && r.who.iter().any(|w| w.matches(p))
                    && match access {
                        Access::Read => r.read,
                        Access::Write => r.write,
                    }
            })
            .collect();
        let Some(deepest) = applicable.iter().map(|r| r.path.segments().count()).max() else {
            return false;
        };
        let level: Vec<&&Rule> = applicable
            .iter()
            .filter(|r| r.path.segments().count() == deepest)
            .collect();
        level.iter().all(|r| r.allow)
    }
}
