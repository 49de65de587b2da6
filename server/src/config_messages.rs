//! toml's and serde's error messages, reworded for the configuration's reader: tables
//! and lists instead of maps and sequences, "a whole number" instead of `usize`, and a
//! hint when a table is written the wrong way (`[sites]` for `[[sites]]`) or a name is
//! one typo away from a known one.

/// The table header on the line an error points at: its dotted name and whether it is
/// written `[[name]]` (one entry of a list of tables).
pub(super) struct Header<'a> {
    pub name: &'a str,
    pub array: bool,
}

/// Parses a header line (`[server]`, `[[sites]]`, `[sites.tls]`, with spaces and
/// comments allowed around it).
pub(super) fn header(line: &str) -> Option<Header<'_>> {
    let line = line.trim();
    let (array, inner, after) = match line.strip_prefix("[[") {
        Some(rest) => {
            let (inner, after) = rest.split_once("]]")?;
            (true, inner, after)
        }
        None => {
            let (inner, after) = line.strip_prefix('[')?.split_once(']')?;
            (false, inner, after)
        }
    };
    // Not a header: a line of a multi-line array (`["a", 1],`).
    let key_chars = |c: char| c.is_alphanumeric() || "_-. \"'".contains(c);
    let after = after.trim_start();
    if inner.trim().is_empty()
        || !inner.chars().all(key_chars)
        || !(after.is_empty() || after.starts_with('#'))
    {
        return None;
    }
    Some(Header {
        name: inner.trim(),
        array,
    })
}

/// `message` (toml's or serde's) in the configuration's words; `header` is the table
/// header the error points at, if it points at one.
pub(super) fn humanize(message: &str, header: Option<&Header<'_>>) -> String {
    let message = message.trim_end();
    if let Some(h) = header {
        if !h.array && message.starts_with("invalid type: map, expected a sequence") {
            return format!(
                "`[{0}]` is a single table, but `{0}` is a list of tables: write `[[{0}]]` before each entry",
                h.name
            );
        }
        if h.array && message.starts_with("invalid type: sequence, expected") {
            return format!(
                "`[[{0}]]` starts an entry of a list, but `{0}` is a single table: write `[{0}]`",
                h.name
            );
        }
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        return unknown(rest, header.is_some());
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        return format!("missing key `{name}`");
    }
    reword_types(message)
}

/// `unknown field `x`, expected one of `a`, `b``, with a suggestion.
fn unknown(rest: &str, is_table: bool) -> String {
    let (name, tail) = rest.split_once('`').unwrap_or((rest, ""));
    let expected: Vec<&str> = tail
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|s| !s.is_empty())
        .collect();
    let what = if is_table { "table" } else { "key" };
    let mut out = format!("unknown {what} `{name}`");
    if let Some(best) = expected
        .iter()
        .filter(|e| close(name, e))
        .min_by_key(|e| distance(name, e))
    {
        out.push_str(&format!("; did you mean `{best}`?"));
    }
    match expected.len() {
        0 => out.push_str(" (this table takes no keys)"),
        _ => out.push_str(&format!(
            " (known here: {})",
            expected
                .iter()
                .map(|e| format!("`{e}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
    out
}

/// Whether `b` is plausibly what was meant by `a`: the same ignoring case, or a couple
/// of letters away (one for short names).
fn close(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    let limit = if a.len().min(b.len()) <= 4 { 1 } else { 2 };
    let sorted = |s: &str| {
        let mut v: Vec<char> = s.chars().collect();
        v.sort_unstable();
        v
    };
    // Letters swapped (`tsl` for `tls`) count as one typo.
    distance(&a, &b) <= limit || (a.len() == b.len() && sorted(&a) == sorted(&b))
}

/// Levenshtein distance over chars.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Rust and serde type names in `message`, in words.
fn reword_types(message: &str) -> String {
    let mut out = message.to_string();
    for (rust, words) in [
        ("expected usize", "expected a whole number (0 or more)"),
        ("expected u64", "expected a whole number (0 or more)"),
        ("expected u32", "expected a whole number (0 or more)"),
        ("expected u16", "expected a whole number (0 or more)"),
        ("expected u8", "expected a whole number (0 or more)"),
        ("expected i64", "expected a whole number"),
        ("expected i32", "expected a whole number"),
        ("expected f64", "expected a number"),
        ("expected a sequence", "expected a list [...]"),
        ("expected a map", "expected a table"),
        ("invalid type: map", "invalid type: a table"),
        ("invalid type: sequence", "invalid type: a list"),
        ("floating point `", "the number `"),
        ("integer `", "the number `"),
        ("boolean `", "`"),
    ] {
        out = out.replace(rust, words);
    }
    // `expected struct RawSite` and the like: a table of ours.
    for kind in ["expected struct ", "expected enum "] {
        while let Some(at) = out.find(kind) {
            let end = out[at + kind.len()..]
                .find(|c: char| !c.is_alphanumeric() && c != '_')
                .map_or(out.len(), |i| at + kind.len() + i);
            out.replace_range(at..end, "expected a table");
        }
    }
    out
}
