//! Password hashes: argon2id (what `wharf passwd` makes by default), and the crypt hashes
//! other servers and `/etc/shadow` store, so their files can be imported as they are:
//! sha512-crypt `$6$`, sha256-crypt `$5$` and bcrypt `$2b$`/`$2y$`/`$2a$`.
//!
//! Weak or unusual schemes (MD5-crypt `$1$`, Apache `$apr1$` and `{SHA}`, DES crypt,
//! yescrypt `$y$`) are refused with a message that says so: their users need a new
//! password (`wharf passwd`).

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// The hash schemes a users file may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// A PHC string `$argon2id$v=19$m=..,t=..,p=..$salt$hash` (argon2i and argon2d too).
    Argon2,
    /// `$6$[rounds=N$]salt$hash`.
    Sha512Crypt,
    /// `$5$[rounds=N$]salt$hash`.
    Sha256Crypt,
    /// `$2b$NN$...`, `$2y$`, `$2a$` (60 characters).
    Bcrypt,
}

impl Scheme {
    /// Its usual name.
    pub fn name(self) -> &'static str {
        match self {
            Scheme::Argon2 => "argon2",
            Scheme::Sha512Crypt => "sha512-crypt",
            Scheme::Sha256Crypt => "sha256-crypt",
            Scheme::Bcrypt => "bcrypt",
        }
    }
}

/// Which scheme `hash` is in, or why it cannot be used.
pub fn scheme_of(hash: &str) -> Result<Scheme, String> {
    let refuse = |what: &str| {
        Err(format!(
            "{what} hashes are not supported (too weak, or not a standard crypt scheme); \
             give the user a new password with `wharf user passwd NAME` (or `wharf passwd`)"
        ))
    };
    if hash.starts_with("$argon2") {
        return Ok(Scheme::Argon2);
    }
    if hash.starts_with("$6$") {
        return Ok(Scheme::Sha512Crypt);
    }
    if hash.starts_with("$5$") {
        return Ok(Scheme::Sha256Crypt);
    }
    if ["$2b$", "$2y$", "$2a$"].iter().any(|p| hash.starts_with(p)) {
        return Ok(Scheme::Bcrypt);
    }
    if hash.starts_with("$2x$") {
        return refuse("bcrypt $2x$ (the buggy pre-2011 variant)");
    }
    if hash.starts_with("$1$") {
        return refuse("MD5-crypt ($1$)");
    }
    if hash.starts_with("$apr1$") {
        return refuse("Apache MD5 ($apr1$)");
    }
    if hash.starts_with("{SHA}") || hash.starts_with("{SSHA}") {
        return refuse("unsalted or single-round SHA-1 ({SHA})");
    }
    if hash.starts_with("$y$") || hash.starts_with("$7$") || hash.starts_with("$gy$") {
        return refuse("yescrypt and scrypt ($y$, $7$)");
    }
    if hash.len() == 13 && !hash.starts_with('$') {
        return refuse("traditional DES crypt");
    }
    if hash.is_empty() || hash.starts_with('!') || hash.starts_with('*') {
        return Err(
            "an empty or locked hash (\"\", \"!\", \"*\"): the account cannot log in; remove it or give it a password".into(),
        );
    }
    Err(
        "not a password hash this server knows: argon2id (make one with `wharf passwd`), \
         sha512-crypt $6$, sha256-crypt $5$ or bcrypt $2b$/$2y$"
            .into(),
    )
}

/// Checks that `hash` is a usable hash of a supported scheme (it parses completely);
/// returns it unchanged.
pub fn check_hash(hash: &str) -> Result<String, String> {
    match scheme_of(hash)? {
        Scheme::Argon2 => {
            // (The parser's own messages name its internals, and misspell some.)
            let parsed = PasswordHash::new(hash).map_err(|_| {
                "not a complete argon2id password hash (one looks like \
                 `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`); make one with `wharf passwd`, \
                 or set the password with `wharf user passwd NAME`"
                    .to_string()
            })?;
            if !parsed.algorithm.as_str().starts_with("argon2") {
                return Err(format!(
                    "hash algorithm {:?} is not supported; use argon2id (`wharf passwd`)",
                    parsed.algorithm.as_str()
                ));
            }
            // Its parameters must be ones argon2 accepts (checked without hashing: a
            // users file of thousands must load quickly).
            Params::try_from(&parsed)
                .map_err(|e| format!("an argon2 hash with unusable parameters: {e}"))?;
        }
        Scheme::Sha512Crypt | Scheme::Sha256Crypt => {
            ShaCrypt::parse(hash)?;
        }
        Scheme::Bcrypt => {
            // 60 characters: `$2b$` + two cost digits + `$` + 22 salt + 31 hash.
            let cost: Option<u32> = hash.get(4..6).and_then(|c| c.parse().ok());
            let bytes = hash.as_bytes();
            if hash.len() != 60 || bytes[6] != b'$' || !cost.is_some_and(|c| (4..=31).contains(&c))
            {
                return Err(
                    "not a bcrypt hash ($2b$NN$ followed by 53 characters, cost 04 to 31)".into(),
                );
            }
            let b64 = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '/';
            if !hash[7..].chars().all(b64) {
                return Err("not a bcrypt hash: the salt and hash are bcrypt base64".into());
            }
        }
    }
    Ok(hash.to_string())
}

/// Whether `password` matches `hash` (in constant time where the scheme allows). `Err`:
/// the hash cannot be used (it was not checked with [`check_hash`]).
pub fn verify(password: &str, hash: &str) -> Result<bool, String> {
    match scheme_of(hash)? {
        Scheme::Argon2 => {
            let parsed = PasswordHash::new(hash).map_err(|e| e.to_string())?;
            Ok(Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
        }
        Scheme::Sha512Crypt | Scheme::Sha256Crypt => ShaCrypt::parse(hash)?.verify(password),
        Scheme::Bcrypt => bcrypt::verify(password, hash).map_err(|e| e.to_string()),
    }
}

/// A parsed `$5$`/`$6$` hash.
struct ShaCrypt<'a> {
    sha512: bool,
    rounds: usize,
    salt: &'a str,
    hash: &'a str,
}

/// glibc's bounds: a `rounds=` outside them is clamped, as glibc does.
const ROUNDS_MIN: usize = 1_000;
const ROUNDS_MAX: usize = 999_999_999;
const ROUNDS_DEFAULT: usize = 5_000;

impl<'a> ShaCrypt<'a> {
    fn parse(hash: &'a str) -> Result<ShaCrypt<'a>, String> {
        let sha512 = hash.starts_with("$6$");
        let mut parts = hash[3..].split('$');
        let mut first = parts.next().unwrap_or("");
        let mut rounds = ROUNDS_DEFAULT;
        if let Some(r) = first.strip_prefix("rounds=") {
            rounds = r
                .parse::<u64>()
                .map_err(|_| format!("rounds={r:?} is not a number"))?
                .clamp(ROUNDS_MIN as u64, ROUNDS_MAX as u64) as usize;
            first = parts.next().unwrap_or("");
        }
        let salt = first;
        let hash_part = parts.next().ok_or("a crypt hash needs $salt$hash")?;
        let want_len = if sha512 { 86 } else { 43 };
        let b64 = |c: char| c.is_ascii_alphanumeric() || c == '.' || c == '/';
        if parts.next().is_some()
            || hash_part.len() != want_len
            || !hash_part.chars().all(b64)
            || salt.contains(['$', ':', '\n'])
        {
            return Err(format!(
                "not a {} hash (${}$[rounds=N$]salt${} characters)",
                if sha512 {
                    "sha512-crypt"
                } else {
                    "sha256-crypt"
                },
                if sha512 { 6 } else { 5 },
                want_len
            ));
        }
        Ok(ShaCrypt {
            sha512,
            rounds,
            salt,
            hash: hash_part,
        })
    }

    fn verify(&self, password: &str) -> Result<bool, String> {
        let computed = if self.sha512 {
            let params = sha_crypt::Sha512Params::new(self.rounds).map_err(|e| format!("{e:?}"))?;
            sha_crypt::sha512_crypt_b64(password.as_bytes(), self.salt.as_bytes(), &params)
        } else {
            let params = sha_crypt::Sha256Params::new(self.rounds).map_err(|e| format!("{e:?}"))?;
            sha_crypt::sha256_crypt_b64(password.as_bytes(), self.salt.as_bytes(), &params)
        }
        .map_err(|e| format!("{e:?}"))?;
        Ok(same_bytes(computed.as_bytes(), self.hash.as_bytes()))
    }
}

/// Equality that takes the same time wherever the first difference is.
pub(crate) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How expensive a new hash is (`wharf passwd --scheme ... --cost ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cost {
    /// argon2id with `m` KiB of memory, `t` passes, `p` lanes (default m=19456, t=2, p=1:
    /// OWASP's minimum).
    Argon2id { m: u32, t: u32, p: u32 },
    /// bcrypt with 2^cost rounds (4..=31; default 12).
    Bcrypt(u32),
}

impl Default for Cost {
    fn default() -> Cost {
        Cost::Argon2id {
            m: Params::DEFAULT_M_COST,
            t: Params::DEFAULT_T_COST,
            p: Params::DEFAULT_P_COST,
        }
    }
}

impl Cost {
    /// `scheme` (`argon2id`, the default, or `bcrypt`) with `cost`: for argon2id
    /// `m=KiB,t=passes,p=lanes` (any of them; the rest stay at their defaults), for
    /// bcrypt a number from 4 to 31.
    pub fn parse(scheme: &str, cost: Option<&str>) -> Result<Cost, String> {
        match scheme {
            "argon2id" | "argon2" => {
                let Cost::Argon2id {
                    mut m,
                    mut t,
                    mut p,
                } = Cost::default()
                else {
                    unreachable!("the default is argon2id")
                };
                for part in cost
                    .unwrap_or("")
                    .split(',')
                    .filter(|s| !s.trim().is_empty())
                {
                    let (k, v) = part.trim().split_once('=').ok_or_else(|| {
                        format!("{part:?}: an argon2id cost is like m=65536,t=3,p=1")
                    })?;
                    let v: u32 = v
                        .trim()
                        .parse()
                        .map_err(|_| format!("{part:?}: {v:?} is not a number"))?;
                    match k.trim() {
                        "m" => m = v,
                        "t" => t = v,
                        "p" => p = v,
                        other => {
                            return Err(format!(
                            "{other:?}: an argon2id cost names m (KiB), t (passes) and p (lanes)"
                        ))
                        }
                    }
                }
                Params::new(m, t, p, None).map_err(|e| format!("argon2id cost: {e}"))?;
                Ok(Cost::Argon2id { m, t, p })
            }
            "bcrypt" => {
                let c = match cost {
                    None => 12,
                    Some(c) => c
                        .trim()
                        .parse()
                        .map_err(|_| format!("{c:?}: a bcrypt cost is a number from 4 to 31"))?,
                };
                if !(4..=31).contains(&c) {
                    return Err(format!("bcrypt cost {c}: it goes from 4 to 31"));
                }
                Ok(Cost::Bcrypt(c))
            }
            other => Err(format!(
                "{other:?}: the schemes are \"argon2id\" (the default) and \"bcrypt\""
            )),
        }
    }
}

/// Hashes a password with argon2id's default cost and a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    hash_with(password, Cost::default())
}

/// Hashes a password at `cost`, with a fresh random salt.
pub fn hash_with(password: &str, cost: Cost) -> Result<String, String> {
    match cost {
        Cost::Argon2id { m, t, p } => {
            let mut salt = [0u8; 16];
            getrandom::fill(&mut salt).map_err(|e| format!("no randomness for a salt: {e}"))?;
            let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
            let params = Params::new(m, t, p, None).map_err(|e| e.to_string())?;
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(password.as_bytes(), &salt)
                .map(|h| h.to_string())
                .map_err(|e| e.to_string())
        }
        Cost::Bcrypt(c) => {
            if password.len() > 72 {
                return Err("bcrypt uses only the first 72 bytes of a password; this one is longer (use argon2id)".into());
            }
            bcrypt::hash(password, c).map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by another implementation, for "s3cret": `openssl passwd -6 -salt saltsalt`
    // and `openssl passwd -5 -salt saltsalt` (OpenSSL 3.0).
    const SHA512: &str = "$6$saltsalt$As4wrv0kZlfch1du9WeH7qhskyLriQWySXrZzynnvi46nFnNxjdpl6ksRegrrKexvhIa/Iny8S8uF3fVWTMuC1";
    const SHA256: &str = "$5$saltsalt$i1q2ZQzc.tl/BQ6CHiENAcVDvEY6nJ1OWlWXKh94b1.";
    // libxcrypt's crypt(3) (Debian 12), with rounds, and its bcrypt.
    const SHA512_ROUNDS: &str = "$6$rounds=10000$abcdefgh$N7ep5QQ1ONfIOIxr27QI7.Wh2ZoDSrWeKxVzO21iuxWziusVE2g5ZgTCP8E3c9M9PGc9nQ7ZbO4W83SW9wB.R.";
    const BCRYPT_XCRYPT: &str = "$2b$05$abcdefghijklmnopqrstuuLK7U1u6pVRmL7L1BBM2aS35PSZnDXlK";

    #[test]
    fn crypt_hashes_from_other_tools_verify() {
        for h in [SHA512, SHA256, SHA512_ROUNDS, BCRYPT_XCRYPT] {
            assert_eq!(check_hash(h).as_deref(), Ok(h));
            assert_eq!(verify("s3cret", h), Ok(true), "{h}");
            assert_eq!(verify("s3cret!", h), Ok(false), "{h}");
            assert_eq!(verify("", h), Ok(false), "{h}");
        }
    }

    #[test]
    fn bcrypt_2b_2y_2a_verify_and_costs_are_honoured() {
        let h = hash_with("s3cret", Cost::Bcrypt(4)).unwrap();
        assert!(h.starts_with("$2b$04$"), "{h}");
        assert_eq!(check_hash(&h).as_deref(), Ok(h.as_str()));
        for variant in ["$2b$", "$2y$", "$2a$"] {
            let v = format!("{variant}{}", &h[4..]);
            assert_eq!(verify("s3cret", &v), Ok(true), "{v}");
            assert_eq!(verify("s3cret ", &v), Ok(false), "{v}");
        }
        assert!(check_hash(&format!("$2x${}", &h[4..])).is_err());
        assert!(check_hash(&h[..59]).is_err());
    }

    #[test]
    fn argon2_costs_are_written_into_the_hash() {
        let cost = Cost::parse("argon2id", Some("m=4096,t=1,p=2")).unwrap();
        let h = hash_with("s3cret", cost).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=4096,t=1,p=2$"), "{h}");
        assert_eq!(verify("s3cret", &h), Ok(true));
        assert_eq!(verify("nope", &h), Ok(false));
        assert_eq!(Cost::parse("argon2id", None), Ok(Cost::default()));
        assert_eq!(Cost::parse("bcrypt", Some("10")), Ok(Cost::Bcrypt(10)));
        assert_eq!(Cost::parse("bcrypt", None), Ok(Cost::Bcrypt(12)));
        for (scheme, bad) in [
            ("bcrypt", "3"),
            ("bcrypt", "32"),
            ("bcrypt", "x"),
            ("argon2id", "m=1"),
            ("argon2id", "q=3"),
            ("argon2id", "65536"),
        ] {
            assert!(Cost::parse(scheme, Some(bad)).is_err(), "{scheme} {bad}");
        }
        assert!(Cost::parse("md5", None).is_err());
    }

    #[test]
    fn weak_and_broken_hashes_are_refused_with_a_reason() {
        for (h, says) in [
            ("$1$saltsalt$RwMqRjSWhXMKbW72DwzGd1", "MD5"),
            ("$apr1$x$y", "Apache"),
            ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1"),
            ("$y$j9T$abc$def", "yescrypt"),
            ("abJnggxhB/yWI", "DES"),
            ("!", "locked"),
            ("", "empty"),
            ("plaintext-password", "not a password hash"),
            ("$6$salt$short", "sha512-crypt"),
            ("$6$rounds=x$salt$abc", "rounds"),
        ] {
            let e = check_hash(h).unwrap_err();
            assert!(e.contains(says), "{h}: {e}");
        }
    }

    #[test]
    fn rounds_are_clamped_as_glibc_does() {
        // `rounds=10` is taken as 1000 by glibc; the hash below was made with 1000.
        let h1000 = format!(
            "$6$rounds=1000$saltsalt${}",
            sha_crypt::sha512_crypt_b64(
                b"s3cret",
                b"saltsalt",
                &sha_crypt::Sha512Params::new(1000).unwrap()
            )
            .unwrap()
        );
        let h10 = h1000.replace("rounds=1000", "rounds=10");
        assert_eq!(verify("s3cret", &h10), Ok(true));
        // Salts longer than 16 characters are cut to 16, as glibc does.
        let long = SHA512.replace("saltsalt", "saltsaltsaltsaltEXTRA");
        let cut = SHA512.replace("saltsalt", "saltsaltsaltsalt");
        assert_eq!(verify("x", &long), verify("x", &cut));
    }
}
