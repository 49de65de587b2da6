//! Prometheus metrics (`prometheus-client`), served by the admin listener at `/metrics`.
//!
//! Counters are counted once, where the fact is known: from the core's records (one per
//! command and session event, handed to [`crate::observe::Observer`] by the runtimes),
//! from the account providers, from reloads. Gauges are read when scraped: open sessions
//! from the live sessions board, the event loops' lag from a ping through each loop.
//! Labels are bounded: site names (from the configuration), directions, results,
//! sub-status names, reply classes; never a user name, an address or a path.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use wharf_core::log::{LogRecord, SubStatus};
use wharf_core::monitor::Board;

use crate::observe::{is_policy_refusal, transfer_direction};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    site: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpenLabels {
    site: String,
    tls: Bool,
    logged_in: Bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LoginLabels {
    site: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    provider: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransferLabels {
    direction: &'static str,
    site: String,
    tls: Bool,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BytesLabels {
    direction: &'static str,
    site: String,
    tls: Bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubLabels {
    substatus: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
enum Bool {
    yes,
    no,
}

impl From<bool> for Bool {
    fn from(b: bool) -> Bool {
        if b {
            Bool::yes
        } else {
            Bool::no
        }
    }
}

/// Every metric of the server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    sessions: Family<SessionLabels, Counter>,
    sessions_open: Family<OpenLabels, Gauge>,
    logins: Family<LoginLabels, Counter>,
    auth: Family<ProviderLabels, Counter>,
    transfers: Family<TransferLabels, Counter>,
    transfer_bytes: Family<BytesLabels, Counter>,
    replies: Family<ClassLabels, Counter>,
    /// The four reply classes' counters, looked up once (a command costs one atomic add).
    reply_classes: [Counter; 4],
    refusals: Family<SubLabels, Counter>,
    bans: Counter,
    disconnects: Counter,
    reloads: Family<ResultLabels, Counter>,
    w3c_dropped: Counter,
    passive_ports: Gauge<i64, AtomicI64>,
    loop_lag: Gauge<f64, AtomicU64>,
    board: Arc<Board>,
}

/// What a scrape reads besides the counters.
pub struct Scrape {
    /// Records the W3C writer dropped since the start.
    pub w3c_dropped: u64,
    /// Passive ports leased now.
    pub passive_ports: usize,
    /// How long every event loop took to answer a ping (`None`: not within the limit).
    pub loop_lag: Option<Duration>,
}

impl Metrics {
    /// The metrics, with open sessions read from `board`.
    pub fn new(board: Arc<Board>) -> Metrics {
        let mut registry = Registry::with_prefix("wharf");
        let m = Metrics {
            sessions: Family::default(),
            sessions_open: Family::default(),
            logins: Family::default(),
            auth: Family::default(),
            transfers: Family::default(),
            transfer_bytes: Family::default(),
            replies: Family::default(),
            reply_classes: Default::default(),
            refusals: Family::default(),
            bans: Counter::default(),
            disconnects: Counter::default(),
            reloads: Family::default(),
            w3c_dropped: Counter::default(),
            passive_ports: Gauge::default(),
            loop_lag: Gauge::default(),
            board,
            registry: Registry::default(),
        };
        registry.register(
            "sessions",
            "Control connections by site and result: admitted, or refused at connection (IP rules, limits)",
            m.sessions.clone(),
        );
        registry.register(
            "sessions_open",
            "Sessions open now (by site, TLS, logged in)",
            m.sessions_open.clone(),
        );
        registry.register(
            "logins",
            "Login attempts (PASS) by site and result: ok, failed, unavailable, refused",
            m.logins.clone(),
        );
        registry.register(
            "auth_checks",
            "Password checks by account provider (users, pam, ldap) and result",
            m.auth.clone(),
        );
        registry.register(
            "transfers",
            "File transfers ended (by direction, site, TLS and result)",
            m.transfers.clone(),
        );
        registry.register(
            "transfer_bytes",
            "Data bytes of file transfers (by direction, site, TLS)",
            m.transfer_bytes.clone(),
        );
        registry.register(
            "replies",
            "Final replies to commands by class (2xx, 3xx, 4xx, 5xx)",
            m.replies.clone(),
        );
        registry.register(
            "policy_refusals",
            "Requests and connections refused by a policy (IP rules, bans, limits, filtering), by sub-status",
            m.refusals.clone(),
        );
        registry.register(
            "bans",
            "Addresses banned after repeated failed logins",
            m.bans.clone(),
        );
        registry.register(
            "admin_disconnects",
            "Sessions ended from the admin listener",
            m.disconnects.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP) by result",
            m.reloads.clone(),
        );
        registry.register(
            "w3c_records_dropped",
            "W3C log records dropped because the disk fell behind",
            m.w3c_dropped.clone(),
        );
        registry.register(
            "passive_ports_in_use",
            "Passive data ports leased now",
            m.passive_ports.clone(),
        );
        registry.register(
            "event_loop_lag_seconds",
            "How long the slowest event loop took to answer a ping at the last scrape",
            m.loop_lag.clone(),
        );
        let class = |class| m.replies.get_or_create(&ClassLabels { class }).clone();
        let reply_classes = [class("2xx"), class("3xx"), class("4xx"), class("5xx")];
        Metrics {
            registry,
            reply_classes,
            ..m
        }
    }

    /// Counts one of the core's records.
    pub fn count(&self, rec: &LogRecord) {
        let method = &*rec.method;
        if rec.status >= 200 && !method.starts_with("ControlChannel") {
            let i = usize::from(rec.status / 100).clamp(2, 5) - 2;
            self.reply_classes[i].inc();
        }
        if is_policy_refusal(rec.sub) {
            let substatus = rec.sub.slug();
            self.refusals.get_or_create(&SubLabels { substatus }).inc();
        }
        match method {
            "ControlChannelOpened" => {
                let result = match rec.sub {
                    SubStatus::None => "admitted",
                    _ => "refused",
                };
                let site = rec.site.to_string();
                self.sessions
                    .get_or_create(&SessionLabels { site, result })
                    .inc();
            }
            "ControlChannelClosed" if rec.sub == SubStatus::AdminDisconnect => {
                self.disconnects.inc();
            }
            "PASS" => {
                let result = match (rec.status, rec.sub) {
                    (230, _) => "ok",
                    (_, SubStatus::LogonFailed) => "failed",
                    (_, SubStatus::LogonUnavailable) => "unavailable",
                    (_, SubStatus::LogonBanned) => {
                        // The failure that started a ban is the one logged with it
                        // (later attempts are refused before any check).
                        if rec.win32 == wharf_core::log::WIN32_LOGON_FAILURE {
                            self.bans.inc();
                        }
                        "refused"
                    }
                    (_, SubStatus::None) if rec.status < 400 => return,
                    _ => "refused",
                };
                let site = rec.site.to_string();
                self.logins
                    .get_or_create(&LoginLabels { site, result })
                    .inc();
            }
            _ => {}
        }
        if let Some(direction) = transfer_direction(method) {
            let result = match (rec.status, rec.sub) {
                (226 | 250, _) => "complete",
                (_, SubStatus::None) => "failed",
                (_, sub) => sub.slug(),
            };
            let (site, tls) = (rec.site.to_string(), Bool::from(rec.tls));
            let labels = TransferLabels {
                direction,
                site: site.clone(),
                tls,
                result,
            };
            self.transfers.get_or_create(&labels).inc();
            let labels = BytesLabels {
                direction,
                site,
                tls,
            };
            self.transfer_bytes
                .get_or_create(&labels)
                .inc_by(rec.data_bytes);
        }
    }

    /// A password check by an account provider (`users`, `pam`, `ldap`).
    pub fn auth_check(&self, provider: &'static str, result: &'static str) {
        self.auth
            .get_or_create(&ProviderLabels { provider, result })
            .inc();
    }

    /// A configuration reload was accepted (`ok`) or refused.
    pub fn reload(&self, ok: bool) {
        let result = if ok { "ok" } else { "refused" };
        self.reloads.get_or_create(&ResultLabels { result }).inc();
    }

    /// The exposition in Prometheus' text format (0.0.4: what every scraper and
    /// `promtool check metrics` read), with the gauges read now.
    pub fn render(&self, scrape: &Scrape) -> String {
        self.sessions_open.clear();
        for s in self.board.snapshot() {
            let labels = OpenLabels {
                site: s.site.to_string(),
                tls: s.tls.into(),
                logged_in: s.logged_in.into(),
            };
            self.sessions_open.get_or_create(&labels).inc();
        }
        let seen = self.w3c_dropped.get();
        self.w3c_dropped
            .inc_by(scrape.w3c_dropped.saturating_sub(seen));
        self.passive_ports.set(scrape.passive_ports as i64);
        // A loop that did not answer in time shows as -1.
        self.loop_lag
            .set(scrape.loop_lag.map_or(-1.0, |d| d.as_secs_f64()));
        let mut out = String::with_capacity(4096);
        if let Err(e) =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        {
            tracing::error!("encoding the metrics: {e}");
        }
        out
    }
}
