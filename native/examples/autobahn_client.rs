//! Runs every case of an Autobahn fuzzing server (`kosoku -m fuzzingserver`) through the
//! Duplex client, echoing each message, then asks the server to write its reports.
//!
//! A `wss://` base works too (the server certificate is checked against the system trust store).
//!
//! ```text
//! cargo run --release -p duplex --example autobahn_client -- ws://127.0.0.1:9001 duplex
//! ```

use std::process::ExitCode;

use duplex::client::{Client, ClientError, ClientEvent, ClientOptions};
use duplex_core::close::CloseCode;
use duplex_core::deflate::DeflateConfig;
use duplex_core::limits::Config;

fn options() -> ClientOptions {
    // Autobahn sends messages up to 16 MiB (cases 9.*). Every message is compressed
    // (threshold 0): the fuzzing server mishandles uncompressed text messages on a compressed
    // connection (cases 12.*.1 and 13.*.1), although RFC 7692 allows them.
    let deflate = DeflateConfig {
        threshold: 0,
        ..DeflateConfig::default()
    };
    let config = Config::default()
        .with_deflate(Some(deflate))
        .with_max_message_size(64 << 20)
        .with_max_frame_size(64 << 20);
    ClientOptions::default().with_config(config)
}

fn case_count(base: &str) -> Result<u32, String> {
    let url = format!("{base}/getCaseCount");
    let mut client = Client::connect(&url, options()).map_err(|e| format!("{url}: {e}"))?;
    let count = loop {
        match client.recv() {
            Ok(ClientEvent::Message(m)) => {
                let text = String::from_utf8_lossy(m.as_bytes()).into_owned();
                break text
                    .trim()
                    .parse::<u32>()
                    .map_err(|_| format!("{url}: case count {text:?} is not a number"))?;
            }
            Ok(ClientEvent::Closed(c)) => {
                return Err(format!("{url}: closed ({}) before the case count", c.code));
            }
            Ok(_) => {}
            Err(e) => return Err(format!("{url}: {e}")),
        }
    };
    // The server closes after sending the count; wait for it.
    let _ = client.close(CloseCode::Normal, "");
    Ok(count)
}

/// Echoes every message of one case until the connection ends, however it ends: failing the
/// connection is often the expected outcome of a case.
fn run_case(base: &str, case: u32, agent: &str) {
    let url = format!("{base}/runCase?case={case}&agent={agent}");
    let mut client = match Client::connect(&url, options()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("case {case}: {e}");
            return;
        }
    };
    loop {
        match client.recv() {
            Ok(ClientEvent::Message(m)) => {
                if let Err(e) = client.send(&m) {
                    eprintln!("case {case}: echo not sent: {e}");
                }
            }
            Ok(ClientEvent::Closed(_)) | Err(ClientError::Closed { .. }) => return,
            Ok(ClientEvent::Ping(_) | ClientEvent::Pong(_)) => {}
            Err(e) => {
                eprintln!("case {case}: {e}");
                return;
            }
        }
    }
}

fn update_reports(base: &str, agent: &str) -> Result<(), String> {
    let url = format!("{base}/updateReports?agent={agent}");
    let mut client = Client::connect(&url, options()).map_err(|e| format!("{url}: {e}"))?;
    loop {
        match client.recv() {
            // Some fuzzing servers drop TCP right after writing the reports.
            Ok(ClientEvent::Closed(_))
            | Err(ClientError::Closed { .. } | ClientError::ConnectionReset) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(format!("{url}: {e}")),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(base), Some(agent)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: autobahn_client ws://HOST:PORT AGENT");
        return ExitCode::from(2);
    };
    let base = base.trim_end_matches('/');
    let result = case_count(base).and_then(|count| {
        eprintln!("autobahn_client: {count} cases");
        for case in 1..=count {
            run_case(base, case, agent);
        }
        update_reports(base, agent)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autobahn_client: {e}");
            ExitCode::FAILURE
        }
    }
}
