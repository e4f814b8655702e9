//! A minimal HTTP endpoint that serves the Prometheus registry on every request.
//!
//! It runs on the node's own runtime, and operators often open it beyond loopback for a
//! scraper on another host. So a stranger who reaches it must not be able to take the
//! node's file descriptors, memory or CPU:
//! - at most [`MAX_CONNECTIONS`] exchanges at once, [`MAX_PER_SOURCE`] from one IP address;
//!   more connections are closed as soon as they are accepted (a file descriptor held by an
//!   idle stranger is one the mix listener cannot have, and one address cannot keep the
//!   scraper out alone);
//! - each exchange ends within [`DEADLINE`], and a request head must end within
//!   [`MAX_HEAD`] bytes and [`HEAD_DEADLINE`], or it gets no answer and costs no encoding;
//! - the registry is encoded at most once per [`MAX_AGE`], however many scrapes arrive;
//! - a failing `accept` (for example out of file descriptors) is retried after
//!   [`ACCEPT_BACKOFF`] instead of in a busy loop.
//!
//! Each refusal is counted in `mixnode_metrics_http_refused_total{reason}`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Exchanges served at once. A scraper needs one; a few spare for people with `curl`.
const MAX_CONNECTIONS: usize = 16;
/// Exchanges served at once to one IP address.
const MAX_PER_SOURCE: usize = 4;
/// The longest request head read. Prometheus sends a few hundred bytes.
const MAX_HEAD: usize = 8 * 1024;
/// Time for the whole request head to arrive.
const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// Time for a whole exchange, from accept to the last byte written.
const DEADLINE: Duration = Duration::from_secs(10);
/// How old a served page may be. Short enough that a watcher of the metrics (the process
/// testnet's restart timing) sees changes promptly; long enough that a flood of requests
/// costs at most 20 encodings a second.
const MAX_AGE: Duration = Duration::from_millis(50);
/// Pause after a failed `accept`.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Why a connection got no metrics.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// [`MAX_CONNECTIONS`] exchanges were under way.
    Busy,
    /// [`MAX_PER_SOURCE`] exchanges with the same address were under way.
    SourceBusy,
    /// The request head did not end within [`MAX_HEAD`] bytes.
    HeadTooLarge,
    /// The peer closed before its request head ended.
    Incomplete,
    /// [`HEAD_DEADLINE`] or [`DEADLINE`] passed.
    Timeout,
    /// The socket failed.
    Io,
}

impl Refusal {
    fn label(self) -> ReasonLabel {
        let reason = match self {
            Self::Busy => "busy",
            Self::SourceBusy => "source_busy",
            Self::HeadTooLarge => "head_too_large",
            Self::Incomplete => "incomplete",
            Self::Timeout => "timeout",
            Self::Io => "io",
        };
        ReasonLabel { reason }
    }
}

/// The last encoded page and when it was encoded.
type Page = Option<(Instant, Arc<[u8]>)>;

struct Endpoint {
    registry: Registry,
    page: Mutex<Page>,
    refused: Family<ReasonLabel, Counter>,
}

impl Endpoint {
    fn refuse(&self, refusal: Refusal) {
        self.refused.get_or_create(&refusal.label()).inc();
    }

    /// The response to a scrape: the page of at most [`MAX_AGE`] ago, or a new one.
    fn response(&self) -> Arc<[u8]> {
        let mut page = self.page.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, bytes)) = page.as_ref()
            && at.elapsed() < MAX_AGE
        {
            return bytes.clone();
        }
        let mut body = String::new();
        let bytes: Arc<[u8]> =
            match prometheus_client::encoding::text::encode(&mut body, &self.registry) {
                Ok(()) => format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                ),
                Err(_) => "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned(),
            }
            .into_bytes()
            .into();
        *page = Some((Instant::now(), bytes.clone()));
        bytes
    }

    /// Reads a request head (and ignores it: any path gets the metrics), then answers.
    async fn exchange(&self, socket: &mut TcpStream) -> Result<(), Refusal> {
        let mut head = Vec::with_capacity(1024);
        tokio::time::timeout(HEAD_DEADLINE, read_head(socket, &mut head))
            .await
            .map_err(|_| Refusal::Timeout)??;
        let response = self.response();
        socket.write_all(&response).await.map_err(|_| Refusal::Io)?;
        socket.shutdown().await.map_err(|_| Refusal::Io)
    }
}

/// Reads until the blank line that ends an HTTP request head (bare line feeds, as typed
/// into `nc`, end it too).
async fn read_head(socket: &mut TcpStream, head: &mut Vec<u8>) -> Result<(), Refusal> {
    let mut chunk = [0u8; 1024];
    loop {
        let n = socket.read(&mut chunk).await.map_err(|_| Refusal::Io)?;
        if n == 0 {
            return Err(Refusal::Incomplete);
        }
        // Search from just before the new bytes: the end may straddle two reads.
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        let new = &head[from..];
        if new.windows(4).any(|w| w == b"\r\n\r\n") || new.windows(2).any(|w| w == b"\n\n") {
            return Ok(());
        }
        if head.len() >= MAX_HEAD {
            return Err(Refusal::HeadTooLarge);
        }
    }
}

/// One exchange counted against its source address until dropped. The map holds only
/// addresses with an exchange under way: at most [`MAX_CONNECTIONS`] of them.
struct SourceSlot {
    sources: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl SourceSlot {
    fn take(sources: &Arc<Mutex<HashMap<IpAddr, usize>>>, ip: IpAddr) -> Option<Self> {
        let mut map = sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let held = map.entry(ip).or_default();
        if *held >= MAX_PER_SOURCE {
            return None;
        }
        *held += 1;
        Some(Self { sources: sources.clone(), ip })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut map = self.sources.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(held) = map.get_mut(&self.ip) {
            *held -= 1;
            if *held == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

/// Binds `addr` and serves `registry` until the runtime stops. Returns the bound address.
pub(crate) async fn serve(addr: SocketAddr, mut registry: Registry) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding metrics endpoint {addr}"))?;
    let bound = listener.local_addr()?;
    let refused = Family::<ReasonLabel, Counter>::default();
    registry.register(
        "mixnode_metrics_http_refused",
        "Connections to the metrics endpoint that got no metrics, by reason",
        refused.clone(),
    );
    let endpoint = Arc::new(Endpoint { registry, page: Mutex::new(None), refused });
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let sources = Arc::new(Mutex::new(HashMap::<IpAddr, usize>::new()));
    tokio::spawn(async move {
        loop {
            let (mut socket, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "metrics endpoint: accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let Some(source) = SourceSlot::take(&sources, peer.ip()) else {
                endpoint.refuse(Refusal::SourceBusy);
                continue;
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                endpoint.refuse(Refusal::Busy);
                continue;
            };
            let endpoint = endpoint.clone();
            tokio::spawn(async move {
                let outcome = tokio::time::timeout(DEADLINE, endpoint.exchange(&mut socket)).await;
                if let Err(refusal) = outcome.unwrap_or(Err(Refusal::Timeout)) {
                    endpoint.refuse(refusal);
                }
                drop((permit, source));
            });
        }
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn endpoint() -> SocketAddr {
        let mut registry = Registry::default();
        let counter = Counter::<u64>::default();
        counter.inc();
        registry.register("probe", "A counter for the tests", counter);
        serve("127.0.0.1:0".parse().unwrap(), registry).await.unwrap()
    }

    /// Everything the endpoint sends before it closes, or `None` if it sends nothing and
    /// keeps the connection open for `wait`.
    async fn read_all(socket: &mut TcpStream, wait: Duration) -> Option<String> {
        let mut out = Vec::new();
        match tokio::time::timeout(wait, socket.read_to_end(&mut out)).await {
            Ok(_) => Some(String::from_utf8_lossy(&out).into_owned()),
            Err(_) => None,
        }
    }

    /// A connection to `addr` from 127.0.0.`octet` (all of 127/8 is loopback).
    async fn connect_from(octet: u8, addr: SocketAddr) -> TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from(([127, 0, 0, octet], 0))).unwrap();
        socket.connect(addr).await.unwrap()
    }

    async fn scrape(addr: SocketAddr) -> String {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        read_all(&mut socket, Duration::from_secs(5)).await.expect("an answer")
    }

    #[tokio::test]
    async fn one_address_holds_at_most_its_share() {
        let addr = endpoint().await;
        let mut idle = Vec::new();
        for _ in 0..MAX_PER_SOURCE {
            idle.push(connect_from(2, addr).await);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut extra = connect_from(2, addr).await;
        let answer = read_all(&mut extra, Duration::from_secs(2)).await;
        assert_eq!(answer.as_deref(), Some(""), "a fifth connection from one address was held");
        // Another address is served meanwhile.
        let mut other = connect_from(3, addr).await;
        other.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await.unwrap();
        let page = read_all(&mut other, Duration::from_secs(5)).await.expect("an answer");
        assert!(
            page.contains("mixnode_metrics_http_refused_total{reason=\"source_busy\"} 1"),
            "{page}"
        );
        drop(idle);
    }

    #[tokio::test]
    async fn idle_strangers_hold_at_most_the_connection_limit() {
        let addr = endpoint().await;
        let mut idle = Vec::new();
        for i in 0..MAX_CONNECTIONS {
            idle.push(connect_from(10 + (i / MAX_PER_SOURCE) as u8, addr).await);
        }
        // The connections are accepted in order: give the endpoint time to take all of them.
        tokio::time::sleep(Duration::from_millis(200)).await;
        // One more is closed at once, not held until its head deadline.
        let mut extra = connect_from(30, addr).await;
        let answer = read_all(&mut extra, Duration::from_secs(2)).await;
        assert_eq!(answer.as_deref(), Some(""), "the connection over the limit was held");
        drop(idle);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let page = scrape(addr).await;
        assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
        assert!(page.contains("probe_total 1"), "{page}");
        assert!(page.contains("mixnode_metrics_http_refused_total{reason=\"busy\"}"), "{page}");
        assert!(
            page.contains("mixnode_metrics_http_refused_total{reason=\"incomplete\"}"),
            "{page}"
        );
    }

    #[tokio::test]
    async fn a_request_in_pieces_gets_its_answer_after_the_head() {
        let addr = endpoint().await;
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r").await.unwrap();
        // Before the head ends there is no answer.
        let mut byte = [0u8; 1];
        let early = tokio::time::timeout(Duration::from_millis(300), socket.read(&mut byte)).await;
        assert!(early.is_err(), "answered before the request head ended");
        socket.write_all(b"\n\r\n").await.unwrap();
        let page = read_all(&mut socket, Duration::from_secs(5)).await.expect("an answer");
        assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
        assert!(page.contains("probe_total 1"), "{page}");
    }

    #[tokio::test]
    async fn a_head_that_never_ends_gets_no_metrics() {
        let addr = endpoint().await;
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        // The endpoint may close (and reset) as soon as it has read its limit.
        let _ = socket.write_all(&[b'a'; MAX_HEAD + 16]).await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), socket.read_to_end(&mut out)).await;
        assert!(out.is_empty(), "answered a head of {} bytes", MAX_HEAD + 16);
        let page = scrape(addr).await;
        assert!(
            page.contains("mixnode_metrics_http_refused_total{reason=\"head_too_large\"} 1"),
            "{page}"
        );
    }
}
