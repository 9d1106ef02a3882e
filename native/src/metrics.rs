//! Server counters, rendered in the Prometheus text format at `GET /metrics`.
//!
//! Hot counters (messages, bytes) live in one [`WorkerMetrics`] per worker thread, each on its
//! own cache line, so workers never contend; `/metrics` sums them. Rare events (closes by code,
//! handshake failures by reason) go to maps behind a mutex.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counters owned by one worker thread (written only by it, read by `/metrics`).
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct WorkerMetrics {
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub connections_open: AtomicU64,
    /// Output queued on this worker's connections and not yet taken by their sockets.
    pub output_buffered: AtomicU64,
}

impl WorkerMetrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        // Only the owning worker writes: a relaxed load + store is enough and avoids a locked
        // instruction on the hot path.
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    pub(crate) fn sub(counter: &AtomicU64, n: u64) {
        counter.store(
            counter.load(Ordering::Relaxed).saturating_sub(n),
            Ordering::Relaxed,
        );
    }
}

/// Every counter of one server.
#[derive(Debug)]
pub struct Metrics {
    workers: Vec<WorkerMetrics>,
    /// TCP connections currently held (handshaking, open or closing), across workers.
    pub(crate) tcp_connections: AtomicUsize,
    pub accepted_total: AtomicU64,
    pub rejected_full_total: AtomicU64,
    pub backpressure_pauses_total: AtomicU64,
    pub http_requests_total: AtomicU64,
    closes: Mutex<BTreeMap<u16, u64>>,
    handshake_failures: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    pub fn new(workers: usize) -> Metrics {
        Metrics {
            workers: (0..workers).map(|_| WorkerMetrics::default()).collect(),
            tcp_connections: AtomicUsize::new(0),
            accepted_total: AtomicU64::new(0),
            rejected_full_total: AtomicU64::new(0),
            backpressure_pauses_total: AtomicU64::new(0),
            http_requests_total: AtomicU64::new(0),
            closes: Mutex::new(BTreeMap::new()),
            handshake_failures: Mutex::new(BTreeMap::new()),
        }
    }

    pub fn worker(&self, index: usize) -> &WorkerMetrics {
        &self.workers[index]
    }

    /// WebSocket connections open right now (handshake completed, Closed not yet reported).
    pub fn connections_open(&self) -> u64 {
        self.sum(|w| &w.connections_open)
    }

    /// TCP connections held right now, in any state.
    pub fn tcp_connections(&self) -> usize {
        self.tcp_connections.load(Ordering::Relaxed)
    }

    fn sum(&self, field: impl Fn(&WorkerMetrics) -> &AtomicU64) -> u64 {
        self.workers
            .iter()
            .map(|w| field(w).load(Ordering::Relaxed))
            .sum()
    }

    pub(crate) fn record_close(&self, code: u16) {
        let mut map = self.closes.lock().unwrap_or_else(|e| e.into_inner());
        *map.entry(code).or_default() += 1;
    }

    pub(crate) fn record_handshake_failure(&self, reason: &'static str) {
        let mut map = self
            .handshake_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        *map.entry(reason).or_default() += 1;
    }

    /// Number of closes recorded with this code.
    pub fn closes_with(&self, code: u16) -> u64 {
        let map = self.closes.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&code).copied().unwrap_or(0)
    }

    /// The Prometheus text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut gauge = |name: &str, help: &str, value: u64| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            );
        };
        gauge(
            "duplex_connections_open",
            "WebSocket connections currently open.",
            self.connections_open(),
        );
        gauge(
            "duplex_output_buffered_bytes",
            "Bytes queued for connections and not yet taken by their sockets.",
            self.sum(|w| &w.output_buffered),
        );
        gauge(
            "duplex_tcp_connections",
            "TCP connections currently held, in any state.",
            self.tcp_connections() as u64,
        );
        let counters: [(&str, &str, u64); 8] = [
            (
                "duplex_connections_accepted_total",
                "TCP connections accepted.",
                self.accepted_total.load(Ordering::Relaxed),
            ),
            (
                "duplex_connections_rejected_full_total",
                "Connections refused with HTTP 503 because --max-connections was reached.",
                self.rejected_full_total.load(Ordering::Relaxed),
            ),
            (
                "duplex_messages_received_total",
                "WebSocket messages received.",
                self.sum(|w| &w.messages_in),
            ),
            (
                "duplex_messages_sent_total",
                "WebSocket messages sent.",
                self.sum(|w| &w.messages_out),
            ),
            (
                "duplex_received_bytes_total",
                "Payload bytes of the messages received.",
                self.sum(|w| &w.bytes_in),
            ),
            (
                "duplex_sent_bytes_total",
                "Payload bytes of the messages sent.",
                self.sum(|w| &w.bytes_out),
            ),
            (
                "duplex_backpressure_pauses_total",
                "Times a connection stopped being read because its unsent output passed --max-backlog.",
                self.backpressure_pauses_total.load(Ordering::Relaxed),
            ),
            (
                "duplex_http_requests_total",
                "Plain HTTP requests answered (not upgrades).",
                self.http_requests_total.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            );
        }
        out.push_str(
            "# HELP duplex_closes_total WebSocket connections closed, by close code \
             (1006: without a close handshake).\n# TYPE duplex_closes_total counter\n",
        );
        for (code, n) in self.closes.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "duplex_closes_total{{code=\"{code}\"}} {n}");
        }
        out.push_str(
            "# HELP duplex_handshake_failures_total Upgrade requests refused, by reason.\n\
             # TYPE duplex_handshake_failures_total counter\n",
        );
        for (reason, n) in self
            .handshake_failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "duplex_handshake_failures_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_sums_workers_and_lists_labels() {
        let m = Metrics::new(2);
        WorkerMetrics::add(&m.worker(0).messages_in, 3);
        WorkerMetrics::add(&m.worker(1).messages_in, 4);
        m.record_close(1000);
        m.record_close(1000);
        m.record_close(1002);
        m.record_handshake_failure("invalid_key");
        let text = m.render();
        assert!(
            text.contains("duplex_messages_received_total 7\n"),
            "{text}"
        );
        assert!(text.contains("duplex_closes_total{code=\"1000\"} 2\n"));
        assert!(text.contains("duplex_closes_total{code=\"1002\"} 1\n"));
        assert!(text.contains("duplex_handshake_failures_total{reason=\"invalid_key\"} 1\n"));
        // Every sample line belongs to a declared metric.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(
                text.contains(&format!("# TYPE {name} ")),
                "undeclared {name}"
            );
        }
    }
}
