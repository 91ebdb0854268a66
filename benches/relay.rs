//! The happy path on loopback: client → bare hyper proxy → upstream, against client → the same
//! proxy with the layer → upstream, 1,000-event Anthropic streams, no failures.
//!
//! Three threads, each with its own current-thread runtime: the client (this thread), the
//! proxy (both proxies, on different ports), the upstream. So the proxy's CPU time is the
//! proxy thread's own (`/proc/self/task/<tid>/schedstat`), not diluted by the client and the
//! upstream, and its allocations are counted apart (the allocator counts per thread role).
//!
//! Figures, bare and layered, from interleaved rounds (one stream each, alternating which goes
//! first): proxy CPU per event, events/s and first-event latency (wall clock, the whole chain),
//! allocations per forwarded event (marginal: a 1,000-event stream minus a 100-event one, over
//! the 900 extra events, so per-request costs cancel). Then, when valgrind is installed,
//! instruction counts under callgrind, which do not depend on the machine's load.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use support::alloc::{self, Role};
use support::net::{self, Proto};
use support::stats::{median, paired_ratio, spread};
use support::stream::{self, Checker, EventCounter, Shape, ENVELOPE_EVENTS};
use support::sys::{self, ThreadCpu};

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

/// Events per stream, envelope included.
const EVENTS: usize = 1000;
/// The short stream for the marginal allocation count.
const SHORT_EVENTS: usize = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Direct,
    Bare,
    Layer,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Bare => "bare",
            Mode::Layer => "layer",
        }
    }

    fn from_name(name: &str) -> Mode {
        match name {
            "direct" => Mode::Direct,
            "bare" => Mode::Bare,
            "layer" => Mode::Layer,
            other => panic!("unknown mode {other}"),
        }
    }
}

struct Addrs {
    upstream: SocketAddr,
    bare: SocketAddr,
    layer: SocketAddr,
}

impl Addrs {
    fn of(&self, mode: Mode) -> SocketAddr {
        match mode {
            Mode::Direct => self.upstream,
            Mode::Bare => self.bare,
            Mode::Layer => self.layer,
        }
    }
}

fn std_listener() -> (std::net::TcpListener, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// Starts the upstream and the two proxies on their own threads.
fn start() -> (Addrs, ThreadCpu) {
    let (up, upstream) = std_listener();
    let (bl, bare) = std_listener();
    let (ll, layer) = std_listener();
    sys::spawn_runtime_thread("upstream", Role::Upstream, move || async move {
        let l = tokio::net::TcpListener::from_std(up).unwrap();
        net::serve_upstream(l, Proto::H1, Default::default()).await
    });
    let proxy = sys::spawn_runtime_thread("proxy", Role::Proxy, move || async move {
        let bl = tokio::net::TcpListener::from_std(bl).unwrap();
        let ll = tokio::net::TcpListener::from_std(ll).unwrap();
        tokio::spawn(net::serve_proxy(
            bl,
            net::bare(upstream, Proto::H1),
            Proto::H1,
        ));
        net::serve_proxy(ll, net::layered(upstream, Proto::H1), Proto::H1).await
    });
    (
        Addrs {
            upstream,
            bare,
            layer,
        },
        proxy,
    )
}

type BenchClient = Client<HttpConnector, Full<Bytes>>;

struct Stream {
    first: Duration,
    wall: Duration,
    events: usize,
}

/// One stream of `events` events through `addr`; with `check`, its text is checked too.
async fn one(
    client: &BenchClient,
    addr: SocketAddr,
    body: &Bytes,
    events: usize,
    check: bool,
) -> Stream {
    one_paced(client, addr, body, events, check, None).await
}

/// [`one`], the upstream waiting `pace` between events when given.
async fn one_paced(
    client: &BenchClient,
    addr: SocketAddr,
    body: &Bytes,
    events: usize,
    check: bool,
    pace: Option<Duration>,
) -> Stream {
    one_shaped(client, addr, body, Shape::Anthropic, events, check, pace).await
}

/// [`one_paced`], the stream in `shape`.
async fn one_shaped(
    client: &BenchClient,
    addr: SocketAddr,
    body: &Bytes,
    shape: Shape,
    events: usize,
    check: bool,
    pace: Option<Duration>,
) -> Stream {
    let deltas = events - shape.envelope_events();
    let start = Instant::now();
    let extra: Vec<(&'static str, String)> = pace
        .map(|p| vec![(net::PACE_US, p.as_micros().to_string())])
        .unwrap_or_default();
    let req = net::shaped_request(addr, body.clone(), shape, deltas, &extra);
    let res = client.request(req).await.expect("a response");
    assert_eq!(res.status(), 200);
    let mut body = res.into_body();
    let mut first = None;
    let mut count = EventCounter::default();
    let mut checker = check.then(|| Checker::new(stream::whole(deltas).into()));
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("a clean stream");
        if let Some(data) = frame.data_ref() {
            first.get_or_insert_with(|| start.elapsed());
            count.feed(data);
            if let Some(c) = &mut checker {
                c.feed(data);
            }
        }
    }
    let wall = start.elapsed();
    if let Some(c) = checker {
        c.finish().expect("the stream carries the whole answer");
    }
    assert_eq!(count.events, events, "every event arrived");
    Stream {
        first: first.expect("a first event"),
        wall,
        events: count.events,
    }
}

#[derive(Default)]
struct Samples {
    cpu_per_event_ns: Vec<f64>,
    events_per_s: Vec<f64>,
    first_us: Vec<f64>,
    allocs_long: Vec<f64>,
    allocs_short: Vec<f64>,
}

fn summary(
    addrs: &Addrs,
    proxy: &ThreadCpu,
    rt: &tokio::runtime::Runtime,
    client: &BenchClient,
    pace: Option<Duration>,
) -> String {
    let body = stream::request_body("primary", 2_000);
    let rounds = match (support::quick(), pace) {
        (true, _) => 10,
        (false, None) => 200,
        (false, Some(_)) => 30,
    };
    let mut s = [Samples::default(), Samples::default()];
    let modes = [Mode::Bare, Mode::Layer];
    rt.block_on(async {
        for round in 0..rounds {
            for k in 0..2 {
                // Alternate which proxy goes first in a round.
                let i = (k + round) % 2;
                let addr = addrs.of(modes[i]);
                let cpu0 = proxy.ns();
                let a0 = alloc::allocs(Role::Proxy);
                let st = one_paced(client, addr, &body, EVENTS, false, pace).await;
                let a1 = alloc::allocs(Role::Proxy);
                let cpu1 = proxy.ns();
                one_paced(client, addr, &body, SHORT_EVENTS, false, pace).await;
                let a2 = alloc::allocs(Role::Proxy);
                s[i].cpu_per_event_ns
                    .push((cpu1 - cpu0) as f64 / st.events as f64);
                s[i].events_per_s
                    .push(st.events as f64 / st.wall.as_secs_f64());
                s[i].first_us.push(sys::micros(st.first));
                s[i].allocs_long.push((a1 - a0) as f64);
                s[i].allocs_short.push((a2 - a1) as f64);
            }
        }
    });
    let marginal = |x: &Samples| {
        (median(&x.allocs_long) - median(&x.allocs_short)) / (EVENTS - SHORT_EVENTS) as f64
    };
    let [b, l] = &s;
    let how = match pace {
        None => "the upstream only yields between events, so a slower reader gets several per read".to_owned(),
        Some(p) => format!(
            "paced: the upstream waits {} µs between events, so each proxy reads and writes each event on its own, as with a model streaming tokens",
            p.as_micros()
        ),
    };
    let mut t = format!(
        "## relay{}\n\n{rounds} rounds × (bare, layer), one {EVENTS}-event stream each (HTTP/1.1, loopback; {how}); median [p10–p90].\n\n\
         | figure | bare proxy | with the layer | layer ÷ bare (median of paired ratios) |\n|---|---:|---:|---:|\n",
        if pace.is_some() { ", paced" } else { "" }
    );
    t.push_str(&format!(
        "| proxy CPU per event (ns, thread schedstat) | {} | {} | {:.3} |\n",
        spread(&b.cpu_per_event_ns, 0),
        spread(&l.cpu_per_event_ns, 0),
        median(&paired_ratio(&l.cpu_per_event_ns, &b.cpu_per_event_ns)),
    ));
    t.push_str(&format!(
        "| events/s, whole chain (wall) | {} | {} | {:.3} |\n",
        spread(&b.events_per_s, 0),
        spread(&l.events_per_s, 0),
        median(&paired_ratio(&l.events_per_s, &b.events_per_s)),
    ));
    t.push_str(&format!(
        "| first-event latency (µs, wall) | {} | {} | {:.3} |\n",
        spread(&b.first_us, 0),
        spread(&l.first_us, 0),
        median(&paired_ratio(&l.first_us, &b.first_us)),
    ));
    t.push_str(&format!(
        "| proxy allocations per {EVENTS}-event stream | {} | {} | |\n",
        spread(&b.allocs_long, 0),
        spread(&l.allocs_long, 0),
    ));
    t.push_str(&format!(
        "| proxy allocations per {SHORT_EVENTS}-event stream | {} | {} | |\n",
        spread(&b.allocs_short, 0),
        spread(&l.allocs_short, 0),
    ));
    let (mb, ml) = (marginal(b), marginal(l));
    t.push_str(&format!(
        "| proxy allocations per forwarded event (marginal) | {mb:.4} | {ml:.4} | layer − bare: {:+.4} |\n",
        ml - mb
    ));
    t
}

// ---- the layer alone ----------------------------------------------------------------

/// An upstream body in memory, every event ready at once, one per frame.
struct Ready {
    events: std::sync::Arc<Vec<Bytes>>,
    next: usize,
}

impl http_body::Body for Ready {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        let ev = self.events.get(self.next).cloned();
        self.next += 1;
        std::task::Poll::Ready(ev.map(|ev| Ok(http_body::Frame::data(ev))))
    }
}

/// Allocations inside the layer alone: no sockets, no hyper; the layer around a service that
/// answers with the stream in memory, polled with a no-op waker. (request, body) per length.
fn layer_only_allocs(events: usize) -> (u64, u64) {
    use http_body::Body;
    use tower::{Layer, ServiceExt};
    let rt = sys::runtime();
    let stream = stream::primary_events(events - ENVELOPE_EVENTS);
    rt.block_on(async {
        let inner = tower::service_fn(
            move |_: http::Request<tower_midstream::ReplayBody<Full<Bytes>>>| {
                let events = stream.clone();
                async move {
                    let mut r = http::Response::new(Ready { events, next: 0 });
                    r.headers_mut()
                        .insert("content-type", "text/event-stream".parse().unwrap());
                    Ok::<_, std::convert::Infallible>(r)
                }
            },
        );
        let svc = tower_midstream::MidStreamFallbackLayer::new(net::chain()).layer(inner);
        let req = http::Request::post("/v1/messages")
            .body(Full::new(stream::request_body("primary", 2_000)))
            .unwrap();
        let a0 = alloc::allocs(Role::Client);
        let mut body = svc.oneshot(req).await.unwrap().into_body();
        let a1 = alloc::allocs(Role::Client);
        let mut cx = std::task::Context::from_waker(futures_util::task::noop_waker_ref());
        while let std::task::Poll::Ready(Some(frame)) =
            std::pin::Pin::new(&mut body).poll_frame(&mut cx)
        {
            frame.expect("a clean stream");
        }
        let a2 = alloc::allocs(Role::Client);
        (a1 - a0, a2 - a1)
    })
}

fn layer_only() -> String {
    let mut t = String::from(
        "## the layer alone: allocations\n\nThe layer around an in-memory upstream (no sockets, no hyper), one event per frame, every frame ready; allocations counted on this thread.\n\n| events | allocations for the request (collect, rebuild, watch) | allocations while relaying the body |\n|---:|---:|---:|\n",
    );
    for events in [100, 1_000, 10_000, 100_000] {
        let (req, body) = layer_only_allocs(events);
        t.push_str(&format!("| {events} | {req} | {body} |\n"));
    }
    t.push_str("\nGrowth with the stream's length is logarithmic: the transcript's text doubling its capacity, not a per-event allocation.\n");
    t
}

// ---- callgrind ------------------------------------------------------------------------

const CALLGRIND_STREAMS: usize = 5;

/// Runs in a child under callgrind: one thread, everything on one runtime; two streams to warm
/// up (connections, pools), then the measured streams inside [`relay_measured`], the only
/// function whose instructions callgrind collects.
fn callgrind_child(mode: Mode, shape: Shape) {
    let rt = sys::runtime();
    let client: BenchClient = net::client(Proto::H1);
    let addr = rt.block_on(async {
        let (ul, upstream) = net::listen().await;
        tokio::spawn(net::serve_upstream(ul, Proto::H1, Default::default()));
        let (pl, proxy) = net::listen().await;
        match mode {
            Mode::Direct => return upstream,
            Mode::Bare => tokio::spawn(net::serve_proxy(
                pl,
                net::bare(upstream, Proto::H1),
                Proto::H1,
            )),
            Mode::Layer => tokio::spawn(net::serve_proxy(
                pl,
                net::layered(upstream, Proto::H1),
                Proto::H1,
            )),
        };
        proxy
    });
    let body = stream::request_body("primary", 2_000);
    rt.block_on(async {
        for _ in 0..2 {
            one_shaped(&client, addr, &body, shape, EVENTS, true, None).await;
        }
    });
    relay_measured(&rt, &client, addr, &body, shape);
}

#[inline(never)]
fn relay_measured(
    rt: &tokio::runtime::Runtime,
    client: &BenchClient,
    addr: SocketAddr,
    body: &Bytes,
    shape: Shape,
) {
    rt.block_on(async {
        for _ in 0..CALLGRIND_STREAMS {
            one_shaped(client, addr, body, shape, EVENTS, false, None).await;
        }
    });
}

/// The instructions callgrind counted (`summary:` / `totals:` line of its output).
fn callgrind_total(path: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix("totals:")
                .or_else(|| l.strip_prefix("summary:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

fn callgrind() -> String {
    if Command::new("valgrind").arg("--version").output().is_err() {
        return "## relay under callgrind\n\nvalgrind is not installed: instruction counts skipped.\n".into();
    }
    let exe = std::env::current_exe().unwrap();
    let dir = support::out_dir();
    let events = (CALLGRIND_STREAMS * EVENTS) as f64;
    let mut t = format!(
        "## relay under callgrind\n\nInstructions for {CALLGRIND_STREAMS} streams of {EVENTS} events, one thread (client, proxy and upstream on one runtime), after 2 warm-up streams. Proxy = mode − direct (client straight to the upstream). One row group per stream shape: the dialect, and the order its server writes keys in.\n\n\
         | stream | mode | instructions | per event | proxy per event | proxy ÷ bare proxy | layer − bare per event |\n|---|---|---:|---:|---:|---:|---:|\n"
    );
    for shape in Shape::ALL {
        let mut ir = Vec::new();
        for mode in [Mode::Direct, Mode::Bare, Mode::Layer] {
            let out = dir.join(format!(
                "callgrind.relay.{}.{}.out",
                shape.name(),
                mode.name()
            ));
            let status = Command::new("valgrind")
                .arg("--tool=callgrind")
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg("--toggle-collect=*relay_measured*")
                .arg(&exe)
                .args(["--callgrind-child", mode.name(), shape.name()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .expect("run valgrind");
            assert!(
                status.success(),
                "callgrind run for {} {} failed",
                shape.name(),
                mode.name()
            );
            ir.push(callgrind_total(&out).expect("callgrind totals"));
        }
        let [direct, bare, layer] = [ir[0], ir[1], ir[2]];
        let s = shape.name();
        t.push_str(&format!(
            "| {s} | direct | {direct:.0} | {:.0} | – | – | |\n",
            direct / events
        ));
        t.push_str(&format!(
            "| {s} | bare proxy | {bare:.0} | {:.0} | {:.0} | 1.000 | |\n",
            bare / events,
            (bare - direct) / events
        ));
        t.push_str(&format!(
            "| {s} | with the layer | {layer:.0} | {:.0} | {:.0} | {:.3} | **{:+.0}** |\n",
            layer / events,
            (layer - direct) / events,
            (layer - direct) / (bare - direct),
            (layer - bare) / events
        ));
    }
    t.push_str("\nThe last column is the layer's own cost per event. Profiles: target/midstream-bench/callgrind.relay.<stream>.<mode>.out (`callgrind_annotate --inclusive=yes`).\n");
    t
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--callgrind-child") {
        let shape = args
            .get(i + 2)
            .and_then(|s| Shape::from_name(s))
            .unwrap_or(Shape::Anthropic);
        callgrind_child(Mode::from_name(&args[i + 1]), shape);
        return;
    }
    // `--callgrind-only`: just the instruction counts (minutes, not the whole bench).
    if args.iter().any(|a| a == "--callgrind-only") {
        support::report("relay-callgrind", &callgrind());
        return;
    }
    let quick = support::quick();
    let (addrs, proxy) = start();
    alloc::set_role(Role::Client);
    let rt = sys::runtime();
    let client: BenchClient = net::client(Proto::H1);
    let body = stream::request_body("primary", 2_000);

    // Both proxies must relay the whole answer before their speed means anything.
    rt.block_on(async {
        for mode in [Mode::Direct, Mode::Bare, Mode::Layer] {
            one(&client, addrs.of(mode), &body, EVENTS, true).await;
        }
    });

    let mut c = Criterion::default()
        .output_directory(&support::out_dir().join("criterion"))
        .warm_up_time(Duration::from_millis(if quick { 100 } else { 1000 }))
        .measurement_time(Duration::from_secs(if quick { 1 } else { 5 }))
        .sample_size(if quick { 10 } else { 20 })
        .configure_from_args();
    let mut g = c.benchmark_group("relay/wall");
    g.throughput(Throughput::Elements(EVENTS as u64));
    for mode in [Mode::Bare, Mode::Layer] {
        g.bench_function(mode.name(), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let start = Instant::now();
                    for _ in 0..iters {
                        one(&client, addrs.of(mode), &body, EVENTS, false).await;
                    }
                    start.elapsed()
                })
            })
        });
    }
    g.finish();
    // The same streams, timed by the proxy thread's CPU clock instead of the wall clock.
    let mut g = c.benchmark_group("relay/proxy-cpu");
    g.throughput(Throughput::Elements(EVENTS as u64));
    for mode in [Mode::Bare, Mode::Layer] {
        g.bench_function(mode.name(), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let cpu = proxy.ns();
                    for _ in 0..iters {
                        one(&client, addrs.of(mode), &body, EVENTS, false).await;
                    }
                    Duration::from_nanos(proxy.ns() - cpu)
                })
            })
        });
    }
    g.finish();
    c.final_summary();

    if support::skipped("relay") {
        return;
    }
    let mut text = format!("Machine: {}\n\n", sys::machine());
    text.push_str(&summary(&addrs, &proxy, &rt, &client, None));
    text.push('\n');
    text.push_str(&summary(
        &addrs,
        &proxy,
        &rt,
        &client,
        Some(Duration::from_millis(1)),
    ));
    text.push('\n');
    text.push_str(&layer_only());
    text.push('\n');
    text.push_str(&callgrind());
    support::report("relay", &text);
}
