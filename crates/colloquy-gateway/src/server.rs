//! Accepting connections: HTTP/1.1 and HTTP/2 (h2c) on one port, with the
//! limits `axum::serve` does not have — a bound on open connections, a
//! deadline for a request's headers (so a client that connects and sends
//! nothing, or trickles its headers, or sits idle on a keep-alive
//! connection, is cut off) and HTTP/2 keep-alive pings that drop dead
//! peers — and a graceful shutdown that stops accepting, lets in-flight
//! requests finish and closes idle connections.

use axum::extract::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt;

/// A request's share of `max_connections`, for a WebSocket session to keep
/// after its upgrade takes the socket out of the connection (which then
/// ends and would otherwise give its slot back while the session lives on).
#[derive(Clone)]
pub struct ConnectionSlot {
    /// The connection's own permit, until one upgraded request takes it.
    permit: Arc<std::sync::Mutex<Option<OwnedSemaphorePermit>>>,
    /// For further sessions of one HTTP/2 connection (RFC 8441 multiplexes
    /// them): each takes a slot of its own.
    slots: Arc<Semaphore>,
}

impl ConnectionSlot {
    /// A slot for a session: the connection's own, or another one while
    /// any is free; `None` when all are taken.
    pub fn take(&self) -> Option<OwnedSemaphorePermit> {
        let own = self.permit.lock().expect("connection slot lock").take();
        own.or_else(|| self.slots.clone().try_acquire_owned().ok())
    }
}

/// Bounds on the connections the gateway holds.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectionLimits {
    /// Connections open at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// How long a client has to send a request's headers, counted from the
    /// moment the connection is ready for the next request: it bounds both
    /// slow clients and idle keep-alive connections.
    pub header_timeout: Duration,
    /// HTTP/2: ping an idle connection this often; one unanswered for as
    /// long again closes it.
    pub h2_keepalive: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: 10_000,
            header_timeout: Duration::from_secs(10),
            h2_keepalive: Duration::from_secs(30),
        }
    }
}

/// Serve `app` on `listener` until `shutdown` resolves, then stop
/// accepting and wait up to `drain` for open requests to finish.
/// WebSocket sessions are upgraded out of the connection, keep its slot
/// ([`ConnectionSlot`]) and end on their own (the caller stops the hub that
/// feeds them).
/// The address of the client a request came from, as a request extension
/// (the admin API's audit log keeps it).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &ConnectionLimits,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let keepalive = limits.h2_keepalive;
    builder
        .http2()
        .timer(TokioTimer::new())
        // Needed for WebSocket over HTTP/2 (RFC 8441).
        .enable_connect_protocol()
        .keep_alive_interval(keepalive)
        .keep_alive_timeout(keepalive);
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // instead of spinning, keep serving what is open.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Replies are small; do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let slot = ConnectionSlot {
            permit: Arc::new(std::sync::Mutex::new(Some(permit))),
            slots: permits.clone(),
        };
        let service =
            TowerToHyperService::new(app.clone().map_request(move |req: Request<Incoming>| {
                let mut req = req.map(axum::body::Body::new);
                req.extensions_mut().insert(slot.clone());
                req.extensions_mut().insert(Peer(peer));
                req
            }));
        let (builder, watcher, header_timeout) =
            (builder.clone(), graceful.watcher(), limits.header_timeout);
        let mut stopping = stopping.clone();
        tokio::spawn(async move {
            // A client that has not sent a byte yet has no request to
            // finish: on shutdown it is dropped, not waited for.
            let known = tokio::select! {
                known = protocol_known(&stream, header_timeout) => known,
                _ = stopping.changed() => false,
            };
            if !known {
                return;
            }
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            // The permit goes back with the last clone of the slot, unless
            // a WebSocket session took it.
        });
    }
    drop(listener);
    stop.send_replace(true);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(?drain, "open requests did not finish in time; closing them");
    }
}

/// The HTTP/2 connection preface that tells h2c from HTTP/1.1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Wait until the first bytes of `stream` tell which protocol it speaks.
/// hyper's HTTP/1 header deadline only starts once a protocol is chosen, so
/// without this a client that connects and sends nothing would be held
/// forever. False if the client stays silent past `deadline` or hangs up.
async fn protocol_known(stream: &tokio::net::TcpStream, deadline: Duration) -> bool {
    let decided = async {
        let mut buf = [0u8; H2_PREFACE.len()];
        loop {
            let n = match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => n,
            };
            if n == buf.len() || buf[..n] != H2_PREFACE[..n] {
                return true;
            }
            // A partial preface: peek returns at once while bytes are
            // buffered, so wait for more to arrive instead of spinning.
            if stream.readable().await.is_err() {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(deadline, decided)
        .await
        .unwrap_or(false)
}
