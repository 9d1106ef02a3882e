//! `fastwebsockets-echo PORT`: an echo server on fastwebsockets, upgraded through hyper 1 with
//! fastwebsockets' `upgrade` module, on a current-thread tokio runtime (the shape of its own
//! echo-server example).

use duplex_peers::{MAX_MESSAGE, listen, port_arg};
use fastwebsockets::{FragmentCollector, OpCode, WebSocketError, upgrade};
use http_body_util::Empty;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

const USAGE: &str = "fastwebsockets-echo PORT";

async fn echo(upgrade: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = upgrade.await?;
    ws.set_max_message_size(MAX_MESSAGE);
    // Pongs and the close reply are sent by fastwebsockets itself.
    ws.set_auto_pong(true);
    ws.set_auto_close(true);
    let mut ws = FragmentCollector::new(ws);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}

async fn on_request(
    mut request: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, upgrade) = upgrade::upgrade(&mut request)?;
    tokio::task::spawn(async move {
        let _ = tokio::task::unconstrained(echo(upgrade)).await;
    });
    Ok(response)
}

fn main() {
    let port = port_arg(std::env::args().nth(1).as_deref(), USAGE);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("cannot start the tokio runtime");
    runtime.block_on(async move {
        let listener = listen("fastwebsockets-echo", port).await;
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    eprintln!("fastwebsockets-echo: accept failed: {e}");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let connection = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(on_request))
                    .with_upgrades();
                let _ = connection.await;
            });
        }
    });
}
