//! The coordinator's listener: TCP accepted and TLS terminated here, under limits, then the
//! authenticated connections are handed to tonic (`serve_with_incoming`).
//!
//! What a network client that holds no federation certificate can do is bounded here:
//!
//! * Every accepted TCP connection is a *pending handshake* until it completes mutual TLS
//!   with a certificate of the federation CA. A handshake not done after
//!   [`Limits::handshake_timeout_ms`] is dropped. At most [`Limits::max_handshakes`] are
//!   pending at once; a new connection beyond that pushes out the *oldest* pending one, so a
//!   flood of silent sockets cannot keep a legitimate client's fresh handshake from
//!   finishing.
//! * Authenticated connections are capped at [`Limits::max_connections`]. A connection
//!   that has had no request in flight for [`Limits::idle_timeout_ms`] is closed; when the
//!   cap is reached, the longest-idle connection makes room for the new one (if every
//!   connection is busy, the new one is refused). HTTP/2 keepalive pings drop peers that
//!   vanished while a request was in flight.
//! * When the process runs out of file descriptors (`EMFILE`), the oldest pending
//!   handshake (else the longest-idle connection) is dropped to make room, instead of the
//!   listener spinning or failing. Keep `max_handshakes + max_connections` below the
//!   descriptor limit (`ulimit -n`) with room for the store, the audit log and the runtime.
//!
//! Idleness is counted in requests, not bytes: an HTTP/2 client that answers pings but
//! sends no request is idle. [`ActivityLayer`] (a tower layer on the gRPC routes) marks a
//! connection busy while one of its requests is in flight, finding it by its address pair.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};

/// Connection and request limits of the coordinator (`[limits]` in `coordinator.toml`;
/// every key optional).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest a client may take to complete the TLS handshake after connecting.
    pub handshake_timeout_ms: u64,
    /// Most TCP connections in the TLS handshake at once (the oldest makes room).
    pub max_handshakes: usize,
    /// Most authenticated (mutual-TLS) connections at once.
    pub max_connections: usize,
    /// An authenticated connection with no request in flight for this long is closed.
    pub idle_timeout_ms: u64,
    /// HTTP/2 keepalive ping interval (also how soon a vanished peer is noticed).
    pub keepalive_interval_ms: u64,
    /// A keepalive ping not answered within this time closes the connection.
    pub keepalive_timeout_ms: u64,
    /// Longest any one request may take (the server cancels it after). A `Poll` waits at
    /// most half of it.
    pub request_timeout_ms: u64,
    /// Most requests in flight on one connection (HTTP/2 concurrent streams).
    pub max_streams_per_connection: u32,
    /// Empty `Poll`s (that return no message) a participant may make per second, on
    /// average; a `Poll` that finds messages is free.
    pub poll_rate_per_sec: f64,
    /// Empty `Poll`s a participant may make in a burst before the rate applies.
    pub poll_burst: u32,
    /// Most `Poll`s one participant may have waiting at once.
    pub max_concurrent_polls: u32,
    /// A participant not seen (poll, join, message; for vertical sessions also a
    /// heartbeat) for this long is away. Nodes poll about every 2 s when idle and heartbeat
    /// at a quarter of it while busy, so keep it well above 2 s. 1 s to 24 h.
    pub liveness_window_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout_ms: 10_000,
            max_handshakes: 64,
            max_connections: 256,
            idle_timeout_ms: 120_000,
            keepalive_interval_ms: 30_000,
            keepalive_timeout_ms: 10_000,
            request_timeout_ms: 60_000,
            max_streams_per_connection: 64,
            poll_rate_per_sec: 20.0,
            poll_burst: 100,
            max_concurrent_polls: 4,
            liveness_window_ms: crate::engine::DEFAULT_LIVENESS_WINDOW.as_millis() as u64,
        }
    }
}

/// Bounds of `liveness_window_ms` (it travels as a `uint32` of milliseconds).
const MIN_LIVENESS_WINDOW_MS: u64 = 1_000;
const MAX_LIVENESS_WINDOW_MS: u64 = 86_400_000;

/// A limit that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("limits.{field}: {problem}")]
pub struct LimitsError {
    pub field: &'static str,
    pub problem: &'static str,
}

impl Limits {
    /// Every timeout, cap and rate positive (and the rate finite).
    pub fn validate(&self) -> Result<(), LimitsError> {
        let positive: [(&'static str, u64); 9] = [
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("max_handshakes", self.max_handshakes as u64),
            ("max_connections", self.max_connections as u64),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("keepalive_interval_ms", self.keepalive_interval_ms),
            ("keepalive_timeout_ms", self.keepalive_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            (
                "max_streams_per_connection",
                u64::from(self.max_streams_per_connection),
            ),
            ("max_concurrent_polls", u64::from(self.max_concurrent_polls)),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(LimitsError {
                    field,
                    problem: "must be at least 1",
                });
            }
        }
        if !(self.poll_rate_per_sec.is_finite() && self.poll_rate_per_sec > 0.0) {
            return Err(LimitsError {
                field: "poll_rate_per_sec",
                problem: "must be a positive number",
            });
        }
        if self.poll_burst == 0 {
            return Err(LimitsError {
                field: "poll_burst",
                problem: "must be at least 1",
            });
        }
        if !(MIN_LIVENESS_WINDOW_MS..=MAX_LIVENESS_WINDOW_MS).contains(&self.liveness_window_ms) {
            return Err(LimitsError {
                field: "liveness_window_ms",
                problem: "must be between 1000 (1 s) and 86400000 (24 h)",
            });
        }
        Ok(())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    pub fn liveness_window(&self) -> Duration {
        Duration::from_millis(self.liveness_window_ms)
    }
    pub fn keepalive_interval(&self) -> Duration {
        Duration::from_millis(self.keepalive_interval_ms)
    }
    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.keepalive_timeout_ms)
    }
    fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }
    fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
}

/// (local, remote) address of a TCP connection: unique among live connections.
type ConnKey = (SocketAddr, SocketAddr);

/// What the listener, the connection and the activity layer share about one connection.
#[derive(Debug)]
struct ConnState {
    /// Requests of this connection in flight.
    in_flight: AtomicUsize,
    /// When the last request started or ended (or the connection was authenticated).
    last_active: Mutex<Instant>,
    /// Set to close the connection (evicted to make room); the task is woken.
    evicted: AtomicBool,
    /// Authenticated and counted against `max_connections`: the idle clock runs.
    established: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl ConnState {
    fn new() -> Self {
        ConnState {
            in_flight: AtomicUsize::new(0),
            last_active: Mutex::new(Instant::now()),
            evicted: AtomicBool::new(false),
            established: AtomicBool::new(false),
            waker: Mutex::new(None),
        }
    }

    fn touch(&self) {
        if let Ok(mut t) = self.last_active.lock() {
            *t = Instant::now();
        }
    }

    fn last_active(&self) -> Instant {
        self.last_active
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|_| Instant::now())
    }

    fn busy(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 0
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::SeqCst);
        if let Some(w) = self.waker.lock().ok().and_then(|mut w| w.take()) {
            w.wake();
        }
    }
}

/// The authenticated connections, by address pair.
#[derive(Debug, Default)]
pub struct Registry {
    conns: Mutex<HashMap<ConnKey, Arc<ConnState>>>,
}

impl Registry {
    fn get(&self, key: &ConnKey) -> Option<Arc<ConnState>> {
        self.conns.lock().ok()?.get(key).cloned()
    }

    /// Authenticated connections open now.
    pub fn len(&self) -> usize {
        self.conns.lock().map(|c| c.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Registers an authenticated connection, making room by evicting the longest-idle one
    /// when `max` are open; `false` (refused) when every open connection is busy.
    fn admit(&self, key: ConnKey, state: &Arc<ConnState>, max: usize) -> bool {
        let Ok(mut conns) = self.conns.lock() else {
            return false;
        };
        while conns.len() >= max {
            let victim = conns
                .iter()
                .filter(|(_, s)| !s.busy())
                .min_by_key(|(_, s)| s.last_active())
                .map(|(k, _)| *k);
            let Some(k) = victim else {
                return false;
            };
            if let Some(s) = conns.remove(&k) {
                tracing::debug!(peer = %k.1, "closing the longest-idle connection to make room");
                s.evict();
            }
        }
        state.touch();
        state.established.store(true, Ordering::SeqCst);
        conns.insert(key, state.clone());
        true
    }

    /// Evicts the longest-idle connection; `false` if none is idle.
    fn evict_idlest(&self) -> bool {
        let Ok(mut conns) = self.conns.lock() else {
            return false;
        };
        let victim = conns
            .iter()
            .filter(|(_, s)| !s.busy())
            .min_by_key(|(_, s)| s.last_active())
            .map(|(k, _)| *k);
        match victim.and_then(|k| conns.remove(&k)) {
            Some(s) => {
                s.evict();
                true
            }
            None => false,
        }
    }

    fn remove(&self, key: &ConnKey, state: &Arc<ConnState>) {
        if let Ok(mut conns) = self.conns.lock() {
            if conns.get(key).is_some_and(|s| Arc::ptr_eq(s, state)) {
                conns.remove(key);
            }
        }
    }
}

/// One accepted TCP connection: closes itself when evicted or idle.
#[derive(Debug)]
pub struct Conn {
    tcp: TcpStream,
    key: ConnKey,
    state: Arc<ConnState>,
    registry: Arc<Registry>,
    idle_timeout: Duration,
    idle: Pin<Box<tokio::time::Sleep>>,
}

impl Conn {
    fn new(tcp: TcpStream, key: ConnKey, registry: Arc<Registry>, idle_timeout: Duration) -> Self {
        Conn {
            tcp,
            key,
            state: Arc::new(ConnState::new()),
            registry,
            idle_timeout,
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
        }
    }

    /// `Some(error)` when the connection must close now: evicted, or authenticated and
    /// idle for `idle_timeout`. Otherwise arranges to be woken when that may change.
    fn closing(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if self.state.evicted.load(Ordering::SeqCst) {
            return Some(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection closed to make room for another",
            ));
        }
        if !self.state.established.load(Ordering::SeqCst) {
            return None;
        }
        if let Ok(mut w) = self.state.waker.lock() {
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
        }
        while self.idle.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            let last = self.state.last_active();
            if !self.state.busy() && now.duration_since(last) >= self.idle_timeout {
                tracing::debug!(peer = %self.key.1, "closing an idle connection");
                return Some(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "connection idle for too long",
                ));
            }
            let next = if self.state.busy() {
                now + self.idle_timeout
            } else {
                last + self.idle_timeout
            };
            self.idle
                .as_mut()
                .reset(tokio::time::Instant::from_std(next.max(now)));
        }
        None
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.registry.remove(&self.key, &self.state);
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.closing(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.state.evicted.load(Ordering::SeqCst) {
            return Poll::Ready(Err(io::ErrorKind::ConnectionAborted.into()));
        }
        Pin::new(&mut this.tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

impl Connected for Conn {
    type ConnectInfo = TcpConnectInfo;

    /// The plain TCP info, so that tonic's `peer_certs` (which looks for
    /// `TlsConnectInfo<TcpConnectInfo>`) finds the client certificate.
    fn connect_info(&self) -> TcpConnectInfo {
        TcpConnectInfo {
            local_addr: Some(self.key.0),
            remote_addr: Some(self.key.1),
        }
    }
}

/// The connections the listener hands to tonic.
pub type Incoming = tokio_stream::wrappers::ReceiverStream<Result<TlsStream<Conn>, io::Error>>;

/// Starts accepting on `listener` under `limits`; returns the stream of authenticated
/// connections for `serve_with_incoming` and the registry for [`ActivityLayer`]. The
/// accept loop ends when the stream is dropped.
pub fn listen(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    limits: &Limits,
) -> (Incoming, Arc<Registry>) {
    let registry = Arc::new(Registry::default());
    let (tx, rx) = mpsc::channel(16);
    let acceptor = AcceptLoop {
        listener,
        acceptor: TlsAcceptor::from(tls),
        limits: limits.clone(),
        registry: registry.clone(),
        tx,
        handshakes: JoinSet::new(),
        pending: VecDeque::new(),
        last_warning: None,
    };
    tokio::spawn(acceptor.run());
    (tokio_stream::wrappers::ReceiverStream::new(rx), registry)
}

struct AcceptLoop {
    listener: TcpListener,
    acceptor: TlsAcceptor,
    limits: Limits,
    registry: Arc<Registry>,
    tx: mpsc::Sender<Result<TlsStream<Conn>, io::Error>>,
    handshakes: JoinSet<Option<TlsStream<Conn>>>,
    /// Pending handshakes, oldest first (finished ones are pruned lazily).
    pending: VecDeque<AbortHandle>,
    last_warning: Option<Instant>,
}

/// Out of file descriptors (per process or system-wide).
fn out_of_descriptors(e: &io::Error) -> bool {
    // EMFILE and ENFILE have these numbers on Linux, the BSDs and macOS.
    matches!(e.raw_os_error(), Some(24) | Some(23))
}

impl AcceptLoop {
    async fn run(mut self) {
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((tcp, remote)) => self.start_handshake(tcp, remote),
                    Err(e) if out_of_descriptors(&e) => {
                        self.warn("out of file descriptors: dropping the oldest pending handshake or idle connection");
                        if !self.drop_oldest_handshake() && !self.registry.evict_idlest() {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        } else {
                            // Let the dropped connection's task release its descriptor.
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                    }
                    Err(e) => {
                        // ECONNABORTED and the like: that one connection is gone.
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                },
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    if let Ok(Some(tls)) = done {
                        self.established(tls).await;
                    }
                }
                _ = self.tx.closed() => return,
            }
        }
    }

    fn warn(&mut self, what: &str) {
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            self.last_warning = Some(now);
            tracing::warn!(
                max_handshakes = self.limits.max_handshakes,
                max_connections = self.limits.max_connections,
                connections = self.registry.len(),
                "{what}"
            );
        }
    }

    /// Aborts the oldest pending handshake; `false` if there is none.
    fn drop_oldest_handshake(&mut self) -> bool {
        while let Some(h) = self.pending.pop_front() {
            if !h.is_finished() {
                h.abort();
                return true;
            }
        }
        false
    }

    fn start_handshake(&mut self, tcp: TcpStream, remote: SocketAddr) {
        let Ok(local) = tcp.local_addr() else {
            return;
        };
        let _ = tcp.set_nodelay(true);
        self.pending.retain(|h| !h.is_finished());
        if self.pending.len() >= self.limits.max_handshakes {
            self.warn("too many pending TLS handshakes: dropping the oldest");
            while self.pending.len() >= self.limits.max_handshakes {
                if !self.drop_oldest_handshake() {
                    break;
                }
            }
        }
        let conn = Conn::new(
            tcp,
            (local, remote),
            self.registry.clone(),
            self.limits.idle_timeout(),
        );
        let acceptor = self.acceptor.clone();
        let timeout = self.limits.handshake_timeout();
        let handle = self.handshakes.spawn(async move {
            match tokio::time::timeout(timeout, acceptor.accept(conn)).await {
                Ok(Ok(tls)) => Some(tls),
                Ok(Err(e)) => {
                    tracing::debug!(peer = %remote, error = %e, "TLS handshake failed");
                    None
                }
                Err(_) => {
                    tracing::debug!(peer = %remote, "TLS handshake timed out");
                    None
                }
            }
        });
        self.pending.push_back(handle);
    }

    async fn established(&mut self, tls: TlsStream<Conn>) {
        let conn = tls.get_ref().0;
        let (key, state) = (conn.key, conn.state.clone());
        if !self
            .registry
            .admit(key, &state, self.limits.max_connections)
        {
            self.warn("every connection is busy: refusing a new one");
            return;
        }
        if self.tx.send(Ok(tls)).await.is_err() {
            tracing::debug!("server gone; dropping an accepted connection");
        }
    }
}

/// A tower layer over the gRPC routes that marks a connection busy while one of its
/// requests is in flight (see the module documentation).
#[derive(Clone, Debug)]
pub struct ActivityLayer {
    registry: Arc<Registry>,
}

impl ActivityLayer {
    pub fn new(registry: Arc<Registry>) -> Self {
        ActivityLayer { registry }
    }
}

impl<S> tower_layer::Layer<S> for ActivityLayer {
    type Service = Activity<S>;
    fn layer(&self, inner: S) -> Activity<S> {
        Activity {
            inner,
            registry: self.registry.clone(),
        }
    }
}

/// See [`ActivityLayer`].
#[derive(Clone, Debug)]
pub struct Activity<S> {
    inner: S,
    registry: Arc<Registry>,
}

/// Counts one request in flight on a connection while it lives.
struct InFlight(Arc<ConnState>);

impl InFlight {
    fn new(state: Arc<ConnState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        state.touch();
        InFlight(state)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<S, B> tonic::codegen::Service<tonic::codegen::http::Request<B>> for Activity<S>
where
    S: tonic::codegen::Service<tonic::codegen::http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        let guard = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| {
                let tcp = info.get_ref();
                Some((tcp.local_addr?, tcp.remote_addr?))
            })
            .and_then(|key| self.registry.get(&key))
            .map(InFlight::new);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let _guard = guard;
            fut.await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_default_every_key_and_refuse_unknown_keys_and_zeroes() {
        let l: Limits = toml::from_str("idle_timeout_ms = 2000\nmax_handshakes = 8\n").unwrap();
        assert_eq!((l.idle_timeout_ms, l.max_handshakes), (2000, 8));
        assert_eq!(l.max_connections, Limits::default().max_connections);
        l.validate().unwrap();
        let e = toml::from_str::<Limits>("idle_timeout = 2000\n").unwrap_err();
        assert!(e.to_string().contains("idle_timeout"), "{e}");
        let e = Limits {
            max_connections: 0,
            ..Limits::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "max_connections");
        let e = Limits {
            poll_rate_per_sec: f64::NAN,
            ..Limits::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.field, "poll_rate_per_sec");
    }

    #[test]
    fn a_full_registry_makes_room_from_idle_connections_never_busy_ones() {
        let r = Registry::default();
        let key = |port: u16| -> ConnKey {
            (
                SocketAddr::from(([127, 0, 0, 1], 50051)),
                SocketAddr::from(([127, 0, 0, 1], port)),
            )
        };
        let states: Vec<Arc<ConnState>> = (0..4).map(|_| Arc::new(ConnState::new())).collect();
        assert!(r.admit(key(1), &states[0], 2));
        assert!(r.admit(key(2), &states[1], 2));
        let _busy = InFlight::new(states[0].clone());
        // Full: the idle one (2) makes room, the busy one (1) stays.
        assert!(r.admit(key(3), &states[2], 2));
        assert!(states[1].evicted.load(Ordering::SeqCst));
        assert!(!states[0].evicted.load(Ordering::SeqCst));
        assert_eq!(r.len(), 2);
        // Every connection busy: the new one is refused.
        let _busy2 = InFlight::new(states[2].clone());
        assert!(!r.admit(key(4), &states[3], 2));
        assert!(!r.evict_idlest());
        assert_eq!(r.len(), 2);
        // A removed connection's key only goes with its own state.
        r.remove(&key(1), &states[3]);
        assert_eq!(r.len(), 2);
        r.remove(&key(1), &states[0]);
        assert_eq!(r.len(), 1);
    }
}
