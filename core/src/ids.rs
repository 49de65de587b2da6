//! Identifiers the core hands to the driver. All are `Copy` newtypes over `u64` and are
//! never reused within a session, so a late event for an old id is recognisably stale.

macro_rules! id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id!(
    /// One control connection, assigned by [`crate::Server::accept`].
    SessionId
);
id!(
    /// One data connection (a passive listener and what it accepts, or an active connect).
    DataConnId
);
id!(
    /// One transfer over a data connection (a file body or a rendered listing).
    TransferId
);
id!(
    /// One [`crate::Request`] to storage or authentication, answered by `Completed`.
    RequestId
);
id!(
    /// One open file, chosen by the core in `OpenRead`/`OpenWrite` and kept by the driver.
    FileHandle
);

/// Hands out fresh ids of every kind for one session.
#[derive(Debug, Default, Clone)]
pub(crate) struct IdGen {
    next: u64,
}

impl IdGen {
    pub(crate) fn next(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}
