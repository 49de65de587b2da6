//! Admitting control connections: accept, hand each to the core's `Server`, spawn its
//! task, and survive running out of descriptors.

use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use smol::future::{self, FutureExt};
use smol::{Async, Timer};
use wharf_core::Server;

use crate::{lock, session, Ctx, ACCEPT_BACKOFF};
use wharf_net::{is_exhaustion, is_transient_accept_error};

/// Connections accepted in a row before yielding to the executor.
const ACCEPT_BUDGET: usize = 64;

/// Accepts on one listener until the server shuts down.
pub(crate) async fn accept_loop(
    ctx: Arc<Ctx>,
    shard: usize,
    server: Arc<Mutex<Server>>,
    listener: Async<TcpListener>,
) {
    // A descriptor kept open so that, out of descriptors, the backlog can still be
    // accepted and closed rather than left hanging.
    let mut reserve = File::open("/dev/null").ok();
    let mut exhausted = false;
    let mut in_a_row = 0;
    loop {
        let accepted = async { Some(listener.accept().await) }
            .or(async {
                ctx.stop.wait().await;
                None
            })
            .await;
        let Some(accepted) = accepted else {
            break;
        };
        match accepted {
            Ok((stream, peer)) => {
                if exhausted {
                    exhausted = false;
                    tracing::info!(shard, "accepting connections again");
                }
                admit(&ctx, &server, stream, peer);
            }
            Err(e) if is_transient_accept_error(&e) => {
                tracing::debug!(shard, "accept: {e}");
            }
            Err(e) => {
                if is_exhaustion(&e) {
                    if !exhausted {
                        exhausted = true;
                        tracing::warn!(shard, "accept: {e}; refusing connections");
                    }
                    refuse_pending(&listener, &server, &mut reserve);
                } else {
                    tracing::warn!(shard, "accept: {e}; pausing");
                }
                // Out of descriptors, or an error that may persist: pause rather than
                // spin.
                let stopped = async {
                    Timer::after(ACCEPT_BACKOFF).await;
                    false
                }
                .or(async {
                    ctx.stop.wait().await;
                    true
                })
                .await;
                if stopped {
                    break;
                }
            }
        }
        in_a_row += 1;
        if in_a_row >= ACCEPT_BUDGET {
            in_a_row = 0;
            future::yield_now().await;
        }
    }
    tracing::debug!(shard, "listener closed");
}

/// Out of descriptors: closes the connections waiting in the backlog (through the
/// descriptor held in reserve for this) with the core's busy reply.
fn refuse_pending(
    listener: &Async<TcpListener>,
    server: &Mutex<Server>,
    reserve: &mut Option<File>,
) {
    let reply = lock(server).busy_reply().reply;
    for _ in 0..ACCEPT_BUDGET {
        *reserve = None;
        let accepted = listener.get_ref().accept();
        *reserve = File::open("/dev/null").ok();
        match accepted {
            Ok((stream, peer)) => {
                tracing::debug!(%peer, "refused: out of descriptors");
                // Best effort: a fresh socket's buffer takes a short reply.
                let _ = (&stream).write(&reply);
            }
            Err(_) => return,
        }
    }
}

fn admit(ctx: &Arc<Ctx>, server: &Arc<Mutex<Server>>, stream: Async<TcpStream>, peer: SocketAddr) {
    let Ok(local) = stream.get_ref().local_addr() else {
        return;
    };
    // Replies are small and latency-bound: never wait for Nagle.
    let _ = stream.get_ref().set_nodelay(true);
    // Clients send ABOR as TCP urgent data (Python's ftplib sends "ABOR\r\n" with
    // MSG_OOB); without OOBINLINE the kernel takes the last byte out of the stream and
    // the line never ends.
    let _ = socket2::SockRef::from(stream.get_ref()).set_out_of_band_inline(true);
    let admitted = lock(server).accept(Instant::now(), peer, local);
    let session = match admitted {
        Ok(s) => s,
        Err(refusal) => {
            // Best effort: the socket is fresh, its buffer takes a short reply (an empty
            // one means close without a word).
            if !refusal.reply.is_empty() {
                let _ = stream.get_ref().write(&refusal.reply);
            }
            if let (Some(sink), Some(record)) = (&ctx.log, refusal.log) {
                sink.log(record);
            }
            return;
        }
    };
    let task = session::run(ctx.clone(), server.clone(), stream, session);
    ctx.ex.spawn(task).detach();
}
