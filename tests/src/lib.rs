//! wharf-tests: the deterministic simulator (see [`sim`]) and tests that span crates.

pub mod certs;
pub mod garage;
pub mod harness;
pub mod sim;
pub mod slapd;
pub mod unix_accounts;
