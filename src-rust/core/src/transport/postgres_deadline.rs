//! A reply deadline for PostgreSQL connections: a server that stops answering (frozen by SIGSTOP,
//! swapped out, wedged) fails the statement waiting on it after `reply_timeout` instead of never.
//!
//! Neither the `postgres` client nor TCP can notice such a server: its kernel still accepts and
//! acknowledges what is sent, so keepalives and `tcp_user_timeout` see a healthy peer, and the
//! client has no per-statement timeout. So the connection's byte stream watches the protocol
//! itself: every request that ends in a `ReadyForQuery` (`Z`) answer (the startup message, a
//! simple `Query`, a `Sync` of the extended protocol) is counted when written and uncounted when its
//! `Z` is read. While any is outstanding, a silence of `reply_timeout` (no byte received) fails
//! the read with [`std::io::ErrorKind::TimedOut`]: the connection is then closed and reopened by
//! the next call, and the call that waited gets [`Error::NoReply`](crate::Error::NoReply) (it may
//! or may not have been carried out). An idle connection (a `LISTEN` waiting for notifications)
//! has nothing outstanding and waits as long as it likes; an answer that streams in slowly resets
//! the clock with every byte. The deadline can be lifted while a statement may legitimately run
//! long (migrations), through the connection's [`Deadline`] handle.
//!
//! The stream sits above TLS (it sees the protocol in the clear): with `sslmode=require` or
//! `verify-full` it wraps rustls' stream (the handshake itself bounded by the same timeout);
//! without TLS it is the whole "TLS" layer, connected with direct negotiation so no `SSLRequest`
//! is sent and the server sees an ordinary plain connection.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect, TlsStream};
use postgres::Socket;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How long a request may go without a byte of its answer when the URL does not say
/// (`reply_timeout=` in seconds).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// The URL option (rqueue's own, like `schema`) that sets the reply timeout in seconds.
pub const REPLY_TIMEOUT_OPTION: &str = "reply_timeout";

/// Takes `reply_timeout=<seconds>` out of a URL: the URL without it and the timeout, if given.
pub fn split_reply_timeout(url: &str) -> std::result::Result<(String, Option<Duration>), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), None));
    };
    let mut kept = form_urlencoded::Serializer::new(String::new());
    let mut any_kept = false;
    let mut timeout = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if key == REPLY_TIMEOUT_OPTION {
            let secs: f64 = value.parse().map_err(|_| {
                format!("{REPLY_TIMEOUT_OPTION}={value:?} is not a number of seconds (e.g. reply_timeout=30)")
            })?;
            if !(secs.is_finite() && secs > 0.0 && secs <= 86_400.0) {
                return Err(format!(
                    "{REPLY_TIMEOUT_OPTION}={value} must be more than 0 and at most 86400 seconds"
                ));
            }
            timeout = Some(Duration::from_secs_f64(secs));
        } else {
            kept.append_pair(&key, &value);
            any_kept = true;
        }
    }
    let clean = if any_kept {
        format!("{base}?{}", kept.finish())
    } else {
        base.to_string()
    };
    Ok((clean, timeout))
}

/// The reply timeout of a handle's connections, shared by their streams and the handle, which
/// may lift it around a statement that runs long by design (lifts nest and overlap safely).
#[derive(Debug, Clone)]
pub struct Deadline(Arc<DeadlineState>);

#[derive(Debug)]
struct DeadlineState {
    timeout_ms: AtomicU64,
    /// How many `lifted` calls are running: the timeout is off while any is.
    lifts: AtomicU32,
}

impl Deadline {
    pub fn new(timeout: Duration) -> Self {
        Deadline(Arc::new(DeadlineState {
            timeout_ms: AtomicU64::new(millis(timeout)),
            lifts: AtomicU32::new(0),
        }))
    }

    /// The timeout now in force (None: lifted).
    pub fn get(&self) -> Option<Duration> {
        if self.0.lifts.load(Ordering::Relaxed) > 0 {
            return None;
        }
        Some(Duration::from_millis(
            self.0.timeout_ms.load(Ordering::Relaxed),
        ))
    }

    /// Runs `f` with the deadline lifted (a statement that may run long by design).
    pub fn lifted<T>(&self, f: impl FnOnce() -> T) -> T {
        self.0.lifts.fetch_add(1, Ordering::Relaxed);
        let out = f();
        self.0.lifts.fetch_sub(1, Ordering::Relaxed);
        out
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The "TLS" connector handed to the client: rustls (or nothing) under a [`DeadlineStream`].
pub struct PgConnect {
    pub tls: Option<MakeRustlsConnect>,
    pub deadline: Deadline,
}

type RustlsConnect = <MakeRustlsConnect as MakeTlsConnect<Socket>>::TlsConnect;
type RustlsStream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;
type BoxError = Box<dyn StdError + Sync + Send>;

impl MakeTlsConnect<Socket> for PgConnect {
    type Stream = DeadlineStream;
    type TlsConnect = DeadlineConnect;
    type Error = BoxError;

    fn make_tls_connect(&mut self, domain: &str) -> Result<DeadlineConnect, BoxError> {
        let tls = match &mut self.tls {
            Some(tls) => Some(MakeTlsConnect::<Socket>::make_tls_connect(tls, domain)?),
            None => None,
        };
        Ok(DeadlineConnect {
            tls,
            deadline: self.deadline.clone(),
        })
    }
}

/// One connection attempt of [`PgConnect`].
pub struct DeadlineConnect {
    tls: Option<RustlsConnect>,
    deadline: Deadline,
}

impl TlsConnect<Socket> for DeadlineConnect {
    type Stream = DeadlineStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<DeadlineStream, BoxError>> + Send>>;

    fn connect(self, socket: Socket) -> Self::Future {
        Box::pin(async move {
            let io = match self.tls {
                None => Io::Plain(socket),
                Some(tls) => {
                    let handshake = tls.connect(socket);
                    let limit = self.deadline.get().unwrap_or(REPLY_TIMEOUT);
                    match tokio::time::timeout(limit, handshake).await {
                        Ok(stream) => Io::Tls(Box::new(stream?)),
                        Err(_) => return Err(silence(limit).into()),
                    }
                }
            };
            Ok(DeadlineStream::new(io, self.deadline))
        })
    }
}

/// The error of a request whose answer did not come within `limit`.
pub fn silence(limit: Duration) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, Silence(limit))
}

/// The marker inside the [`io::Error`] of a request left without an answer (see [`is_silence`]).
#[derive(Debug)]
pub struct Silence(pub Duration);

impl std::fmt::Display for Silence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "no answer from the server within {:.1} s (reply_timeout): it is frozen, overloaded or cut off",
            self.0.as_secs_f64()
        )
    }
}

impl StdError for Silence {}

/// The [`Silence`] somewhere in `e`'s chain of sources, if a reply deadline failed it.
pub fn is_silence(e: &(dyn StdError + 'static)) -> Option<Duration> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(s) = err.downcast_ref::<Silence>() {
            return Some(s.0);
        }
        // An io::Error's `source()` skips the error it wraps: step into that one instead.
        if let Some(inner) = err.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            cur = Some(inner);
            continue;
        }
        cur = err.source();
    }
    None
}

enum Io {
    Plain(Socket),
    Tls(Box<RustlsStream>),
}

/// Counts the messages of one direction of the protocol: a tag byte (none for the very first
/// frontend message, the startup packet) and a length that counts itself.
#[derive(Debug)]
struct Framer {
    untyped_first: bool,
    header: [u8; 5],
    have: usize,
    skip: usize,
}

impl Framer {
    fn new(untyped_first: bool) -> Self {
        Framer {
            untyped_first,
            header: [0; 5],
            have: 0,
            skip: 0,
        }
    }

    /// Feeds `bytes`, calling `on_message` with each message's tag (0 for the startup packet) as
    /// soon as its header is complete.
    fn feed(&mut self, mut bytes: &[u8], mut on_message: impl FnMut(u8)) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let need = if self.untyped_first { 4 } else { 5 };
            let n = (need - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == need {
                let tag = if self.untyped_first {
                    0
                } else {
                    self.header[0]
                };
                let mut len = [0u8; 4];
                len.copy_from_slice(&self.header[need - 4..need]);
                let len = u32::from_be_bytes(len) as usize;
                self.skip = len.saturating_sub(4);
                self.have = 0;
                self.untyped_first = false;
                on_message(tag);
            }
        }
    }
}

/// The connection's byte stream, with the reply deadline (see the module docs).
pub struct DeadlineStream {
    io: Io,
    deadline: Deadline,
    /// Requests written whose `ReadyForQuery` has not been read yet.
    outstanding: u64,
    sent: Framer,
    received: Framer,
    /// Armed while requests are outstanding: when the silence would become a failure.
    timer: Option<Pin<Box<Sleep>>>,
}

impl DeadlineStream {
    fn new(io: Io, deadline: Deadline) -> Self {
        DeadlineStream {
            io,
            deadline,
            outstanding: 0,
            sent: Framer::new(true),
            received: Framer::new(false),
            timer: None,
        }
    }

    /// Starts (or restarts) the silence clock while something is outstanding; stops it otherwise.
    fn rearm(&mut self) {
        match (self.outstanding, self.deadline.get()) {
            (0, _) | (_, None) => self.timer = None,
            (_, Some(limit)) => {
                let at = Instant::now() + limit;
                match self.timer.as_mut() {
                    Some(t) => t.as_mut().reset(at),
                    None => self.timer = Some(Box::pin(tokio::time::sleep_until(at))),
                }
            }
        }
    }
}

impl TlsStream for DeadlineStream {
    fn channel_binding(&self) -> ChannelBinding {
        match &self.io {
            Io::Plain(_) => ChannelBinding::none(),
            Io::Tls(s) => s.channel_binding(),
        }
    }
}

impl AsyncRead for DeadlineStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        match polled {
            Poll::Ready(Ok(())) => {
                let got = &buf.filled()[before..];
                if !got.is_empty() {
                    let mut answered = 0u64;
                    this.received
                        .feed(got, |tag| answered += u64::from(tag == b'Z'));
                    this.outstanding = this.outstanding.saturating_sub(answered);
                    this.rearm();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let limit = this.deadline.get();
                if let (Some(timer), Some(limit)) = (this.timer.as_mut(), limit) {
                    if timer.as_mut().poll(cx).is_ready() {
                        this.timer = None;
                        return Poll::Ready(Err(silence(limit)));
                    }
                }
                Poll::Pending
            }
            other => other,
        }
    }
}

impl AsyncWrite for DeadlineStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = match &mut this.io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        };
        if let Poll::Ready(Ok(n)) = polled {
            let mut asked = 0u64;
            this.sent.feed(&buf[..n], |tag| {
                asked += u64::from(matches!(tag, 0 | b'Q' | b'S'));
            });
            if asked > 0 {
                let was_idle = this.outstanding == 0;
                this.outstanding += asked;
                if was_idle {
                    this.rearm();
                    // The client polled its read before this write (and may not poll it again
                    // until bytes come): register the clock with this task now, or a silent
                    // server would never wake it.
                    if let Some(timer) = this.timer.as_mut() {
                        if timer.as_mut().poll(cx).is_ready() {
                            cx.waker().wake_by_ref();
                        }
                    }
                }
            }
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&u32::try_from(body.len() + 4).unwrap().to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn test_framer_counts_messages_split_anywhere() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&12u32.to_be_bytes()); // the startup packet: no tag
        stream.extend_from_slice(&[0, 3, 0, 0, b'u', 0, b'x', 0]);
        stream.extend(message(b'P', b"SELECT 1\0\0\0"));
        stream.extend(message(b'S', b""));
        stream.extend(message(b'Q', b"BEGIN\0"));
        for chunk in [1, 2, 3, 5, 7, stream.len()] {
            let mut framer = Framer::new(true);
            let mut tags = Vec::new();
            for piece in stream.chunks(chunk) {
                framer.feed(piece, |t| tags.push(t));
            }
            assert_eq!(tags, vec![0, b'P', b'S', b'Q'], "chunks of {chunk}");
        }
    }

    #[test]
    fn test_split_reply_timeout() {
        let (url, t) =
            split_reply_timeout("postgresql://h/db?reply_timeout=2.5&sslmode=require").unwrap();
        assert_eq!(url, "postgresql://h/db?sslmode=require");
        assert_eq!(t, Some(Duration::from_millis(2500)));
        let (url, t) = split_reply_timeout("postgresql://h/db?reply_timeout=10").unwrap();
        assert_eq!(
            (url.as_str(), t),
            ("postgresql://h/db", Some(Duration::from_secs(10)))
        );
        assert_eq!(split_reply_timeout("postgresql://h/db").unwrap().1, None);
        for bad in ["soon", "0", "-1", "inf", "1e9"] {
            let err =
                split_reply_timeout(&format!("postgresql://h/db?reply_timeout={bad}")).unwrap_err();
            assert!(err.contains("reply_timeout"), "{bad}: {err}");
        }
    }

    #[test]
    fn test_silence_is_found_through_wrappers() {
        let err = io::Error::other(silence(Duration::from_secs(2)));
        assert_eq!(is_silence(&err), Some(Duration::from_secs(2)));
        assert_eq!(
            is_silence(&silence(Duration::from_secs(3))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(is_silence(&io::Error::other("reset")), None);
        let deadline = Deadline::new(Duration::from_secs(4));
        assert_eq!(deadline.lifted(|| deadline.lifted(|| deadline.get())), None);
        let other = deadline.clone(); // another connection of the handle, lifting meanwhile
        assert_eq!(deadline.lifted(|| other.lifted(|| 1) + 1), 2);
        assert_eq!(other.get(), Some(Duration::from_secs(4)));
    }
}
