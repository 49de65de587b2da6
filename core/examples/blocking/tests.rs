//! curl and lftp list, upload and download through the blocking runtime, plain and FTPS.

use std::process::Command;

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("the client runs (is it installed?)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?}: {err}");
    out.stdout
}

#[test]
fn curl_and_lftp_move_files_byte_exact_plain_and_over_tls() {
    let dir = std::env::temp_dir().join(format!("wharf-blocking-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let src = dir.join("src.bin");
    std::fs::write(&src, &body).unwrap();
    let addr = super::start(dir.clone(), "127.0.0.1:0").unwrap();
    let url = format!("ftp://127.0.0.1:{}", addr.port());
    for (i, tls) in [&[][..], &["--ssl-reqd", "-k"][..]].iter().enumerate() {
        let up = format!("{url}/up{i}.bin");
        run(Command::new("curl")
            .args(["-sS", "-u", "demo:demo", "-T"])
            .arg(&src)
            .arg(&up)
            .args(*tls));
        assert!(std::fs::read(dir.join(format!("up{i}.bin"))).unwrap() == body);
        let down = run(Command::new("curl")
            .args(["-sS", "-u", "demo:demo", &up])
            .args(*tls));
        assert!(down == body, "the download differs");
        let list = run(Command::new("curl")
            .args(["-sS", "-u", "demo:demo", &format!("{url}/")])
            .args(*tls));
        assert!(String::from_utf8_lossy(&list).contains(&format!("up{i}.bin")));
    }
    let script = format!(
        "set ftp:ssl-force true; set ssl:verify-certificate no; put {} -o lftp.bin; get lftp.bin -o {}; ls; bye",
        src.display(),
        dir.join("back.bin").display()
    );
    let open = format!("-u demo,demo -e '{script}' 127.0.0.1:{}", addr.port());
    let listing = run(Command::new("sh").args(["-c", &format!("lftp {open}")]));
    assert!(String::from_utf8_lossy(&listing).contains("lftp.bin"));
    assert!(std::fs::read(dir.join("back.bin")).unwrap() == body);
    std::fs::remove_dir_all(&dir).unwrap();
}
