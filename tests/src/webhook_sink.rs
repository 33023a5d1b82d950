//! A tiny real HTTP/1.1 server receiving webhook POSTs, refusing the first
//! few to make the sender retry.

use anyhow::Result;
use serde_json::Value;

/// A tiny real HTTP/1.1 server receiving webhook POSTs: it answers the
/// first `fail_first` requests 500 (to make the sender retry), then 200,
/// and keeps the JSON bodies it accepted.
pub struct WebhookSink {
    pub url: String,
    received: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    /// Requests answered so far (500s included).
    answered: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl WebhookSink {
    pub async fn start(fail_first: usize) -> Result<WebhookSink> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (store, count) = (received.clone(), answered.clone());
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve_webhook(
                    socket,
                    store.clone(),
                    count.clone(),
                    fail_first,
                ));
            }
        });
        Ok(WebhookSink {
            url,
            received,
            answered,
        })
    }

    /// Bodies accepted (answered 200), in arrival order.
    pub fn received(&self) -> Vec<Value> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    pub fn answered(&self) -> usize {
        self.answered.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn serve_webhook(
    socket: tokio::net::TcpStream,
    store: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
    count: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    fail_first: usize,
) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let mut reader = BufReader::new(socket);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        // Request line and headers, up to the blank line.
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let n = count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let status = if n < fail_first {
            "500 Internal Server Error"
        } else {
            if let (Ok(value), Ok(mut list)) = (serde_json::from_slice(&body), store.lock()) {
                list.push(value);
            }
            "200 OK"
        };
        let response = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
        if reader
            .get_mut()
            .write_all(response.as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}
