//! `[cluster]`: the nodes behind one load balancer share failed-login counts, bans and
//! connection counts through Redis, so an attacker cannot spread guesses (or
//! connections) over the nodes, and a ban earned on one node holds on every other
//! within a second.
//!
//! The event loops never talk to Redis. The core tells this module of each counted
//! failed login ([`PolicyEvents`], a non-blocking send into a bounded queue); one
//! thread (`wharf-cluster`) adds it to the shared count (`INCR`, expiring with the
//! window), bans the address in the shared table when the count reaches the limit (a
//! sorted set, address by end of ban in Unix seconds), and every `SYNC` reads that table
//! back into this node's own ban table. With a per-address or per-user connection
//! limit, each `SYNC` also publishes this node's counts (a hash per node, expiring after
//! `COUNTS_TTL`, so a node that dies stops counting) and sums the others' into the core's
//! remote counts, which the limits add to the node's own. When Redis cannot be reached
//! the remote counts are forgotten and the node goes on
//! with its own counts and bans (as a single server would), says so once, and tries
//! again every second; bans earned meanwhile are shared when it is back.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use wharf_core::policy::limits::{PolicyEvents, RemoteCounts, ServerPolicy};
use wharf_core::policy::Verdict;

/// How often the shared bans are read back (a ban reaches every node within this, plus
/// the time its failure took to be counted).
const SYNC: Duration = Duration::from_millis(250);
/// How long one Redis call may take before the store counts as down.
const CALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Failed logins waiting for the thread; beyond this they count on this node only.
const QUEUE: usize = 4096;
/// A node's published connection counts outlive it by at most this.
const COUNTS_TTL: Duration = Duration::from_secs(3);

/// `[cluster]` of the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `redis://host:port/db` (or `redis+unix:///path`).
    pub redis: String,
    /// The prefix of every key (several clusters may share one Redis).
    pub prefix: String,
}

/// The queue the core's failed logins go into.
#[derive(Debug)]
struct Feed(SyncSender<(IpAddr, Verdict)>);

impl PolicyEvents for Feed {
    fn failed_login(&self, ip: IpAddr, verdict: Verdict) {
        // Never waits: a full queue means the store is far behind; the node's own
        // counts still apply.
        let _ = self.0.try_send((ip, verdict));
    }
}

/// Connects `policy` to the cluster's store: from now on its failed logins are shared
/// and the shared bans applied. The thread ends when the policy is dropped.
pub fn start(config: &ClusterConfig, policy: &Arc<ServerPolicy>) -> std::io::Result<()> {
    let client = redis::Client::open(config.redis.as_str()).map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("cluster.redis: {e}"),
        )
    })?;
    let (tx, rx) = mpsc::sync_channel(QUEUE);
    policy.set_events(Arc::new(Feed(tx)));
    let shared = Shared {
        client,
        url: config.redis.clone(),
        prefix: config.prefix.clone(),
        node: node_name(),
        policy: Arc::downgrade(policy),
        conn: None,
        down_since: None,
        next_attempt: Instant::now(),
    };
    std::thread::Builder::new()
        .name("wharf-cluster".into())
        .spawn(move || shared.run(rx))?;
    Ok(())
}

struct Shared {
    client: redis::Client,
    url: String,
    prefix: String,
    /// This process's name among the nodes (random: a restarted node is a new one).
    node: String,
    policy: Weak<ServerPolicy>,
    conn: Option<redis::Connection>,
    /// Set while the store is unreachable (said once, and again when it is back).
    down_since: Option<Instant>,
    next_attempt: Instant,
}

impl Shared {
    fn run(mut self, rx: Receiver<(IpAddr, Verdict)>) {
        let mut next_sync = Instant::now();
        let mut pending: Vec<(IpAddr, Verdict)> = Vec::new();
        loop {
            let wait = next_sync.saturating_duration_since(Instant::now());
            match rx.recv_timeout(wait) {
                Ok(failure) => pending.push(failure),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            pending.extend(rx.try_iter());
            let Some(policy) = self.policy.upgrade() else {
                return;
            };
            if !self.connected() {
                // Counted locally already; a store that is down loses only sharing, and
                // the other nodes' connections are not known any more.
                pending.clear();
                policy.set_remote_counts(RemoteCounts::default());
                next_sync = Instant::now() + SYNC;
                continue;
            }
            let result = self.share(&policy, &mut pending).and_then(|()| {
                if Instant::now() >= next_sync {
                    next_sync = Instant::now() + SYNC;
                    self.apply_bans(&policy)?;
                    self.share_counts(&policy)
                } else {
                    Ok(())
                }
            });
            if let Err(e) = result {
                self.lost(&e);
                pending.clear();
            }
        }
    }

    /// Whether a connection is up (making one when it is time to try again).
    fn connected(&mut self) -> bool {
        if self.conn.is_some() {
            return true;
        }
        if Instant::now() < self.next_attempt {
            return false;
        }
        let made = self
            .client
            .get_connection_with_timeout(CALL_TIMEOUT)
            .and_then(|c| {
                c.set_read_timeout(Some(CALL_TIMEOUT))?;
                c.set_write_timeout(Some(CALL_TIMEOUT))?;
                Ok(c)
            });
        match made {
            Ok(c) => {
                match self.down_since.take() {
                    Some(since) => tracing::warn!(
                        store = %self.url,
                        "cluster store reachable again after {:.0?}: bans and failed logins are shared again",
                        since.elapsed()
                    ),
                    None => {
                        tracing::info!(store = %self.url, "cluster store connected: bans and failed logins are shared")
                    }
                }
                self.conn = Some(c);
                true
            }
            Err(e) => {
                self.lost(&e);
                false
            }
        }
    }

    fn lost(&mut self, e: &redis::RedisError) {
        self.conn = None;
        self.next_attempt = Instant::now() + Duration::from_secs(1);
        if self.down_since.is_none() {
            self.down_since = Some(Instant::now());
            tracing::warn!(
                store = %self.url,
                "cluster store unreachable ({e}): this node goes on with its own bans and counts, and tries again every second"
            );
        }
    }

    fn key(&self, what: &str) -> String {
        format!("{}:{what}", self.prefix)
    }

    /// Adds this node's failed logins to the shared counts; bans what reached the limit.
    fn share(
        &mut self,
        policy: &ServerPolicy,
        pending: &mut Vec<(IpAddr, Verdict)>,
    ) -> redis::RedisResult<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let logon = policy.logon();
        let bans = self.key("bans");
        let prefix = self.prefix.clone();
        let now = unix_now();
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        for (ip, verdict) in pending.drain(..) {
            let count_key = format!("{prefix}:failures:{ip}");
            let (count,): (u64,) = redis::pipe()
                .atomic()
                .incr(&count_key, 1)
                .expire(&count_key, logon.window.as_secs().max(1) as i64)
                .ignore()
                .query(conn)?;
            let reached = count >= u64::from(logon.max_failures.max(1));
            if (reached || verdict == Verdict::Banned) && !logon.logging_only {
                let until = now + logon.ban.as_secs().max(1);
                redis::cmd("ZADD")
                    .arg(&bans)
                    .arg("GT")
                    .arg(until)
                    .arg(ip.to_string())
                    .query::<()>(conn)?;
                redis::cmd("DEL").arg(&count_key).query::<()>(conn)?;
                tracing::info!(%ip, failures = count, "banned in the cluster after failed logins");
            }
        }
        Ok(())
    }

    /// Publishes this node's connections per address and per user (expiring, so a node
    /// that dies stops counting within `COUNTS_TTL`) and takes the other nodes' sum.
    fn share_counts(&mut self, policy: &ServerPolicy) -> redis::RedisResult<()> {
        let rules = policy.rules();
        if rules.max_per_ip == 0 && rules.max_per_user == 0 {
            return Ok(());
        }
        let mine = self.key(&format!("counts:{}", self.node));
        let pattern = self.key("counts:*");
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let local = policy.local_counts();
        let fields: Vec<(String, u32)> = local
            .per_ip
            .iter()
            .map(|(ip, n)| (format!("ip:{ip}"), *n))
            .chain(
                local
                    .per_user
                    .iter()
                    .map(|(u, n)| (format!("user:{u}"), *n)),
            )
            .collect();
        let mut pipe = redis::pipe();
        pipe.atomic().del(&mine).ignore();
        if !fields.is_empty() {
            pipe.hset_multiple(&mine, &fields)
                .ignore()
                .pexpire(&mine, COUNTS_TTL.as_millis() as i64)
                .ignore();
        }
        pipe.query::<()>(conn)?;
        let keys: Vec<String> = redis::cmd("KEYS").arg(&pattern).query(conn)?;
        let mut others = RemoteCounts::default();
        for key in keys.iter().filter(|k| **k != mine) {
            let node: Vec<(String, u32)> = redis::cmd("HGETALL").arg(key).query(conn)?;
            for (field, n) in node {
                if let Some(ip) = field.strip_prefix("ip:").and_then(|ip| ip.parse().ok()) {
                    *others.per_ip.entry(ip).or_insert(0) += n;
                } else if let Some(user) = field.strip_prefix("user:") {
                    *others.per_user.entry(user.to_string()).or_insert(0) += n;
                }
            }
        }
        policy.set_remote_counts(others);
        Ok(())
    }

    /// Reads the shared bans into this node's ban table.
    fn apply_bans(&mut self, policy: &ServerPolicy) -> redis::RedisResult<()> {
        let bans = self.key("bans");
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let now = unix_now();
        redis::cmd("ZREMRANGEBYSCORE")
            .arg(&bans)
            .arg("-inf")
            .arg(now)
            .query::<()>(conn)?;
        let listed: Vec<(String, u64)> = redis::cmd("ZRANGE")
            .arg(&bans)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(conn)?;
        let table: BTreeMap<IpAddr, u64> = listed
            .into_iter()
            .filter_map(|(ip, until)| Some((ip.parse().ok()?, until)))
            .collect();
        let at = Instant::now();
        for (ip, until) in table {
            let left = Duration::from_secs(until.saturating_sub(now));
            if policy.import_ban(at, ip, at + left) {
                tracing::info!(%ip, "banned: a ban earned on another node of the cluster");
            }
        }
        Ok(())
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A random name for this process among the nodes.
fn node_name() -> String {
    let mut bytes = [0u8; 8];
    let _ = getrandom::fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{hex}", std::process::id())
}
