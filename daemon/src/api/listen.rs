//! Listening and transport: where the API listens, and one connection loop for TCP and the Unix
//! socket with the limits a local service needs against slow or idle clients.
//!
//! Connections are served with hyper directly: a timer-driven header-read timeout (which also
//! ends an idle keep-alive connection, since hyper re-arms it while it waits for the next
//! request head), a cap on open connections (a connection over it is closed at once, so fds
//! cannot be exhausted), a smaller cap per peer (one client cannot take every place), and on
//! shutdown a grace period after which every connection is dropped, finished or not.
//!
//! Every server served here (the device API and `authority serve`) also answers only requests
//! whose `Host` is `localhost`, an IP address literal, or a configured name ([`HostRule`]; DNS
//! rebinding).
//!
//! Why not `axum::serve`: axum 0.7's takes only a `TcpListener`. axum 0.8's (checked at 0.8.9)
//! takes any `axum::serve::Listener`, `UnixListener` included, and a custom `Listener` could
//! hold the connection caps; but it builds each connection with
//! `hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())` and offers no way to
//! configure it. That builder has no timer, so hyper's header-read timeout never runs: a client
//! that sends half a request head (or idles on keep-alive) holds its connection for ever. And
//! `with_graceful_shutdown` then waits, without a bound, for every connection to end (it awaits
//! all connection tasks; hyper's graceful shutdown lets a half-read head finish first), so
//! SIGTERM would not end the daemon while such a client is connected (the tests
//! `api_http::slow_clients_are_cut_off_and_do_not_hold_up_shutdown` and
//! `api_poll::daemon_binary_serves_the_api_and_polls` hold this).
//! The one loop below serves TCP and the Unix socket alike, so nothing here is Unix-specific;
//! when axum's `serve` can take a configured builder, this file shrinks to `Listener` impls.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Connection limits; [`Default`] is what the daemon uses, tests shorten them.
#[derive(Clone, Copy, Debug)]
pub struct ServeLimits {
    /// A request head (or the next one on a kept-alive connection) must arrive within this.
    pub header_read_timeout: Duration,
    /// Open connections at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// Open connections at once from one peer (an IP address, or a Unix-socket user id); one
    /// more from that peer is closed as soon as it is accepted, so one client cannot take all
    /// of `max_connections`. On loopback every local client (and a local TLS proxy) is the
    /// same peer, `127.0.0.1` or `::1`.
    pub max_connections_per_peer: usize,
    /// After shutdown starts, open connections get this long to finish, then are dropped.
    pub shutdown_grace: Duration,
}

impl Default for ServeLimits {
    fn default() -> Self {
        ServeLimits {
            header_read_timeout: Duration::from_secs(10),
            // Well under the unit's LimitNOFILE, leaving fds for the store, D-Bus and the poller.
            max_connections: 256,
            max_connections_per_peer: 64,
            shutdown_grace: Duration::from_secs(3),
        }
    }
}

/// Where the API listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Listen {
    /// `HOST:PORT` (an IP address and a port; port 0 picks a free one) or `unix:/path`.
    pub fn parse(s: &str) -> Result<Listen> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                bail!(
                    "api.listen: \"unix:\" needs a socket path, e.g. unix:/run/bluezoned/api.sock"
                );
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        s.trim().parse().map(Listen::Tcp).map_err(|_| {
            anyhow::anyhow!(
                "api.listen: expected IP:PORT (e.g. 127.0.0.1:8421) or unix:/path, got {s:?}"
            )
        })
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Who is on the other end of a connection (for the failed-authentication limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    Ip(IpAddr),
    /// A Unix-socket client, by user id (`SO_PEERCRED`).
    Uid(u32),
    Unknown,
}

/// The `Host` header values a server answers, against DNS rebinding: a web page whose own name
/// now resolves to 127.0.0.1 sends that name as `Host`, so any other name is refused (421).
/// Answered: `localhost`, any IP address literal (IPv6 in brackets, the listen address among
/// them) and the configured `allowed_hosts`, each with or without a port, in any case. A
/// request without `Host` (HTTP/1.0) is answered; browsers always send one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HostRule {
    /// Names configured for a server reached through a name (`allowed_hosts`), lower case.
    names: Vec<String>,
}

impl HostRule {
    /// The rule for a server that also answers to the names `allowed_hosts`. (A TCP listen
    /// address is an IP literal, which the rule accepts anyway.)
    pub(crate) fn new(allowed_hosts: &[String]) -> HostRule {
        let names = allowed_hosts
            .iter()
            .map(|n| n.trim().to_ascii_lowercase())
            .collect();
        HostRule { names }
    }

    /// `host` is `NAME` or `NAME:PORT`, NAME `localhost`, an IP address literal (`[..]` around
    /// IPv6; the listen address is one), or a configured name. DNS rebinding needs a name the
    /// attacker's DNS answers for, so an address literal is never one: a browser sends the
    /// literal only when the page itself asked for that address. Any other name is refused,
    /// since a rebinding attacker's name would reach a loopback server the same way.
    pub(crate) fn allows(&self, host: &str) -> bool {
        let name = match host.rsplit_once(':') {
            // `[::1]:8421`, `127.0.0.1:8421`, `localhost:8421`; a bare `::1` has colons too.
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !n.ends_with(':') => n,
            _ => host,
        };
        let name = name.to_ascii_lowercase();
        let ip_literal = name.parse::<std::net::Ipv4Addr>().is_ok()
            || name
                .strip_prefix('[')
                .and_then(|n| n.strip_suffix(']'))
                .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok());
        name == "localhost" || ip_literal || self.names.contains(&name)
    }
}

/// Who may talk to a server beyond its listener's reach: the `Host` names it answers to besides
/// `localhost` and address literals ([`HostRule`]), and on a Unix socket the peer user ids
/// (`SO_PEERCRED`) it serves. An empty uid list leaves access to the socket's mode (0660) alone.
#[derive(Clone, Debug, Default)]
pub(crate) struct Access {
    pub(crate) allowed_hosts: Vec<String>,
    pub(crate) allowed_uids: Vec<u32>,
}

impl Access {
    /// Whether a connection from `peer` is served: TCP peers always (tokens and the `Host`
    /// rule apply), Unix-socket peers when no uid list is set or their uid is on it.
    fn admits(&self, peer: Peer) -> bool {
        match peer {
            Peer::Ip(_) => true,
            _ if self.allowed_uids.is_empty() => true,
            Peer::Uid(uid) => self.allowed_uids.contains(&uid),
            Peer::Unknown => false,
        }
    }
}

/// The [`HostRule`] as middleware: 421 with a JSON error for a foreign `Host`.
async fn check_host(State(rule): State<Arc<HostRule>>, req: Request, next: Next) -> Response {
    if let Some(host) = req.headers().get(header::HOST) {
        if !host.to_str().ok().is_some_and(|h| rule.allows(h)) {
            tracing::debug!(path = %req.uri().path().escape_debug(),
                "HTTP API: request for a foreign Host refused (421)");
            let body = serde_json::json!({
                "error": "Host header is not this server's address (use localhost, an IP address, \
                          or a name listed in allowed_hosts)"
            });
            return (StatusCode::MISDIRECTED_REQUEST, Json(body)).into_response();
        }
    }
    next.run(req).await
}

pub(crate) enum Listener {
    Tcp(tokio::net::TcpListener),
    Unix(tokio::net::UnixListener, PathBuf),
}

impl Listener {
    /// Binds; a TCP address beyond loopback needs `allow_remote` (tokens travel in clear).
    pub(crate) async fn bind(listen: &Listen, allow_remote: bool) -> Result<(Listener, Listen)> {
        match listen {
            Listen::Tcp(addr) => {
                if !addr.ip().is_loopback() && !allow_remote {
                    bail!(
                        "api.listen: {addr} is reachable beyond this host and the API speaks plain \
                         HTTP (bearer tokens in clear); use a loopback address or a unix: socket, \
                         or set api.allow_remote = true behind a TLS proxy"
                    );
                }
                let l = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("api.listen: binding {addr}"))?;
                let local = l
                    .local_addr()
                    .with_context(|| format!("api.listen: address bound for {addr}"))?;
                if !local.ip().is_loopback() {
                    tracing::warn!(listen = %local, "the HTTP API is reachable beyond this host \
                        (api.allow_remote): bearer tokens cross the network in clear unless a TLS \
                        proxy fronts it");
                }
                Ok((Listener::Tcp(l), Listen::Tcp(local)))
            }
            Listen::Unix(path) => {
                let l = bind_unix(path)?;
                Ok((Listener::Unix(l, path.clone()), listen.clone()))
            }
        }
    }
}

fn bind_unix(path: &Path) -> Result<tokio::net::UnixListener> {
    use std::io::ErrorKind;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    // A socket left by an earlier run is replaced. One that another process still listens on
    // (a second daemon given the same path) is not, and neither is anything that is not a
    // socket. Between this check and the rename below another process could bind the path; the
    // rename then replaces its socket: two daemons started at the same instant on one path
    // are not told apart (their stores, in different data directories, are not mixed).
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            bail!(
                "api.listen: {} exists and is not a socket; refusing to replace it",
                path.display()
            );
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => bail!(
                "api.listen: another process is listening on {}; refusing to replace it",
                path.display()
            ),
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) => {}
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "api.listen: cannot tell whether {} is in use; not replacing it",
                        path.display()
                    )
                })
            }
        }
    }
    // Bound under a temporary name beside it, made owner-and-group only (whatever the umask),
    // then renamed over the path: the socket is never reachable with the umask's mode, and a
    // stale one is replaced in one step.
    let name = path
        .file_name()
        .with_context(|| format!("api.listen: {} has no file name", path.display()))?;
    let tmp = path.with_file_name(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp); // left by a crashed process that had our pid
    let l = std::os::unix::net::UnixListener::bind(&tmp)
        .with_context(|| format!("api.listen: binding unix socket {}", tmp.display()))?;
    let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("api.listen: chmod 0660 {}", tmp.display()))
        .and_then(|()| {
            std::fs::rename(&tmp, path).with_context(|| {
                format!(
                    "api.listen: moving the socket into place at {}",
                    path.display()
                )
            })
        });
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    l.set_nonblocking(true)
        .context("api.listen: unix socket non-blocking")?;
    tokio::net::UnixListener::from_std(l).context("api.listen: unix socket")
}

/// Serves `app` on `listener` until `shutdown`, then closes every connection within
/// `limits.shutdown_grace`. Requests for a foreign `Host` (not `localhost`, an IP address
/// literal, or one of `allowed_hosts`) get 421 before they reach `app`.
pub(crate) async fn serve(
    listener: Listener,
    app: Router,
    limits: ServeLimits,
    access: &Access,
    shutdown: CancellationToken,
) -> Result<()> {
    let rule = HostRule::new(&access.allowed_hosts);
    let app = app.layer(axum::middleware::from_fn_with_state(
        Arc::new(rule),
        check_host,
    ));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_peer = PeerSlots::new(limits.max_connections_per_peer);
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = accept(&listener) => r,
        };
        let (io, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: back off briefly instead of spinning.
                tracing::warn!(error = %e, "HTTP API: accept failed");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        if !access.admits(peer) {
            tracing::warn!(
                ?peer,
                "HTTP API: a Unix-socket peer outside api.unix_allowed_uids; closing its connection"
            );
            drop(io);
            continue;
        }
        let Some(peer_slot) = per_peer.try_acquire(peer) else {
            tracing::warn!(
                limit = limits.max_connections_per_peer,
                "HTTP API: per-peer connection cap reached; closing a new connection"
            );
            drop(io);
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(
                limit = limits.max_connections,
                "HTTP API: connection cap reached; closing a new connection"
            );
            drop(io);
            continue;
        };
        conns.spawn(connection(
            io,
            peer,
            app.clone(),
            limits,
            shutdown.clone(),
            (slot, peer_slot),
        ));
        while conns.try_join_next().is_some() {}
    }
    drop(listener_cleanup(&listener));
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::info!(
            open = conns.len(),
            "HTTP API: closing connections still open after the shutdown grace period"
        );
        conns.shutdown().await;
    }
    Ok(())
}

fn listener_cleanup(listener: &Listener) -> std::io::Result<()> {
    match listener {
        Listener::Unix(_, path) => std::fs::remove_file(path),
        Listener::Tcp(_) => Ok(()),
    }
}

/// Open connections per peer, with a cap. A place is held by a [`PeerSlot`] and given back
/// when it drops; a peer with no open connection is forgotten.
#[derive(Clone, Debug)]
pub(crate) struct PeerSlots {
    cap: usize,
    open: Arc<std::sync::Mutex<HashMap<Peer, usize>>>,
}

/// One connection's place in [`PeerSlots`].
#[derive(Debug)]
pub(crate) struct PeerSlot {
    peer: Peer,
    open: Arc<std::sync::Mutex<HashMap<Peer, usize>>>,
}

impl PeerSlots {
    pub(crate) fn new(cap: usize) -> PeerSlots {
        PeerSlots {
            cap,
            open: Arc::default(),
        }
    }

    /// A place for one more connection of `peer`, unless it already has `cap` open.
    pub(crate) fn try_acquire(&self, peer: Peer) -> Option<PeerSlot> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(peer).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(PeerSlot {
            peer,
            open: self.open.clone(),
        })
    }

    #[cfg(test)]
    fn open(&self, peer: Peer) -> usize {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.get(&peer).copied().unwrap_or(0)
    }

    #[cfg(test)]
    fn peers(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for PeerSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.peer);
            }
        }
    }
}

type BoxedIo = Box<dyn Io>;
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

async fn accept(listener: &Listener) -> std::io::Result<(BoxedIo, Peer)> {
    match listener {
        Listener::Tcp(l) => {
            let (s, a) = l.accept().await?;
            Ok((Box::new(s), Peer::Ip(a.ip())))
        }
        Listener::Unix(l, _) => {
            let (s, _) = l.accept().await?;
            let peer = s
                .peer_cred()
                .map(|c| Peer::Uid(c.uid()))
                .unwrap_or(Peer::Unknown);
            Ok((Box::new(s), peer))
        }
    }
}

async fn connection(
    io: BoxedIo,
    peer: Peer,
    app: Router,
    limits: ServeLimits,
    stop: CancellationToken,
    _slots: (tokio::sync::OwnedSemaphorePermit, PeerSlot),
) {
    use tower::Service;
    let service = hyper::service::service_fn(move |mut req: Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(peer);
        app.clone().call(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let r = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            // Finish the request in flight, if any; `serve` drops what outlives the grace.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = r {
        tracing::debug!(error = %e, "HTTP API connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Security M2 (DNS rebinding): `localhost`, address literals and configured names, with or
    /// without a port and in any case, are answered; any other name is not.
    #[test]
    fn host_rule() {
        let v4 = HostRule::new(&[]);
        for ok in [
            "localhost",
            "LocalHost:8421",
            "127.0.0.1",
            "127.0.0.1:1",
            "[::1]",
            "[::1]:8421",
            "127.0.0.2",
            "127.0.0.2:8421",
            // Address literals cannot be rebound: a LAN client naming the gateway's address.
            "192.168.1.5:8421",
            "[fe80::1]:8421",
        ] {
            assert!(v4.allows(ok), "{ok}");
        }
        for bad in [
            "attacker.example",
            "attacker.example:8421",
            "localhost.attacker.example",
            "gateway.lan",
            "127.0.0.1.nip.io",
            "::1",
            "",
            "localhost:80:80",
            "[::1",
            "[attacker.example]:8421",
            "0x7f000001",
        ] {
            assert!(!v4.allows(bad), "{bad}");
        }
        let named = HostRule::new(&["Gateway.LAN".to_string()]);
        assert!(named.allows("gateway.lan:8421") && named.allows("GATEWAY.lan"));
        assert!(!named.allows("gateway.lan.attacker.example") && !named.allows("x.sock"));
    }

    /// Security L10: with `api.unix_allowed_uids` set, only those peer uids are served on the
    /// Unix socket (a peer whose credentials can't be read is not); TCP peers are unaffected.
    #[test]
    fn unix_peer_allow_list() {
        let open = Access::default();
        assert!(open.admits(Peer::Uid(1234)) && open.admits(Peer::Unknown));
        let listed = Access {
            allowed_uids: vec![0, 1000],
            ..Access::default()
        };
        assert!(listed.admits(Peer::Uid(1000)) && listed.admits(Peer::Uid(0)));
        assert!(!listed.admits(Peer::Uid(1001)) && !listed.admits(Peer::Unknown));
        assert!(listed.admits(Peer::Ip("127.0.0.1".parse().unwrap())));
    }

    /// Security M1 (per-peer cap): one peer gets at most `cap` places whatever it does; other
    /// peers are not affected, and a place comes back when its connection ends.
    #[test]
    fn per_peer_slots() {
        let slots = PeerSlots::new(3);
        let a = Peer::Ip("127.0.0.1".parse().unwrap());
        let b = Peer::Ip("::1".parse().unwrap());
        let u = Peer::Uid(1000);
        let mut held: Vec<PeerSlot> = (0..3).map(|_| slots.try_acquire(a).unwrap()).collect();
        for _ in 0..100 {
            assert!(
                slots.try_acquire(a).is_none(),
                "a fourth place for one peer"
            );
        }
        assert_eq!(slots.open(a), 3);
        let others: Vec<PeerSlot> = [b, b, b, u, u, u, Peer::Unknown]
            .iter()
            .map(|p| slots.try_acquire(*p).expect("another peer is served"))
            .collect();
        assert!(slots.try_acquire(b).is_none());
        held.pop();
        assert_eq!(slots.open(a), 2);
        held.push(slots.try_acquire(a).expect("a freed place is reusable"));
        drop(held);
        drop(others);
        assert_eq!(slots.peers(), 0, "peers without connections are forgotten");
    }
}
