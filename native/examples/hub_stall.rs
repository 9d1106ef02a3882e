//! Measures how much one client's large frames delay everyone else on a `duplex serve`: a
//! bystander sends `ping` every 20 ms and times each `pong`, while flooding clients send large
//! `publish` frames whose `data` is a long array of empty arrays (the worst case for a JSON
//! parser: ~3 bytes of text per value). Prints the bystander's round-trip percentiles.
//!
//! ```text
//! duplex serve --listen 127.0.0.1:9301 --threads 2 [--max-message-size 16777216] &
//! cargo run --release -p duplex --example hub_stall -- ws://127.0.0.1:9301/ws 8 3 10
//! #                                                     URL          MiB/frame floods seconds
//! ```
//!
//! A flooder whose connection the server closes (1009 for a frame above `--max-message-size`)
//! reconnects and goes on; the counts of frames sent and of reconnects are printed too.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use duplex::client::{Client, ClientError, ClientEvent, ClientOptions};
use duplex_core::message::Message;

fn connect(url: &str, client: &str) -> Result<Client, String> {
    let options = ClientOptions::default()
        .with_subprotocol("duplex.v1")
        .with_connect_timeout(Duration::from_secs(5));
    let mut ws = Client::connect(url, options).map_err(|e| format!("{url}: {e}"))?;
    ws.send_text(&format!(r#"{{"type":"hello","client":"{client}"}}"#))
        .map_err(|e| format!("hello: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let ClientEvent::Message(Message::Text(text)) = ws
            .recv_timeout(Duration::from_secs(5))
            .map_err(|e| format!("welcome: {e}"))?
        {
            if text.as_str().contains(r#""welcome""#) {
                return Ok(ws);
            }
        }
    }
    Err("no welcome within 5 s".into())
}

fn flood(
    url: &str,
    n: usize,
    frame: &str,
    stop: &AtomicBool,
    sent: &AtomicU64,
    reconnects: &AtomicU64,
) {
    let client = format!("flood-{n}");
    while !stop.load(Ordering::Relaxed) {
        let Ok(mut ws) = connect(url, &client) else {
            reconnects.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        let _ = ws.send_text(r#"{"type":"join","id":0,"room":"app/flood"}"#);
        while !stop.load(Ordering::Relaxed) {
            if ws.send_text(frame).is_err() {
                break;
            }
            sent.fetch_add(1, Ordering::Relaxed);
            // Read what came back (errors, closes) so that this client is never a slow consumer.
            let closed = loop {
                match ws.try_recv() {
                    Ok(Some(ClientEvent::Closed(_))) | Err(_) => break true,
                    Ok(Some(_)) => {}
                    Ok(None) => break false,
                }
            };
            if closed {
                break;
            }
        }
        reconnects.fetch_add(1, Ordering::Relaxed);
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let url = args
        .first()
        .ok_or("usage: hub_stall URL [MIB] [FLOODERS] [SECONDS]")?;
    let number = |i: usize, default: f64| -> Result<f64, String> {
        args.get(i).map_or(Ok(default), |a| {
            a.parse()
                .map_err(|_| format!("argument {a:?} is not a number"))
        })
    };
    let mib = number(1, 8.0)?;
    let flooders = number(2, 3.0)? as usize;
    let seconds = number(3, 10.0)?;
    let values = ((mib * 1024.0 * 1024.0) / 3.0) as usize;
    let frame = format!(
        r#"{{"type":"publish","id":1,"room":"app/flood","data":[{}[]]}}"#,
        "[],".repeat(values)
    );

    let mut bystander = connect(url, "bystander")?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let reconnects = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..flooders)
        .map(|n| {
            let (url, frame) = (url.clone(), frame.clone());
            let (stop, sent, reconnects) = (stop.clone(), sent.clone(), reconnects.clone());
            std::thread::spawn(move || flood(&url, n, &frame, &stop, &sent, &reconnects))
        })
        .collect();

    let mut rtts = Vec::new();
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut id = 0u64;
    while Instant::now() < end {
        id += 1;
        let started = Instant::now();
        bystander
            .send_text(&format!(r#"{{"type":"ping","id":{id}}}"#))
            .map_err(|e| format!("ping: {e}"))?;
        let pong = format!(r#""id":{id}"#);
        loop {
            match bystander.recv_timeout(Duration::from_secs(30)) {
                Ok(ClientEvent::Message(Message::Text(t)))
                    if t.as_str().contains("pong") && t.as_str().contains(&pong) =>
                {
                    break;
                }
                Ok(ClientEvent::Closed(c)) => return Err(format!("bystander closed: {c:?}")),
                Ok(_) => {}
                Err(ClientError::Timeout) => return Err(format!("no pong for ping {id} in 30 s")),
                Err(e) => return Err(format!("bystander: {e}")),
            }
        }
        rtts.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    rtts.sort();
    let at = |p: f64| rtts[((rtts.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "frame {:.1} MiB x {flooders} flooders for {seconds} s: {} frames sent, {} reconnects; \
         bystander ping over {} pings: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        frame.len() as f64 / (1024.0 * 1024.0),
        sent.load(Ordering::Relaxed),
        reconnects.load(Ordering::Relaxed),
        rtts.len(),
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hub_stall: {e}");
            ExitCode::FAILURE
        }
    }
}
