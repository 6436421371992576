//! Request bodies that a handler answers without reading to the end (a 401 before an upload, a 413
//! past a limit, a 404) are read to their end in the background, within bounds, before the
//! connection closes.
//!
//! Why: closing a TCP socket whose receive buffer still holds unread bytes makes the kernel send a
//! reset instead of a clean close, and a client still writing its body (Python's `http.client`
//! and `requests`, reqwest, curl below its `Expect` threshold) then fails with "connection reset"
//! or "broken pipe" and never reads the answer it was sent. Web servers call the cure a lingering
//! close (nginx's `lingering_close`); hyper has none, so the body is drained here instead: the
//! answer goes out at once, and the connection reads on until the body ends, [`MAX_DRAIN_BYTES`]
//! have been thrown away or [`MAX_DRAIN_TIME`] has passed, whichever comes first. A client that
//! sends more than that still sees a reset, as it would from nginx.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header;
use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt;

/// Most bytes read and thrown away after an answer.
pub const MAX_DRAIN_BYTES: u64 = 64 << 20;
/// Longest time spent reading a body after its answer.
pub const MAX_DRAIN_TIME: Duration = Duration::from_secs(10);

/// The layer (`axum::middleware::map_request`): wraps every request body that may hold bytes.
pub async fn lingering_bodies(req: Request) -> Request {
    let headers = req.headers();
    // A client that waits for `100 Continue` sends nothing it is not asked for.
    let expects = headers
        .get(header::EXPECT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
    // A body that is known to be empty, or declared larger than the bound, is left as it is.
    let empty_or_huge = req.body().size_hint().exact().is_some_and(|n| n == 0 || n > MAX_DRAIN_BYTES);
    if expects || empty_or_huge || req.body().is_end_stream() {
        return req;
    }
    req.map(|body| Body::new(Lingering { inner: Some(body) }))
}

/// A body that drains itself when dropped unfinished.
struct Lingering {
    inner: Option<Body>,
}

impl http_body::Body for Lingering {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut().inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(|b| b.size_hint()).unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(body) = self.inner.take() else { return };
        if body.is_end_stream() {
            return;
        }
        // Outside a runtime (never, in the server) there is nothing to drain with.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = tokio::time::timeout(MAX_DRAIN_TIME, drain(body)).await;
            });
        }
    }
}

/// Reads `body` to its end or [`MAX_DRAIN_BYTES`], keeping nothing; the number of bytes read.
async fn drain(mut body: Body) -> u64 {
    let mut read = 0u64;
    while let Some(Ok(frame)) = body.frame().await {
        if let Some(data) = frame.data_ref() {
            read += data.len() as u64;
            if read > MAX_DRAIN_BYTES {
                break;
            }
        }
    }
    read
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(parts: usize, size: usize) -> Body {
        let chunks = (0..parts).map(move |_| Ok::<_, std::io::Error>(Bytes::from(vec![7u8; size])));
        Body::from_stream(futures::stream::iter(chunks))
    }

    #[tokio::test]
    async fn a_drain_stops_at_its_bound() {
        assert_eq!(drain(chunked(3, 1000)).await, 3000);
        let over = (MAX_DRAIN_BYTES as usize) / (1 << 20) + 4;
        let read = drain(chunked(over, 1 << 20)).await;
        assert!(read > MAX_DRAIN_BYTES && read <= MAX_DRAIN_BYTES + (1 << 20), "{read}");
    }

    /// A body fed through a channel of one place: the sender can push more only if something reads.
    fn fed() -> (tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>, Body) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        (tx, Body::from_stream(stream))
    }

    #[tokio::test]
    async fn a_body_dropped_unread_is_drained_and_a_read_one_is_left_alone() {
        let (tx, body) = fed();
        let req = lingering_bodies(Request::builder().method("POST").body(body).unwrap()).await;
        drop(req);
        // Far more than the channel holds goes through: something reads on.
        for _ in 0..16 {
            tokio::time::timeout(Duration::from_secs(5), tx.send(Ok(Bytes::from_static(b"x"))))
                .await
                .expect("the dropped body is read on")
                .expect("the reader is still there");
        }
        drop(tx);

        let req = lingering_bodies(Request::builder().method("POST").body(Body::from("done")).unwrap()).await;
        let bytes = req.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&bytes[..], b"done");
    }

    #[tokio::test]
    async fn a_client_waiting_for_100_continue_is_not_drained() {
        let (tx, body) = fed();
        let req = Request::builder().method("PUT").header(header::EXPECT, "100-continue").body(body).unwrap();
        drop(lingering_bodies(req).await);
        tokio::task::yield_now().await;
        assert!(tx.send(Ok(Bytes::from_static(b"x"))).await.is_err(), "nobody reads a body never asked for");
    }
}
