//! Delivering batches to the console (docs/ingest.md), spooling what cannot
//! be delivered and replaying it, oldest first, when the console answers.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use demarc_proto::ingest::{SpoolStats, INGEST_PATH};
use reqwest::{StatusCode, Url};
use tokio::{sync::mpsc, time::Instant};

use crate::{spool::Spool, Error, Result};

const TIMEOUT: Duration = Duration::from_secs(10);
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// An encoded batch on its way to the console.
pub struct Outgoing {
    pub seq: u64,
    pub records: u64,
    pub body: Vec<u8>,
}

enum Delivery {
    Done,
    /// Refused for good (400/413/422): retrying cannot help.
    Rejected(String),
    Retry(String, Option<Duration>),
}

/// Checks a `--console` URL; a bare origin gets the ingest path appended.
pub fn ingest_url(console: &str) -> Result<Url> {
    let bad = |reason: &str| Error::ConsoleUrl {
        url: console.into(),
        reason: reason.into(),
    };
    let mut url = Url::parse(console).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host"));
    }
    if url.path() == "/" || url.path().is_empty() {
        url.set_path(INGEST_PATH);
    }
    Ok(url)
}

pub struct Shipper {
    client: reqwest::Client,
    url: Url,
    token: String,
    spool: Spool,
    stats: Arc<Mutex<SpoolStats>>,
    /// Batches refused for good or not spoolable (the spool counts its own).
    lost_batches: u64,
    lost_records: u64,
    backoff: Duration,
    retry_at: Instant,
}

impl Shipper {
    pub fn new(url: Url, token: String, spool: Spool) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .user_agent(concat!("demarc-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::ConsoleUrl {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let stats = Arc::new(Mutex::new(spool.stats()));
        Ok(Self {
            client,
            url,
            token,
            spool,
            stats,
            lost_batches: 0,
            lost_records: 0,
            backoff: MIN_BACKOFF,
            retry_at: Instant::now(),
        })
    }

    /// Spool counters, shared with whoever builds health reports.
    pub fn stats(&self) -> Arc<Mutex<SpoolStats>> {
        self.stats.clone()
    }

    /// Delivers batches from `rx` until it closes, then makes one last attempt
    /// at the spool; what is still undelivered stays on disk for the next start.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Outgoing>) {
        loop {
            let pending = !self.spool.is_empty();
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(o) => self.enqueue(o).await,
                    None => break,
                },
                _ = tokio::time::sleep_until(self.retry_at), if pending => self.replay().await,
            }
        }
        self.retry_at = Instant::now();
        self.replay().await;
        if !self.spool.is_empty() {
            tracing::warn!(
                batches = self.spool.stats().queued_batches,
                "console unreachable at exit: batches stay spooled and are sent at the next start"
            );
        }
    }

    async fn enqueue(&mut self, o: Outgoing) {
        if self.spool.is_empty() {
            match self.post(o.body.clone()).await {
                Delivery::Done => return,
                Delivery::Rejected(why) => return self.reject(o.records, &why),
                Delivery::Retry(why, after) => self.schedule_retry(&why, after),
            }
        }
        // Behind the spool, to keep batches in order.
        if let Err(e) = self.spool.push(o.seq, o.records, &o.body) {
            tracing::error!(error = %e, records = o.records, "cannot spool a batch: it is lost");
            self.count_loss(o.records);
        }
        self.publish();
        if Instant::now() >= self.retry_at {
            self.replay().await;
        }
    }

    async fn replay(&mut self) {
        if Instant::now() < self.retry_at {
            return;
        }
        while let Some((records, body)) = self.spool.front() {
            let body = match body {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "unreadable spooled batch: dropped");
                    self.count_loss(records);
                    let _ = self.spool.pop_front();
                    continue;
                }
            };
            match self.post(body).await {
                Delivery::Done => {}
                Delivery::Rejected(why) => self.reject(records, &why),
                Delivery::Retry(why, after) => {
                    self.schedule_retry(&why, after);
                    break;
                }
            }
            if let Err(e) = self.spool.pop_front() {
                tracing::error!(error = %e, "cannot remove a delivered batch from the spool");
            }
            self.backoff = MIN_BACKOFF;
        }
        self.publish();
    }

    async fn post(&self, body: Vec<u8>) -> Delivery {
        let answer = self
            .client
            .post(self.url.clone())
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let resp = match answer {
            Ok(r) => r,
            Err(e) => return Delivery::Retry(format!("console unreachable: {e}"), None),
        };
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .map(Duration::from_secs);
        if status.is_success() {
            return Delivery::Done;
        }
        let text = resp.text().await.unwrap_or_default();
        let why = format!("console answered {status}: {}", text.trim());
        match status {
            StatusCode::BAD_REQUEST
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::UNPROCESSABLE_ENTITY => Delivery::Rejected(why),
            _ => Delivery::Retry(why, retry_after),
        }
    }

    fn schedule_retry(&mut self, why: &str, after: Option<Duration>) {
        let wait = after.unwrap_or(self.backoff);
        tracing::warn!(retry_in_ms = wait.as_millis() as u64, "{why}; spooling");
        self.retry_at = Instant::now() + wait;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    fn reject(&mut self, records: u64, why: &str) {
        tracing::error!(records, "batch refused for good, dropped: {why}");
        self.count_loss(records);
    }

    fn count_loss(&mut self, records: u64) {
        self.lost_batches += 1;
        self.lost_records += records;
        self.publish();
    }

    /// Health reports count every dropped batch: spool evictions and losses.
    fn publish(&self) {
        let spool = self.spool.stats();
        *self.stats.lock().unwrap() = SpoolStats {
            queued_batches: spool.queued_batches,
            dropped_batches: spool.dropped_batches + self.lost_batches,
            dropped_records: spool.dropped_records + self.lost_records,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_urls() {
        assert_eq!(
            ingest_url("http://127.0.0.1:8080").unwrap().as_str(),
            "http://127.0.0.1:8080/api/v1/ingest"
        );
        assert_eq!(
            ingest_url("https://c.example/demarc/api/v1/ingest")
                .unwrap()
                .path(),
            "/demarc/api/v1/ingest"
        );
        for bad in ["127.0.0.1:8080", "ftp://x", "http://", "not a url"] {
            assert!(ingest_url(bad).is_err(), "{bad} accepted");
        }
    }
}
