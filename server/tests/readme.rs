//! The README's commands, run as a reader would run them, so the README cannot drift
//! from what wharf does.
//!
//! A fenced block preceded by `<!-- tested: GROUP -->` is run; blocks of one group run in
//! order in one shell session (so a `cd`, a file written or a server started in one block
//! is there for the next), each group in a network and mount namespace of its own: the
//! README's addresses and ports (127.0.0.1:2121, 50000-50100) are always free there,
//! `/tmp` and `/srv` are empty tmpfs, and nothing the commands write leaves the test's
//! scratch directory. `<!-- tested: GROUP, file NAME -->` before a block (a `toml` one,
//! say) writes the block to NAME in the session's directory at that point instead.
//!
//! In a shell block, each command (with its `\` continuations, `for ... done` bodies and
//! here-documents) is run and judged on its own:
//! - the `# ...` lines right after a command are its expected output: each must match a
//!   line of what it printed (stdout and stderr), in order, other lines in between
//!   allowed; `...` in an expected line matches anything;
//! - a command without expected lines must exit 0;
//! - a command that starts wharf to serve (`cargo run --release -p wharf-server [-- ARGS]`,
//!   `./target/release/wharf ARGS` or `wharf ARGS` without a subcommand) runs in the
//!   background until the group ends; the next command runs once it says it serves, and
//!   its expected lines are matched against what it printed by the end;
//! - after a command that tells a running server to reload (`wharf user ...`), the next
//!   one runs once the server has said it reloaded.
//!
//! The session's directory stands for a clone of the repository: `server/` is the
//! repository's, `target/release/wharf` and `wharf` on the PATH are the binary under test,
//! and `cargo run|build --release -p wharf-server` use it instead of building.
//!
//! Blocks without a marker are not run; a marker not followed by a fenced block fails
//! the test. Making the namespaces needs root (CI runs as root) or unprivileged user
//! namespaces; without either the test fails with one line saying so.

mod common;

use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::WHARF;

const README: &str = include_str!("../../README.md");
const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// How long one group's commands may take together (key generation and TLS included).
const GROUP_DEADLINE: Duration = Duration::from_secs(300);

#[derive(Debug)]
enum Kind {
    Shell,
    File(String),
}

#[derive(Debug)]
struct Block {
    group: String,
    kind: Kind,
    /// The README line of its first line.
    line: usize,
    text: String,
}

/// The marked blocks of `readme`, in order.
fn blocks(readme: &str) -> Vec<Block> {
    let lines: Vec<&str> = readme.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let Some(marker) = lines[i]
            .trim()
            .strip_prefix("<!-- tested:")
            .and_then(|m| m.strip_suffix("-->"))
        else {
            i += 1;
            continue;
        };
        let mut parts = marker.split(',').map(str::trim);
        let group = parts.next().unwrap_or("").to_string();
        assert!(
            !group.is_empty(),
            "README.md:{}: a tested marker without a group",
            i + 1
        );
        let kind = match parts.next() {
            None => Kind::Shell,
            Some(p) => match p.strip_prefix("file ") {
                Some(name) => Kind::File(name.trim().to_string()),
                None => panic!("README.md:{}: unknown marker option {p:?}", i + 1),
            },
        };
        let fence = lines.get(i + 1).map(|l| l.trim()).unwrap_or("");
        assert!(
            fence.starts_with("```"),
            "README.md:{}: a tested marker must be followed by a fenced block",
            i + 1
        );
        if matches!(kind, Kind::Shell) {
            assert!(
                fence == "```sh" || fence == "```bash",
                "README.md:{}: only sh blocks are run (this one is {fence:?}); mark others `file NAME`",
                i + 2
            );
        }
        let start = i + 2;
        let end = (start..lines.len())
            .find(|&j| lines[j].trim() == "```")
            .unwrap_or_else(|| panic!("README.md:{}: the block never closes", i + 2));
        out.push(Block {
            group,
            kind,
            line: start + 1,
            text: lines[start..end].join("\n") + "\n",
        });
        i = end + 1;
    }
    out
}

#[derive(Debug)]
struct Cmd {
    /// The README line of its first line.
    line: usize,
    text: String,
    expected: Vec<String>,
    /// The arguments of a wharf started to serve.
    server: Option<String>,
}

/// The commands of a shell block, with the expected output under each.
fn commands(block: &Block) -> Vec<Cmd> {
    let mut out: Vec<Cmd> = Vec::new();
    let mut open = false; // inside a command still being continued
    let mut depth = 0i32; // for/while/if ... done/fi
    let mut heredoc: Option<String> = None;
    for (k, raw) in block.text.lines().enumerate() {
        let line_no = block.line + k;
        let trimmed = raw.trim();
        if let Some(end) = &heredoc {
            let cmd = out.last_mut().unwrap();
            cmd.text.push_str(raw);
            cmd.text.push('\n');
            if trimmed == end {
                heredoc = None;
                open = depth > 0;
            }
            continue;
        }
        if !open && (trimmed.starts_with('#') || trimmed.is_empty()) {
            if let (Some(cmd), Some(rest)) = (out.last_mut(), trimmed.strip_prefix('#')) {
                let expected = rest.strip_prefix(' ').unwrap_or(rest).trim_end();
                if !expected.is_empty() {
                    cmd.expected.push(expected.to_string());
                }
            }
            continue;
        }
        if open {
            let cmd = out.last_mut().unwrap();
            cmd.text.push_str(raw);
            cmd.text.push('\n');
        } else {
            out.push(Cmd {
                line: line_no,
                text: format!("{raw}\n"),
                expected: Vec::new(),
                server: None,
            });
        }
        for word in trimmed.split([' ', ';', '\t']).filter(|w| !w.is_empty()) {
            match word {
                "for" | "while" | "until" | "if" | "case" => depth += 1,
                "done" | "fi" | "esac" => depth -= 1,
                _ => {}
            }
        }
        if let Some(at) = trimmed.find("<<") {
            let tag = trimmed[at + 2..]
                .trim_start_matches('-')
                .trim()
                .trim_matches(['\'', '"']);
            heredoc = Some(tag.split_whitespace().next().unwrap_or("").to_string());
        }
        open = heredoc.is_some() || depth > 0 || trimmed.ends_with('\\');
    }
    assert!(
        !open && depth == 0,
        "README.md:{}: a command in this block never ends",
        block.line
    );
    for cmd in &mut out {
        cmd.server = server_args(cmd.text.trim());
    }
    out
}

/// The arguments of a command that starts wharf to serve (no subcommand).
fn server_args(cmd: &str) -> Option<String> {
    let cmd = cmd.split(" #").next().unwrap_or(cmd).trim();
    let args = if let Some(rest) = cmd.strip_prefix("cargo run --release -p wharf-server") {
        match rest.trim().strip_prefix("--") {
            Some(a) => a.trim(),
            None if rest.trim().is_empty() => "",
            None => return None,
        }
    } else if let Some(rest) = cmd.strip_prefix("./target/release/wharf") {
        rest.trim()
    } else if let Some(rest) = cmd.strip_prefix("wharf ") {
        rest.trim()
    } else {
        return None;
    };
    // Options that take a value; anything else that is not an option is a subcommand.
    const VALUED: [&str; 7] = [
        "-c",
        "--config",
        "--runtime",
        "--data-dir",
        "--listen",
        "--pid-file",
        "--shutdown-grace",
    ];
    let mut words = args.split_whitespace();
    while let Some(w) = words.next() {
        if VALUED.contains(&w) {
            words.next();
        } else if !w.starts_with('-') || w.contains('|') || w == ">" {
            return None;
        }
    }
    Some(args.to_string())
}

/// Whether `line` (an output line) matches `expected`, where `...` matches anything.
fn matches(expected: &str, line: &str) -> bool {
    let line = line.trim();
    let parts: Vec<&str> = expected.trim().split("...").collect();
    if parts.len() == 1 {
        return line == parts[0];
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !line.starts_with(first) || line.len() < first.len() + last.len() || !line.ends_with(last) {
        return false;
    }
    let mut rest = &line[first.len()..line.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    true
}

/// Which expected lines are not found, in order, in `output`.
fn unmatched(expected: &[String], output: &str) -> Vec<String> {
    let mut lines = output.lines();
    let mut missing = Vec::new();
    for e in expected {
        if !lines.any(|l| matches(e, l)) {
            missing.push(e.clone());
            // Look for the rest from the start again, so one miss does not hide others.
            lines = output.lines();
        }
    }
    missing
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The scratch directory that stands for a clone of the repository.
fn scratch(group: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("readme-{group}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for d in ["target/release", "bin", "home", ".readme"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let repo = std::fs::canonicalize(REPO).unwrap();
    std::os::unix::fs::symlink(repo.join("server"), dir.join("server")).unwrap();
    std::os::unix::fs::symlink(WHARF, dir.join("target/release/wharf")).unwrap();
    std::os::unix::fs::symlink(WHARF, dir.join("bin/wharf")).unwrap();
    dir
}

/// The bash script that runs `group`'s blocks in `dir`.
fn script(dir: &Path, blocks: &[&Block], cmds: &[Vec<Cmd>]) -> String {
    let r = dir.join(".readme");
    let mut s = String::new();
    writeln!(
        s,
        r#"set -u
R={r}
export PATH={bin}:"$PATH" HOME={home} WHARF={wharf} TERM=dumb
cd {dir}
# The README's build and run commands, on the binary under test.
cargo() {{
  case "$*" in
    "build --release -p wharf-server") ;;
    "run --release -p wharf-server -- "*) shift 5; "$WHARF" "$@" ;;
    *) echo "readme test: cargo $* is not supported here" >&2; return 127 ;;
  esac
}}
servers=()
reloads() {{ cat "$R"/srv-*.log 2>/dev/null | grep -c 'reload' || true; }}
# Polls (at most 30 s) until a server log says it serves; fails if the server died.
wait_serving() {{
  for _ in $(seq 1 600); do
    grep -q 'wharf: serving' "$1" && return 0
    kill -0 "$2" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}}
# Polls (at most 30 s) until the servers have said more about reloads than $1 lines.
wait_reload() {{
  for _ in $(seq 1 600); do
    [ "$(reloads)" -gt "$1" ] && return 0
    sleep 0.05
  done
  return 1
}}"#,
        r = shell_quote(&r.display().to_string()),
        bin = shell_quote(&dir.join("bin").display().to_string()),
        home = shell_quote(&dir.join("home").display().to_string()),
        wharf = shell_quote(WHARF),
        dir = shell_quote(&dir.display().to_string()),
    )
    .unwrap();
    for (block, cmds) in blocks.iter().zip(cmds) {
        if let Kind::File(name) = &block.kind {
            writeln!(
                s,
                "# README.md:{}\ncat > {} <<'README_TEST_EOF'\n{}README_TEST_EOF",
                block.line,
                shell_quote(name),
                block.text
            )
            .unwrap();
            continue;
        }
        for c in cmds {
            let n = c.line;
            match &c.server {
                Some(args) => writeln!(
                    s,
                    "# README.md:{n}\n\"$WHARF\" {args} > \"$R/srv-{n}.log\" 2>&1 < /dev/null &\n\
                     servers+=($!)\n\
                     wait_serving \"$R/srv-{n}.log\" $! || echo 'the server did not say it serves' > \"$R/fail-{n}\"\n\
                     echo 0 > \"$R/rc-{n}\""
                )
                .unwrap(),
                None => writeln!(
                    s,
                    "# README.md:{n}\nbefore=$(reloads)\n{{ {}}} > \"$R/out-{n}\" 2>&1 < /dev/null\n\
                     echo $? > \"$R/rc-{n}\"\n\
                     if grep -q 'told the running server' \"$R/out-{n}\"; then\n\
                     \x20 wait_reload \"$before\" || echo 'the server did not reload' > \"$R/fail-{n}\"\n\
                     fi",
                    c.text
                )
                .unwrap(),
            }
        }
    }
    writeln!(
        s,
        "for p in \"${{servers[@]}}\"; do kill -TERM \"$p\"; done\n\
         for p in \"${{servers[@]}}\"; do wait \"$p\"; echo \"$p $?\" >> \"$R/server-exits\"; done\n\
         echo done > \"$R/finished\""
    )
    .unwrap();
    s
}

/// Runs `script` with bash in new mount and network namespaces (lo up, tmpfs on /tmp and
/// /srv), as its own process group, killed whole if the test fails or times out.
struct Session {
    child: std::process::Child,
}

impl Drop for Session {
    fn drop(&mut self) {
        // The whole process group: the script, its servers and clients.
        // SAFETY: signalling the process group this test created.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn run_in_namespaces(script_path: &Path, dir: &Path) -> Session {
    use std::ffi::CString;
    // SAFETY: geteuid/getegid cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let uid_map = format!("0 {uid} 1");
    let gid_map = format!("0 {gid} 1");
    let c = |s: &str| CString::new(s).unwrap();
    let (root, tmp, srv, tmpfs, lo) = (c("/"), c("/tmp"), c("/srv"), c("tmpfs"), c("lo"));
    let (p_setgroups, p_uid, p_gid) = (
        c("/proc/self/setgroups"),
        c("/proc/self/uid_map"),
        c("/proc/self/gid_map"),
    );
    let mode = c("mode=1777");
    let mut cmd = Command::new("bash");
    cmd.arg(script_path)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    // SAFETY: only system calls between fork and exec, on data prepared before.
    unsafe {
        cmd.pre_exec(move || {
            let fail = |what: &str| {
                let e = std::io::Error::last_os_error();
                Err(std::io::Error::new(e.kind(), format!("{what}: {e}")))
            };
            let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWNET;
            if uid != 0 {
                flags |= libc::CLONE_NEWUSER;
            }
            if libc::unshare(flags) != 0 {
                return fail("unshare");
            }
            if uid != 0 {
                for (path, text) in [
                    (&p_setgroups, "deny"),
                    (&p_uid, uid_map.as_str()),
                    (&p_gid, gid_map.as_str()),
                ] {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY);
                    if fd < 0 || libc::write(fd, text.as_ptr().cast(), text.len()) < 0 {
                        return fail("writing the user namespace's id maps");
                    }
                    libc::close(fd);
                }
            }
            let none = std::ptr::null();
            if libc::mount(
                none,
                root.as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                none.cast(),
            ) != 0
            {
                return fail("making / private");
            }
            for target in [&tmp, &srv] {
                if libc::mount(
                    tmpfs.as_ptr(),
                    target.as_ptr(),
                    tmpfs.as_ptr(),
                    0,
                    mode.as_ptr().cast(),
                ) != 0
                {
                    return fail("mounting a tmpfs on /tmp and /srv");
                }
            }
            // Bring up lo in the new network namespace.
            let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
            if sock < 0 {
                return fail("a socket to configure lo");
            }
            let mut req: libc::ifreq = std::mem::zeroed();
            for (d, s) in req.ifr_name.iter_mut().zip(lo.as_bytes_with_nul()) {
                *d = *s as libc::c_char;
            }
            if libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req) != 0 {
                return fail("reading lo's flags");
            }
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(sock, libc::SIOCSIFFLAGS, &req) != 0 {
                return fail("bringing lo up");
            }
            libc::close(sock);
            Ok(())
        });
    }
    match cmd.spawn() {
        Ok(child) => Session { child },
        Err(e) => panic!(
            "cannot run the README in its own namespaces (needs root or unprivileged user namespaces): {e}"
        ),
    }
}

/// Runs every command of `group` and reports every mismatch at once.
fn run_group(group: &str) {
    let all = blocks(README);
    let blocks: Vec<&Block> = all.iter().filter(|b| b.group == group).collect();
    assert!(
        !blocks.is_empty(),
        "README.md has no block tested as {group:?}"
    );
    let cmds: Vec<Vec<Cmd>> = blocks
        .iter()
        .map(|b| match b.kind {
            Kind::Shell => commands(b),
            Kind::File(_) => Vec::new(),
        })
        .collect();
    let dir = scratch(group);
    let script_path = dir.join(".readme/script.sh");
    std::fs::write(&script_path, script(&dir, &blocks, &cmds)).unwrap();
    let r = dir.join(".readme");
    let mut session = run_in_namespaces(&script_path, &dir);
    let deadline = Instant::now() + GROUP_DEADLINE;
    let status = loop {
        if let Some(status) = session.child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let read = |name: String| std::fs::read_to_string(r.join(name)).ok();
    let mut report = String::new();
    for c in cmds.iter().flatten() {
        let n = c.line;
        let shown = c.text.trim_end().replace('\n', "\n    ");
        let Some(rc) = read(format!("rc-{n}")) else {
            let _ = writeln!(
                report,
                "README.md:{n}: never ran (an earlier command hung?)\n    {shown}"
            );
            break;
        };
        let output = match c.server {
            Some(_) => read(format!("srv-{n}.log")).unwrap_or_default(),
            None => read(format!("out-{n}")).unwrap_or_default(),
        };
        let mut problems = Vec::new();
        if let Some(f) = read(format!("fail-{n}")) {
            problems.push(f.trim().to_string());
        }
        let missing = unmatched(&c.expected, &output);
        if !missing.is_empty() {
            problems.push(format!("expected, not printed: {missing:#?}"));
        }
        if c.expected.is_empty() && rc.trim() != "0" {
            problems.push(format!("exit status {}", rc.trim()));
        }
        if !problems.is_empty() {
            let _ = writeln!(
                report,
                "README.md:{n}:\n    {shown}\n  {}\n  printed:\n    {}",
                problems.join("\n  "),
                output.trim_end().replace('\n', "\n    ")
            );
        }
    }
    match status {
        None => {
            let _ = writeln!(
                report,
                "the {group} commands did not finish within {GROUP_DEADLINE:?}"
            );
        }
        Some(_) if read("finished".into()).is_none() => {
            let _ = writeln!(report, "the {group} session did not run to its end");
        }
        Some(_) => {
            for line in read("server-exits".into()).unwrap_or_default().lines() {
                if !line.ends_with(" 0") {
                    let _ = writeln!(
                        report,
                        "a server did not exit 0 at SIGTERM (pid, status): {line}"
                    );
                }
            }
        }
    }
    drop(session);
    assert!(
        report.is_empty(),
        "the README's {group:?} commands:\n{report}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_tour_runs_as_written() {
    run_group("tour");
}

#[test]
fn the_deployment_and_user_management_run_as_written() {
    run_group("deploy");
}

#[test]
fn the_iis_walkthrough_runs_as_written() {
    run_group("iis");
}

#[test]
fn the_firewall_rules_print_as_written() {
    run_group("firewall");
}

/// Every group the README marks has a test above.
#[test]
fn every_tested_group_is_run() {
    for b in blocks(README) {
        assert!(
            ["tour", "deploy", "iis", "firewall"].contains(&b.group.as_str()),
            "README.md:{}: group {:?} has no test in server/tests/readme.rs",
            b.line,
            b.group
        );
    }
}

/// The tour, the deployment and the IIS walkthrough are tested whole: each of their
/// shell blocks is marked.
#[test]
fn the_tour_and_the_walkthrough_are_marked_whole() {
    let lines: Vec<&str> = README.lines().collect();
    let mut section = "";
    let mut checked = 0;
    for (i, line) in lines.iter().enumerate() {
        if let Some(h) = line.strip_prefix("## ") {
            section = h;
        }
        let whole = section == "A short tour" || section.starts_with("Sites, users and rules");
        if whole && line.trim() == "```sh" {
            let marked = i > 0 && lines[i - 1].trim().starts_with("<!-- tested:");
            assert!(
                marked,
                "README.md:{}: a shell block of {section:?} is not tested",
                i + 1
            );
            checked += 1;
        }
    }
    // (Renaming either section must not turn this into a test that checks nothing.)
    assert!(
        checked >= 8,
        "only {checked} shell blocks found in the tour and the walkthrough"
    );
}

/// Links and paths in the README point into the repository.
#[test]
fn readme_links_stay_in_the_repository() {
    let mut rest = README;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let end = after.find(')').unwrap_or(after.len());
        let target = &after[..end];
        rest = &after[end..];
        if target.starts_with("http") || target.starts_with('#') {
            continue;
        }
        assert!(
            !target.starts_with(".."),
            "a link leaves the repository: {target}"
        );
        let path = Path::new(REPO).join(target.split('#').next().unwrap());
        assert!(path.exists(), "a link to a missing file: {target}");
    }
    assert!(
        !README.contains("../shared"),
        "the README points outside the repository"
    );
}

#[test]
fn the_harness_reads_commands_and_outputs() {
    let b = Block {
        group: "g".into(),
        kind: Kind::Shell,
        line: 10,
        text: "echo a \\\n  b   # two lines\n# a b\nfor x in 1 2; do\n  echo $x\ndone\n# 1\n# ...2\ncat > f <<'EOF'\n# not output\nEOF\ncargo run --release -p wharf-server -- --config w.toml\nwharf --config w.toml user list\n".into(),
    };
    let c = commands(&b);
    assert_eq!(c.len(), 5, "{c:#?}");
    assert_eq!(
        (c[0].line, c[0].expected.clone()),
        (10, vec!["a b".to_string()])
    );
    assert_eq!(c[1].expected, ["1", "...2"]);
    assert!(c[2].text.contains("# not output") && c[2].expected.is_empty());
    assert_eq!(c[3].server.as_deref(), Some("--config w.toml"));
    assert_eq!(c[4].server, None);
    assert!(matches(
        "-rw-r--r-- ... welcome.txt",
        "-rw-r--r--  1 ftp ftp 7 Nov 21 welcome.txt"
    ));
    assert!(!matches("a...b", "ba"));
    assert_eq!(unmatched(&["x".into(), "z".into()], "x\ny\n"), ["z"]);
}
