//! `duplex connect` in pipe mode: the end of stdin must not lose the replies to the lines sent.
//! The binary runs against `duplex serve` (the binary) and against echo servers in this process
//! whose replies come late or never stop. Every wait is bounded.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use duplex::server::{
    ConnId, Ctx, Decision, Handler, Server, ServerConfig, ShutdownHandle, WorkerWaker,
};
use duplex_core::handshake::server::{Accept, Request};
use duplex_core::limits::Config;
use duplex_core::message::Message;
use serde_json::Value;

mod common;
use common::DuplexProcess;

const WAIT: Duration = Duration::from_secs(20);

fn duplex_bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_duplex"))
}

/// `duplex serve` on a free port (killed on drop) and the URL of its `/ws`.
fn serve_process() -> (DuplexProcess, String) {
    let server = DuplexProcess::start(&["serve", "--listen", "127.0.0.1:0", "--threads", "2"]);
    let ws_url = format!("ws://{}/ws", server.addr);
    (server, ws_url)
}

/// Runs `duplex connect ARGS` with `input` on stdin (closed right after) and waits for it to
/// exit, failing the test if it takes longer than `WAIT`.
fn connect(args: &[&str], input: &str) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = duplex_bin()
        .arg("connect")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let deadline = started + WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("duplex connect did not exit within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = started.elapsed();
    (child.wait_with_output().unwrap(), elapsed)
}

fn json_lines(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

fn types(lines: &[Value]) -> Vec<&str> {
    lines.iter().map(|v| v["type"].as_str().unwrap()).collect()
}

#[test]
fn pipe_mode_prints_every_duplex_v1_reply_before_closing() {
    let (_server, ws_url) = serve_process();
    for run in 0..8 {
        let (out, _) = connect(
            &["-s", "duplex.v1", &ws_url],
            "{\"type\":\"hello\"}\n{\"type\":\"ping\",\"id\":1}\n",
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "run {run}: {stderr}");
        let lines = json_lines(&out);
        assert_eq!(types(&lines), ["welcome", "pong"], "run {run}: {stderr}");
        assert_eq!(lines[1]["id"], 1);
        assert!(stderr.is_empty(), "run {run}: {stderr}");
    }
}

#[test]
fn pipe_mode_waits_for_acks_the_own_message_and_errors() {
    let (_server, ws_url) = serve_process();
    for run in 0..5 {
        let input = [
            r#"{"type":"hello"}"#,
            r#"{"type":"join","id":"j","room":"app/pipe"}"#,
            r#"{"type":"publish","id":2,"room":"app/pipe","data":{"n":1}}"#,
            r#"{"type":"publish","id":3,"room":"app/elsewhere","data":0}"#,
            r#"not json"#,
            r#"{"type":"leave","id":4,"room":"app/pipe"}"#,
        ]
        .join("\n");
        let (out, elapsed) = connect(&["-s", "duplex.v1", &ws_url], &input);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "run {run}: {stderr}");
        let lines = json_lines(&out);
        assert_eq!(
            types(&lines),
            [
                "welcome", "joined", "ack", "message", "error", "error", "left"
            ],
            "run {run}: {stderr}"
        );
        assert_eq!(lines[2]["seq"], lines[3]["seq"]);
        assert_eq!(lines[4]["code"], "not_joined");
        assert_eq!(lines[5]["code"], "bad_json");
        // Every reply is accounted for, so the close does not wait for --wait's quiet second.
        assert!(elapsed < Duration::from_secs(5), "run {run}: {elapsed:?}");
        assert!(stderr.is_empty(), "run {run}: {stderr}");
    }
}

/// Echoes every message `delay` later (`None`: never), from a timer thread that wakes the worker.
struct LateEcho {
    delay: Option<Duration>,
    /// The subprotocol chosen (the client must offer it).
    protocol: Option<&'static str>,
    waker: WorkerWaker,
    due: Arc<Mutex<Vec<(ConnId, Message)>>>,
}

impl Handler for LateEcho {
    fn on_upgrade(&mut self, _: &Request) -> Decision {
        Decision::Accept(Accept {
            protocol: self.protocol.map(str::to_owned),
            ..Accept::default()
        })
    }

    fn on_message(&mut self, _: &mut Ctx<'_>, id: ConnId, message: Message) {
        let Some(delay) = self.delay else { return };
        let (due, waker) = (Arc::clone(&self.due), self.waker.clone());
        std::thread::spawn(move || {
            std::thread::sleep(delay);
            due.lock().unwrap().push((id, message));
            waker.wake();
        });
    }

    fn on_wake(&mut self, ctx: &mut Ctx<'_>) {
        for (id, message) in self.due.lock().unwrap().drain(..) {
            // The client may be gone by now; that is what some tests check.
            let _ = ctx.send(id, &message);
        }
    }
}

/// Sends a text message to every open connection every 50 ms until stopped.
struct Chatter {
    open: Arc<Mutex<Vec<ConnId>>>,
}

impl Handler for Chatter {
    fn on_open(&mut self, _: &mut Ctx<'_>, id: ConnId) {
        self.open.lock().unwrap().push(id);
    }

    fn on_message(&mut self, _: &mut Ctx<'_>, _: ConnId, _: Message) {}

    fn on_wake(&mut self, ctx: &mut Ctx<'_>) {
        for id in self.open.lock().unwrap().iter() {
            let _ = ctx.send(*id, &Message::text("tick"));
        }
    }
}

struct InProcess {
    url: String,
    stop: ShutdownHandle,
    thread: Option<JoinHandle<std::io::Result<()>>>,
    waker: WorkerWaker,
}

impl InProcess {
    fn start<H: Handler + 'static>(
        make: impl Fn(WorkerWaker) -> H + Send + Sync + 'static,
    ) -> Self {
        let config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            threads: 1,
            connection: Config::default().with_ping_interval(None),
            drain_timeout: Duration::from_secs(1),
            ..ServerConfig::default()
        };
        let server = Server::bind(config).unwrap();
        let url = format!("ws://{}/echo", server.local_addr());
        let stop = server.shutdown_handle();
        let waker = server.worker_wakers().remove(0);
        let for_handler = waker.clone();
        let thread = std::thread::spawn(move || server.run(move |_| make(for_handler.clone())));
        InProcess {
            url,
            stop,
            thread: Some(thread),
            waker,
        }
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + WAIT;
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

fn late_echo(delay: Option<Duration>) -> InProcess {
    InProcess::start(move |waker| LateEcho {
        delay,
        protocol: None,
        waker,
        due: Arc::default(),
    })
}

#[test]
fn pipe_mode_prints_echoes_that_arrive_late() {
    let server = late_echo(Some(Duration::from_millis(300)));
    for run in 0..3 {
        let (out, _) = connect(&[&server.url], "first\nsecond\n");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "run {run}: {stderr}");
        // One timer thread per message: the two echoes may swap.
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut lines: Vec<&str> = stdout.lines().collect();
        lines.sort_unstable();
        assert_eq!(lines, ["first", "second"], "run {run}: {stderr}");
    }
}

#[test]
fn wait_bounds_how_long_a_quiet_peer_is_waited_for() {
    // An echo later than --wait is not waited for: the client closes first.
    let server = late_echo(Some(Duration::from_millis(1500)));
    let (out, _) = connect(&["--wait", "0.2", &server.url], "late\n");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");

    // A duplex.v1 reply that never comes: the quiet rule ends the wait, and says so.
    let server = InProcess::start(|waker| LateEcho {
        delay: None,
        protocol: Some("duplex.v1"),
        waker,
        due: Arc::default(),
    });
    let (out, elapsed) = connect(
        &["-s", "duplex.v1", "--wait", "0.3", &server.url],
        "{\"type\":\"ping\",\"id\":7}\n",
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    assert!(
        stderr.contains("duplex.v1 replies not received: 1 (the server was quiet for 0.3s)"),
        "{stderr}"
    );
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
}

#[test]
fn max_wait_bounds_the_wait_for_a_peer_that_never_goes_quiet() {
    let server = InProcess::start(|_| Chatter {
        open: Arc::default(),
    });
    let ticking = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let ticker = {
        let (waker, ticking) = (server.waker.clone(), Arc::clone(&ticking));
        std::thread::spawn(move || {
            while ticking.load(std::sync::atomic::Ordering::Relaxed) {
                waker.wake();
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let (out, elapsed) = connect(&["--wait", "1", "--max-wait", "1.5", &server.url], "hi\n");
    ticking.store(false, std::sync::atomic::Ordering::Relaxed);
    ticker.join().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| *l == "tick")
            .count()
            >= 5,
        "the peer kept talking during the wait"
    );
    assert!(elapsed >= Duration::from_millis(1500), "{elapsed:?}");
}

#[test]
fn a_deduplicated_publish_ends_by_the_quiet_rule_without_a_warning() {
    let (_server, ws_url) = serve_process();
    let input = [
        r#"{"type":"hello","client":"dup"}"#,
        r#"{"type":"join","id":1,"room":"app/dup"}"#,
        r#"{"type":"publish","id":9,"room":"app/dup","data":1}"#,
    ]
    .join("\n");
    let (first, _) = connect(&["-s", "duplex.v1", &ws_url], &input);
    assert_eq!(
        types(&json_lines(&first)),
        ["welcome", "joined", "ack", "message"]
    );
    // The same client id and publish id again: acknowledged with the first seq, not delivered.
    let (again, _) = connect(&["-s", "duplex.v1", "--wait", "0.3", &ws_url], &input);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(0), "{stderr}");
    let lines = json_lines(&again);
    assert_eq!(types(&lines), ["welcome", "joined", "ack"], "{stderr}");
    assert_eq!(lines[2]["seq"], 1);
    assert!(stderr.is_empty(), "{stderr}");
}
