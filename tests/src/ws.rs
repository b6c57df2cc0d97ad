//! A WebSocket client of signal's `/api/v1/ws`, for tests that open and close views without a
//! browser (a `watch` registers a viewer whether or not the offer is ever answered).

use anyhow::{Context, Result};
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct WsClient {
    socket: Socket,
}

impl WsClient {
    /// Connects with the token in the `Authorization` header (what a client that is not a
    /// browser does).
    pub async fn connect(base: &str, token: &str) -> Result<Self> {
        let url = format!("{}/api/v1/ws", base.replacen("http://", "ws://", 1));
        let mut req = url.into_client_request()?;
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse()?);
        let (socket, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(Self { socket })
    }

    /// Connects to `path_and_query` (a signed URL, say) with no header, as a browser would.
    pub async fn connect_url(base: &str, path_and_query: &str) -> Result<Self> {
        let url = format!("{}{path_and_query}", base.replacen("http://", "ws://", 1));
        let (socket, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Self { socket })
    }

    pub async fn send(&mut self, msg: Value) -> Result<()> {
        self.socket.send(Message::text(msg.to_string())).await?;
        Ok(())
    }

    /// The next message for which `pred` holds, within `timeout`.
    pub async fn next_where(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        tokio::time::timeout(timeout, async {
            while let Some(msg) = self.socket.next().await {
                if let Message::Text(t) = msg? {
                    let v: Value = serde_json::from_str(&t)?;
                    if pred(&v) {
                        return Ok(v);
                    }
                }
            }
            anyhow::bail!("the WebSocket closed")
        })
        .await
        .context("no matching WebSocket message in time")?
    }

    /// Whether signal closes the socket within `timeout` (messages until then are dropped).
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        let closed = tokio::time::timeout(timeout, async {
            while let Some(msg) = self.socket.next().await {
                if matches!(msg, Err(_) | Ok(Message::Close(_))) {
                    return;
                }
            }
        })
        .await;
        closed.is_ok()
    }

    /// Opens a view of `camera_id`; returns its view id once signal offers it.
    pub async fn watch(&mut self, camera_id: &str) -> Result<String> {
        self.send(serde_json::json!({"type": "watch", "camera_id": camera_id}))
            .await?;
        let offer = self
            .next_where(Duration::from_secs(10), |m| {
                m["type"] == "error" || (m["type"] == "offer" && m["camera_id"] == camera_id)
            })
            .await?;
        anyhow::ensure!(offer["type"] == "offer", "watch refused: {offer}");
        Ok(offer["view_id"].as_str().unwrap_or_default().to_string())
    }

    pub async fn stop(&mut self, view_id: &str) -> Result<()> {
        self.send(serde_json::json!({"type": "stop", "view_id": view_id}))
            .await
    }

    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}
