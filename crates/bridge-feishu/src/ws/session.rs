//! One live connection: pings, pongs (ClientConfig updates), data frames
//! (reassembly, handler calls, acks), until the socket fails or the run is
//! cancelled.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{FutureExt as _, SinkExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use super::endpoint::Socket;
use super::frame::{Frame, HEADER_TRACE_ID, METHOD_CONTROL, METHOD_DATA, TYPE_EVENT, TYPE_PONG};
use super::reassembly::Reassembler;
use super::{ClientConfig, PayloadHandler, RawClientConfig, WsConfig};

/// Feishu expects handlers to finish within 3 s.
const HANDLER_DEADLINE: Duration = Duration::from_secs(3);

/// Why a session ended.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// The run was cancelled; the socket was closed cleanly.
    Cancelled,
    /// The connection failed or was closed by the server.
    Lost(String),
}

/// Everything a session needs that outlives it.
pub(crate) struct SessionCtx<'a> {
    pub(crate) config: &'a WsConfig,
    pub(crate) client_config: &'a mut ClientConfig,
    pub(crate) reassembler: &'a mut Reassembler,
    pub(crate) handler: &'a Arc<dyn PayloadHandler>,
    pub(crate) cancel: &'a CancellationToken,
    pub(crate) service_id: i32,
    pub(crate) device_id: &'a str,
}

pub(crate) async fn run(socket: Socket, mut ctx: SessionCtx<'_>) -> SessionEnd {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if let Err(e) = sink.send(m).await {
                tracing::debug!(error = %e, "long-connection write failed");
                break;
            }
        }
        // All senders gone (or the socket is closing): finish the closing
        // handshake. tungstenite queues the reply to a server Close when it
        // reads it, and this flushes it; after our own Close it flushes that.
        if let Err(e) = sink.close().await {
            tracing::debug!(error = %e, "long-connection close failed");
        }
    });
    // The server sent a Close: our reply must go out before we reconnect.
    let mut closed_by_server = false;

    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut next_ping = Instant::now();
    let mut last_rx = Instant::now();

    let end = loop {
        let idle = ctx
            .config
            .idle_timeout
            .unwrap_or_else(|| ctx.client_config.default_idle_timeout());
        tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => break SessionEnd::Cancelled,
            () = sleep_until(next_ping) => {
                let ping = Frame::ping(ctx.service_id).to_bytes();
                if tx.send(Message::Binary(ping.into())).is_err() {
                    break SessionEnd::Lost("the connection's writer stopped".into());
                }
                tracing::trace!(device_id = ctx.device_id, "ping sent");
                next_ping = Instant::now() + ctx.client_config.ping_interval;
            }
            () = sleep_until(last_rx + idle) => {
                break SessionEnd::Lost(format!("nothing received from the server for {idle:?}"));
            }
            Some(res) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = res {
                    tracing::error!(error = %e, "long-connection handler task failed");
                }
            }
            msg = stream.next() => {
                last_rx = Instant::now();
                match msg {
                    None => break SessionEnd::Lost("the server closed the connection".into()),
                    Some(Err(e)) => break SessionEnd::Lost(format!("read error: {e}")),
                    Some(Ok(Message::Close(frame))) => {
                        closed_by_server = true;
                        let why = frame.map_or_else(
                            || "no reason".to_owned(),
                            |f| format!("{} {}", f.code, f.reason),
                        );
                        break SessionEnd::Lost(format!("the server closed the connection ({why})"));
                    }
                    Some(Ok(Message::Binary(bytes))) => {
                        if let Some(new_interval) = on_binary(&bytes, &mut ctx, &tx, &mut tasks) {
                            next_ping = next_ping.min(Instant::now() + new_interval);
                        }
                    }
                    Some(Ok(Message::Text(_))) => {
                        tracing::debug!("ignoring a text message on the long connection");
                    }
                    Some(Ok(_)) => {}
                }
            }
        }
    };

    // Let running handlers finish (their acks still go out when the socket lives).
    let grace = ctx.config.handler_grace;
    let drained = tokio::time::timeout(grace, async {
        while let Some(res) = tasks.join_next().await {
            if let Err(e) = res {
                tracing::error!(error = %e, "long-connection handler task failed");
            }
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            pending = tasks.len(),
            "long-connection handlers still running after {grace:?}; abandoning them"
        );
        tasks.abort_all();
    }
    if let SessionEnd::Cancelled = end {
        // RFC 6455 §5.5.1: a Close frame with a status code, 1000 = normal.
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "shutdown".into(),
        };
        let _ = tx.send(Message::Close(Some(close)));
    }
    drop(tx);
    if matches!(end, SessionEnd::Cancelled) || closed_by_server {
        if tokio::time::timeout(Duration::from_secs(2), writer)
            .await
            .is_err()
        {
            tracing::debug!("long-connection close handshake timed out");
        }
    } else {
        writer.abort();
    }
    end
}

/// Handles one binary message; returns the new ping interval when a pong
/// changed it.
fn on_binary(
    bytes: &[u8],
    ctx: &mut SessionCtx<'_>,
    tx: &mpsc::UnboundedSender<Message>,
    tasks: &mut JoinSet<()>,
) -> Option<Duration> {
    let mut frame = match Frame::from_bytes(bytes) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, len = bytes.len(), "undecodable long-connection frame ignored");
            return None;
        }
    };
    match frame.method {
        METHOD_CONTROL => {
            if frame.frame_type() == Some(TYPE_PONG) {
                return on_pong(&frame, ctx);
            }
            tracing::debug!(
                frame_type = frame.frame_type().unwrap_or(""),
                "control frame ignored"
            );
            None
        }
        METHOD_DATA => {
            on_data(&mut frame, ctx, tx, tasks);
            None
        }
        other => {
            tracing::debug!(method = other, "frame of unknown method ignored");
            None
        }
    }
}

fn on_pong(frame: &Frame, ctx: &mut SessionCtx<'_>) -> Option<Duration> {
    tracing::trace!(device_id = ctx.device_id, "pong received");
    let payload = frame.payload.as_deref().filter(|p| !p.is_empty())?;
    let raw = match serde_json::from_slice::<RawClientConfig>(payload) {
        Ok(raw) => raw,
        Err(e) => {
            tracing::debug!(error = %e, "pong payload is not a ClientConfig; ignored");
            return None;
        }
    };
    let old = *ctx.client_config;
    ctx.client_config.merge(&raw);
    let new = *ctx.client_config;
    if new == old {
        return None;
    }
    tracing::info!(
        ping_interval = ?new.ping_interval,
        reconnect_count = new.reconnect_count,
        reconnect_interval = ?new.reconnect_interval,
        reconnect_nonce = ?new.reconnect_nonce,
        "long-connection settings updated by the server"
    );
    (new.ping_interval != old.ping_interval).then_some(new.ping_interval)
}

fn on_data(
    frame: &mut Frame,
    ctx: &mut SessionCtx<'_>,
    tx: &mpsc::UnboundedSender<Message>,
    tasks: &mut JoinSet<()>,
) {
    let frame_type = frame.frame_type().unwrap_or("").to_owned();
    let trace_id = frame.header(HEADER_TRACE_ID).unwrap_or("").to_owned();
    let (message_id, sum, seq) = frame.split_part();
    let message_id = message_id.to_owned();
    let part = frame.payload.take().unwrap_or_default();
    let pushed = ctx
        .reassembler
        .push(&message_id, sum, seq, part, std::time::Instant::now());
    let payload = match pushed {
        Ok(Some(p)) => p,
        Ok(None) => {
            tracing::debug!(%message_id, seq, sum, "part of a split message buffered");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "long-connection message part dropped");
            return;
        }
    };
    if frame_type != TYPE_EVENT {
        tracing::debug!(%frame_type, %message_id, "data frame that is not an event ignored");
        return;
    }
    tracing::debug!(%message_id, %trace_id, bytes = payload.len(), "event received on the long connection");
    let handler = Arc::clone(ctx.handler);
    let tx = tx.clone();
    let frame = frame.clone();
    tasks.spawn(async move {
        let started = std::time::Instant::now();
        let outcome = AssertUnwindSafe(handler.handle(payload))
            .catch_unwind()
            .await;
        let ok = match outcome {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::warn!(%message_id, %trace_id, error = %e, "event handler failed; acknowledging with code 500");
                false
            }
            Err(_) => {
                tracing::error!(%message_id, %trace_id, "event handler panicked; acknowledging with code 500");
                false
            }
        };
        let elapsed = started.elapsed();
        if elapsed > HANDLER_DEADLINE {
            tracing::warn!(%message_id, ?elapsed, "event handler exceeded Feishu's 3 s deadline");
        }
        let biz_rt = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
        let ack = frame.ack(ok, biz_rt).to_bytes();
        if tx.send(Message::Binary(ack.into())).is_err() {
            tracing::debug!(%message_id, "connection gone before the ack could be sent");
        }
    });
}
