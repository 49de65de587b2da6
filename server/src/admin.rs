//! The admin listener (`[admin]`): Prometheus metrics, the live sessions page and its
//! JSON, and the disconnect action, over HTTP with Basic authentication.
//!
//! It runs on threads of its own (`tiny_http` reads requests on its own pool of
//! connection threads; one `wharf-admin` thread answers them), apart from the event
//! loops: nothing it does, or that a client does to it, holds up an FTP session. What
//! it reads comes from shared state (the sessions board, the metrics' atomics); what it
//! asks of a session (disconnect) goes through the runtime's own channel into that
//! session's loop.
//!
//! | path | method | answer |
//! |---|---|---|
//! | `/` | GET | the sessions page (HTML and a little JavaScript, no build step) |
//! | `/metrics` | GET | the Prometheus exposition (text format 0.0.4) |
//! | `/api/sessions` | GET | every live session, per-site totals, as JSON |
//! | `/api/sessions/{id}/disconnect` | POST | ends session `id` with `421` |
//!
//! Every request needs the `[admin]` user and password (HTTP Basic); a POST also needs
//! the header `X-Wharf-Admin: 1`, which no cross-site form can send. A password is
//! verified once (argon2 takes tens of milliseconds); afterwards a keyed hash of the
//! exact `Authorization` value it came in is remembered until it changes.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use blake2::digest::{KeyInit, Mac};
use serde::Serialize;
use tiny_http::{Header, Method, Request, Response};
use wharf_core::monitor::{Board, SessionView};
use wharf_core::SessionId;

use crate::config::AdminConfig;
use crate::metrics::{Metrics, Scrape};

/// The sessions page.
const PAGE: &str = include_str!("admin/sessions.html");

/// Longest request body read (the only POST has none).
const MAX_BODY: usize = 1024;

/// Longest request head answered; longer ones get `431`.
const MAX_HEAD: usize = 16 * 1024;

/// What the admin listener reads, besides the board and the metrics.
pub struct Sources {
    /// Records the W3C writer dropped since the start.
    pub w3c_dropped: Box<dyn Fn() -> u64 + Send + Sync>,
    /// Passive ports leased now.
    pub passive_ports: Box<dyn Fn() -> usize + Send + Sync>,
    /// Pings every event loop; how long it took (`None`: not within the limit).
    pub loop_lag: Box<dyn Fn() -> Option<Duration> + Send + Sync>,
}

/// A running admin listener; dropping it stops it.
pub struct AdminServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Binds `config.listen` and starts answering.
    pub fn start(
        config: &AdminConfig,
        board: Arc<Board>,
        metrics: Arc<Metrics>,
        sources: Sources,
    ) -> io::Result<AdminServer> {
        let server = tiny_http::Server::http(config.listen)
            .map_err(|e| io::Error::other(format!("admin listener on {}: {e}", config.listen)))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| io::Error::other("the admin listener has no IP address"))?;
        let server = Arc::new(server);
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| io::Error::other(e.to_string()))?;
        let state = State {
            user: config.user.clone(),
            hash: config.password_hash.clone(),
            key,
            verified: Mutex::new(None),
            board,
            metrics,
            sources,
        };
        let s = server.clone();
        let thread = std::thread::Builder::new()
            .name("wharf-admin".into())
            .spawn(move || {
                for request in s.incoming_requests() {
                    state.answer(request);
                }
            })?;
        tracing::info!(target: "wharf::log::admin", %addr, "admin listener serving");
        Ok(AdminServer {
            server,
            addr,
            thread: Some(thread),
        })
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct State {
    user: String,
    hash: String,
    key: [u8; 32],
    /// The MAC of the last `Authorization` value that verified.
    verified: Mutex<Option<[u8; 32]>>,
    board: Arc<Board>,
    metrics: Arc<Metrics>,
    sources: Sources,
}

fn header(name: &str, value: &str) -> Header {
    // Names and values here are ASCII constants or formatted numbers.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("a valid header")
}

fn text(status: u16, body: &str) -> Response<io::Cursor<Vec<u8>>> {
    Response::from_string(format!("{body}\n"))
        .with_status_code(status)
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

impl State {
    fn answer(&self, mut request: Request) {
        let peer = request.remote_addr().copied();
        let response = self.route(&mut request, peer);
        let response = response.with_header(header("Cache-Control", "no-store"));
        if let Err(e) = request.respond(response) {
            tracing::debug!(target: "wharf::log::admin", ?peer, "admin response: {e}");
        }
    }

    fn route(
        &self,
        request: &mut Request,
        peer: Option<SocketAddr>,
    ) -> Response<io::Cursor<Vec<u8>>> {
        let head: usize = request.url().len()
            + (request.headers().iter())
                .map(|h| h.field.as_str().as_str().len() + h.value.as_str().len() + 4)
                .sum::<usize>();
        if head > MAX_HEAD {
            return text(431, "431 Request Header Fields Too Large");
        }
        if !self.authorized(request) {
            let had = request
                .headers()
                .iter()
                .any(|h| h.field.equiv("Authorization"));
            if had {
                tracing::info!(target: "wharf::log::admin", ?peer, "admin login failed");
            }
            return text(
                401,
                "401 Unauthorized: the [admin] user and password are needed",
            )
            .with_header(header(
                "WWW-Authenticate",
                "Basic realm=\"wharf admin\", charset=\"UTF-8\"",
            ));
        }
        let url = request.url().to_string();
        let path = url.split('?').next().unwrap_or("");
        let method = request.method().clone();
        match (&method, path) {
            (Method::Get | Method::Head, "/") => Response::from_string(PAGE)
                .with_header(header("Content-Type", "text/html; charset=utf-8"))
                .with_header(header(
                    "Content-Security-Policy",
                    "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline' 'self'",
                )),
            (Method::Get | Method::Head, "/metrics") => {
                let scrape = Scrape {
                    w3c_dropped: (self.sources.w3c_dropped)(),
                    passive_ports: (self.sources.passive_ports)(),
                    loop_lag: (self.sources.loop_lag)(),
                };
                Response::from_string(self.metrics.render(&scrape)).with_header(header(
                    "Content-Type",
                    "text/plain; version=0.0.4; charset=utf-8",
                ))
            }
            (Method::Get | Method::Head, "/api/sessions") => {
                let body = serde_json::to_string(&self.sessions()).unwrap_or_default();
                Response::from_string(body)
                    .with_header(header("Content-Type", "application/json"))
            }
            (Method::Post, p) if p.starts_with("/api/sessions/") => {
                self.disconnect(request, p, peer)
            }
            (_, "/" | "/metrics" | "/api/sessions") => {
                text(405, "405 Method Not Allowed").with_header(header("Allow", "GET, HEAD"))
            }
            _ => text(404, "404 Not Found: try /, /metrics or /api/sessions"),
        }
    }

    fn disconnect(
        &self,
        request: &mut Request,
        path: &str,
        peer: Option<SocketAddr>,
    ) -> Response<io::Cursor<Vec<u8>>> {
        let id = path
            .strip_prefix("/api/sessions/")
            .and_then(|rest| rest.strip_suffix("/disconnect"))
            .and_then(|id| id.parse::<u64>().ok());
        let Some(id) = id else {
            return text(404, "404 Not Found: POST /api/sessions/ID/disconnect");
        };
        let marked = request
            .headers()
            .iter()
            .any(|h| h.field.equiv("X-Wharf-Admin") && h.value.as_str() == "1");
        if !marked {
            return text(
                403,
                "403 Forbidden: a disconnect needs the header X-Wharf-Admin: 1",
            );
        }
        if request.body_length().unwrap_or(0) > MAX_BODY {
            return text(413, "413 Payload Too Large");
        }
        if self.board.disconnect(SessionId(id)) {
            tracing::info!(target: "wharf::log::admin", ?peer, session = id, "admin disconnected a session");
            Response::from_string(format!("{{\"disconnected\":{id}}}"))
                .with_header(header("Content-Type", "application/json"))
        } else {
            text(404, &format!("404 Not Found: no session {id}"))
        }
    }

    /// Whether the request carries the admin's user and password.
    fn authorized(&self, request: &Request) -> bool {
        let Some(value) = request
            .headers()
            .iter()
            .find(|h| h.field.equiv("Authorization"))
            .map(|h| h.value.as_str().to_string())
        else {
            return false;
        };
        let mac = {
            let mut m =
                <blake2::Blake2bMac<blake2::digest::consts::U32> as KeyInit>::new_from_slice(
                    &self.key,
                )
                .expect("a 32-byte key");
            m.update(value.as_bytes());
            let out: [u8; 32] = m.finalize().into_bytes().into();
            out
        };
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if *verified == Some(mac) {
            return true;
        }
        let Some((user, password)) = basic_credentials(&value) else {
            return false;
        };
        if user != self.user {
            // Spend what a wrong password costs, so names cannot be told apart by time.
            let _ = crate::auth::crypt::verify(&password, &self.hash);
            return false;
        }
        let ok = crate::auth::crypt::verify(&password, &self.hash).unwrap_or(false);
        if ok {
            *verified = Some(mac);
        }
        ok
    }

    fn sessions(&self) -> SessionsJson {
        let now = Instant::now();
        let sessions: Vec<SessionJson> = self
            .board
            .snapshot()
            .into_iter()
            .map(|s| SessionJson::of(s, now))
            .collect();
        let mut sites: Vec<SiteJson> = Vec::new();
        for s in &sessions {
            let i = match sites.iter().position(|t| t.site == s.site) {
                Some(i) => i,
                None => {
                    sites.push(SiteJson {
                        site: s.site.clone(),
                        sessions: 0,
                        transfers: 0,
                        bytes_per_second: 0,
                    });
                    sites.len() - 1
                }
            };
            let t = &mut sites[i];
            t.sessions += 1;
            if let Some(x) = &s.transfer {
                t.transfers += 1;
                t.bytes_per_second += x.bytes_per_second;
            }
        }
        sites.sort_by(|a, b| a.site.cmp(&b.site));
        SessionsJson { sessions, sites }
    }
}

/// `Basic base64(user:password)`.
fn basic_credentials(value: &str) -> Option<(String, String)> {
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    use base64::Engine;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[derive(Serialize)]
struct SessionsJson {
    sessions: Vec<SessionJson>,
    sites: Vec<SiteJson>,
}

#[derive(Serialize)]
struct SiteJson {
    site: String,
    sessions: u64,
    transfers: u64,
    bytes_per_second: u64,
}

#[derive(Serialize)]
struct SessionJson {
    id: u64,
    client: String,
    server: String,
    site: String,
    user: Option<String>,
    logged_in: bool,
    tls: bool,
    /// Seconds since the session was admitted.
    seconds: u64,
    command: Option<String>,
    transfer: Option<TransferJson>,
}

#[derive(Serialize)]
struct TransferJson {
    direction: &'static str,
    path: String,
    bytes: u64,
    size: Option<u64>,
    /// Percent done, for a download of known size.
    progress: Option<f64>,
    seconds: f64,
    bytes_per_second: u64,
}

impl SessionJson {
    fn of(s: SessionView, now: Instant) -> SessionJson {
        SessionJson {
            id: s.id.0,
            client: s.client.to_string(),
            server: s.server.to_string(),
            site: s.site.to_string(),
            user: s.user.map(|u| u.to_string()),
            logged_in: s.logged_in,
            tls: s.tls,
            seconds: now.saturating_duration_since(s.opened).as_secs(),
            command: s.command,
            transfer: s.transfer.map(|t| {
                let secs = now.saturating_duration_since(t.started).as_secs_f64();
                let rate = match secs > 0.0 {
                    true => (t.bytes as f64 / secs) as u64,
                    false => 0,
                };
                TransferJson {
                    direction: if t.upload { "upload" } else { "download" },
                    progress: t
                        .size
                        .filter(|&n| n > 0)
                        .map(|n| (t.bytes as f64 * 100.0 / n as f64).min(100.0)),
                    path: t.path,
                    bytes: t.bytes,
                    size: t.size,
                    seconds: secs,
                    bytes_per_second: rate,
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_are_decoded() {
        // "admin:s3cret:x" (a colon in the password is kept).
        assert_eq!(
            basic_credentials("Basic YWRtaW46czNjcmV0Ong="),
            Some(("admin".into(), "s3cret:x".into()))
        );
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic !!!"), None);
    }
}
