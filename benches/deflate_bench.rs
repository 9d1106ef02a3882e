//! permessage-deflate throughput and ratio of duplex-core on a file of messages.
//!
//! ```text
//! deflate-bench PAYLOADS.jsonl [--rounds N] [--level L]
//! ```
//!
//! Every line of the file is one message (the newline excluded); see
//! `benches/deflate_payloads.py`. For each mode, with and without server context takeover,
//! window bits 15, zlib level 6 (duplex's default), threshold 0 (every message compressed):
//! a server and a client `Connection` negotiate permessage-deflate over an in-memory handshake;
//! the server sends every message in order as a binary message and takes each frame
//! (`send_binary` + `poll_transmit`: compression, framing and the copy into the output buffer
//! are timed), then the client receives the frames one by one (`receive` + `poll_event`:
//! inflation, frame parsing and the copy into the receive buffer are timed). Each round starts
//! on a fresh connection; every round's output is checked against the input. Binary messages
//! keep UTF-8 validation out of the numbers, as the Node `ws` bench
//! (`benches/peers/node/deflate-bench.mjs`) measures the codec alone.
//!
//! Prints one JSON line on stdout: per mode the compressed payload bytes, the per-message
//! compressed sizes (first round) and each round's compress and decompress times in seconds;
//! `benches/deflate_compare.sh` turns it and the `ws` line into tables. A summary goes to
//! stderr.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use duplex_core::deflate::{DeflateConfig, PERMESSAGE_DEFLATE};
use duplex_core::frame::FrameHeader;
use duplex_core::{Accept, ClientRequest, Config, Connection, Event, Message};

/// (name, server_no_context_takeover)
const MODES: [(&str, bool); 2] = [("context-takeover", false), ("no-context-takeover", true)];
const WINDOW_BITS: u8 = 15;

struct Options {
    path: String,
    rounds: usize,
    level: u8,
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        path: String::new(),
        rounds: 5,
        level: DeflateConfig::default().level,
    };
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<usize, String> {
            args.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--rounds" => options.rounds = number("--rounds")?.max(1),
            "--level" => {
                options.level = u8::try_from(number("--level")?)
                    .ok()
                    .filter(|l| *l <= 9)
                    .ok_or("--level is 0..=9")?;
            }
            "-h" | "--help" => return Err(String::new()),
            path if !path.starts_with('-') && options.path.is_empty() => options.path = arg,
            other => return Err(format!("unexpected argument {other}")),
        }
    }
    if options.path.is_empty() {
        return Err("no payload file".into());
    }
    Ok(options)
}

fn load(path: &str) -> Result<Vec<Vec<u8>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    let messages: Vec<Vec<u8>> = data
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    if messages.is_empty() {
        return Err(format!("{path}: no messages"));
    }
    Ok(messages)
}

/// A server and a client connection, open, with permessage-deflate negotiated as asked.
fn open_pair(
    server_no_context_takeover: bool,
    level: u8,
) -> Result<(Connection, Connection), String> {
    let now = Duration::ZERO;
    let deflate = DeflateConfig {
        server_no_context_takeover,
        client_no_context_takeover: false,
        server_max_window_bits: WINDOW_BITS,
        client_max_window_bits: WINDOW_BITS,
        level,
        threshold: 0,
    };
    let config = Config::default().with_deflate(Some(deflate));
    let request = ClientRequest::from_url("ws://127.0.0.1/bench").map_err(|e| e.to_string())?;
    // The client sends nothing after its request: its masking keys never matter.
    let random = Box::new(|buf: &mut [u8]| buf.fill(0x5a));
    let mut client = Connection::client(request, config.clone(), random, now);
    let mut server = Connection::server(config, now);

    let head = client
        .poll_transmit()
        .ok_or("the client wrote no request")?;
    server.receive(now, &head);
    match server.poll_event() {
        Some(Event::Request(_)) => {}
        other => return Err(format!("server: expected the request, got {other:?}")),
    }
    server
        .accept(Accept::default())
        .map_err(|e| format!("accept: {e}"))?;
    let response = server
        .poll_transmit()
        .ok_or("the server wrote no response")?;
    client.receive(now, &response);
    for (name, conn) in [("server", &mut server), ("client", &mut client)] {
        match conn.poll_event() {
            Some(Event::Open) => {}
            other => return Err(format!("{name}: expected Open, got {other:?}")),
        }
    }

    let agreed = client
        .response()
        .and_then(|r| {
            r.extensions
                .iter()
                .find(|e| e.name.eq_ignore_ascii_case(PERMESSAGE_DEFLATE))
        })
        .ok_or("permessage-deflate was not negotiated")?;
    let no_takeover = agreed
        .params
        .iter()
        .any(|(name, _)| name == "server_no_context_takeover");
    if no_takeover != server_no_context_takeover {
        return Err(format!("negotiated {agreed:?}, not the mode asked for"));
    }
    Ok((server, client))
}

struct Round {
    compress: Duration,
    decompress: Duration,
    /// Compressed payload size of each message.
    sizes: Vec<usize>,
}

fn round(
    messages: &[Vec<u8>],
    server_no_context_takeover: bool,
    level: u8,
) -> Result<Round, String> {
    let (mut server, mut client) = open_pair(server_no_context_takeover, level)?;
    let now = Duration::ZERO;

    let mut frames: Vec<Bytes> = Vec::with_capacity(messages.len());
    let start = Instant::now();
    for message in messages {
        server
            .send_binary(message)
            .map_err(|e| format!("send: {e}"))?;
        frames.push(server.poll_transmit().ok_or("send wrote nothing")?);
    }
    let compress = start.elapsed();

    let mut received: Vec<Bytes> = Vec::with_capacity(messages.len());
    let start = Instant::now();
    for frame in &frames {
        client.receive(now, frame);
        match client.poll_event() {
            Some(Event::Message(Message::Binary(data))) => received.push(data),
            other => return Err(format!("client: expected a binary message, got {other:?}")),
        }
    }
    let decompress = start.elapsed();

    let mut sizes = Vec::with_capacity(frames.len());
    for (i, (frame, (sent, got))) in frames
        .iter()
        .zip(messages.iter().zip(&received))
        .enumerate()
    {
        let (header, header_len) = FrameHeader::decode(frame)
            .ok()
            .flatten()
            .ok_or_else(|| format!("message {i}: unreadable frame header"))?;
        if !header.rsv1 || frame.len() != header_len + header.payload_len as usize {
            return Err(format!("message {i}: expected one compressed frame"));
        }
        if sent[..] != got[..] {
            return Err(format!(
                "message {i}: the inflated message differs from the one sent"
            ));
        }
        sizes.push(frame.len() - header_len);
    }
    Ok(Round {
        compress,
        decompress,
        sizes,
    })
}

fn seconds(list: &[Duration]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|d| format!("{:.6}", d.as_secs_f64()))
        .collect();
    format!("[{}]", items.join(","))
}

fn run(options: &Options) -> Result<String, String> {
    let messages = load(&options.path)?;
    let raw: usize = messages.iter().map(Vec::len).sum();
    let mut json = format!(
        r#"{{"label":"duplex","codec":"zlib-rs","level":{},"window_bits":{WINDOW_BITS},"messages":{},"raw_bytes":{raw},"rounds":{},"modes":{{"#,
        options.level,
        messages.len(),
        options.rounds
    );
    for (m, (name, no_takeover)) in MODES.into_iter().enumerate() {
        let mut compress = Vec::new();
        let mut decompress = Vec::new();
        let mut sizes = Vec::new();
        for _ in 0..options.rounds {
            let r =
                round(&messages, no_takeover, options.level).map_err(|e| format!("{name}: {e}"))?;
            if !sizes.is_empty() && sizes != r.sizes {
                return Err(format!("{name}: compressed sizes differ between rounds"));
            }
            compress.push(r.compress);
            decompress.push(r.decompress);
            sizes = r.sizes;
        }
        let compressed: usize = sizes.iter().sum();
        let best = |list: &[Duration]| list.iter().min().copied().unwrap_or_default();
        let mbps = |d: Duration| raw as f64 / d.as_secs_f64().max(1e-9) / 1e6;
        eprintln!(
            "duplex {name}: ratio {:.4}, compress {:.1} MB/s, decompress {:.1} MB/s (best of {})",
            compressed as f64 / raw as f64,
            mbps(best(&compress)),
            mbps(best(&decompress)),
            options.rounds
        );
        let sizes: Vec<String> = sizes.iter().map(usize::to_string).collect();
        let _ = write!(
            json,
            r#"{}"{name}":{{"compressed_bytes":{compressed},"compress_s":{},"decompress_s":{},"sizes":[{}]}}"#,
            if m == 0 { "" } else { "," },
            seconds(&compress),
            seconds(&decompress),
            sizes.join(",")
        );
    }
    json.push_str("}}");
    Ok(json)
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("deflate-bench: {e}");
            }
            eprintln!("usage: deflate-bench PAYLOADS.jsonl [--rounds N] [--level 0..9]");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("deflate-bench: FAIL: {e}");
            ExitCode::FAILURE
        }
    }
}
