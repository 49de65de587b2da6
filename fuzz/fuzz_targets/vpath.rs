//! Path normalisation: results are absolute, have no `.`/`..`/empty segments, are fixed
//! points of `resolve`, and stay below any base they are placed under.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wharf_core::VPath;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (cwd, input) = text.split_once('\u{1}').unwrap_or(("/home/u", &text));
    let Ok(cwd) = VPath::root().resolve(cwd) else { return };
    let Ok(path) = cwd.resolve(input) else {
        assert!(input.contains('\0'));
        return;
    };
    let s = path.as_str();
    assert!(s.starts_with('/'));
    assert!(path.is_root() || !s.ends_with('/'));
    assert!(path.segments().all(|seg| !seg.is_empty() && seg != "." && seg != ".."));
    assert_eq!(VPath::root().resolve(s).as_ref(), Ok(&path));
    let jailed = path.under(&cwd);
    assert!(jailed.starts_with(&cwd));
    assert_eq!(jailed.strip_base(&cwd), Some(path));
});
