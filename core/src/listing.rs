//! Directory listing formats: Unix `ls -l`, MS-DOS (IIS), NLST names, and RFC 3659
//! MLSD/MLST facts; plus the `YYYYMMDDHHMMSS` time codec of MDTM/MFMT/`modify`.
//! Wall-clock "now" comes in as data.

use std::time::SystemTime;

use crate::backend::DirEntry;

/// Which MLST facts are on (OPTS MLST selects them; all are on by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facts {
    pub kind: bool,
    pub size: bool,
    pub modify: bool,
    pub perm: bool,
    pub unique: bool,
    pub unix_mode: bool,
}

impl Default for Facts {
    fn default() -> Self {
        Facts {
            kind: true,
            size: true,
            modify: true,
            perm: true,
            unique: true,
            unix_mode: true,
        }
    }
}

impl Facts {
    /// Applies `OPTS MLST type;size;` (case-insensitive, unknown names ignored).
    pub fn select(list: &str) -> Facts {
        let _ = list;
        todo!()
    }

    /// The FEAT line: `MLST type*;size*;modify*;perm*;unique*;UNIX.mode*;` with `*` on
    /// the selected facts.
    pub fn feat_line(&self) -> String {
        todo!()
    }

    /// The reply to OPTS MLST: the selected facts, `;`-terminated.
    pub fn selected_names(&self) -> String {
        todo!()
    }
}

/// One `ls -l` line with CRLF: `drwxr-xr-x 1 ftp ftp 4096 Jan 02 03:04 name` for recent
/// entries, `... Jan 02  2020 name` for entries older than six months or in the future.
pub fn unix_line(entry: &DirEntry, now: SystemTime, out: &mut Vec<u8>) {
    let _ = (entry, now, out);
    todo!()
}

/// One MS-DOS line with CRLF: `10-02-23  11:21PM       <DIR>          name` or
/// `10-02-23  11:21PM                 1234 name`.
pub fn msdos_line(entry: &DirEntry, out: &mut Vec<u8>) {
    let _ = (entry, out);
    todo!()
}

/// One MLSD/MLST fact line with CRLF: `type=file;size=3;modify=20200102030405;perm=r;
/// unique=801U1;UNIX.mode=0644; name`. `writable` decides the perm letters; `kind_name`
/// overrides `type` for MLST's `cdir`/`pdir` uses.
pub fn mlsx_line(entry: &DirEntry, facts: Facts, writable: bool, out: &mut Vec<u8>) {
    let _ = (entry, facts, writable, out);
    todo!()
}

/// `YYYYMMDDHHMMSS` in UTC (MDTM, MLSD `modify`).
pub fn format_time(t: SystemTime) -> String {
    let _ = t;
    todo!()
}

/// Parses `YYYYMMDDHHMMSS` with optional `.fff` fraction (MFMT, MDTM-set).
pub fn parse_time(s: &str) -> Option<SystemTime> {
    let _ = s;
    todo!()
}
