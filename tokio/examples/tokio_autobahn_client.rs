//! Runs every case of an Autobahn fuzzing server (`kosoku -m fuzzingserver`) through the
//! tokio client, echoing each message, then asks the server to write its reports.
//!
//! ```text
//! cargo run --release -p duplex-tokio --example tokio_autobahn_client -- ws://127.0.0.1:9001 duplex-tokio
//! ```

use std::process::ExitCode;

use duplex_tokio::{CloseCode, Error, connect_with};

#[path = "common/autobahn.rs"]
mod autobahn;
use autobahn::config;

async fn case_count(base: &str) -> Result<u32, String> {
    let url = format!("{base}/getCaseCount");
    let (ws, _) = connect_with(&url, config())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let count = match ws.recv().await {
        Some(Ok(m)) => {
            let text = String::from_utf8_lossy(m.as_bytes()).into_owned();
            text.trim()
                .parse::<u32>()
                .map_err(|_| format!("{url}: case count {text:?} is not a number"))?
        }
        Some(Err(e)) => return Err(format!("{url}: {e}")),
        None => return Err(format!("{url}: closed before the case count")),
    };
    // The server closes after sending the count; answer and wait for the end.
    let _ = ws.close(CloseCode::Normal, "").await;
    while ws.recv().await.is_some() {}
    Ok(count)
}

/// Echoes every message of one case until the connection ends, however it ends: failing the
/// connection is often the expected outcome of a case.
async fn run_case(base: &str, case: u32, agent: &str) {
    let url = format!("{base}/runCase?case={case}&agent={agent}");
    let ws = match connect_with(&url, config()).await {
        Ok((ws, _)) => ws,
        Err(e) => return eprintln!("case {case}: {e}"),
    };
    while let Some(message) = ws.recv().await {
        match message {
            Ok(m) => match ws.send(m).await {
                Ok(()) | Err(Error::Closed) => {}
                Err(e) => eprintln!("case {case}: echo not sent: {e}"),
            },
            Err(Error::Protocol(_)) => return,
            Err(e) => return eprintln!("case {case}: {e}"),
        }
    }
}

async fn update_reports(base: &str, agent: &str) -> Result<(), String> {
    let url = format!("{base}/updateReports?agent={agent}");
    let (ws, _) = connect_with(&url, config())
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    // Some fuzzing servers drop TCP right after writing the reports: any end is fine.
    while let Some(Ok(_)) = ws.recv().await {}
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(base), Some(agent)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: autobahn_client ws://HOST:PORT AGENT");
        return ExitCode::from(2);
    };
    let base = base.trim_end_matches('/');
    let result = match case_count(base).await {
        Ok(count) => {
            eprintln!("autobahn_client: {count} cases");
            for case in 1..=count {
                run_case(base, case, agent).await;
            }
            update_reports(base, agent).await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("autobahn_client: {e}");
            ExitCode::FAILURE
        }
    }
}
