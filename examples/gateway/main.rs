//! An LLM gateway with mid-stream fallback, ready to put in front of real providers.
//!
//! ```text
//! cargo run --release --example gateway                          # the demo
//! cargo run --release --example gateway -- --config gateway.toml # real upstreams
//! ```
//!
//! Clients talk to it as they would to the provider: `POST /v1/messages` (Anthropic Messages),
//! `POST /v1/chat/completions` (OpenAI Chat Completions) and `POST /v1/responses` (OpenAI
//! Responses), routed by the body's `model` to
//! the upstream the config names, with that upstream's own key. When a stream fails half-way,
//! `tower_midstream::MidStreamFallbackLayer` continues it on the model's fallbacks and the
//! client reads one stream. `x-midstream-fallback: off` turns that off for one request.
//! `GET /metrics`, on the admin listener (`admin_listen`), shows the layer's counters and
//! histograms in Prometheus' text format.
//!
//! Without `--config`, it starts a demo upstream on loopback (see `demo.rs` for the models and
//! the `x-demo-*` headers that script failures), the gateway in front of it, and prints
//!
//! ```text
//! demo_upstream=http://127.0.0.1:PORT
//! gateway=http://127.0.0.1:PORT
//! admin=http://127.0.0.1:PORT
//! ```
//!
//! as its first lines on stdout (for harnesses), then `curl` commands to try. Logs go to
//! stderr (`RUST_LOG` filters them; default `info`).
//!
//! Options:
//!
//! * `--config FILE`: proxy to the upstreams in FILE (see `gateway.example.toml`).
//! * `--listen ADDR`: where the gateway listens (default: the config's `listen`; in the demo,
//!   127.0.0.1:0, an ephemeral port).
//! * `--admin-listen ADDR`: where `/metrics` is served (default: the config's `admin_listen`,
//!   none if it has none; in the demo, 127.0.0.1:0).
//! * `--demo-upstream-only`: start only the demo upstream and print `demo_upstream=...`.
//! * `--demo-listen ADDR`: where the demo upstream listens (default 127.0.0.1:0).
//! * `--demo-pace-ms N`: the demo's delay between events (default 40; 0 for tests).
//! * `--print-demo-config`: print the demo's gateway config (a worked example) and exit.
//!
//! SIGTERM (or Ctrl-C) stops it gracefully: it accepts no more connections, lets the open
//! streams finish for up to `server.shutdown_grace_ms`, then exits. `GET /healthz` answers
//! `ok` while it serves.
//!
//! The modules: `config` (the file), `server` (connections, their limits, shutdown), `proxy`
//! (the layer and the router to the upstreams), `budget` (what request bodies may hold, all
//! together), `admin` (`/metrics`), `demo` (the demo upstream).

mod admin;
mod budget;
mod config;
mod demo;
mod proxy;
mod server;
mod token;

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tokio::net::TcpListener;

const USAGE: &str = "usage: gateway [--config FILE] [--listen ADDR] [--admin-listen ADDR] \
[--demo-upstream-only] [--demo-listen ADDR] [--demo-pace-ms N] [--print-demo-config]";

struct Args {
    config: Option<String>,
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    demo_only: bool,
    demo_listen: SocketAddr,
    demo_pace: Duration,
    print_demo_config: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: None,
        listen: None,
        admin_listen: None,
        demo_only: false,
        demo_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        demo_pace: Duration::from_millis(40),
        print_demo_config: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        let addr = |name: &str, v: String| {
            v.parse::<SocketAddr>().map_err(|_| {
                format!("{name}: `{v}` is not an address and port such as 127.0.0.1:8080")
            })
        };
        match arg.as_str() {
            "--config" => args.config = Some(value("--config")?),
            "--listen" => args.listen = Some(addr("--listen", value("--listen")?)?),
            "--admin-listen" => {
                args.admin_listen = Some(addr("--admin-listen", value("--admin-listen")?)?)
            }
            "--demo-upstream-only" => args.demo_only = true,
            "--demo-listen" => args.demo_listen = addr("--demo-listen", value("--demo-listen")?)?,
            "--demo-pace-ms" => {
                let v = value("--demo-pace-ms")?;
                let ms = v.parse().map_err(|_| {
                    format!("--demo-pace-ms: `{v}` is not a number of milliseconds")
                })?;
                args.demo_pace = Duration::from_millis(ms);
            }
            "--print-demo-config" => args.print_demo_config = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if args.config.is_some() && args.demo_only {
        return Err("--config and --demo-upstream-only do not go together".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: in a file or a log collector they are noise.
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(msg) => {
            eprintln!("error: {msg}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    if args.print_demo_config {
        let upstream = SocketAddr::from(([127, 0, 0, 1], 9000));
        print!(
            "{}",
            demo::gateway_config(upstream, SocketAddr::from(([127, 0, 0, 1], 8080)))
        );
        return Ok(());
    }
    if let Some(path) = &args.config {
        // Checked whole before anything listens.
        let mut config =
            config::load(path, &|var| std::env::var(var).ok()).map_err(|e| e.to_string())?;
        if let Some(listen) = args.listen {
            config.listen = listen;
        }
        if let Some(admin) = args.admin_listen {
            config.admin_listen = Some(admin);
        }
        for warning in &config.warnings {
            tracing::warn!(target: "gateway", "{warning}");
        }
        let listeners = Listeners::bind(&config).await?;
        listeners.print();
        tracing::info!(target: "gateway", models = config.models.len(), upstreams = config.upstreams.len(), "gateway ready");
        return serve(listeners, &config).await;
    }

    let demo_listener = bind(args.demo_listen, "demo upstream").await?;
    let demo_addr = demo_listener.local_addr().unwrap();
    let demo = demo::Demo::new(args.demo_pace);
    println!("demo_upstream=http://{demo_addr}");
    if args.demo_only {
        tokio::select! {
            () = demo.serve(demo_listener) => {}
            () = stop_signal() => {}
        }
        return Ok(());
    }
    tokio::spawn(demo.serve(demo_listener));

    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let listen = args.listen.unwrap_or(loopback);
    let mut config = config::parse(&demo::gateway_config(demo_addr, listen), &|_| None)
        .expect("the demo config is valid");
    config.admin_listen = Some(args.admin_listen.unwrap_or(loopback));
    let listeners = Listeners::bind(&config).await?;
    listeners.print();
    println!("{}", try_it(&listeners));
    serve(listeners, &config).await
}

/// The clients' listener, and the admin one if the config has one.
struct Listeners {
    gateway: TcpListener,
    admin: Option<TcpListener>,
}

impl Listeners {
    /// Both bound before either serves: a bad address stops the gateway before it listens.
    async fn bind(config: &config::Config) -> Result<Self, String> {
        let gateway = bind(config.listen, "gateway").await?;
        let admin = match config.admin_listen {
            Some(addr) => Some(bind(addr, "admin_listen").await?),
            None => None,
        };
        Ok(Listeners { gateway, admin })
    }

    fn gateway_addr(&self) -> SocketAddr {
        self.gateway.local_addr().unwrap()
    }

    fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|l| l.local_addr().unwrap())
    }

    /// The lines harnesses read.
    fn print(&self) {
        println!("gateway=http://{}", self.gateway_addr());
        if let Some(admin) = self.admin_addr() {
            println!("admin=http://{admin}");
        }
    }
}

/// The process's `metrics` recorder: Prometheus' text format, rendered on `GET /metrics`.
fn metrics() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    // Seconds, from a fast first token to a slow fallback; attempts per request, one by one.
    let seconds = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &seconds)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("midstream_attempts_per_request".into()),
                &[1.0, 2.0, 3.0, 4.0, 5.0],
            )
        })
        .and_then(PrometheusBuilder::install_recorder)
        .map_err(|e| format!("metrics: {e}"))
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("{what}: cannot listen on {addr}: {e}"))
}

/// Serves until SIGTERM or Ctrl-C, then shuts down gracefully.
async fn serve(listeners: Listeners, config: &config::Config) -> Result<(), String> {
    warn_if_few_descriptors(config.server.max_connections);
    match listeners.admin {
        Some(admin) => {
            // No shutdown of its own: scrapers see the drain, and it ends with the process.
            let admin = server::serve(
                admin,
                admin::Admin::new(metrics()?),
                config.server.clone(),
                std::future::pending(),
            );
            tokio::spawn(admin);
        }
        None => tracing::info!(
            target: "gateway",
            "no admin_listen in the config: /metrics is not served"
        ),
    }
    server::serve(
        listeners.gateway,
        proxy::build(config),
        config.server.clone(),
        stop_signal(),
    )
    .await;
    Ok(())
}

/// SIGTERM (what service managers and container runtimes send) or Ctrl-C.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Each streaming client holds two descriptors (its connection and the upstream's): warn when
/// the process may run out before `max_connections` is reached (Linux; elsewhere silent).
fn warn_if_few_descriptors(max_connections: usize) {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return;
    };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<usize>().ok());
    if let Some(soft) = soft {
        let needed = max_connections * 2 + 64;
        if soft < needed {
            tracing::warn!(
                target: "gateway",
                open_files_limit = soft,
                max_connections,
                "the open-files limit (ulimit -n) is below 2 x server.max_connections + 64 = \
                 {needed}: raise it, or lower max_connections, or new connections will fail \
                 before the limit is reached"
            );
        }
    }
}

fn try_it(listeners: &Listeners) -> String {
    let addr = listeners.gateway_addr();
    let admin = listeners.admin_addr().unwrap_or(addr);
    let question = r#""messages":[{"role":"user","content":"Why do streams break?"}]"#;
    format!(
        r#"
The demo upstream fails every primary stream half-way; the gateway continues it on a fallback.
Try (the log on stderr says which failure it saw and which strategy it used):

  # Anthropic Messages: demo-claude-primary resets; demo-claude-no-prefill rejects prefill,
  # so it gets the continue instruction.
  curl -N http://{addr}/v1/messages -H 'content-type: application/json' \
    -d '{{"model":"{claude}","max_tokens":1024,"stream":true,{question}}}'

  # OpenAI Chat Completions: demo-gpt-primary resets; demo-gpt-prefix continues a prefill.
  curl -N http://{addr}/v1/chat/completions -H 'content-type: application/json' \
    -d '{{"model":"{gpt}","stream":true,"stream_options":{{"include_usage":true}},{question}}}'

  # OpenAI Responses: the same GPT primary resets; its fallback continues by instruction.
  curl -N http://{addr}/v1/responses -H 'content-type: application/json' \
    -d '{{"model":"{responses}","stream":true,"input":"Why do streams break?"}}'

Script other failures with a header, e.g. -H 'x-demo-fault: stall@20' or
-H 'x-demo-fault: error@20' or -H 'x-demo-fault: 529'; turn fallback off with
-H 'x-midstream-fallback: off'. What the gateway counted: curl http://{admin}/metrics
See examples/gateway/demo.rs or README.md.
"#,
        claude = demo::CLAUDE_PRIMARY,
        gpt = demo::GPT_PRIMARY,
        responses = demo::RESPONSES_PRIMARY,
    )
}
