//! The figures of a run, as a human summary and as one JSON line.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    /// From a histogram of nanoseconds; `None` when it is empty.
    pub fn from_histogram(h: &Histogram<u64>) -> Option<Latency> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Latency {
            p50: us(h.value_at_quantile(0.5)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        })
    }
}

/// The server's CPU and memory, when its pid was given.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerFigures {
    /// CPU time (user + system) spent inside the window, in seconds.
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
    pub hwm_bytes: u64,
    /// Idle mode: resident memory before opening and once all were open (plus 1 s).
    pub rss_before: Option<u64>,
    pub rss_after_open: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct Summary {
    pub mode: &'static str,
    pub label: String,
    pub url: String,
    pub connections: usize,
    pub size: usize,
    pub text: bool,
    pub in_flight: usize,
    pub threads: usize,
    pub duration: f64,
    pub warmup: f64,
    /// Round trips (echo) or handshakes (connect) completed in the window.
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub latency: Option<Latency>,
    pub server: Option<ServerFigures>,
    /// This process's CPU use over the window, in percent of one core.
    pub client_cpu_percent: f64,
    /// CPU used over the window by everything else on the machine (other processes, and the
    /// server too when no pid was given), in percent of one core: interference to be aware of.
    pub other_cpu_percent: f64,
    /// wss://: what the first completed TLS handshake negotiated (version, suite, group).
    pub tls: Option<String>,
}

impl Summary {
    pub fn rate(&self) -> f64 {
        if self.duration > 0.0 {
            self.ops as f64 / self.duration
        } else {
            0.0
        }
    }

    fn server_cpu_us_per_op(&self) -> Option<f64> {
        let s = self.server.as_ref()?;
        (self.ops > 0).then(|| s.cpu_seconds * 1e6 / self.ops as f64)
    }

    fn idle_bytes_per_connection(&self) -> Option<f64> {
        let s = self.server.as_ref()?;
        let (before, after) = (s.rss_before?, s.rss_after_open?);
        Some((after as f64 - before as f64) / self.connections.max(1) as f64)
    }

    fn kind(&self) -> &'static str {
        if self.text { "text" } else { "binary" }
    }

    pub fn human(&self) -> String {
        let mut out = String::new();
        let label = if self.label.is_empty() {
            String::new()
        } else {
            format!("[{}] ", self.label)
        };
        let _ = match self.mode {
            "echo" => writeln!(
                out,
                "{label}echo {}: {} connections, {} B {}, {} in flight, {} s (+{} s warm-up), {} thread(s)",
                self.url,
                self.connections,
                self.size,
                self.kind(),
                self.in_flight,
                self.duration,
                self.warmup,
                self.threads
            ),
            "connect" => writeln!(
                out,
                "{label}connect {}: {} concurrent, {} s (+{} s warm-up), {} thread(s)",
                self.url, self.connections, self.duration, self.warmup, self.threads
            ),
            _ => writeln!(
                out,
                "{label}idle {}: {} connections held {} s",
                self.url, self.connections, self.duration
            ),
        };
        match self.mode {
            "echo" => {
                let _ = writeln!(
                    out,
                    "  round trips: {} ({:.0} msg/s, {:.1} MB/s each way)",
                    self.ops,
                    self.rate(),
                    self.rate() * self.size as f64 / 1e6
                );
            }
            "connect" => {
                let _ = writeln!(
                    out,
                    "  handshakes: {} ({:.0}/s), errors: {}",
                    self.ops,
                    self.rate(),
                    self.errors
                );
                if let Some(e) = &self.first_error {
                    let _ = writeln!(out, "  first error: {e}");
                }
            }
            _ => {}
        }
        if let Some(l) = &self.latency {
            let _ = writeln!(
                out,
                "  latency: p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs, mean {:.1} µs",
                l.p50, l.p99, l.p999, l.max, l.mean
            );
        }
        if let Some(s) = &self.server {
            if let Some(per) = self.idle_bytes_per_connection() {
                let _ = writeln!(
                    out,
                    "  server memory: {:.0} bytes per idle connection (RSS {:.1} MiB before, {:.1} MiB with all open)",
                    per,
                    s.rss_before.unwrap_or(0) as f64 / 1048576.0,
                    s.rss_after_open.unwrap_or(0) as f64 / 1048576.0
                );
            }
            let per_op = self
                .server_cpu_us_per_op()
                .map_or_else(String::new, |us| format!("{us:.2} µs per operation, "));
            let _ = writeln!(
                out,
                "  server: {per_op}{:.0}% of a core, RSS {:.1} MiB (peak {:.1} MiB)",
                s.cpu_seconds * 100.0 / self.duration.max(1e-9),
                s.rss_bytes as f64 / 1048576.0,
                s.hwm_bytes as f64 / 1048576.0
            );
        }
        if let Some(tls) = &self.tls {
            let _ = writeln!(out, "  TLS: {tls}");
        }
        let _ = writeln!(
            out,
            "  load generator: {:.0}% of a core; everything else on the machine: {:.0}%",
            self.client_cpu_percent, self.other_cpu_percent
        );
        out
    }

    pub fn json(&self) -> String {
        let mut o = String::from("{");
        let mut field = |name: &str, value: String| {
            if o.len() > 1 {
                o.push(',');
            }
            let _ = write!(o, "\"{name}\":{value}");
        };
        field("mode", quote(self.mode));
        field("label", quote(&self.label));
        field("url", quote(&self.url));
        field("connections", self.connections.to_string());
        field("size", self.size.to_string());
        field("kind", quote(self.kind()));
        field("in_flight", self.in_flight.to_string());
        field("threads", self.threads.to_string());
        field("duration_s", number(self.duration));
        field("warmup_s", number(self.warmup));
        field("ops", self.ops.to_string());
        let rate_name = if self.mode == "connect" {
            "handshakes_per_s"
        } else {
            "msg_per_s"
        };
        field(rate_name, number(self.rate()));
        field("errors", self.errors.to_string());
        field(
            "first_error",
            self.first_error.as_deref().map_or("null".into(), quote),
        );
        let latency = self.latency.map_or("null".into(), |l| {
            format!(
                "{{\"p50\":{},\"p99\":{},\"p999\":{},\"max\":{},\"mean\":{}}}",
                number(l.p50),
                number(l.p99),
                number(l.p999),
                number(l.max),
                number(l.mean)
            )
        });
        field("latency_us", latency);
        let s = self.server;
        field(
            "server_cpu_s",
            s.map_or("null".into(), |s| number(s.cpu_seconds)),
        );
        field(
            "server_cpu_us_per_op",
            self.server_cpu_us_per_op().map_or("null".into(), number),
        );
        field(
            "server_rss_bytes",
            s.map_or("null".into(), |s| s.rss_bytes.to_string()),
        );
        field(
            "server_hwm_bytes",
            s.map_or("null".into(), |s| s.hwm_bytes.to_string()),
        );
        field(
            "server_rss_before_bytes",
            s.and_then(|s| s.rss_before)
                .map_or("null".into(), |v| v.to_string()),
        );
        field(
            "server_rss_after_open_bytes",
            s.and_then(|s| s.rss_after_open)
                .map_or("null".into(), |v| v.to_string()),
        );
        field(
            "idle_bytes_per_conn",
            self.idle_bytes_per_connection()
                .map_or("null".into(), number),
        );
        field("client_cpu_pct", number(self.client_cpu_percent));
        field("other_cpu_pct", number(self.other_cpu_percent));
        field("tls", self.tls.as_deref().map_or("null".into(), quote));
        o.push('}');
        o
    }
}

pub fn number(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "null".into()
    }
}

pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        assert_eq!(quote("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }
}
