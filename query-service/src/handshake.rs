//! Accepts connections for the gRPC server, handing over only those whose client speaks
//! first within `--handshake-timeout`: the whole HTTP/2 preface in plaintext, the whole
//! first TLS record (the ClientHello) with TLS. A client that connects and sends nothing,
//! or a few bytes and then nothing, is dropped then instead of holding a file descriptor
//! for ever; at most [`PENDING`] connections wait at once, and one past that is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tracing::debug;

/// Connections at most waiting for their first bytes at once.
pub const PENDING: usize = 1024;

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a client must send first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// Plaintext HTTP/2: its preface.
    Plaintext,
    /// TLS: a whole first record.
    Tls,
}

/// The accepted connections of `listener` that opened within `timeout`, until `stop`.
pub fn incoming(
    listener: TcpListener,
    opening: Opening,
    timeout: Duration,
    stop: CancellationToken,
) -> ReceiverStream<Result<TcpStream, std::io::Error>> {
    let (ready, rx) = mpsc::channel(64);
    let pending = Arc::new(Semaphore::new(PENDING));
    tokio::spawn(async move {
        loop {
            let (stream, peer) = tokio::select! {
                () = stop.cancelled() => return,
                () = ready.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors, say: wait a little rather than spin.
                        debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = pending.clone().try_acquire_owned() else {
                debug!(%peer, "too many connections waiting for their first bytes; dropped");
                continue;
            };
            let ready = ready.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let _ = stream.set_nodelay(true);
                match tokio::time::timeout(timeout, opened(&stream, opening)).await {
                    Ok(Ok(true)) => {
                        let _ = ready.send(Ok(stream)).await;
                    }
                    outcome => drop_slow(peer, outcome.is_err()),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

fn drop_slow(peer: SocketAddr, timed_out: bool) {
    debug!(%peer, timed_out, "a connection that did not open as gRPC was dropped");
}

/// Waits until the opening bytes are all there (peeked: the server reads them again).
/// False when the client closed first or sent something else.
async fn opened(stream: &TcpStream, opening: Opening) -> std::io::Result<bool> {
    let mut buf = [0u8; 24];
    let mut want = match opening {
        Opening::Plaintext => PREFACE.len(),
        Opening::Tls => 5,
    };
    loop {
        stream.readable().await?;
        let mut big;
        let window: &mut [u8] = if want <= buf.len() {
            &mut buf[..want]
        } else {
            big = vec![0u8; want];
            &mut big
        };
        let n = stream.peek(window).await?;
        if n == 0 {
            return Ok(false);
        }
        match opening {
            Opening::Plaintext if window[..n] != PREFACE[..n] => return Ok(false),
            // A TLS handshake record: type 22, then the version, then the length.
            Opening::Tls if window[0] != 22 => return Ok(false),
            _ => {}
        }
        if n >= want {
            if opening == Opening::Tls && want == 5 {
                want = 5 + usize::from(u16::from_be_bytes([window[3], window[4]]));
                continue;
            }
            return Ok(true);
        }
        // Part of it is there: the rest is waited for (peek sees no new readiness until
        // more arrives, so look again shortly).
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
