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
