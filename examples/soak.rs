//! Fault soak: many concurrent streams through the example gateway for minutes, each with a
//! random fault of a random class at a random event position (or a client that hangs up),
//! then a check that the gateway's process returns to its baseline.
//!
//! ```text
//! cargo run --release --example soak -- [--seconds 180] [--concurrency 200]
//! ```
//!
//! The gateway, its demo upstream and the clients run in this one process (the gateway's own
//! code, from examples/gateway). Every stream must end with the whole answer (checked by the
//! tests' independent seam checker against a reference answer), or, when every attempt was
//! scripted to fail, with a well-formed error event. After the run it waits for idle
//! connections to close, then compares live heap bytes (a counting allocator), resident memory,
//! open file descriptors and live tokio tasks with their values before the run. It exits
//! non-zero if any stream ended otherwise, or if heap, descriptors or tasks did not return.

#[allow(dead_code)]
#[path = "gateway/budget.rs"]
mod budget;
#[allow(dead_code)]
#[path = "../tests/support/check.rs"]
mod check;
#[allow(dead_code)]
#[path = "gateway/config.rs"]
mod config;
#[allow(dead_code)]
#[path = "gateway/demo.rs"]
mod demo;
#[allow(dead_code)]
#[path = "gateway/proxy.rs"]
mod proxy;
#[allow(dead_code)]
#[path = "gateway/server.rs"]
mod server;
#[allow(dead_code)]
#[path = "gateway/token.rs"]
mod token;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::net::TcpListener;

/// Counts live heap bytes, to tell a leak from memory the allocator keeps for reuse.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: defers to the system allocator, only counting; the layout passed through is the
// caller's own.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[derive(Debug, Clone, Copy)]
struct Figures {
    heap: isize,
    rss_kib: u64,
    fds: usize,
    tasks: usize,
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn figures() -> Figures {
    Figures {
        heap: LIVE.load(Ordering::Relaxed),
        rss_kib: rss_kib(),
        fds: std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count())
            .unwrap_or(0),
        tasks: tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" {
    fn malloc_trim(pad: usize) -> i32;
}

/// Asks glibc's allocator to return its free pages to the system; false where there is none.
fn trim_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only releases memory the allocator holds free.
        unsafe { malloc_trim(0) };
        true
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    false
}

/// A small deterministic generator: the soak is random but reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Wire {
    Anthropic,
    OpenAi,
}

const ANSWERS: [(Wire, &str); 6] = [
    (Wire::Anthropic, "text"),
    (Wire::Anthropic, "tool"),
    (Wire::Anthropic, "thinking"),
    (Wire::OpenAi, "text"),
    (Wire::OpenAi, "tool"),
    (Wire::OpenAi, "parallel-tools"),
];

/// What a case scripts, and what the client must end with.
const FAULTS: [&str; 9] = [
    "none",
    "reset",
    "stall",
    "error",
    "truncate",
    "status",
    "all-fail",
    "hang-up",
    "fallback-fails",
];

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn request(wire: Wire, answer: &str, fault: &str) -> Request<Full<Bytes>> {
    let messages = json!([{"role":"user","content":"Why do streams break?"}]);
    let (path, body) = match wire {
        Wire::Anthropic => {
            let mut body = json!({"model":demo::CLAUDE_PRIMARY,"max_tokens":4096,"stream":true,"messages":messages});
            if answer == "thinking" {
                body["thinking"] = json!({"type":"enabled","budget_tokens":1024});
            }
            ("/v1/messages", body)
        }
        Wire::OpenAi => (
            "/v1/chat/completions",
            json!({"model":demo::GPT_PRIMARY,"stream":true,"stream_options":{"include_usage":true},"messages":messages}),
        ),
    };
    Request::post(path)
        .header("content-type", "application/json")
        .header("x-demo-answer", answer)
        .header("x-demo-fault", fault)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

fn check(wire: Wire, bytes: &[u8]) -> Result<check::Answer, String> {
    let events = check::parse_sse(bytes);
    match wire {
        Wire::Anthropic => check::anthropic(&events),
        Wire::OpenAi => check::openai(&events, true),
    }
}

async fn fetch(
    client: &HttpClient,
    base: &str,
    req: Request<Full<Bytes>>,
) -> Result<Bytes, String> {
    let (mut parts, body) = req.into_parts();
    parts.uri = format!("{base}{}", parts.uri).parse().unwrap();
    let res = client
        .request(Request::from_parts(parts, body))
        .await
        .map_err(|e| format!("request: {e}"))?;
    let bytes = res
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
    Ok(bytes.to_bytes())
}

struct Args {
    seconds: u64,
    concurrency: usize,
    seed: u64,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        seconds: 180,
        concurrency: 200,
        seed: 0x5eed,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--seconds" => args.seconds = value()?.parse().map_err(|_| "--seconds: a number")?,
            "--concurrency" => {
                args.concurrency = value()?.parse().map_err(|_| "--concurrency: a number")?
            }
            "--seed" => args.seed = value()?.parse().map_err(|_| "--seed: a number")?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\nusage: soak [--seconds N] [--concurrency N] [--seed N]");
            return ExitCode::from(2);
        }
    };
    // The demo streams an event every millisecond, so streams last a while and overlap.
    let demo_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let demo_addr = demo_listener.local_addr().unwrap();
    tokio::spawn(demo::Demo::new(Duration::from_millis(1)).serve(demo_listener));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_addr = listener.local_addr().unwrap();
    let text = demo::gateway_config(demo_addr, gateway_addr)
        .replace("idle_timeout_ms = 2000", "idle_timeout_ms = 500");
    let config = config::parse(&text, &|_| None).expect("the demo config is valid");
    tokio::spawn(server::serve(
        listener,
        proxy::build(&config),
        config.server.clone(),
        std::future::pending(),
    ));
    let base = format!("http://{gateway_addr}");

    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(1))
        .build_http();

    // The whole answers, as the primary gives them without a fault.
    let mut wholes = BTreeMap::new();
    let mut events = BTreeMap::new();
    for (wire, answer) in ANSWERS {
        let bytes = fetch(&client, &base, request(wire, answer, "none"))
            .await
            .expect("reference");
        events.insert((wire, answer), check::parse_sse(&bytes).len());
        wholes.insert(
            (wire, answer),
            check(wire, &bytes).expect("a valid reference"),
        );
    }
    // Warm up: fill what is meant to stay (the demo's log of its last calls, pools, the
    // runtime's queues) so that what remains after the run is what the run left behind.
    let warm: Vec<_> = (0..args.concurrency.min(100))
        .map(|i| {
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move {
                for n in 0..15 {
                    let (wire, answer) = ANSWERS[(i + n) % ANSWERS.len()];
                    let fault = if n % 2 == 0 { "reset@5" } else { "none" };
                    let _ = fetch(&client, &base, request(wire, answer, fault)).await;
                }
            })
        })
        .collect();
    for w in warm {
        let _ = w.await;
    }
    let settled_before = settle(None).await;
    let before = figures();
    eprintln!(
        "soak: {}s, {} concurrent streams, seed {}; baseline after {settled_before:?}",
        args.seconds, args.concurrency, args.seed
    );

    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let outcomes: Arc<Mutex<BTreeMap<String, (u64, u64)>>> = Arc::default();
    let failures: Arc<Mutex<Vec<String>>> = Arc::default();
    let peak_rss = Arc::new(AtomicU64::new(0));
    let (wholes, events) = (Arc::new(wholes), Arc::new(events));
    let mut workers = Vec::new();
    for w in 0..args.concurrency {
        let (client, base, outcomes, failures) = (
            client.clone(),
            base.clone(),
            outcomes.clone(),
            failures.clone(),
        );
        let (wholes, events, peak_rss) = (wholes.clone(), events.clone(), peak_rss.clone());
        let mut rng = Rng(args.seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (w as u64 + 1));
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let (wire, answer) = ANSWERS[rng.below(ANSWERS.len())];
                let fault = FAULTS[rng.below(FAULTS.len())];
                let n = events[&(wire, answer)];
                // Before the answer is complete (the events after it close the stream).
                let at = rng.below(n.saturating_sub(3).max(1));
                let header = match fault {
                    "none" | "hang-up" => "none".to_owned(),
                    "status" => (if wire == Wire::Anthropic {
                        "529"
                    } else {
                        "503"
                    })
                    .to_owned(),
                    "all-fail" => format!("reset@{at}, fallbacks=503"),
                    // The first fallback breaks too; the second finishes the answer.
                    "fallback-fails" => {
                        let first = if wire == Wire::Anthropic {
                            demo::CLAUDE_NO_PREFILL
                        } else {
                            demo::GPT_PREFIX
                        };
                        format!("reset@{at}, {first}=stall@{}", rng.below(8))
                    }
                    class => format!("{}@{at}", if class == "error" { "error" } else { class }),
                };
                let req = request(wire, answer, &header);
                let outcome = if fault == "hang-up" {
                    // The client reads a few frames and goes away.
                    let mut parts = req;
                    *parts.uri_mut() = format!("{base}{}", parts.uri()).parse().unwrap();
                    match client.request(parts).await {
                        Ok(res) => {
                            let mut body = res.into_body();
                            for _ in 0..rng.below(6) {
                                let _ = body.frame().await;
                            }
                            Ok(())
                        }
                        Err(e) => Err(format!("request: {e}")),
                    }
                } else {
                    match fetch(&client, &base, req).await {
                        Err(e) => Err(e),
                        Ok(bytes) => match check(wire, &bytes) {
                            Err(e) => Err(format!("seam rules: {e}")),
                            Ok(got) if fault == "all-fail" => match got.error {
                                Some(_) => Ok(()),
                                None => Err("no error event though every attempt failed".into()),
                            },
                            Ok(got) => {
                                let want = &wholes[&(wire, answer)];
                                if got.error.is_some() {
                                    Err(format!("an error event: {:?}", got.error))
                                } else if got.text != want.text
                                    || got.tools != want.tools
                                    || got.thinking != want.thinking
                                {
                                    Err("not the whole answer".into())
                                } else {
                                    Ok(())
                                }
                            }
                        },
                    }
                };
                let key = format!("{:?}/{fault}", wire);
                let mut o = outcomes.lock().unwrap();
                let entry = o.entry(key.clone()).or_default();
                match outcome {
                    Ok(()) => entry.0 += 1,
                    Err(e) => {
                        entry.1 += 1;
                        let mut f = failures.lock().unwrap();
                        if f.len() < 20 {
                            f.push(format!("{key} ({answer}, {header}): {e}"));
                        }
                    }
                }
                peak_rss.fetch_max(rss_kib(), Ordering::Relaxed);
            }
        }));
    }
    let mut during = figures();
    for w in workers {
        let _ = w.await;
        let now = figures();
        during.fds = during.fds.max(now.fds);
        during.tasks = during.tasks.max(now.tasks);
        during.heap = during.heap.max(now.heap);
    }
    let settled = settle(Some(before)).await;
    let after = figures();
    // The allocator keeps freed pages for reuse; ask it to give them back, to show that the
    // resident memory above the baseline is free space, not held by anything.
    let rss_trimmed = trim_free_memory().then(rss_kib);

    let outcomes = outcomes.lock().unwrap();
    let (passed, failed): (u64, u64) = outcomes
        .values()
        .fold((0, 0), |a, v| (a.0 + v.0, a.1 + v.1));
    println!("\n| case | streams | wrong |\n|---|---:|---:|");
    for (k, (ok, bad)) in outcomes.iter() {
        println!("| {k} | {} | {bad} |", ok + bad);
    }
    println!("| **all** | **{}** | **{failed}** |", passed + failed);
    println!("\n| figure | before | peak during | after (settled in {settled:?}) |\n|---|---:|---:|---:|");
    println!(
        "| live heap (KiB) | {} | {} | {} |",
        before.heap / 1024,
        during.heap / 1024,
        after.heap / 1024
    );
    println!(
        "| resident memory (KiB) | {} | {} | {} |",
        before.rss_kib,
        peak_rss.load(Ordering::Relaxed),
        after.rss_kib
    );
    if let Some(trimmed) = rss_trimmed {
        println!("| resident memory once the allocator returns free pages (KiB) | | | {trimmed} |");
    }
    println!(
        "| open file descriptors | {} | {} | {} |",
        before.fds, during.fds, after.fds
    );
    println!(
        "| live tokio tasks | {} | {} | {} |",
        before.tasks, during.tasks, after.tasks
    );
    for f in failures.lock().unwrap().iter() {
        println!("FAILED {f}");
    }
    // The demo keeps its last calls and the allocator its free lists: a little heap may stay.
    let heap_back = after.heap <= before.heap + 1024 * 1024;
    let back = heap_back && after.fds <= before.fds && after.tasks <= before.tasks;
    if failed == 0 && back {
        println!("\nsoak: every stream ended whole or with a well-formed error; the process returned to its baseline");
        ExitCode::SUCCESS
    } else {
        println!("\nsoak: FAILED ({failed} wrong streams; back to baseline: {back})");
        ExitCode::FAILURE
    }
}

/// Waits for idle connections to close (pools keep them up to 90 s): until descriptors and
/// tasks are back to `target`, or without one, until they stop falling for five seconds.
/// Gives up after three minutes. Returns how long it took.
async fn settle(target: Option<Figures>) -> Duration {
    let started = Instant::now();
    let mut last = figures();
    let mut steady = Instant::now();
    while started.elapsed() < Duration::from_secs(180) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = figures();
        match target {
            Some(t) if now.fds <= t.fds && now.tasks <= t.tasks => break,
            Some(_) => {}
            None => {
                if now.fds < last.fds || now.tasks < last.tasks {
                    steady = Instant::now();
                }
                if steady.elapsed() >= Duration::from_secs(5) {
                    break;
                }
            }
        }
        last = now;
    }
    started.elapsed()
}
