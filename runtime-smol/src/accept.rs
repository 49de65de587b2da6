//! Admitting control connections: accept, hand each to the core's `Server`, spawn its
//! task, and survive running out of descriptors.

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
    let mut spare = wharf_net::Spare::default();
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
                // A panic admitting one connection (in the core) drops that one only.
                if let Err(why) = wharf_net::catch(|| admit(&ctx, &server, stream, peer)) {
                    tracing::error!(shard, %peer, "admitting failed: {why}");
                }
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
                    let reply = lock(&server).busy_reply().reply;
                    let accept = || listener.get_ref().accept();
                    spare.refuse_backlog(accept, &reply, ACCEPT_BUDGET);
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

fn admit(ctx: &Arc<Ctx>, server: &Arc<Mutex<Server>>, stream: Async<TcpStream>, peer: SocketAddr) {
    let Ok(local) = stream.get_ref().local_addr() else {
        return;
    };
    wharf_net::prepare_control(stream.get_ref());
    let admitted = lock(server).accept(Instant::now(), peer, local);
    let session = match admitted {
        Ok(s) => s,
        Err(refusal) => return wharf_net::refuse(stream.get_ref(), refusal, ctx.log.as_ref()),
    };
    let task = session::run(ctx.clone(), server.clone(), stream, session);
    ctx.ex.spawn(task).detach();
}
