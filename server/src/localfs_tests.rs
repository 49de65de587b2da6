use std::io::Read;
use std::os::unix::fs::symlink;

use super::*;
use crate::upload::{self, LocalUpload, Reservations, Target};
use std::io::Write;

fn vp(s: &str) -> VPath {
    VPath::root().resolve(s).unwrap()
}

struct Site {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
    fs: LocalFs,
}

/// A root with `a.txt` and `sub/b.txt`, next to an outside directory with `secret`.
fn site() -> Site {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let outside = tmp.path().join("outside");
    std::fs::create_dir_all(root.join("sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("a.txt"), b"alpha").unwrap();
    std::fs::write(root.join("sub/b.txt"), b"beta").unwrap();
    std::fs::write(outside.join("secret"), b"top secret").unwrap();
    let fs = LocalFs::open(&root).unwrap();
    Site {
        _tmp: tmp,
        root,
        outside,
        fs,
    }
}

fn read_all(fs: &LocalFs, p: &str, offset: u64) -> Result<Vec<u8>, FsError> {
    let (mut d, _) = fs.open_read(&vp(p), offset)?;
    let mut v = Vec::new();
    d.read_to_end(&mut v).unwrap();
    Ok(v)
}

fn write_file(fs: &LocalFs, p: &str, mode: WriteMode, bytes: &[u8]) -> Box<dyn Upload> {
    let (mut up, _) = fs.open_write(&vp(p), mode).unwrap();
    up.write_all(bytes).unwrap();
    up
}

#[test]
fn normal_files_work() {
    let s = site();
    assert_eq!(read_all(&s.fs, "/a.txt", 0).unwrap(), b"alpha");
    assert_eq!(read_all(&s.fs, "sub/b.txt", 2).unwrap(), b"ta");
    let m = s.fs.stat(&vp("/sub")).unwrap();
    assert!(m.is_dir());
    let root = s.fs.stat(&VPath::root()).unwrap();
    assert!(root.is_dir());
    let names: Vec<_> =
        s.fs.read_dir(&VPath::root())
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
    assert_eq!(names, vec!["a.txt", "sub"]);
    s.fs.make_dir(&vp("/new")).unwrap();
    s.fs.rename(&vp("/a.txt"), &vp("/new/a2.txt")).unwrap();
    assert_eq!(read_all(&s.fs, "/new/a2.txt", 0).unwrap(), b"alpha");
    assert_eq!(s.fs.remove_dir(&vp("/new")), Err(FsError::NotEmpty));
    s.fs.remove_file(&vp("/new/a2.txt")).unwrap();
    s.fs.remove_dir(&vp("/new")).unwrap();
    assert_eq!(s.fs.stat(&vp("/new")).unwrap_err(), FsError::NotFound);
    assert_eq!(
        read_all(&s.fs, "/sub", 0).unwrap_err(),
        FsError::IsADirectory
    );
}

#[test]
fn dot_dot_and_absolute_paths_stay_inside() {
    let s = site();
    // VPath already folds `..` at the root; what reaches storage is below the root.
    assert_eq!(
        read_all(&s.fs, "../../../../etc/hostname", 0).unwrap_err(),
        FsError::NotFound
    );
    let abs = s.outside.join("secret");
    assert_eq!(
        read_all(&s.fs, abs.to_str().unwrap(), 0).unwrap_err(),
        FsError::NotFound
    );
    assert_eq!(read_all(&s.fs, "/sub/../a.txt", 0).unwrap(), b"alpha");
}

#[test]
fn symlink_to_filesystem_root_is_refused() {
    let s = site();
    symlink("/", s.root.join("escape")).unwrap();
    assert!(read_all(&s.fs, "/escape/etc/hostname", 0).is_err());
    assert!(s.fs.stat(&vp("/escape/etc")).is_err());
    assert!(s.fs.read_dir(&vp("/escape")).is_err());
    assert!(s
        .fs
        .open_write(&vp("/escape/tmp/x"), WriteMode::Replace)
        .is_err());
    // Listed, but as a link that goes nowhere.
    let e = s.fs.read_dir(&VPath::root()).unwrap();
    let esc = e.iter().find(|e| e.name == "escape").unwrap();
    assert_eq!(esc.meta.kind, FileKind::Symlink);
}

#[test]
fn symlinked_directory_pointing_out_is_refused() {
    let s = site();
    // Created after the storage was opened, as a user with shell access might.
    symlink(&s.outside, s.root.join("out")).unwrap();
    assert!(read_all(&s.fs, "/out/secret", 0).is_err());
    assert!(s.fs.read_dir(&vp("/out")).is_err());
    assert!(s
        .fs
        .open_write(&vp("/out/planted"), WriteMode::Replace)
        .is_err());
    assert!(s
        .fs
        .open_write(&vp("/out/secret"), WriteMode::Append)
        .is_err());
    assert!(s.fs.remove_file(&vp("/out/secret")).is_err());
    assert!(s.fs.rename(&vp("/out/secret"), &vp("/stolen")).is_err());
    assert!(!s.outside.join("planted").exists());
    assert!(s.outside.join("secret").exists());
    // A file symlink pointing out is refused as well.
    symlink(s.outside.join("secret"), s.root.join("secret-link")).unwrap();
    assert!(read_all(&s.fs, "/secret-link", 0).is_err());
}

#[test]
fn symlink_inside_the_root_is_followed() {
    let s = site();
    symlink("sub", s.root.join("alias")).unwrap();
    assert_eq!(read_all(&s.fs, "/alias/b.txt", 0).unwrap(), b"beta");
}

#[test]
fn replace_upload_is_invisible_until_commit() {
    let s = site();
    let up = write_file(&s.fs, "/a.txt", WriteMode::Replace, b"new contents");
    assert_eq!(read_all(&s.fs, "/a.txt", 0).unwrap(), b"alpha");
    let names: Vec<_> =
        s.fs.read_dir(&VPath::root())
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
    assert_eq!(names, vec!["a.txt", "sub"], "temp file must be hidden");
    up.commit().unwrap();
    assert_eq!(read_all(&s.fs, "/a.txt", 0).unwrap(), b"new contents");
    assert_eq!(
        std::fs::read_dir(&s.root).unwrap().count(),
        2,
        "no temp file left"
    );
}

#[test]
fn discarded_upload_leaves_nothing() {
    let s = site();
    let up = write_file(&s.fs, "/a.txt", WriteMode::Replace, b"half");
    up.discard();
    assert_eq!(read_all(&s.fs, "/a.txt", 0).unwrap(), b"alpha");
    let up = write_file(&s.fs, "/fresh.bin", WriteMode::Replace, b"half");
    drop(up);
    assert_eq!(s.fs.stat(&vp("/fresh.bin")).unwrap_err(), FsError::NotFound);
    assert_eq!(std::fs::read_dir(&s.root).unwrap().count(), 2);
}

#[test]
fn append_and_restart_write_in_place() {
    let s = site();
    write_file(&s.fs, "/a.txt", WriteMode::Append, b"bet")
        .commit()
        .unwrap();
    assert_eq!(read_all(&s.fs, "/a.txt", 0).unwrap(), b"alphabet");
    write_file(&s.fs, "/a.txt", WriteMode::At(5), b"BET")
        .commit()
        .unwrap();
    assert_eq!(read_all(&s.fs, "/a.txt", 0).unwrap(), b"alphaBET");
    // Up to the end is fine: that is an append.
    write_file(&s.fs, "/a.txt", WriteMode::At(8), b"!")
        .commit()
        .unwrap();
    assert_eq!(read_all(&s.fs, "/a.txt", 0).unwrap(), b"alphaBET!");
}

#[test]
fn restart_past_the_end_or_of_a_missing_file_is_refused_and_makes_nothing() {
    // As MemStorage does: no hole (a sparse giant at REST 10^12), no empty file left.
    let s = site();
    let beyond = FsError::Io("offset beyond end".into());
    for off in [10, 1_000_000_000_000, u64::MAX] {
        let err = s.fs.open_write(&vp("/a.txt"), WriteMode::At(off)).err();
        assert_eq!(err, Some(beyond.clone()), "{off}");
        let err = s.fs.open_write(&vp("/new.bin"), WriteMode::At(off)).err();
        assert_eq!(err, Some(beyond.clone()), "{off}");
    }
    assert_eq!(read_all(&s.fs, "/a.txt", 0).unwrap(), b"alpha");
    assert_eq!(std::fs::metadata(s.root.join("a.txt")).unwrap().len(), 5);
    assert_eq!(s.fs.stat(&vp("/new.bin")).unwrap_err(), FsError::NotFound);
}

#[test]
fn unique_upload_picks_a_fresh_name() {
    let s = site();
    let (mut up, path) = s.fs.open_write(&vp("/a.txt"), WriteMode::Unique).unwrap();
    assert_eq!(path.as_str(), "/a.txt.1");
    up.write_all(b"u").unwrap();
    up.commit().unwrap();
    assert_eq!(read_all(&s.fs, "/a.txt.1", 0).unwrap(), b"u");
    assert_eq!(read_all(&s.fs, "/a.txt", 0).unwrap(), b"alpha");
    let (up, path) = s.fs.open_write(&vp("/a.txt"), WriteMode::Unique).unwrap();
    assert_eq!(path.as_str(), "/a.txt.2");
    up.discard();
    assert!(s.fs.stat(&vp("/a.txt.2")).is_err());
}

#[test]
fn temp_names_cannot_be_named() {
    let s = site();
    // Where a filesystem has no O_TMPFILE, an upload in progress has a temporary name.
    let temp = crate::upload::temp_name();
    std::fs::write(s.root.join(&temp), b"secret in progress").unwrap();
    assert!(read_all(&s.fs, &format!("/{temp}"), 0).is_err());
    assert!(s
        .fs
        .open_write(&vp(&format!("/{temp}")), WriteMode::Replace)
        .is_err());
}

#[test]
fn set_modified_sets_mtime() {
    let s = site();
    let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    s.fs.set_modified(&vp("/a.txt"), t).unwrap();
    assert_eq!(s.fs.stat(&vp("/a.txt")).unwrap().modified, Some(t));
}

#[test]
fn rename_without_replace_refuses_an_existing_target() {
    let s = site();
    std::fs::write(s.root.join("x.txt"), b"x").unwrap();
    std::fs::write(s.root.join("y.txt"), b"y").unwrap();
    std::fs::create_dir(s.root.join("d")).unwrap();
    std::fs::create_dir(s.root.join("e")).unwrap();
    for (from, to) in [("/x.txt", "/y.txt"), ("/d", "/e"), ("/x.txt", "/x.txt")] {
        assert_eq!(
            s.fs.rename_noreplace(&vp(from), &vp(to)),
            Err(FsError::AlreadyExists),
            "{from} -> {to}"
        );
    }
    assert_eq!(std::fs::read(s.root.join("y.txt")).unwrap(), b"y");
    assert_eq!(
        s.fs.rename_noreplace(&vp("/missing"), &vp("/new")),
        Err(FsError::NotFound)
    );
    s.fs.rename_noreplace(&vp("/x.txt"), &vp("/d/x2.txt"))
        .unwrap();
    assert_eq!(std::fs::read(s.root.join("d/x2.txt")).unwrap(), b"x");
    assert!(!s.root.join("x.txt").exists());
    // Through execute, `replace` picks the call.
    let request = |replace| wharf_core::Request::Rename {
        from: vp("/d/x2.txt"),
        to: vp("/y.txt"),
        replace,
    };
    let users = wharf_core::memfs::MemUsers::new();
    let now = std::time::SystemTime::UNIX_EPOCH;
    let (done, _) = wharf_core::backend::execute(
        &s.fs,
        &users,
        &wharf_core::NoResolver,
        request(false),
        None,
        now,
    );
    assert_eq!(
        done,
        wharf_core::Completion::Done(Err(FsError::AlreadyExists))
    );
    let (done, _) = wharf_core::backend::execute(
        &s.fs,
        &users,
        &wharf_core::NoResolver,
        request(true),
        None,
        now,
    );
    assert_eq!(done, wharf_core::Completion::Done(Ok(())));
    assert_eq!(std::fs::read(s.root.join("y.txt")).unwrap(), b"x");
}

/// Two mounts: `site0` on the root of [`site`] and `vd` on its outside directory.
fn mounted() -> (Site, LocalFs) {
    let s = site();
    let fs = LocalFs::with_mounts(&[
        ("site0".to_string(), s.root.as_path()),
        ("vd".to_string(), s.outside.as_path()),
    ])
    .unwrap();
    (s, fs)
}

#[test]
fn mounts_serve_each_directory_under_its_name() {
    let (s, fs) = mounted();
    assert_eq!(read_all(&fs, "/site0/a.txt", 0).unwrap(), b"alpha");
    assert_eq!(read_all(&fs, "/vd/secret", 0).unwrap(), b"top secret");
    assert!(fs.stat(&vp("/site0")).unwrap().is_dir());
    // Nothing at `/`, nothing under an unknown name.
    assert_eq!(fs.stat(&VPath::root()), Err(FsError::NotFound));
    assert_eq!(fs.read_dir(&VPath::root()), Err(FsError::NotFound));
    assert_eq!(read_all(&fs, "/other/a.txt", 0), Err(FsError::NotFound));
    assert!(fs.remove_dir(&vp("/site0")).is_err());
    assert!(s.root.is_dir());
    // Writes land in the right directory, through the same temp-and-rename.
    write_file(&fs, "/site0/sub/new.txt", WriteMode::Replace, b"new")
        .commit()
        .unwrap();
    assert_eq!(std::fs::read(s.root.join("sub/new.txt")).unwrap(), b"new");
    fs.make_dir(&vp("/vd/made")).unwrap();
    assert!(s.outside.join("made").is_dir());
}

#[test]
fn a_mount_is_a_sandbox_too() {
    let (s, fs) = mounted();
    // A symlink inside site0 pointing at the other mount's directory leaves site0.
    symlink(&s.outside, s.root.join("link")).unwrap();
    assert!(read_all(&fs, "/site0/link/secret", 0).is_err());
    assert!(fs.stat(&vp("/site0/link/secret")).is_err());
    assert!(LocalFs::with_mounts(&[("a/b".to_string(), s.root.as_path())]).is_err());
    assert!(LocalFs::with_mounts(&[
        ("x".to_string(), s.root.as_path()),
        ("x".to_string(), s.outside.as_path())
    ])
    .is_err());
}

/// What listing a directory gave through `cap_std`'s own `read_dir` and metadata (the
/// code the `getdents64` + `fstatat` listing replaced), for comparison.
fn reference_listing(fs: &LocalFs, path: &VPath) -> Vec<DirEntry> {
    let (mount, path) = fs.locate(path).unwrap();
    let root = &mount.dir;
    let dir = rel(&path).unwrap();
    let mut out = Vec::new();
    for e in root.read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(TEMP_PREFIX) {
            continue;
        }
        let Ok(m) = e.metadata() else { continue };
        out.push(LocalFs::entry(root, dir, name, convert(&m)));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

#[test]
fn listing_matches_cap_std_metadata() {
    use std::os::unix::fs::PermissionsExt;
    let s = site();
    let r = &s.root;
    symlink("sub", r.join("dir-link")).unwrap();
    symlink("a.txt", r.join("file-link")).unwrap();
    symlink("nowhere", r.join("dangling")).unwrap();
    symlink("/", r.join("escape")).unwrap();
    symlink(s.outside.join("secret"), r.join("secret-link")).unwrap();
    symlink("sub/../../outside/secret", r.join("dotdot-link")).unwrap();
    for (name, mode) in [("suid", 0o4755), ("sticky", 0o1777), ("none", 0o000)] {
        std::fs::write(r.join(name), name).unwrap();
        std::fs::set_permissions(r.join(name), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::write(r.join(format!("{TEMP_PREFIX}x-a.txt")), b"partial").unwrap();
    std::fs::write(r.join("ünïcødé name"), b"u").unwrap();
    std::fs::write(r.join("sub/old"), b"o").unwrap();
    let old = std::time::UNIX_EPOCH + std::time::Duration::new(1_000_000_000, 123_456_789);
    std::fs::File::options()
        .write(true)
        .open(r.join("sub/old"))
        .unwrap()
        .set_modified(old)
        .unwrap();
    for dir in ["/", "/sub", "/dir-link"] {
        let got = s.fs.read_dir(&vp(dir)).unwrap();
        assert_eq!(got, reference_listing(&s.fs, &vp(dir)), "{dir}");
        assert!(got.iter().all(|e| !e.name.starts_with(TEMP_PREFIX)));
    }
    let root = s.fs.read_dir(&VPath::root()).unwrap();
    let kind = |n: &str| root.iter().find(|e| e.name == n).unwrap().meta.kind;
    assert_eq!(kind("dir-link"), FileKind::Dir);
    assert_eq!(kind("file-link"), FileKind::File);
    for link in ["dangling", "escape", "secret-link", "dotdot-link"] {
        assert_eq!(kind(link), FileKind::Symlink, "{link}");
    }
    let sub = s.fs.read_dir(&vp("/sub")).unwrap();
    assert_eq!(
        sub.iter().find(|e| e.name == "old").unwrap().meta.modified,
        Some(old)
    );
}

#[test]
fn big_listing_is_complete_and_sorted() {
    // More than enough entries for helper threads (when the machine has a second core).
    let s = site();
    let big = s.root.join("big");
    std::fs::create_dir(&big).unwrap();
    let n = 5077;
    for i in (0..n).rev() {
        std::fs::write(big.join(format!("f{i:05}")), vec![b'x'; i % 13]).unwrap();
    }
    std::fs::create_dir(big.join("zdir")).unwrap();
    symlink("f00003", big.join("alink")).unwrap();
    let got = s.fs.read_dir(&vp("/big")).unwrap();
    assert_eq!(got.len(), n + 2);
    assert_eq!(got, reference_listing(&s.fs, &vp("/big")));
    assert!(got.windows(2).all(|w| w[0].name < w[1].name));
    assert_eq!(got[0].name, "alink");
    assert_eq!(got[0].meta.size, 3);
}

fn root_dir(s: &Site) -> Dir {
    Dir::open_ambient_dir(&s.root, ambient_authority()).unwrap()
}

fn names_on_disk(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

/// Issue 21, defect 2: the temporary name no longer carries the final name, so names of
/// up to 255 bytes (the file system's limit) upload with STOR and STOU; 256 are refused
/// (553) and leave nothing.
#[test]
fn names_of_255_bytes_upload_with_stor_and_stou() {
    let s = site();
    let long = "n".repeat(251) + ".bin";
    assert_eq!(long.len(), 255);
    write_file(&s.fs, &format!("/{long}"), WriteMode::Replace, b"stor")
        .commit()
        .unwrap();
    assert_eq!(std::fs::read(s.root.join(&long)).unwrap(), b"stor");
    let utf8 = "é".repeat(127) + "x";
    assert_eq!(utf8.len(), 255);
    let (mut up, path) =
        s.fs.open_write(&vp(&format!("/sub/{utf8}")), WriteMode::Unique)
            .unwrap();
    assert_eq!(path.file_name(), Some(utf8.as_str()));
    up.write_all(b"stou").unwrap();
    up.commit().unwrap();
    assert_eq!(
        std::fs::read(s.root.join("sub").join(&utf8)).unwrap(),
        b"stou"
    );
    // STOU of a taken 255-byte name shortens it to fit its suffix.
    let (up, path) =
        s.fs.open_write(&vp(&format!("/{long}")), WriteMode::Unique)
            .unwrap();
    let name = path.file_name().unwrap();
    assert!(name.len() <= 255 && name.ends_with(".1"), "{name}");
    up.commit().unwrap();
    let too_long = "n".repeat(256);
    for mode in [WriteMode::Replace, WriteMode::Unique, WriteMode::Append] {
        let err = s.fs.open_write(&vp(&format!("/{too_long}")), mode).err();
        assert_eq!(err, Some(FsError::BadName), "{mode:?}");
    }
    assert_eq!(
        names_on_disk(&s.root).len(),
        4,
        "{:?}",
        names_on_disk(&s.root)
    );
}

/// STOU names its file in the 150 reply, but creates nothing there before the commit:
/// a crash or a failed upload leaves no empty file at a final name. Two uploads of one
/// server never get the same name.
#[test]
fn stou_creates_nothing_before_its_commit() {
    let s = site();
    let (first, p1) = s.fs.open_write(&vp("/up"), WriteMode::Unique).unwrap();
    let (second, p2) = s.fs.open_write(&vp("/up"), WriteMode::Unique).unwrap();
    assert_eq!((p1.as_str(), p2.as_str()), ("/up", "/up.1"));
    assert!(!s.root.join("up").exists() && !s.root.join("up.1").exists());
    drop(second);
    first.commit().unwrap();
    assert_eq!(std::fs::read(s.root.join("up")).unwrap(), b"");
    assert!(!s.root.join("up.1").exists());
    // The reservation went with the discarded upload: its name is free again.
    let (_, p3) = s.fs.open_write(&vp("/up"), WriteMode::Unique).unwrap();
    assert_eq!(p3.as_str(), "/up.1");
    // Someone outside wharf takes the announced name meanwhile: the commit refuses to
    // replace it.
    let (mut up, p4) = s.fs.open_write(&vp("/other"), WriteMode::Unique).unwrap();
    assert_eq!(p4.as_str(), "/other");
    std::fs::write(s.root.join("other"), b"theirs").unwrap();
    up.write_all(b"mine").unwrap();
    assert_eq!(up.commit().unwrap_err(), FsError::AlreadyExists);
    assert_eq!(std::fs::read(s.root.join("other")).unwrap(), b"theirs");
}

/// On Linux a STOR's bytes live in an O_TMPFILE inode: nothing in the directory until
/// the commit; with a temporary name instead (filesystems without O_TMPFILE), the same
/// commits and discards work.
#[test]
fn uploads_with_and_without_o_tmpfile() {
    for anonymous in [true, false] {
        let s = site();
        let dir = || root_dir(&s);
        let before = names_on_disk(&s.root);
        let replace = |name: &str| Target::Replace {
            final_name: name.into(),
        };
        let mut up = LocalUpload::create_with(dir(), replace("a.txt"), true, anonymous).unwrap();
        assert_eq!(up.is_anonymous(), anonymous && cfg!(target_os = "linux"));
        up.write_all(b"replaced").unwrap();
        if up.is_anonymous() {
            assert_eq!(
                names_on_disk(&s.root),
                before,
                "an O_TMPFILE upload has a name"
            );
        } else {
            assert_eq!(names_on_disk(&s.root).len(), before.len() + 1);
        }
        Box::new(up).commit().unwrap();
        assert_eq!(std::fs::read(s.root.join("a.txt")).unwrap(), b"replaced");
        assert_eq!(names_on_disk(&s.root), before, "anonymous: {anonymous}");
        // Discarded: nothing left, the old file untouched.
        let mut up = LocalUpload::create_with(dir(), replace("a.txt"), true, anonymous).unwrap();
        up.write_all(b"half").unwrap();
        Box::new(up).discard();
        assert_eq!(std::fs::read(s.root.join("a.txt")).unwrap(), b"replaced");
        assert_eq!(names_on_disk(&s.root), before);
        // STOU's commit never replaces.
        let table = std::sync::Arc::new(Reservations::default());
        let (name, reserved) = upload::reserve_unique(&dir(), "u", &table).unwrap();
        let target = Target::Unique {
            final_name: name,
            _reserved: reserved,
        };
        let up = LocalUpload::create_with(dir(), target, false, anonymous).unwrap();
        std::fs::write(s.root.join("u"), b"theirs").unwrap();
        assert_eq!(Box::new(up).commit().unwrap_err(), FsError::AlreadyExists);
        assert_eq!(std::fs::read(s.root.join("u")).unwrap(), b"theirs");
        std::fs::remove_file(s.root.join("u")).unwrap();
        assert_eq!(names_on_disk(&s.root), before, "anonymous: {anonymous}");
    }
}

/// The sweep removes temporary files no process holds (the debris of a crash), in every
/// folder, in both name formats; it keeps a live upload's (locked) file, users' files
/// with look-alike names, and never follows a symlink out of the root.
#[test]
fn the_sweep_removes_only_unheld_temporary_files() {
    let s = site();
    let debris = [
        ".wharf-part-0123456789abcdef".to_string(),
        "sub/.wharf-part-fedcba9876543210".to_string(),
        "sub/deep/er/.wharf-part-00000000000000ff-report.pdf".to_string(),
    ];
    let users = [
        ".wharf-part-notours",
        ".wharf-part-0123456789ABCDEF",
        "sub/.wharf-part-0123456789abcdefx",
        "sub/deep/wharf-part-0123456789abcdef",
        "sub/deep/er/report.pdf",
    ];
    std::fs::create_dir_all(s.root.join("sub/deep/er")).unwrap();
    for f in debris.iter().map(String::as_str).chain(users) {
        std::fs::write(s.root.join(f), b"x").unwrap();
    }
    // Outside the root, reachable only through a symlink: never touched.
    let outside = s.outside.join(".wharf-part-1111111111111111");
    std::fs::write(&outside, b"x").unwrap();
    symlink(&s.outside, s.root.join("sub/out")).unwrap();
    // A live upload under a temporary name (as on a filesystem without O_TMPFILE).
    let live = LocalUpload::create_with(
        root_dir(&s),
        Target::Replace {
            final_name: "live.bin".into(),
        },
        true,
        false,
    )
    .unwrap();
    let swept = s.fs.sweep();
    assert_eq!(swept.removed, debris.len(), "{swept:?}");
    assert_eq!(swept.live, 1, "{swept:?}");
    for f in &debris {
        assert!(!s.root.join(f).exists(), "{f} was left");
    }
    for f in users {
        assert!(s.root.join(f).exists(), "{f} was removed");
    }
    assert!(outside.exists());
    // The live upload commits normally after the sweep.
    Box::new(live).commit().unwrap();
    assert!(s.root.join("live.bin").exists());
    assert_eq!(s.fs.sweep(), Swept::default());
}

/// Durability is per mount; toggling it keeps uploads working.
#[test]
fn durability_is_set_per_mount() {
    let (site, fs) = mounted();
    assert!(fs.set_durable("site0", false));
    assert!(!fs.set_durable("nope", false));
    for top in ["/site0", "/vd"] {
        write_file(&fs, &format!("{top}/d.bin"), WriteMode::Replace, b"d")
            .commit()
            .unwrap();
        fs.make_dir(&vp(&format!("{top}/dir"))).unwrap();
        fs.rename(
            &vp(&format!("{top}/d.bin")),
            &vp(&format!("{top}/dir/e.bin")),
        )
        .unwrap();
        write_file(&fs, &format!("{top}/dir/e.bin"), WriteMode::Append, b"+")
            .commit()
            .unwrap();
        write_file(&fs, &format!("{top}/new.log"), WriteMode::Append, b"log")
            .commit()
            .unwrap();
        assert_eq!(
            read_all(&fs, &format!("{top}/dir/e.bin"), 0).unwrap(),
            b"d+"
        );
        fs.remove_file(&vp(&format!("{top}/dir/e.bin"))).unwrap();
        fs.remove_dir(&vp(&format!("{top}/dir"))).unwrap();
    }
    drop(site);
}
