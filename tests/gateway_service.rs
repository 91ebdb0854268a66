//! The example gateway as a service, over real loopback sockets: slow and idle clients are cut
//! off, connections and HTTP/2 streams are limited, every socket has `TCP_NODELAY`, a shutdown
//! lets open streams finish within the grace period, `/healthz` answers.
//!
//! Timeouts here are short real ones; each assertion holds whenever the timer fires, and an
//! outer bound turns a wait that never ends into a failure instead of a hang.
//!
//! Alone in its binary: it installs a global tracing subscriber to read the logs.

#[allow(dead_code)]
#[path = "../examples/gateway/budget.rs"]
mod budget;
#[allow(dead_code)]
#[path = "../examples/gateway/config.rs"]
mod config;
#[allow(dead_code)]
#[path = "../examples/gateway/demo.rs"]
mod demo;
#[allow(dead_code)]
#[path = "../examples/gateway/proxy.rs"]
mod proxy;
#[allow(dead_code)]
#[path = "../examples/gateway/server.rs"]
mod server;
mod support;
#[allow(dead_code)]
#[path = "../examples/gateway/token.rs"]
mod token;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longer than any timer in these tests: reaching it means a wait had no end.
const NEVER: Duration = Duration::from_secs(30);

fn logs() -> &'static Mutex<Vec<u8>> {
    support::global_logs::install(tracing::Level::INFO)
}

struct Running {
    addr: SocketAddr,
    demo: demo::Demo,
    stop: Option<oneshot::Sender<()>>,
    serving: JoinHandle<()>,
}

impl Running {
    /// Starts the shutdown; the serving task ends once the connections are done or cut.
    fn shut_down(&mut self) {
        let _ = self.stop.take().expect("once").send(());
    }
}

/// The gateway in front of a demo upstream sending one event per `pace`, with `[server]` and
/// `[fallback]` lines added to the demo's config.
async fn start(pace: Duration, server: &str, fallback: &str) -> Running {
    let _ = logs();
    let demo = demo::Demo::new(pace);
    let upstream = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream_addr = upstream.local_addr().unwrap();
    tokio::spawn(demo.clone().serve(upstream));
    let text = demo::gateway_config(upstream_addr, "127.0.0.1:0".parse().unwrap())
        .replace(
            "[fallback]\n",
            &format!("[server]\n{server}\n\n[fallback]\n{fallback}\n"),
        )
        .replace("idle_timeout_ms = 2000", "")
        .replace("keep_alive_ms = 500", "");
    let config = config::parse(&text, &|_| None).expect("a valid config");
    let listener = TcpListener::bind(config.listen).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = tokio::spawn(server::serve(
        listener,
        proxy::build(&config),
        config.server.clone(),
        async move {
            let _ = stopped.await;
        },
    ));
    Running {
        addr,
        demo,
        stop: Some(stop),
        serving,
    }
}

/// Reads until the peer closes the connection; what it sent before.
async fn until_closed(conn: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(NEVER, read)
        .await
        .expect("the gateway closed the connection");
    got
}

/// Writes `bytes` one at a time, `every` apart, until done or the peer is gone.
fn dribble(mut writer: tokio::net::tcp::OwnedWriteHalf, bytes: Vec<u8>, every: Duration) {
    tokio::spawn(async move {
        for b in bytes {
            if writer.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(every).await;
        }
    });
}

fn messages_body() -> String {
    json!({"model": demo::CLAUDE_PRIMARY, "max_tokens": 100, "stream": true,
           "messages": [{"role": "user", "content": "hi"}]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_sent_a_byte_at_a_time_are_cut_off_at_the_header_read_timeout() {
    let gw = start(Duration::ZERO, "header_read_timeout_ms = 300", "").await;
    let conn = TcpStream::connect(gw.addr).await.unwrap();
    let (mut read, write) = conn.into_split();
    // Far more header than the timeout lets through: each byte is well within any per-byte
    // timer, the whole is not.
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\n{}",
        "x-pad: 0\r\n".repeat(100)
    );
    dribble(write, head.into_bytes(), Duration::from_millis(20));
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(NEVER, read.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the connection was closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_sent_a_byte_at_a_time_is_cut_off_at_the_body_deadline() {
    // Each byte arrives well within the wait allowed between pieces; the whole does not.
    let gw = start(
        Duration::ZERO,
        "request_body_timeout_ms = 10000\nrequest_body_deadline_ms = 400",
        "",
    )
    .await;
    let body = messages_body();
    let conn = TcpStream::connect(gw.addr).await.unwrap();
    let (mut read, mut write) = conn.into_split();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    write.write_all(head.as_bytes()).await.unwrap();
    dribble(write, body.into_bytes(), Duration::from_millis(20));
    let mut got = Vec::new();
    tokio::time::timeout(NEVER, read.read_to_end(&mut got))
        .await
        .expect("the gateway answered and closed the connection")
        .ok();
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert!(got.contains("did not arrive within 400 ms"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_that_stops_is_cut_off_at_the_body_timeout() {
    let gw = start(Duration::ZERO, "request_body_timeout_ms = 300", "").await;
    let body = messages_body();
    let mut conn = TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let got = until_closed(&mut conn).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
    assert!(got.contains("not received within"), "{got}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed_after_the_keep_alive_timeout_in_every_protocol() {
    let gw = start(
        Duration::ZERO,
        "keep_alive_timeout_ms = 300\nheader_read_timeout_ms = 0",
        "",
    )
    .await;
    // Connected, and silent from the start.
    let mut silent = TcpStream::connect(gw.addr).await.unwrap();
    assert!(until_closed(&mut silent).await.is_empty());
    // HTTP/1.1, kept alive after a request.
    let mut kept = TcpStream::connect(gw.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let got = until_closed(&mut kept).await;
    let got = String::from_utf8_lossy(&got);
    assert!(
        got.starts_with("HTTP/1.1 200") && got.ends_with("ok\n"),
        "{got}"
    );
    // h2c, after a request.
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let res = send
        .send_request(
            Request::get(format!("http://{}/healthz", gw.addr))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    drop(res);
    tokio::time::timeout(NEVER, conn)
        .await
        .expect("the server ended the h2 connection")
        .unwrap()
        .ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_in_flight_is_not_idle_however_long_it_is_quiet() {
    // The primary stalls for the whole idle timeout of the layer (600 ms), far longer than the
    // keep-alive timeout, before the fallback continues: the connection must stay.
    let gw = start(
        Duration::ZERO,
        "keep_alive_timeout_ms = 100",
        "idle_timeout_ms = 600\nkeep_alive_ms = 0",
    )
    .await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(format!("http://{}/v1/messages", gw.addr))
        .header("content-type", "application/json")
        .header("x-demo-fault", "stall@6")
        .body(Full::new(Bytes::from(messages_body())))
        .unwrap();
    let res = client.request(req).await.unwrap();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let answer = support::check(support::Dialect::Anthropic, false, &bytes).unwrap();
    assert!(
        answer.error.is_none() && !answer.text.is_empty(),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_limit_holds_new_connections_back_and_says_so() {
    let gw = start(
        Duration::ZERO,
        "max_connections = 2\nkeep_alive_timeout_ms = 0\nheader_read_timeout_ms = 0",
        "",
    )
    .await;
    let first = TcpStream::connect(gw.addr).await.unwrap();
    let _second = TcpStream::connect(gw.addr).await.unwrap();
    // The third connects (the kernel's backlog) but is not served while two are open.
    let mut third = TcpStream::connect(gw.addr).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut byte)).await;
    assert!(early.is_err(), "served beyond the connection limit");
    drop(first);
    let got = until_closed(&mut third).await;
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(
        logs.contains("connection limit reached") && logs.contains("max_connections=2"),
        "{logs}"
    );
}

/// An h2 frame: length, type, flags, stream, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Reads one h2 frame: (type, flags, stream, payload).
async fn read_frame(conn: &mut TcpStream) -> (u8, u8, u32, Vec<u8>) {
    let mut head = [0u8; 9];
    conn.read_exact(&mut head).await.unwrap();
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    let mut payload = vec![0u8; len];
    conn.read_exact(&mut payload).await.unwrap();
    (head[3], head[4], stream, payload)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_h2c_connection_holds_no_more_streams_than_max_concurrent_streams() {
    const LIMIT: u32 = 4;
    let gw = start(
        Duration::ZERO,
        &format!("max_concurrent_streams = {LIMIT}"),
        "",
    )
    .await;
    let mut conn = TcpStream::connect(gw.addr).await.unwrap();
    conn.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    conn.write_all(&frame(0x4, 0, 0, &[])).await.unwrap();
    // The server's SETTINGS come first and advertise the limit.
    let (kind, _, _, settings) = read_frame(&mut conn).await;
    assert_eq!(kind, 0x4);
    let advertised = settings
        .chunks(6)
        .find(|s| s[..2] == [0, 3])
        .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
    assert_eq!(advertised, Some(LIMIT));
    conn.write_all(&frame(0x4, 0x1, 0, &[])).await.unwrap();
    // Twelve POSTs whose bodies never come: each holds a stream open.
    let mut headers = vec![0x83, 0x86, 0x04, 12];
    headers.extend_from_slice(b"/v1/messages");
    headers.extend_from_slice(&[0x01, 1, b'x']);
    for i in 0..12u32 {
        conn.write_all(&frame(0x1, 0x4, 1 + 2 * i, &headers))
            .await
            .unwrap();
    }
    // Every stream beyond the limit is refused (RST_STREAM, REFUSED_STREAM).
    let mut refused = Vec::new();
    let read = async {
        while refused.len() < 12 - LIMIT as usize {
            let (kind, _, stream, payload) = read_frame(&mut conn).await;
            if kind == 0x3 {
                assert_eq!(payload, 7u32.to_be_bytes(), "REFUSED_STREAM");
                refused.push(stream);
            }
        }
    };
    tokio::time::timeout(NEVER, read)
        .await
        .expect("the streams beyond the limit were refused");
    refused.sort_unstable();
    let expected: Vec<u32> = (LIMIT..12).map(|i| 1 + 2 * i).collect();
    assert_eq!(refused, expected);
}

#[tokio::test]
async fn accepted_and_upstream_sockets_have_tcp_nodelay() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let _client = TcpStream::connect(addr).await.unwrap();
    let accepted = server::accept(&listener).await;
    assert!(accepted.nodelay().unwrap(), "the accepted socket");

    let mut connector = proxy::connector();
    let uri: http::Uri = format!("http://{addr}/").parse().unwrap();
    let stream = tower::Service::call(&mut connector, uri).await.unwrap();
    let hyper_rustls::MaybeHttpsStream::Http(tcp) = stream else {
        panic!("plain TCP for an http:// upstream");
    };
    assert!(tcp.inner().nodelay().unwrap(), "the upstream socket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_lets_an_open_stream_finish_and_refuses_new_connections() {
    // A paced stream: about 40 events, 20 ms apart.
    let mut gw = start(Duration::from_millis(20), "shutdown_grace_ms = 20000", "").await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(format!("http://{}/v1/messages", gw.addr))
        .header("content-type", "application/json")
        .header("x-demo-fault", "none")
        .body(Full::new(Bytes::from(messages_body())))
        .unwrap();
    let res = client.request(req).await.unwrap();
    let mut body = res.into_body();
    let mut bytes = body
        .frame()
        .await
        .unwrap()
        .unwrap()
        .into_data()
        .unwrap()
        .to_vec();
    gw.shut_down();
    while let Some(frame) = body.frame().await {
        bytes.extend_from_slice(&frame.expect("the stream goes on").into_data().unwrap());
    }
    let answer = support::check(support::Dialect::Anthropic, false, &bytes).unwrap();
    assert!(
        answer.error.is_none() && answer.text.len() > 50,
        "{answer:?}"
    );
    drop(client);
    tokio::time::timeout(NEVER, &mut gw.serving)
        .await
        .expect("the gateway stopped once the stream was done")
        .unwrap();
    assert!(
        TcpStream::connect(gw.addr).await.is_err(),
        "no new connection after the shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_cuts_what_is_still_open_after_the_grace_period() {
    let mut gw = start(
        Duration::ZERO,
        "shutdown_grace_ms = 300",
        "idle_timeout_ms = 0",
    )
    .await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(format!("http://{}/v1/messages", gw.addr))
        .header("content-type", "application/json")
        .header("x-demo-fault", "stall@3")
        .body(Full::new(Bytes::from(messages_body())))
        .unwrap();
    let res = client.request(req).await.unwrap();
    let mut body = res.into_body();
    body.frame().await.unwrap().unwrap();
    gw.shut_down();
    tokio::time::timeout(NEVER, &mut gw.serving)
        .await
        .expect("the gateway stopped after the grace period")
        .unwrap();
    let rest = tokio::time::timeout(NEVER, async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stalled stream was cut");
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(logs.contains("shutdown grace period over"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_ok() {
    let gw = start(Duration::ZERO, "", "").await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    for method in ["GET", "HEAD"] {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{}/healthz", gw.addr))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let res = client.request(req).await.unwrap();
        assert_eq!(res.status(), 200, "{method}");
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let want: &[u8] = if method == "GET" { b"ok\n" } else { b"" };
        assert_eq!(&bytes[..], want, "{method}");
    }
}

/// Sends a POST's head with `expect: 100-continue` and reads the `100 Continue`: hyper sends
/// it when the body is first read, so the gateway has taken the request in (and reserved its
/// share of the body budget) when this returns.
async fn post_head_taken_in(addr: SocketAddr, headers: &str) -> TcpStream {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         expect: 100-continue\r\nconnection: close\r\n{headers}\r\n"
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(NEVER, conn.read(&mut byte))
            .await
            .expect("the gateway reads the body")
            .unwrap();
        assert_eq!(n, 1, "closed early: {}", String::from_utf8_lossy(&got));
        got.push(byte[0]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 100 Continue"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    conn
}

/// One request through a hyper-util client: its status, `retry-after` and body.
async fn post(addr: SocketAddr, path: &str, fault: &str, body: String) -> (u16, String, String) {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let req = Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .header("x-demo-fault", fault)
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let res = client.request(req).await.unwrap();
    let status = res.status().as_u16();
    let retry_after = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        retry_after,
        String::from_utf8_lossy(&bytes).into_owned(),
    )
}

fn chat_body() -> String {
    json!({"model": demo::GPT_PRIMARY, "stream": true,
           "messages": [{"role": "user", "content": "hi"}]})
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_beyond_the_body_budget_gets_503_in_its_dialect_until_the_answer_holding_it_ends()
{
    let body = messages_body();
    let size = body.len();
    // Room for exactly one body of this size.
    let gw = start(
        Duration::ZERO,
        &format!("max_request_bytes_held = {size}"),
        &format!("max_request_bytes = {size}"),
    )
    .await;
    let mut first = post_head_taken_in(
        gw.addr,
        &format!("content-length: {size}\r\nx-demo-fault: none\r\n"),
    )
    .await;

    let (status, retry_after, anthropic) =
        post(gw.addr, "/v1/messages", "none", messages_body()).await;
    assert_eq!((status, retry_after.as_str()), (503, "1"), "{anthropic}");
    let anthropic: serde_json::Value = serde_json::from_str(&anthropic).unwrap();
    assert_eq!(anthropic["type"], "error");
    assert_eq!(anthropic["error"]["type"], "overloaded_error");
    let (status, retry_after, chat) =
        post(gw.addr, "/v1/chat/completions", "none", chat_body()).await;
    assert_eq!((status, retry_after.as_str()), (503, "1"), "{chat}");
    let chat: serde_json::Value = serde_json::from_str(&chat).unwrap();
    assert_eq!(chat["error"]["type"], "server_error");
    assert_eq!(chat["error"]["code"], "overloaded");
    assert!(
        gw.demo.calls().is_empty(),
        "nothing reached the upstream while the first body was still arriving"
    );
    let logs = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    assert!(
        logs.contains("request body budget full")
            && logs.contains(&format!("max_request_bytes_held={size}")),
        "{logs}"
    );

    // The first body arrives and is answered in full; its share is back once the answer ends
    // (hyper drops the response body before it writes the end of it).
    first.write_all(body.as_bytes()).await.unwrap();
    let got = String::from_utf8_lossy(&until_closed(&mut first).await).into_owned();
    assert!(
        got.starts_with("HTTP/1.1 200") && got.contains("message_stop"),
        "{got}"
    );
    let (status, _, text) = post(gw.addr, "/v1/messages", "none", messages_body()).await;
    assert_eq!(status, 200, "{text}");
    let answer = support::check(support::Dialect::Anthropic, false, text.as_bytes()).unwrap();
    assert!(answer.error.is_none(), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_of_unknown_length_holds_the_most_a_body_may_be_until_it_ends_then_what_arrived() {
    let body = messages_body();
    let size = body.len();
    // Two bodies of this size, or one of unknown length.
    let gw = start(
        Duration::ZERO,
        &format!("max_request_bytes_held = {}", 2 * size),
        &format!("max_request_bytes = {}\nidle_timeout_ms = 0", 2 * size),
    )
    .await;
    // The primary stalls for good: the first answer stays open, holding its body.
    let mut first = post_head_taken_in(
        gw.addr,
        "transfer-encoding: chunked\r\nx-demo-fault: stall@3\r\n",
    )
    .await;
    let (status, _, text) = post(gw.addr, "/v1/messages", "none", messages_body()).await;
    assert_eq!(status, 503, "the unknown length reserved it all: {text}");

    first
        .write_all(format!("{size:x}\r\n{body}\r\n0\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The answer's head comes after the body was read whole (the layer collects it first).
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains("message_start") {
        let n = tokio::time::timeout(NEVER, first.read(&mut buf))
            .await
            .expect("the first answer starts")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(got.starts_with(b"HTTP/1.1 200"));

    // Now it holds only what arrived: one more body of the same size fits.
    let (status, _, text) = post(gw.addr, "/v1/messages", "none", messages_body()).await;
    assert_eq!(status, 200, "{text}");
    let answer = support::check(support::Dialect::Anthropic, false, text.as_bytes()).unwrap();
    assert!(answer.error.is_none(), "{answer:?}");
}
