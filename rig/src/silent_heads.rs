//! A WebSocket proxy in front of Anvil whose newHeads subscription goes silent: it
//! forwards every frame but the node's `eth_subscription` notifications.

/// A WebSocket proxy that drops the node's `eth_subscription` notifications: a
/// subscription that went silent.
#[derive(Debug)]
pub struct SilentHeadsProxy {
    /// Its ws:// URL.
    pub url: String,
}

impl SilentHeadsProxy {
    /// Starts a proxy to the ws:// `upstream` that swallows subscription notifications.
    pub async fn start(upstream: &str) -> anyhow::Result<Self> {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("ws://{}", listener.local_addr()?);
        let upstream = upstream.to_string();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(client) = tokio_tungstenite::accept_async(stream).await else { return };
                    let Ok((node, _)) = tokio_tungstenite::connect_async(upstream.as_str()).await
                    else {
                        return;
                    };
                    let (mut to_client, mut from_client) = client.split();
                    let (mut to_node, mut from_node) = node.split();
                    let up = async move {
                        while let Some(Ok(m)) = from_client.next().await {
                            if to_node.send(m).await.is_err() {
                                break;
                            }
                        }
                    };
                    let down = async move {
                        while let Some(Ok(m)) = from_node.next().await {
                            if let Message::Text(text) = &m
                                && text.contains("\"eth_subscription\"")
                            {
                                continue;
                            }
                            if to_client.send(m).await.is_err() {
                                break;
                            }
                        }
                    };
                    tokio::join!(up, down);
                });
            }
        });
        Ok(Self { url })
    }
}
