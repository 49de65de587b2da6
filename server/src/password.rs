//! Reading a password for `wharf passwd` and `wharf user`: from a terminal, with echo
//! off (asked twice when it sets one), or as one line of standard input. Never from the
//! command line, where other users could read it (`ps`, shell history).

use std::io::{self, BufRead, IsTerminal, Write};

/// Reads a password: on a terminal, prompts with `prompt` (and asks again when
/// `confirm`); otherwise takes the first line of standard input. Empty is refused.
pub fn read_password(prompt: &str, confirm: bool) -> Result<String, String> {
    let stdin = io::stdin();
    let tty = stdin.is_terminal();
    let password = read_line(tty, prompt)?;
    if password.is_empty() {
        return Err("empty password".into());
    }
    if tty && confirm && read_line(tty, "Again: ")? != password {
        return Err("the passwords differ".into());
    }
    Ok(password)
}

fn read_line(tty: bool, prompt: &str) -> Result<String, String> {
    if tty {
        eprint!("{prompt}");
        let _ = io::stderr().flush();
    }
    let echo = tty.then(EchoOff::new).flatten();
    let mut line = String::new();
    let read = io::stdin().lock().read_line(&mut line);
    drop(echo);
    if tty {
        eprintln!();
    }
    read.map_err(|e| format!("reading the password: {e}"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// Turns terminal echo off for as long as it lives.
struct EchoOff(libc::termios);

impl EchoOff {
    fn new() -> Option<EchoOff> {
        // SAFETY: tcgetattr/tcsetattr on stdin with a struct we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) != 0 {
                return None;
            }
            let saved = t;
            t.c_lflag &= !libc::ECHO;
            if libc::tcsetattr(0, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(EchoOff(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `new`.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.0);
        }
    }
}
