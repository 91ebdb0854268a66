//! The SSE framer against `sse-stream`, a peer parser, on the recorded fixtures and on a long
//! synthetic stream: MB/s and events/s.
//!
//! Three readers of the same frames:
//! * `framer`: `internals::Framer`, cutting complete events (what the relay does for every
//!   event it forwards untouched);
//! * `framer+fields`: the same plus each event's `event:` name and joined `data:` (found by the
//!   framer in the same scan) copied into owned bytes, which is what `sse-stream` hands out (an
//!   `Sse` with owned `String`s);
//! * `sse-stream`: `SseByteStream` over the same `Bytes` frames.
//!
//! Frames: the fixtures arrive one event per frame, as a model's stream does; the long stream
//! both that way and in 16 KiB reads (a fast upstream, or a burst after a stall).

mod support;

use std::convert::Infallible;
use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use futures_util::Stream;
use tower_midstream::internals::{next_fields, Framer};

#[global_allocator]
static ALLOC: support::alloc::Counting = support::alloc::Counting;

const FIXTURES: &[&str] = &[
    "anthropic_text.sse",
    "anthropic_thinking.sse",
    "anthropic_redacted_thinking.sse",
    "anthropic_tool_use.sse",
    "openai_chat_text.sse",
    "openai_chat_usage.sse",
    "openai_chat_tools.sse",
    "openrouter_midstream_error.sse",
];

fn fixture(name: &str) -> Bytes {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
}

/// One frame per event (every fixture is LF-only with a blank line after each event).
fn per_event(bytes: &Bytes) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut at = 0;
    for end in memchr::memmem::find_iter(bytes, b"\n\n") {
        out.push(bytes.slice(at..end + 2));
        at = end + 2;
    }
    if at < bytes.len() {
        out.push(bytes.slice(at..));
    }
    out
}

fn fixed(bytes: &Bytes, size: usize) -> Vec<Bytes> {
    (0..bytes.len())
        .step_by(size)
        .map(|at| bytes.slice(at..(at + size).min(bytes.len())))
        .collect()
}

fn framer(frames: &[Bytes]) -> usize {
    let mut f = Framer::new(1 << 20);
    let mut n = 0;
    for frame in frames {
        f.push(frame.clone());
        while let Some(ev) = f.next_event() {
            black_box(ev.expect("within the limit"));
            n += 1;
        }
    }
    n + usize::from(f.finish().is_some())
}

fn framer_fields(frames: &[Bytes]) -> usize {
    let mut f = Framer::new(1 << 20);
    let mut n = 0;
    for frame in frames {
        f.push(frame.clone());
        while let Some(ev) = next_fields(&mut f) {
            let (name, data) = ev.expect("within the limit");
            black_box((name, data));
            n += 1;
        }
    }
    n
}

/// `sse-stream` over the same frames, polled to the end with a no-op waker (every frame is
/// ready, so nothing ever waits).
fn sse_stream(frames: &[Bytes]) -> usize {
    struct Frames<'a>(std::slice::Iter<'a, Bytes>);
    impl Stream for Frames<'_> {
        type Item = Result<Bytes, Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            Poll::Ready(self.0.next().cloned().map(Ok))
        }
    }
    let mut s = sse_stream::SseByteStream::new(Frames(frames.iter()));
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    let mut n = 0;
    loop {
        match Pin::new(&mut s).poll_next(&mut cx) {
            Poll::Ready(Some(ev)) => {
                black_box(ev.expect("a valid stream"));
                n += 1;
            }
            Poll::Ready(None) => return n,
            Poll::Pending => unreachable!("every frame is ready"),
        }
    }
}

/// A long answer: 20,000 deltas of an Anthropic text block (about 2.7 MB).
fn long_stream() -> Bytes {
    Bytes::from(support::stream::primary_events(20_000).concat())
}

/// One row of the summary: what was read, and how much per iteration.
struct Row {
    group: &'static str,
    label: String,
    events: usize,
    bytes: usize,
}

const READERS: [&str; 3] = ["framer", "framer+fields", "sse-stream"];

fn bench(c: &mut Criterion, group: &'static str, label: &str, frames: &[Bytes]) -> Row {
    let bytes: usize = frames.iter().map(Bytes::len).sum();
    let events = framer(frames);
    // The readers must agree on what they read before their speeds are compared. sse-stream
    // skips comment-only blocks and the framer hands them out, so compare with those removed.
    let comments = {
        let mut f = Framer::new(1 << 20);
        let mut n = 0;
        for frame in frames {
            f.push(frame.clone());
            while let Some(ev) = next_fields(&mut f) {
                let (name, data) = ev.unwrap();
                n += usize::from(name.is_none() && data.is_none());
            }
        }
        n
    };
    assert_eq!(
        sse_stream(frames),
        events - comments,
        "{label}: event counts differ"
    );
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::ElementsAndBytes {
        elements: events as u64,
        bytes: bytes as u64,
    });
    g.bench_with_input(BenchmarkId::new("framer", label), frames, |b, f| {
        b.iter(|| framer(f))
    });
    g.bench_with_input(BenchmarkId::new("framer+fields", label), frames, |b, f| {
        b.iter(|| framer_fields(f))
    });
    g.bench_with_input(BenchmarkId::new("sse-stream", label), frames, |b, f| {
        b.iter(|| sse_stream(f))
    });
    g.finish();
    Row {
        group,
        label: label.to_owned(),
        events,
        bytes,
    }
}

/// Criterion's median time per iteration, in ns, from the estimates it saved.
fn median_ns(dir: &std::path::Path, group: &str, reader: &str, label: &str) -> Option<f64> {
    let path = dir
        .join(group.replace('/', "_"))
        .join(reader)
        .join(label)
        .join("new/estimates.json");
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64()
}

fn summary(dir: &std::path::Path, rows: &[Row]) -> String {
    let mut t = String::from(
        "| stream | events | bytes | framer MB/s | framer Mev/s | framer+fields MB/s | framer+fields Mev/s | sse-stream MB/s | sse-stream Mev/s | framer+fields ÷ sse-stream time |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in rows {
        let ns: Vec<Option<f64>> = READERS
            .iter()
            .map(|reader| median_ns(dir, r.group, reader, &r.label))
            .collect();
        t.push_str(&format!(
            "| {} {} | {} | {} |",
            r.group.trim_start_matches("framer/"),
            r.label,
            r.events,
            r.bytes
        ));
        for ns in &ns {
            match ns {
                Some(ns) => t.push_str(&format!(
                    " {:.0} | {:.1} |",
                    r.bytes as f64 / ns * 1e3,
                    r.events as f64 / ns * 1e3
                )),
                None => t.push_str(" – | – |"),
            }
        }
        match (ns[1], ns[2]) {
            (Some(a), Some(b)) => t.push_str(&format!(" {:.2} |\n", a / b)),
            _ => t.push_str(" – |\n"),
        }
    }
    t
}

fn main() {
    let quick = support::quick();
    let dir = support::out_dir().join("criterion");
    let mut c = Criterion::default()
        .output_directory(&dir)
        .warm_up_time(Duration::from_millis(if quick { 100 } else { 500 }))
        .measurement_time(Duration::from_millis(if quick { 200 } else { 1500 }))
        .sample_size(if quick { 10 } else { 30 })
        .configure_from_args();
    let mut rows = Vec::new();
    for name in FIXTURES {
        let frames = per_event(&fixture(name));
        rows.push(bench(
            &mut c,
            "framer/fixtures",
            name.trim_end_matches(".sse"),
            &frames,
        ));
    }
    let long = long_stream();
    rows.push(bench(&mut c, "framer/long", "per-event", &per_event(&long)));
    rows.push(bench(
        &mut c,
        "framer/long",
        "16KiB",
        &fixed(&long, 16 << 10),
    ));
    c.final_summary();
    if support::skipped("framer") {
        return;
    }
    let text = format!(
        "## framer\n\n{}\n\nMedian of criterion's samples; MB = 10^6 bytes, Mev = 10^6 events. Fixtures one event per frame.\n",
        summary(&dir, &rows)
    );
    support::report("framer", &text);
}
