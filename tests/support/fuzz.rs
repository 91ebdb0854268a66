//! The properties the fuzz targets check (fuzz/fuzz_targets), shared with tests/fuzz_corpus.rs,
//! which replays every corpus file under `cargo test`. Each function panics on a violation.

use std::time::Duration;

use bytes::Bytes;
use tower_midstream::internals::Framer;
use tower_midstream::MidStreamFallbackLayer;

use super::probe::rewrites;
use super::upstream::{Dialect, Fault, Scripted, Upstream, FAULTS};
use super::{
    chain, check, events_of, expected, fixture, path, request_body, run, runtime, same_answer,
    whole_of, FIXTURES,
};

/// Reads cut points from the front of `data`: one byte `n`, then `n` little-endian u16.
fn cuts_and_rest(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let n = (n % 24) as usize;
    let take = (2 * n).min(rest.len());
    let cuts = rest[..take]
        .chunks(2)
        .map(|c| u16::from_le_bytes([c[0], *c.get(1).unwrap_or(&0)]) as usize)
        .collect();
    (cuts, &rest[take..])
}

fn frames<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for c in cuts {
        out.push(&input[at..c]);
        at = c;
    }
    out.push(&input[at..]);
    out
}

/// Where the last complete event of `input` ends: after the last empty line, an LF, CRLF or
/// CR each ending a line (a reference written apart from the framer, byte by byte).
pub fn complete_prefix(input: &[u8]) -> usize {
    let mut boundary = 0;
    let mut at_line_start = true;
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\r' | b'\n' => {
                if input[i] == b'\r' && input.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                i += 1;
                if at_line_start {
                    boundary = i;
                }
                at_line_start = true;
            }
            _ => {
                at_line_start = false;
                i += 1;
            }
        }
    }
    boundary
}

/// The framer never panics, and the events it yields, in order, are exactly the input up to
/// its last complete event, however the input is cut into frames.
pub fn framer(data: &[u8]) {
    let (cuts, input) = cuts_and_rest(data);
    let mut framer = Framer::new(usize::MAX);
    let mut out = Vec::new();
    for frame in frames(input, &cuts) {
        framer.push(Bytes::copy_from_slice(frame));
        while let Some(ev) = framer.next_event() {
            out.extend_from_slice(ev.expect("no limit"));
        }
    }
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&input[..complete_prefix(input)])
    );
    assert_eq!(out, &input[..complete_prefix(input)]);
}

/// Relaying, three ways. A first byte below 150 picks a structured case: a recorded stream
/// with some line ends, cut anywhere, failing at any byte with any fault, and a fallback that
/// accepts prefill or not; the client's stream must obey the seam rules and hold the whole
/// answer. From 150 to 199, a recorded stream in which one event's data is cut anywhere and
/// the rest of the input put in its place (a valid shape with a mutated tail: what a broken
/// or hostile upstream sends): see [`relay_mutated`]. From 200 up, the rest is an arbitrary
/// primary stream: the layer must not panic and must end the response.
pub fn relay(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode >= 200 {
        return relay_garbage(mode, rest);
    }
    if mode >= 150 {
        return relay_mutated(mode, rest);
    }
    let pick = |i: usize| rest.get(i).copied().unwrap_or(0) as usize;
    let f = &FIXTURES[mode as usize % FIXTURES.len()];
    let ends = ["\n", "\r\n", "\r"][pick(0) % 3];
    let fault = FAULTS[pick(1) % FAULTS.len()];
    let prefill = pick(2) % 2 == 0;
    let at = (pick(3) | pick(4) << 8) % 1001;
    let (cuts, _) = cuts_and_rest(rest.get(5..).unwrap_or(&[]));

    let recorded = fixture(f.name);
    let whole = whole_of(f.dialect, &recorded);
    let bytes = Bytes::from(
        String::from_utf8(recorded.to_vec())
            .unwrap()
            .replace('\n', ends),
    );
    let sent = bytes.slice(..bytes.len() * at / 1000);
    let mut upstream = Upstream::new(f.dialect, whole.clone());
    if !prefill {
        upstream = upstream
            .rejecting_prefill("fallback")
            .rejecting_prefill("fallback-2");
    }
    let upstream = upstream.then(Scripted::Stream {
        bytes: sent,
        cuts,
        fault: Some(fault),
    });
    let layer =
        MidStreamFallbackLayer::new(chain(f.dialect, prefill)).idle_timeout(Duration::from_secs(5));
    let out = runtime().block_on(run(
        layer,
        &upstream,
        path(f.dialect),
        Bytes::from(request_body(f).to_string()),
    ));
    let got = check(f.dialect, f.usage, &out.bytes).unwrap_or_else(|e| {
        panic!(
            "{} {fault:?} at {at}‰: {e}\n{}",
            f.name,
            String::from_utf8_lossy(&out.bytes)
        )
    });
    if let Err(e) = same_answer(&got, &expected(&whole)) {
        panic!("{} {fault:?} at {at}‰: {e}", f.name);
    }
}

fn relay_garbage(mode: u8, primary: &[u8]) {
    let (dialect, f) = if mode % 2 == 0 {
        (Dialect::Anthropic, &FIXTURES[0])
    } else {
        (Dialect::OpenAi, &FIXTURES[4])
    };
    let whole = whole_of(dialect, &fixture(f.name));
    let upstream = Upstream::new(dialect, whole)
        .lenient()
        .then(Scripted::Stream {
            bytes: Bytes::copy_from_slice(primary),
            cuts: vec![],
            fault: Some(Fault::Truncate),
        });
    let layer =
        MidStreamFallbackLayer::new(chain(dialect, true)).idle_timeout(Duration::from_secs(5));
    let out = runtime().block_on(async {
        tokio::time::timeout(
            Duration::from_secs(3600),
            run(
                layer,
                &upstream,
                path(dialect),
                Bytes::from(request_body(f).to_string()),
            ),
        )
        .await
        .expect("the response ends")
    });
    // Whatever came in, what the layer itself adds is well-formed: it only ever cuts at event
    // boundaries, so the client's parser ends between events.
    let _ = check::parse_sse(
        &String::from_utf8_lossy(&out.bytes)
            .into_owned()
            .into_bytes(),
    );
}

/// One event of a recorded stream (picked by two bytes) has its data cut (at a position picked
/// by two more) and the rest of the input put in its place, then the stream goes on as
/// recorded. The layer must not panic, must end the response, and must never hand the client
/// what it cannot read: every byte UTF-8, and (Anthropic and Chat, whose every event the layer
/// reads exactly) every event's data valid JSON.
pub fn relay_mutated(mode: u8, rest: &[u8]) {
    let pick = |i: usize| rest.get(i).copied().unwrap_or(0) as usize;
    let f = &FIXTURES[mode as usize % FIXTURES.len()];
    let recorded = fixture(f.name);
    let events = events_of(&recorded);
    let k = (pick(0) | pick(1) << 8) % events.len();
    let event = &events[k][..];
    let data = event
        .windows(6)
        .position(|w| w == b"data: ")
        .map_or(0, |at| at + 6);
    let end = data
        + event[data..]
            .iter()
            .position(|&b| b == b'\n')
            .unwrap_or(event.len() - data);
    let cut = data + (pick(2) | pick(3) << 8) % (end - data + 1);
    let mut primary = events[..k].concat();
    primary.extend_from_slice(&event[..cut]);
    primary.extend_from_slice(rest.get(4..).unwrap_or(&[]));
    primary.extend_from_slice(b"\n\n");
    primary.extend_from_slice(&events[k + 1..].concat());
    let whole = whole_of(f.dialect, &recorded);
    let upstream = Upstream::new(f.dialect, whole)
        .lenient()
        .then(Scripted::Stream {
            bytes: Bytes::from(primary),
            cuts: vec![],
            fault: None,
        });
    let layer =
        MidStreamFallbackLayer::new(chain(f.dialect, true)).idle_timeout(Duration::from_secs(5));
    let out = runtime().block_on(async {
        tokio::time::timeout(
            Duration::from_secs(3600),
            run(
                layer,
                &upstream,
                path(f.dialect),
                Bytes::from(request_body(f).to_string()),
            ),
        )
        .await
        .expect("the response ends")
    });
    let text = std::str::from_utf8(&out.bytes).expect("nothing but UTF-8 reaches the client");
    // Both dialects prove an event valid before any of it is forwarded (Chat's fast path since
    // Hardening II); only Chat's terminal sentinel is not JSON, and the openai SDKs (Python and
    // Node) end the stream on any data that starts with it (`[DONE]\t` included).
    if matches!(f.dialect, Dialect::Anthropic | Dialect::OpenAi) {
        for ev in check::parse_sse(text.as_bytes()) {
            assert!(
                ev.data.starts_with("[DONE]")
                    // The grammar, not serde's number range: `1E888...` is JSON the SDKs
                    // read (as infinity), so it is not a failure of the layer.
                    || serde_json::from_str::<serde::de::IgnoredAny>(&ev.data).is_ok(),
                "{} event {k} cut at {cut}: the client got data it cannot read: {:?}",
                f.name,
                ev.data
            );
        }
    }
}

/// Rewriting: the first byte picks the dialect, the rest is the request body. No strategy
/// panics; each either gives a well-formed request for the target or says why it cannot.
pub fn rewrite(data: &[u8]) {
    let Some((&d, body)) = data.split_first() else {
        return;
    };
    let dialect = if d % 2 == 0 {
        Dialect::Anthropic
    } else {
        Dialect::OpenAi
    };
    for (strategy, result) in rewrites(dialect, Bytes::copy_from_slice(body)) {
        match result {
            Ok(v) => {
                assert_eq!(v["model"], "target", "{strategy}: {v}");
                assert!(v["messages"].is_array(), "{strategy}: {v}");
            }
            Err(e) => assert!(
                !e.contains("MALFORMED OUTPUT") && !e.is_empty(),
                "{strategy}: {e}"
            ),
        }
    }
}
