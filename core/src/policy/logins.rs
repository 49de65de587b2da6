//! Which TLS sessions of other control connections a data connection may resume.
//!
//! A `PROT P` data connection must prove it belongs to its control connection by
//! resuming that connection's TLS session (see [`crate::tls`]). Clients that run several
//! control connections of one login with one TLS session cache (rclone) present the
//! session of *another* of their control connections. That proves the same thing when
//! the other connection is one of the same client's: the table here records, for every
//! control connection whose TLS handshake is complete, its *family* (the token of the
//! full handshake its session descends from by resumption), its address and its logged-in
//! user. A data connection may resume the session of a control connection of the same
//! family, address and user (or one not logged in yet: its tickets reach the client at
//! its handshake, before its login completes). A client of the same user and address with a TLS session of
//! its own (a full handshake: another family) is still refused, so is everyone else.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

/// Closed control connections whose sessions still vouch for their family: their
/// tickets stay in the client's cache after they close (rclone closes pooled
/// connections and keeps using the cache). The oldest are forgotten first.
pub const CLOSED_KEPT: usize = 4096;

/// A control session's binding token (see `crate::tls::session_token`).
pub type Token = [u8; 16];

#[derive(Debug)]
struct Entry {
    /// The full handshake this session descends from (its own token if it made one).
    family: Token,
    addr: IpAddr,
    user: Option<Box<str>>,
}

/// The control connections with a complete TLS handshake, by token (held by
/// [`crate::policy::ServerPolicy`], shared by every shard).
#[derive(Debug, Default)]
pub(crate) struct TlsLogins {
    entries: BTreeMap<Token, Entry>,
    /// Entries of closed connections, oldest first (at most [`CLOSED_KEPT`]).
    closed: VecDeque<Token>,
}

impl TlsLogins {
    /// The control session `token` from `addr` completed its handshake, resuming the
    /// session of `resumed` (its token) if it did: it joins that session's family, or
    /// founds its own.
    pub(crate) fn established(&mut self, token: Token, addr: IpAddr, resumed: Option<Token>) {
        let family = match resumed {
            // A session resumed from one that is gone still names its family: the others
            // of that family found it the same way.
            Some(r) => self.entries.get(&r).map_or(r, |e| e.family),
            None => token,
        };
        let addr = addr.to_canonical();
        self.entries.insert(
            token,
            Entry {
                family,
                addr,
                user: None,
            },
        );
    }

    /// The session `token` logged in as `user` (`None`: it logged out, REIN).
    pub(crate) fn set_user(&mut self, token: &Token, user: Option<&str>) {
        if let Some(e) = self.entries.get_mut(token) {
            e.user = user.map(Box::from);
        }
    }

    /// The control connection closed: its session still vouches for (and is vouched
    /// by) its family, as the user it was last logged in as, until [`CLOSED_KEPT`] newer
    /// ones have closed. A session that never logged in is forgotten at once.
    pub(crate) fn remove(&mut self, token: &Token) {
        match self.entries.get(token) {
            Some(e) if e.user.is_some() => {}
            _ => {
                self.entries.remove(token);
                return;
            }
        }
        self.closed.push_back(*token);
        while self.closed.len() > CLOSED_KEPT {
            if let Some(old) = self.closed.pop_front() {
                self.entries.remove(&old);
            }
        }
    }

    /// Whether a data connection of control session `own` that resumed a session
    /// carrying `presented` belongs to it: its own session, or one of a logged-in control
    /// connection of the same family, address and user.
    pub(crate) fn vouches(&self, own: &Token, presented: &[u8]) -> bool {
        if presented == own {
            return true;
        }
        let (Some(mine), Some(other)) = (
            self.entries.get(own),
            Token::try_from(presented)
                .ok()
                .and_then(|t| self.entries.get(&t)),
        ) else {
            return false;
        };
        // The other connection's tickets reach the client at its handshake, before its
        // login completes (a password check takes a while): not logged in (yet) is no
        // other user. Being of the family already proves it is this client's.
        mine.user.is_some()
            && (other.user.is_none() || mine.user == other.user)
            && mine.family == other.family
            && mine.addr == other.addr
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u8) -> Token {
        [n; 16]
    }

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const AWAY: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn a_family_of_one_login_vouches_for_each_other_and_no_one_else() {
        let mut l = TlsLogins::default();
        // 1: a full handshake; 2 and 3 resumed it (3 through 2); 4: a full handshake of
        // its own from the same address; 5: resumed 1 from another address.
        l.established(t(1), HOME, None);
        l.established(t(2), HOME, Some(t(1)));
        l.established(t(3), HOME, Some(t(2)));
        l.established(t(4), HOME, None);
        l.established(t(5), AWAY, Some(t(1)));
        // Nothing but its own session before login.
        assert!(l.vouches(&t(1), &t(1)));
        assert!(!l.vouches(&t(1), &t(2)));
        for n in 1..=5 {
            l.set_user(&t(n), Some("alice"));
        }
        for (a, b) in [(1, 2), (2, 1), (1, 3), (3, 2)] {
            assert!(l.vouches(&t(a), &t(b)), "{a} presenting {b}");
        }
        for (a, b) in [(1, 4), (4, 1), (2, 4), (1, 5), (5, 1), (1, 9)] {
            assert!(!l.vouches(&t(a), &t(b)), "{a} presenting {b}");
        }
        // Another user in the family: refused both ways.
        l.set_user(&t(3), Some("bob"));
        assert!(!l.vouches(&t(1), &t(3)) && !l.vouches(&t(3), &t(1)));
        // Not logged in (yet, or any more): its own session only, but its session (its
        // tickets reach the client at the handshake) vouches for the logged-in family.
        l.set_user(&t(2), None);
        assert!(!l.vouches(&t(2), &t(1)) && l.vouches(&t(2), &t(2)));
        assert!(l.vouches(&t(1), &t(2)));
        l.set_user(&t(3), Some("alice"));
        // A closed connection's session still vouches for its family (its tickets stay
        // in the client's cache), and one resumed from it joins the family.
        l.remove(&t(1));
        assert!(l.vouches(&t(3), &t(1)) && !l.vouches(&t(4), &t(1)));
        l.established(t(6), HOME, Some(t(1)));
        l.set_user(&t(6), Some("alice"));
        assert!(l.vouches(&t(6), &t(1)) && l.vouches(&t(6), &t(3)));
        assert!(!l.vouches(&t(6), b"short"));
        // Not logged in: forgotten at once.
        l.set_user(&t(2), None);
        l.remove(&t(2));
        assert_eq!(l.len(), 5);
        // The oldest closed ones go first.
        for n in 0..CLOSED_KEPT as u32 + 1 {
            let mut token = [9u8; 16];
            token[..4].copy_from_slice(&n.to_be_bytes());
            l.established(token, AWAY, None);
            l.set_user(&token, Some("carol"));
            l.remove(&token);
        }
        assert!(!l.vouches(&t(3), &t(1)), "evicted");
        assert!(l.vouches(&t(6), &t(3)), "open ones stay");
        assert_eq!(l.len(), CLOSED_KEPT + 4);
    }
}
