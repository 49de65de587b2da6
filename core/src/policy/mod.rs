//! Security and operations policy, pure and table-tested: request filtering, IP rules,
//! logon restrictions, connection limits, bandwidth.
//!
//! Per-site rules live in [`crate::SessionConfig`] (`filtering`, `ip_rules`, `limits`).
//! What must be shared by every shard of a process — the ban table, connection counts per
//! address and per user, uploads in progress — is a [`ServerPolicy`], given to each
//! [`crate::Server`] with [`crate::Server::with_policy`]. It holds mutexes, not I/O; its
//! clock is the `now` the drivers pass.

pub mod bans;
pub mod filter;
pub mod ip;
pub mod limits;
pub mod logins;
pub mod rate;

pub use bans::{LogonRestrictions, Verdict};
pub use filter::{Denial, RequestFiltering};
pub use ip::{DenyAction, DomainRule, HostPattern, IpNet, IpRule, IpRules};
pub use limits::{ServerPolicy, SiteLimits};
pub use rate::TokenBucket;
