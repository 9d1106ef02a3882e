//! Measures the server HTTP API (docs/API.md): API publishes per second over keep-alive
//! connections and the time from a publish to its delivery to a room member.
//!
//! ```text
//! duplex serve --listen 127.0.0.1:9302 --threads 2 --api-key bench &
//! cargo run --release -p duplex --example api_bench -- 127.0.0.1:9302 bench 4 5 [DEPTH]
//! #                                                    ADDR           KEY   connections seconds
//! ```
//!
//! Each of the connections publishes to `bench/room` in a loop, `DEPTH` requests pipelined
//! (default 1: one request, its answer, the next), for the given seconds; one WebSocket member
//! of the room reads every message. Each publish carries the time it was sent; the member
//! records the publish → delivery time. Prints publishes per second, the HTTP round trip and
//! the publish → delivery percentiles, and checks that the member got every publish exactly
//! once and in seq order.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use duplex::client::{Client, ClientEvent, ClientOptions};
use duplex_core::message::Message;

const ROOM: &str = "bench/room";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn request(key: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /api/publish HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Reads one `Content-Length` framed answer from `buf` + the socket; its status.
fn answer(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<u16, String> {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                buf.drain(..end + 4 + length);
                return Ok(status);
            }
        }
        let mut chunk = [0u8; 64 * 1024];
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the server closed the connection".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, key, connections, seconds, rest @ ..] = args.as_slice() else {
        return Err("usage: api_bench ADDR KEY CONNECTIONS SECONDS [DEPTH]".into());
    };
    let addr: SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
    let connections: usize = connections.parse().map_err(|e| format!("{e}"))?;
    let duration = Duration::from_secs_f64(seconds.parse().map_err(|e| format!("{e}"))?);
    let depth: usize = rest
        .first()
        .map_or(Ok(1), |d| d.parse())
        .map_err(|e| format!("{e}"))?;
    let epoch = Instant::now();

    let options = ClientOptions::default().with_subprotocol("duplex.v1");
    let mut member =
        Client::connect(&format!("ws://{addr}/ws"), options).map_err(|e| format!("member: {e}"))?;
    member
        .send_text(r#"{"type":"hello","client":"bench-member"}"#)
        .map_err(|e| e.to_string())?;
    member
        .send_text(&format!(r#"{{"type":"join","id":1,"room":"{ROOM}"}}"#))
        .map_err(|e| e.to_string())?;
    let mut first_seq = None;
    while first_seq.is_none() {
        match member.recv_timeout(Duration::from_secs(5)) {
            Ok(ClientEvent::Message(Message::Text(text))) => {
                let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                if v["type"] == "joined" {
                    first_seq = v["seq"].as_u64();
                }
            }
            Ok(_) => {}
            Err(e) => return Err(format!("member: {e}")),
        }
    }
    let first_seq = first_seq.unwrap_or(0);

    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for _ in 0..connections {
        let (key, stop) = (key.clone(), Arc::clone(&stop));
        publishers.push(std::thread::spawn(move || -> Result<Vec<f64>, String> {
            let mut stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
            stream.set_nodelay(true).map_err(|e| e.to_string())?;
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .map_err(|e| e.to_string())?;
            let mut buf = Vec::new();
            let mut round_trips = Vec::new();
            let mut sent: std::collections::VecDeque<Instant> = Default::default();
            loop {
                let stopping = stop.load(Ordering::Relaxed);
                while !stopping && sent.len() < depth {
                    let now = Instant::now();
                    let t = now.duration_since(epoch).as_nanos() as u64;
                    let body = format!(r#"{{"room":"{ROOM}","data":{{"t":{t}}}}}"#);
                    stream
                        .write_all(&request(&key, &body))
                        .map_err(|e| e.to_string())?;
                    sent.push_back(now);
                }
                let Some(at) = sent.pop_front() else {
                    return Ok(round_trips);
                };
                let status = answer(&mut stream, &mut buf)?;
                if status != 200 {
                    return Err(format!("publish answered {status}"));
                }
                round_trips.push(at.elapsed().as_secs_f64() * 1e3);
            }
        }));
    }
    let started = Instant::now();
    let mut deliveries = Vec::new();
    let mut next_seq = first_seq + 1;
    let mut done_at = None;
    loop {
        if done_at.is_none() && started.elapsed() >= duration {
            stop.store(true, Ordering::Relaxed);
            done_at = Some(Instant::now());
        }
        let wait = if done_at.is_some() {
            Duration::from_millis(500)
        } else {
            Duration::from_millis(100)
        };
        match member.recv_timeout(wait) {
            Ok(ClientEvent::Message(Message::Text(text))) => {
                let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                if v["type"] == "gap" {
                    return Err(format!("the member fell behind the publishers: {v}"));
                }
                if v["type"] != "message" {
                    continue;
                }
                let seq = v["seq"].as_u64().unwrap_or(0);
                if seq != next_seq {
                    return Err(format!("member got seq {seq}, expected {next_seq}"));
                }
                next_seq += 1;
                let t = v["data"]["t"].as_u64().unwrap_or(0);
                let now = epoch.elapsed().as_nanos() as u64;
                deliveries.push(now.saturating_sub(t) as f64 / 1e6);
            }
            Ok(_) => {}
            Err(duplex::client::ClientError::Timeout) if done_at.is_some() => break,
            Err(duplex::client::ClientError::Timeout) => {}
            Err(e) => return Err(format!("member: {e}")),
        }
    }
    let elapsed = done_at.map_or(duration, |d| d.duration_since(started));
    let mut round_trips = Vec::new();
    for publisher in publishers {
        round_trips.extend(publisher.join().map_err(|_| "a publisher panicked")??);
    }
    if round_trips.len() != deliveries.len() {
        return Err(format!(
            "{} publishes answered, {} delivered",
            round_trips.len(),
            deliveries.len()
        ));
    }
    round_trips.sort_by(f64::total_cmp);
    deliveries.sort_by(f64::total_cmp);
    println!(
        "{connections} keep-alive connections, depth {depth}: {} publishes in {:.2} s = {:.0} publishes/s",
        round_trips.len(),
        elapsed.as_secs_f64(),
        round_trips.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "HTTP round trip ms: p50 {:.3} p99 {:.3} max {:.3}",
        percentile(&round_trips, 0.5),
        percentile(&round_trips, 0.99),
        percentile(&round_trips, 1.0)
    );
    println!(
        "publish -> delivery ms: p50 {:.3} p99 {:.3} max {:.3} (every publish delivered once, in seq order)",
        percentile(&deliveries, 0.5),
        percentile(&deliveries, 0.99),
        percentile(&deliveries, 1.0)
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("api_bench: {e}");
            ExitCode::FAILURE
        }
    }
}
