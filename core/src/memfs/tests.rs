use std::io::{Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

fn vp(s: &str) -> VPath {
    VPath::root().resolve(s).unwrap()
}

fn read_all(fs: &MemStorage, path: &str, offset: u64) -> Result<(Vec<u8>, u64), FsError> {
    let (mut body, size) = fs.open_read(&vp(path), offset)?;
    let mut out = Vec::new();
    body.read_to_end(&mut out)
        .map_err(|e| FsError::from_io(&e))?;
    Ok((out, size))
}

fn upload(fs: &MemStorage, path: &str, mode: WriteMode, bytes: &[u8]) -> Result<VPath, FsError> {
    let (mut up, at) = fs.open_write(&vp(path), mode)?;
    up.write_all(bytes).map_err(|e| FsError::from_io(&e))?;
    up.commit()?;
    Ok(at)
}

fn names(fs: &MemStorage, dir: &str) -> Vec<String> {
    let entries = fs.read_dir(&vp(dir)).unwrap();
    entries.into_iter().map(|e| e.name).collect()
}

#[test]
fn is_send_and_sync() {
    fn check<T: Send + Sync + 'static>() {}
    check::<MemStorage>();
    check::<MemUsers>();
}

#[test]
fn stat_and_read_dir() {
    let fs = MemStorage::new();
    fs.add_file("/a/b.txt", b"hello");
    fs.add_dir("/a/c d");
    fs.add_file("/ab", b"x");
    assert_eq!(fs.stat(&vp("/nope")), Err(FsError::NotFound));
    assert_eq!(fs.stat(&vp("/ab/x")), Err(FsError::NotFound));
    let meta = fs.stat(&vp("/a/b.txt")).unwrap();
    assert_eq!(
        (meta.kind, meta.size, meta.mode, meta.nlink),
        (FileKind::File, 5, 0o644, 1)
    );
    assert_eq!(
        meta.modified,
        Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    );
    let dir = fs.stat(&vp("/a")).unwrap();
    assert_eq!(
        (dir.kind, dir.size, dir.mode, dir.nlink),
        (FileKind::Dir, 0, 0o755, 2)
    );
    assert!(matches!(dir.unique, Some((1, _))) && dir.unique != meta.unique);
    assert!(fs.stat(&VPath::root()).unwrap().is_dir());
    assert_eq!(names(&fs, "/"), ["a", "ab"]);
    assert_eq!(names(&fs, "/a"), ["b.txt", "c d"]);
    assert_eq!(fs.read_dir(&vp("/ab")), Err(FsError::NotADirectory));
    assert_eq!(fs.read_dir(&vp("/zz")), Err(FsError::NotFound));
    assert_eq!(fs.paths(), ["/a", "/a/b.txt", "/a/c d", "/ab"]);
    assert_eq!(fs.file_count(), 2);
}

#[test]
fn reads() {
    let fs = MemStorage::new();
    fs.add_file("/f", b"0123456789");
    fs.add_dir("/d");
    assert_eq!(read_all(&fs, "/f", 0), Ok((b"0123456789".to_vec(), 10)));
    assert_eq!(read_all(&fs, "/f", 7), Ok((b"789".to_vec(), 10)));
    assert_eq!(read_all(&fs, "/f", 99), Ok((Vec::new(), 10)));
    assert_eq!(read_all(&fs, "/d", 0).unwrap_err(), FsError::IsADirectory);
    assert_eq!(read_all(&fs, "/g", 0).unwrap_err(), FsError::NotFound);
    // A download is a snapshot: a later replace does not change what it yields.
    let (mut body, _) = fs.open_read(&vp("/f"), 0).unwrap();
    fs.add_file("/f", b"new");
    let mut out = Vec::new();
    body.read_to_end(&mut out).unwrap();
    assert_eq!(out, b"0123456789");
}

#[test]
fn replace_appears_only_on_commit() {
    let fs = MemStorage::new();
    fs.add_file("/f", b"old");
    fs.set_time(UNIX_EPOCH + Duration::from_secs(2_000_000_000));
    let (mut up, at) = fs.open_write(&vp("/f"), WriteMode::Replace).unwrap();
    assert_eq!(at, vp("/f"));
    up.write_all(b"new content").unwrap();
    assert_eq!(fs.read_file("/f").unwrap(), b"old");
    assert_eq!(fs.used_bytes(), 3 + 11);
    up.commit().unwrap();
    assert_eq!(fs.read_file("/f").unwrap(), b"new content");
    assert_eq!(fs.used_bytes(), 11);
    let modified = fs.stat(&vp("/f")).unwrap().modified;
    assert_eq!(
        modified,
        Some(UNIX_EPOCH + Duration::from_secs(2_000_000_000))
    );

    let (mut up, _) = fs.open_write(&vp("/f"), WriteMode::Replace).unwrap();
    up.write_all(b"broken").unwrap();
    up.discard();
    assert_eq!(fs.read_file("/f").unwrap(), b"new content");
    let (mut up, _) = fs.open_write(&vp("/g"), WriteMode::Replace).unwrap();
    up.write_all(b"dropped").unwrap();
    drop(up);
    assert!(!fs.exists("/g"));
    assert_eq!(fs.used_bytes(), 11);
}

#[test]
fn open_write_errors() {
    let fs = MemStorage::new();
    fs.add_dir("/d");
    fs.add_file("/f", b"abc");
    let err = |p: &str, m| fs.open_write(&vp(p), m).err();
    assert_eq!(err("/d", WriteMode::Replace), Some(FsError::IsADirectory));
    assert_eq!(err("/", WriteMode::Replace), Some(FsError::IsADirectory));
    assert_eq!(err("/d", WriteMode::Append), Some(FsError::IsADirectory));
    assert_eq!(err("/x/y", WriteMode::Replace), Some(FsError::NotFound));
    assert_eq!(
        err("/f/y", WriteMode::Replace),
        Some(FsError::NotADirectory)
    );
    let beyond = Some(FsError::Io("offset beyond end".into()));
    assert_eq!(err("/f", WriteMode::At(4)), beyond);
    assert_eq!(err("/new", WriteMode::At(1)), beyond);
    // The parent vanishing before commit fails the commit and leaves nothing behind.
    let (up, _) = fs.open_write(&vp("/d/f"), WriteMode::Replace).unwrap();
    fs.remove_dir(&vp("/d")).unwrap();
    assert_eq!(up.commit(), Err(FsError::NotFound));
    assert_eq!(fs.paths(), ["/f"]);
}

#[test]
fn in_place_writes() {
    let fs = MemStorage::new();
    fs.add_file("/f", b"hello");
    let (mut up, _) = fs.open_write(&vp("/f"), WriteMode::Append).unwrap();
    up.write_all(b" world").unwrap();
    assert_eq!(fs.read_file("/f").unwrap(), b"hello world");
    up.discard();
    assert_eq!(fs.read_file("/f").unwrap(), b"hello world");
    upload(&fs, "/f", WriteMode::At(6), b"W").unwrap();
    assert_eq!(fs.read_file("/f").unwrap(), b"hello World");
    upload(&fs, "/f", WriteMode::At(11), b"!!").unwrap();
    assert_eq!(fs.read_file("/f").unwrap(), b"hello World!!");
    upload(&fs, "/f", WriteMode::At(9), b"xyzw").unwrap();
    assert_eq!(fs.read_file("/f").unwrap(), b"hello Worxyzw");
    upload(&fs, "/new", WriteMode::Append, b"a").unwrap();
    upload(&fs, "/new0", WriteMode::At(0), b"b").unwrap();
    assert_eq!(fs.read_file("/new").unwrap(), b"a");
    assert_eq!(fs.read_file("/new0").unwrap(), b"b");
}

#[test]
fn unique_names() {
    let fs = MemStorage::new();
    fs.add_dir("/d");
    assert_eq!(
        upload(&fs, "/d/up", WriteMode::Unique, b"1"),
        Ok(vp("/d/up"))
    );
    assert_eq!(
        upload(&fs, "/d/up", WriteMode::Unique, b"2"),
        Ok(vp("/d/up.1"))
    );
    // Two STOUs in flight never get the same name.
    let (a, at_a) = fs.open_write(&vp("/d/up"), WriteMode::Unique).unwrap();
    let (b, at_b) = fs.open_write(&vp("/d/up"), WriteMode::Unique).unwrap();
    assert_eq!((at_a.as_str(), at_b.as_str()), ("/d/up.2", "/d/up.3"));
    assert!(!fs.exists("/d/up.2"));
    b.commit().unwrap();
    a.discard();
    let (_c, at_c) = fs.open_write(&vp("/d/up"), WriteMode::Unique).unwrap();
    assert_eq!(at_c, vp("/d/up.2"));
    assert_eq!(fs.read_file("/d/up.1").unwrap(), b"2");
    assert_eq!(fs.read_file("/d/up.3").unwrap(), b"");
}

#[test]
fn dirs_and_removal() {
    let fs = MemStorage::new();
    fs.add_file("/d/f", b"x");
    assert_eq!(fs.make_dir(&vp("/d")), Err(FsError::AlreadyExists));
    assert_eq!(fs.make_dir(&vp("/d/f")), Err(FsError::AlreadyExists));
    assert_eq!(fs.make_dir(&VPath::root()), Err(FsError::AlreadyExists));
    assert_eq!(fs.make_dir(&vp("/x/y")), Err(FsError::NotFound));
    assert_eq!(fs.make_dir(&vp("/d/f/y")), Err(FsError::NotADirectory));
    fs.set_time(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    fs.make_dir(&vp("/d/e")).unwrap();
    let touched = Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000));
    assert_eq!(fs.stat(&vp("/d")).unwrap().modified, touched);
    assert_eq!(fs.remove_dir(&vp("/d")), Err(FsError::NotEmpty));
    assert_eq!(fs.remove_dir(&vp("/d/f")), Err(FsError::NotADirectory));
    assert_eq!(fs.remove_dir(&vp("/q")), Err(FsError::NotFound));
    assert_eq!(
        fs.remove_dir(&VPath::root()),
        Err(FsError::PermissionDenied)
    );
    assert_eq!(fs.remove_file(&vp("/d/e")), Err(FsError::IsADirectory));
    assert_eq!(fs.remove_file(&vp("/d/g")), Err(FsError::NotFound));
    fs.remove_file(&vp("/d/f")).unwrap();
    fs.remove_dir(&vp("/d/e")).unwrap();
    fs.remove_dir(&vp("/d")).unwrap();
    assert!(fs.paths().is_empty());
}

#[test]
fn renames() {
    let fs = MemStorage::new();
    fs.add_file("/a/x", b"1");
    fs.add_file("/a/sub/y", b"2");
    fs.add_file("/b", b"3");
    fs.add_file("/full/z", b"4");
    fs.add_dir("/empty");
    let ren = |f: &str, t: &str| fs.rename(&vp(f), &vp(t));
    assert_eq!(ren("/nope", "/c"), Err(FsError::NotFound));
    assert_eq!(ren("/b", "/q/c"), Err(FsError::NotFound));
    assert_eq!(ren("/b", "/a"), Err(FsError::IsADirectory));
    assert_eq!(ren("/a", "/b"), Err(FsError::NotADirectory));
    assert_eq!(ren("/a", "/full"), Err(FsError::NotEmpty));
    assert_eq!(ren("/a", "/a/sub/in"), Err(FsError::BadName));
    assert_eq!(ren("/", "/r"), Err(FsError::PermissionDenied));
    assert_eq!(ren("/b", "/b"), Ok(()));
    ren("/b", "/a/x").unwrap();
    assert_eq!(fs.read_file("/a/x").unwrap(), b"3");
    assert!(!fs.exists("/b"));
    ren("/a", "/empty").unwrap();
    assert_eq!(
        fs.paths(),
        [
            "/empty",
            "/empty/sub",
            "/empty/sub/y",
            "/empty/x",
            "/full",
            "/full/z"
        ]
    );
    ren("/empty", "/ab").unwrap();
    assert_eq!(fs.read_file("/ab/sub/y").unwrap(), b"2");
}

#[test]
fn set_modified() {
    let fs = MemStorage::new();
    fs.add_file("/f", b"");
    let t = UNIX_EPOCH + Duration::from_secs(86_400);
    fs.set_modified(&vp("/f"), t).unwrap();
    assert_eq!(fs.stat(&vp("/f")).unwrap().modified, Some(t));
    assert_eq!(fs.set_modified(&vp("/g"), t), Err(FsError::NotFound));
}

#[test]
fn capacity_fault() {
    let fs = MemStorage::new();
    fs.add_file("/old", b"12345");
    fs.set_faults(Faults {
        capacity: Some(10),
        ..Faults::default()
    });
    let (mut up, _) = fs.open_write(&vp("/new"), WriteMode::Replace).unwrap();
    let err = up.write_all(b"abcdefgh").unwrap_err();
    assert_eq!(FsError::from_io(&err), FsError::NoSpace);
    up.discard();
    assert_eq!(fs.used_bytes(), 5);
    assert!(!fs.exists("/new"));
    // Overwriting in place needs no new room.
    upload(&fs, "/old", WriteMode::At(0), b"ABCDE").unwrap();
    let appended = upload(&fs, "/old", WriteMode::Append, b"0123456789");
    assert_eq!(appended, Err(FsError::NoSpace));
    assert_eq!(fs.read_file("/old").unwrap(), b"ABCDE01234");
    // Replacing counts old plus pending bytes until the commit frees the old ones.
    assert_eq!(
        upload(&fs, "/old", WriteMode::Replace, b"x"),
        Err(FsError::NoSpace)
    );
    fs.set_faults(Faults::default());
    assert_eq!(
        upload(&fs, "/old", WriteMode::Replace, b"x"),
        Ok(vp("/old"))
    );
}

#[test]
fn io_fault() {
    let fs = MemStorage::new();
    fs.add_file("/f", b"data");
    let (mut body, _) = fs.open_read(&vp("/f"), 0).unwrap();
    let (mut up, _) = fs.open_write(&vp("/g"), WriteMode::Replace).unwrap();
    fs.set_faults(Faults {
        io_error: true,
        ..Faults::default()
    });
    let io = |r: Result<(), FsError>| matches!(r, Err(FsError::Io(_)));
    assert!(io(fs.stat(&vp("/f")).map(drop)));
    assert!(io(fs.read_dir(&VPath::root()).map(drop)));
    assert!(io(fs.open_read(&vp("/f"), 0).map(drop)));
    assert!(io(fs.open_write(&vp("/f"), WriteMode::Replace).map(drop)));
    assert!(io(fs.make_dir(&vp("/d"))));
    assert!(io(fs.remove_file(&vp("/f"))));
    assert!(io(fs.rename(&vp("/f"), &vp("/h"))));
    assert!(io(fs.set_modified(&vp("/f"), SystemTime::UNIX_EPOCH)));
    assert!(body.read(&mut [0; 4]).is_err());
    assert!(up.write(b"x").is_err());
    assert!(io(up.commit()));
    fs.set_faults(Faults::default());
    assert!(!fs.exists("/g"));
    assert_eq!(fs.used_bytes(), 4);
}

#[test]
fn short_writes() {
    let fs = MemStorage::new();
    fs.set_faults(Faults {
        short_writes: Some(3),
        ..Faults::default()
    });
    let (mut up, _) = fs.open_write(&vp("/f"), WriteMode::Replace).unwrap();
    assert_eq!(up.write(b"abcdefg").unwrap(), 3);
    up.write_all(b"defg").unwrap();
    up.commit().unwrap();
    assert_eq!(fs.read_file("/f").unwrap(), b"abcdefg");
}

#[test]
fn users() {
    let peer = "192.0.2.1:21".parse().unwrap();
    let mut users = MemUsers::new().with("alice", "s3cret", &["staff", "ftp"]);
    users.add("bob", "", &[]);
    let alice = users.authenticate("alice", "s3cret", peer).unwrap();
    assert_eq!(alice.name, "alice");
    assert_eq!(alice.groups, ["staff", "ftp"]);
    assert!(!alice.anonymous);
    assert!(users.authenticate("bob", "", peer).is_ok());
    for (u, p) in [
        ("alice", "s3cre"),
        ("alice", "s3cret!"),
        ("alice", ""),
        ("eve", "s3cret"),
    ] {
        assert_eq!(
            users.authenticate(u, p, peer),
            Err(AuthError::BadCredentials)
        );
    }
    assert!(!format!("{users:?}").contains("s3cret"));
}

/// A storage with the crash model on and `/d/old` = "old".
fn crashing() -> MemStorage {
    let fs = MemStorage::new();
    fs.add_file("/d/old", b"old");
    fs.enable_crash_model();
    fs
}

#[test]
fn a_durable_commit_survives_every_power_cut() {
    for seed in 0..64 {
        let fs = crashing();
        upload(&fs, "/d/new", WriteMode::Replace, b"new bytes").unwrap();
        upload(&fs, "/d/old", WriteMode::Replace, b"replaced").unwrap();
        fs.make_dir(&vp("/d/sub")).unwrap();
        upload(&fs, "/d/sub/x", WriteMode::Append, b"appended").unwrap();
        fs.power_cut(seed);
        assert_eq!(fs.read_file("/d/new").unwrap(), b"new bytes", "seed {seed}");
        assert_eq!(fs.read_file("/d/old").unwrap(), b"replaced", "seed {seed}");
        assert_eq!(
            fs.read_file("/d/sub/x").unwrap(),
            b"appended",
            "seed {seed}"
        );
    }
}

/// A crash before each step of a commit (fsync the file, link it, fsync the directory):
/// the final name holds the old file or the whole new one, never a part, never empty.
#[test]
fn a_crash_at_any_commit_step_leaves_old_or_whole() {
    let mut seen = std::collections::BTreeSet::new();
    for step in 1..=4 {
        for seed in 0..32 {
            let fs = crashing();
            fs.crash_after_steps(step);
            let _ = upload(&fs, "/d/old", WriteMode::Replace, b"the new contents");
            let label = fs.crashed().unwrap_or("none");
            seen.insert(label);
            fs.power_cut(seed);
            let got = fs.read_file("/d/old").unwrap();
            assert!(
                got == b"old" || got == b"the new contents",
                "crash before {label}, seed {seed}: {got:?}"
            );
            assert_eq!(fs.crashed(), None);
        }
    }
    let want = [
        "commit:fsync-dir",
        "commit:fsync-file",
        "commit:link",
        "none",
    ];
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), want, "(sorted)");
}

/// Without syncing (durability off), a power cut can leave an empty file at the final
/// name, or lose a rename: what the model exists to catch.
#[test]
fn without_durability_a_power_cut_loses_acknowledged_changes() {
    let (mut empty, mut resurrected) = (0, 0);
    for seed in 0..64 {
        let fs = crashing();
        fs.set_durable(false);
        upload(&fs, "/d/new", WriteMode::Replace, b"new bytes").unwrap();
        fs.remove_file(&vp("/d/old")).unwrap();
        fs.power_cut(seed);
        if fs.read_file("/d/new").is_some_and(|b| b.is_empty()) {
            empty += 1;
        }
        if fs.exists("/d/old") {
            resurrected += 1;
        }
    }
    assert!(
        empty > 0 && resurrected > 0,
        "{empty} empty, {resurrected} back"
    );
}

/// A file synced into a folder whose own creation was never synced is lost with the
/// folder: fsync of a directory does not make the directory's own name durable.
#[test]
fn a_synced_file_in_an_unsynced_folder_may_be_lost() {
    let mut lost = 0;
    for seed in 0..64 {
        let fs = crashing();
        fs.set_durable(false);
        fs.make_dir(&vp("/d/unsynced")).unwrap();
        fs.set_durable(true);
        upload(&fs, "/d/unsynced/f", WriteMode::Replace, b"f").unwrap();
        fs.power_cut(seed);
        match fs.read_file("/d/unsynced/f") {
            Some(b) => assert_eq!(b, b"f"),
            None => lost += 1,
        }
    }
    assert!(lost > 0);
}
