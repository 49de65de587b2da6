//! Never lose or corrupt a byte (issue 12), with real clients on every runtime: per-
//! command state that a refused command must spend.

use wharf_tests::harness::*;

/// The issue's transcript with Python's ftplib: a 1,000-byte file, `REST 100`, a RETR
/// refused with 550 (missing file) or 425 (no data connection), then a plain STOR of 50
/// bytes must leave exactly those 50 bytes (it used to write them in place at 100).
const FTPLIB_REST_AFTER_REFUSED_RETR: &str = r#"
import ftplib, io, sys
f = ftplib.FTP()
f.connect("127.0.0.1", int(sys.argv[1]))
f.login("alice", sys.argv[2])
old = bytes(i % 251 for i in range(1000))
f.storbinary("STOR up.bin", io.BytesIO(old))
for refusal in ("550", "425"):
    print(f.sendcmd("REST 100"))
    try:
        if refusal == "550":
            f.retrbinary("RETR missing.bin", lambda b: None)   # PASV, then RETR
        else:
            f.sendcmd("RETR missing.bin")                      # no PASV first
        sys.exit("RETR of a missing file succeeded")
    except ftplib.all_errors as e:
        print("refused", e)
        assert str(e).startswith(refusal), e
    new = bytes([ord("a") + len(refusal)]) * 50
    print(f.storbinary("STOR up.bin", io.BytesIO(new)))
    got = bytearray()
    f.retrbinary("RETR up.bin", got.extend)
    assert bytes(got) == new, (refusal, len(got))
    print("size", f.size("up.bin"))
f.quit()
"#;

wharf_tests::per_runtime! {
    fn a_refused_retr_spends_rest_with_ftplib(rt) {
        let f = Fixture::start(rt);
        let out = python(FTPLIB_REST_AFTER_REFUSED_RETR, &[&f.port.to_string(), PASSWORD]);
        assert!(out.contains("refused 550") && out.contains("refused 425"), "{out}");
        assert_eq!(out.matches("size 50").count(), 2, "{out}");
        let stored = std::fs::read(f.root.join("up.bin")).unwrap();
        assert_eq!(stored, vec![b'a' + 3; 50], "the last STOR was not the whole file");
        f.assert_no_temp_files();
        f.stop();
    }
}

/// STOU of a 255-byte name with ftplib: the 150 and 226 replies name the file; a second
/// STOU of the same name gets a shortened unique one.
const FTPLIB_STOU_LONG_NAME: &str = r#"
import ftplib, io, sys
f = ftplib.FTP()
f.connect("127.0.0.1", int(sys.argv[1]))
f.login("alice", sys.argv[2])
name = sys.argv[3]
for body in (b"first", b"second"):
    f.voidcmd("TYPE I")
    conn, _ = f.ntransfercmd("STOU " + name)
    conn.sendall(body)
    conn.close()
    print(f.voidresp())
f.quit()
"#;

wharf_tests::per_runtime! {
    /// Issue 21, defect 2: names of 227 to 255 bytes could not be uploaded with STOR or
    /// STOU (`553`): the temporary name carried the final name and passed 255 bytes.
    fn names_of_255_bytes_upload_with_stor_and_stou(rt) {
        let f = Fixture::start(rt);
        let name = "x".repeat(251) + ".txt";
        let src = f.scratch().join("src");
        std::fs::write(&src, b"stor body").unwrap();
        let user = format!("alice:{PASSWORD}");
        curl(&["-u", &user, "-T", src.to_str().unwrap(), &f.url(&name)]);
        assert_eq!(std::fs::read(f.root.join(&name)).unwrap(), b"stor body");
        let stou = "é".repeat(127) + "s";
        assert_eq!(stou.len(), 255);
        let out = python(FTPLIB_STOU_LONG_NAME, &[&f.port.to_string(), PASSWORD, &stou]);
        let names: Vec<&str> = out
            .lines()
            .filter_map(|l| l.strip_prefix("226 Transfer complete (unique file name: "))
            .filter_map(|l| l.strip_suffix(")."))
            .collect();
        assert_eq!(names.len(), 2, "{out}");
        assert_eq!(names[0], stou);
        assert!(names[1].len() <= 255 && names[1].ends_with(".1"), "{out}");
        assert_eq!(std::fs::read(f.root.join(names[0])).unwrap(), b"first");
        assert_eq!(std::fs::read(f.root.join(names[1])).unwrap(), b"second");
        f.assert_no_temp_files();
        f.stop();
    }
}

wharf_tests::per_runtime! {
    /// A reload sweeps the site roots as a start does: temporary files nobody holds
    /// (old and new name formats, in any folder) go; users' files stay; a reload that
    /// turns durability off keeps uploads working.
    fn a_reload_sweeps_temporary_files_and_sets_durability(rt) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("site");
        std::fs::create_dir_all(root.join("deep/er")).unwrap();
        // Swept by the start, last (the deepest folder): once it is gone, the start's
        // sweep has passed the folders planted below.
        let sentinel = root.join("deep/er/.wharf-part-5e5e5e5e5e5e5e5e");
        std::fs::write(&sentinel, b"half").unwrap();
        let text = format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\npassive_ports = \"0-0\"\nruntime = \"{rt}\"\n\
             [site]\nroot = {:?}\n[[users]]\nname = \"alice\"\npassword_hash = \"{}\"\n",
            root.display().to_string(),
            password_hash()
        );
        let f = Fixture::from_toml(rt, tmp, root.clone(), &text);
        let gone = |paths: &[std::path::PathBuf], what: &str| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while paths.iter().any(|p| p.exists()) {
                assert!(std::time::Instant::now() < deadline, "{what} swept nothing");
                std::thread::yield_now();
            }
        };
        gone(&[sentinel], "the start");
        let debris = [
            root.join(".wharf-part-0123456789abcdef"),
            root.join("deep/.wharf-part-00000000deadbeef-report.pdf"),
        ];
        for d in &debris {
            std::fs::write(d, b"half").unwrap();
        }
        std::fs::write(root.join("deep/.wharf-part-mine"), b"user's").unwrap();
        let reloader = f.reloader();
        let mut config = reloader.config();
        for site in &mut config.sites {
            site.durable_writes = false;
        }
        reloader.reload(config).unwrap();
        gone(&debris, "the reload");
        assert!(root.join("deep/.wharf-part-mine").exists());
        let src = f.scratch().join("up");
        std::fs::write(&src, b"after the reload").unwrap();
        curl(&["-u", &format!("alice:{PASSWORD}"), "-T", src.to_str().unwrap(), &f.url("up.txt")]);
        assert_eq!(std::fs::read(root.join("up.txt")).unwrap(), b"after the reload");
        f.stop();
    }
}
