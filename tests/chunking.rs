//! However the upstream's bytes are cut into frames, and whatever line ends it uses, the client
//! gets the same stream; a failure at any byte (a torn event included) still ends in the whole
//! answer.

mod support;

use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;
use support::*;
use tower_midstream::MidStreamFallbackLayer;

/// The stream with every line end made `ends` (a fixture recorded with CRLF included).
fn with_line_ends(bytes: &Bytes, ends: &str) -> Bytes {
    Bytes::from(
        String::from_utf8(bytes.to_vec())
            .unwrap()
            .replace("\r\n", "\n")
            .replace('\n', ends),
    )
}

/// What the client sees: the same bytes for LF and CR streams; for CRLF streams the same events
/// (the LF of a CRLF cut between frames is relayed on its own, after an event the relay holds
/// back and rewrites it may stand apart from it as an empty line, which no parser sees).
fn assert_same(ends: &str, got: &Bytes, want: &Bytes) -> Result<(), TestCaseError> {
    if ends == "\r\n" {
        prop_assert_eq!(check::parse_sse(got), check::parse_sse(want));
    } else {
        prop_assert_eq!(got, want);
    }
    Ok(())
}

/// The client's bytes when the primary sends `bytes` cut at `cuts`, then `fault`.
fn relay(f: &Fixture, bytes: Bytes, cuts: Vec<usize>, fault: Option<Fault>) -> (Bytes, Whole) {
    let whole = whole_of(f.dialect, &fixture(f.name));
    let upstream =
        Upstream::new(f.dialect, whole.clone()).then(Scripted::Stream { bytes, cuts, fault });
    let layer =
        MidStreamFallbackLayer::new(chain(f.dialect, true)).idle_timeout(Duration::from_secs(5));
    let out = runtime().block_on(run(
        layer,
        &upstream,
        path(f.dialect),
        Bytes::from(request_body(f).to_string()),
    ));
    (out.bytes, whole)
}

fn cuts(max: usize) -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(0..max, 0..40).prop_map(|mut v| {
        v.sort_unstable();
        v
    })
}

proptest! {
    // 500 cases by default; PROPTEST_CASES=N for a longer run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(500),
        ..ProptestConfig::default()
    })]

    #[test]
    fn any_chunking_and_line_ending_gives_the_client_the_same_stream(
        which in 0..FIXTURES.len(),
        ends in prop::sample::select(vec!["\n", "\r\n", "\r"]),
        cuts in cuts(20_000),
    ) {
        let f = &FIXTURES[which];
        let bytes = with_line_ends(&fixture(f.name), ends);
        let (reference, whole) = relay(f, bytes.clone(), vec![], None);
        let (chunked, _) = relay(f, bytes, cuts, None);
        assert_same(ends, &chunked, &reference)?;
        let got = check(f.dialect, f.usage, &chunked).map_err(TestCaseError::fail)?;
        same_answer(&got, &expected(&whole)).map_err(TestCaseError::fail)?;
    }

    #[test]
    fn a_failure_at_any_byte_under_any_chunking_still_ends_in_the_whole_answer(
        which in 0..FIXTURES.len(),
        ends in prop::sample::select(vec!["\n", "\r\n", "\r"]),
        at in 0.0f64..1.0,
        fault in prop::sample::select(FAULTS.to_vec()),
        cuts in cuts(20_000),
    ) {
        let f = &FIXTURES[which];
        let bytes = with_line_ends(&fixture(f.name), ends);
        let sent = bytes.slice(..(bytes.len() as f64 * at) as usize);
        let (reference, whole) = relay(f, sent.clone(), vec![], Some(fault));
        let (chunked, _) = relay(f, sent, cuts, Some(fault));
        assert_same(ends, &chunked, &reference)?;
        let got = check(f.dialect, f.usage, &chunked).map_err(TestCaseError::fail)?;
        same_answer(&got, &expected(&whole)).map_err(TestCaseError::fail)?;
    }
}
