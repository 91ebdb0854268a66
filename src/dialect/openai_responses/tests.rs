use super::encode::sequence_number;
use super::*;
use crate::rewrite::rewritten;
use serde_json::json;

const BODY: &[u8] = br#"{"model":"a","max_output_tokens":50,"instructions":"Be brief.","input":[{"role":"user","content":"hi"}],"stream":true}"#;

#[test]
fn instruction_appends_the_partial_answer_and_the_instruction_as_input_items() {
    let how = Strategy::Instruction("go on".into());
    let v = rewritten(&WIRE, BODY, "b", &how, "Hel", 3).unwrap();
    assert_eq!(v["model"], "b");
    assert_eq!(v["max_output_tokens"], 47);
    assert_eq!(v["instructions"], "Be brief.");
    assert_eq!(
        v["input"],
        json!([{"role":"user","content":"hi"},{"role":"assistant","content":"Hel"},{"role":"user","content":"go on"}])
    );
}

#[test]
fn a_string_input_becomes_the_opening_user_item() {
    let body = br#"{"model":"a","input":"Say \"hi\"","stream":true}"#;
    let how = Strategy::Instruction("go on".into());
    let v = rewritten(&WIRE, body, "b", &how, "H", 1).unwrap();
    assert_eq!(
        v["input"],
        json!([{"role":"user","content":"Say \"hi\""},{"role":"assistant","content":"H"},{"role":"user","content":"go on"}])
    );
    let v = rewritten(&WIRE, body, "b", &Strategy::Restart, "H", 1).unwrap();
    assert_eq!(v["input"], "Say \"hi\"");
}

#[test]
fn max_output_tokens_shrinks_but_not_below_the_api_minimum() {
    let how = Strategy::Instruction("go on".into());
    let v = rewritten(&WIRE, BODY, "b", &how, "Hel", 45).unwrap();
    assert_eq!(v["max_output_tokens"], 16);
}

#[test]
fn prefill_and_conversation_are_not_continued() {
    let how = Strategy::Prefill(crate::strategy::Prefill::Assistant);
    assert!(rewritten(&WIRE, BODY, "b", &how, "Hel", 1).is_err());
    let body = br#"{"model":"a","conversation":"conv_1","input":[{"role":"user","content":"hi"}]}"#;
    let how = Strategy::Instruction("go on".into());
    let err = rewritten(&WIRE, body, "b", &how, "Hel", 1).unwrap_err();
    assert!(err.to_string().contains("conversation"), "{err}");
    // Nothing reached the client: the same request elsewhere is fine.
    assert!(rewritten(&WIRE, body, "b", &Strategy::Restart, "", 0).is_ok());
}

#[test]
fn previous_response_id_is_kept_for_the_provider_that_can_resolve_it() {
    let body = br#"{"model":"a","previous_response_id":"resp_1","input":"more"}"#;
    let how = Strategy::Instruction("go on".into());
    let v = rewritten(&WIRE, body, "b", &how, "Hel", 1).unwrap();
    assert_eq!(v["previous_response_id"], "resp_1");
}

#[test]
fn background_requests_are_retried_only_before_the_client_has_events() {
    let index = RequestIndex::read(
        br#"{"model":"a","background":true,"input":"x"}"#,
        &WIRE.request,
    );
    let mut t = Transcript::new(100);
    assert!(WIRE.check_retry(&Strategy::Restart, &index, &t).is_ok());
    t.mark_started();
    assert!(WIRE.check_retry(&Strategy::Restart, &index, &t).is_err());
    let index = RequestIndex::read(br#"{"model":"a","input":"x"}"#, &WIRE.request);
    assert!(WIRE.check_retry(&Strategy::Restart, &index, &t).is_ok());
}

#[test]
fn in_band_errors_of_either_shape_are_read_and_classified() {
    let mut d = EventDecoder::default();
    let mut items = Vec::new();
    let nested = r#"{"type":"error","sequence_number":2,"error":{"type":"too_many_requests","code":"rate_limit_exceeded","message":"slow down","param":null}}"#;
    d.decode(None, nested, &mut items).unwrap();
    let Item::Error(e) = items[0] else { panic!() };
    assert!(!e.client);
    assert_eq!(e.message.get(nested), r#""slow down""#);
    items.clear();
    let flat = r#"{"type":"error","code":"invalid_prompt","message":"no","param":null,"sequence_number":1}"#;
    d.decode(None, flat, &mut items).unwrap();
    let Item::Error(e) = items[0] else { panic!() };
    assert!(e.client);
    items.clear();
    let failed = r#"{"type":"response.failed","sequence_number":9,"response":{"id":"r","status":"failed","error":{"code":"server_error","message":"boom"}}}"#;
    d.decode(None, failed, &mut items).unwrap();
    let Item::Error(e) = items[0] else { panic!() };
    assert!(!e.client);
    assert_eq!(e.code.get(failed), r#""server_error""#);
}

#[test]
fn an_event_for_an_item_never_added_is_unreadable() {
    let mut d = EventDecoder::default();
    let mut items = Vec::new();
    let delta = r#"{"type":"response.output_text.delta","output_index":3,"content_index":0,"delta":"x","sequence_number":5}"#;
    assert!(d.decode(None, delta, &mut items).is_err());
    assert!(d
        .decode(None, r#"{"sequence_number":1}"#, &mut items)
        .is_err());
    assert!(d.decode(None, "[1]", &mut items).is_err());
}

/// A decoder with a message open at output 0 and a function call at output 1.
fn decoder_with_outputs() -> EventDecoder {
    let mut d = EventDecoder::default();
    let mut items = Vec::new();
    for added in [
        r#"{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_1","type":"message","status":"in_progress","content":[],"role":"assistant"}}"#,
        r#"{"type":"response.output_item.added","sequence_number":3,"output_index":1,"item":{"id":"fc_1","type":"function_call","status":"in_progress","call_id":"call_1","name":"f","arguments":""}}"#,
    ] {
        d.decode(None, added, &mut items).unwrap();
    }
    d
}

#[test]
fn the_fast_lane_reads_a_text_delta_exactly_as_the_general_reader_does() {
    let shapes = [
        // The API's key order.
        r#"{"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hel","logprobs":[],"obfuscation":"a1"}"#,
        // Sorted keys, whitespace, an escape, logprobs with nested values.
        r#"{ "content_index" : 0, "delta" : "l\u00f6 \"q\"\n", "item_id" : "msg_1", "logprobs" : [{"token":"l","logprob":-0.5e-3,"bytes":[108],"top_logprobs":[]}], "output_index" : 0, "sequence_number" : 17, "type" : "response.output_text.delta" }"#,
        // No sequence number (older streams), an empty delta, an unknown member.
        r#"{"type":"response.output_text.delta","output_index":0,"delta":"","extra":{"a":[true,false,null]}}"#,
    ];
    for data in shapes {
        let mut d = decoder_with_outputs();
        let fast = d
            .fast_text(Some(b"response.output_text.delta"), data.as_bytes())
            .unwrap_or_else(|| panic!("not on the fast lane: {data}"));
        let mut items = Vec::new();
        d.decode(None, data, &mut items).unwrap();
        let [Item::Text { block, literal }] = items[..] else {
            panic!("{items:?}")
        };
        assert_eq!(fast.block, block, "{data}");
        assert_eq!(fast.literal, literal.raw(data), "{data}");
        let (mut general, mut read) = (String::new(), String::new());
        literal.read_into(data, &mut general);
        crate::relay::item::read_literal(fast.literal, fast.plain, &mut read);
        assert_eq!(read, general, "{data}");
        assert_eq!(fast.number, sequence_number(data), "{data}");
        assert!(
            d.fast_text(None, data.as_bytes()).is_some(),
            "no event name"
        );
    }
}

#[test]
fn the_fast_lane_leaves_every_other_shape_to_the_general_reader() {
    let d = &mut decoder_with_outputs();
    let shape = |members: &str| format!("{{{members}}}");
    let ok =
        r#""type":"response.output_text.delta","sequence_number":4,"output_index":0,"delta":"x""#;
    assert!(d.fast_text(None, shape(ok).as_bytes()).is_some());
    let not_fast = [
        // Another event, or the same name escaped or twice.
        ok.replace("output_text.delta", "refusal.delta"),
        ok.replace(r#""type""#, r#""\u0074ype""#),
        format!(r#"{ok},"type":"response.output_text.delta""#),
        format!(r#"{ok},"delta":"y""#),
        format!(r#"{ok},"output_index":0"#),
        format!(r#"{ok},"sequence_number":5"#),
        // A member the general reader reads on other events.
        format!(r#"{ok},"item":null"#),
        format!(r#"{ok},"response":{{}}"#),
        format!(r#"{ok},"error":null"#),
        // An output that is not a message, or never added.
        ok.replace(r#""output_index":0"#, r#""output_index":1"#),
        ok.replace(r#""output_index":0"#, r#""output_index":7"#),
        // Numbers that are not whole, or not numbers.
        ok.replace(r#""output_index":0"#, r#""output_index":0.0"#),
        ok.replace(r#""output_index":0"#, r#""output_index":"0""#),
        ok.replace(r#""sequence_number":4"#, r#""sequence_number":-4"#),
        ok.replace(r#""sequence_number":4"#, r#""sequence_number":4e0"#),
        ok.replace(
            r#""sequence_number":4"#,
            r#""sequence_number":99999999999999999999999"#,
        ),
        // A delta that is not text, or does not read exactly.
        ok.replace(r#""delta":"x""#, r#""delta":null"#),
        ok.replace(r#""delta":"x""#, r#""delta":"\x""#),
        ok.replace(r#""delta":"x""#, "\"delta\":\"a\tb\""),
        // Anything else invalid in the event.
        format!(r#"{ok},"logprobs":[01]"#),
        format!(r#"{ok},"a":tru"#),
    ];
    for members in &not_fast {
        let data = shape(members);
        assert!(d.fast_text(None, data.as_bytes()).is_none(), "{data}");
    }
    // Not one object, a missing member, another event name, bytes that are not UTF-8.
    for data in [
        format!("{} x", shape(ok)),
        format!("[{}]", shape(ok)),
        shape(&ok.replace(r#","delta":"x""#, "")),
        shape(&ok.replace(r#","output_index":0"#, "")),
    ] {
        assert!(d.fast_text(None, data.as_bytes()).is_none(), "{data}");
    }
    let data = shape(ok);
    assert!(d.fast_text(Some(b"message"), data.as_bytes()).is_none());
    let mut bytes = data.into_bytes();
    let x = bytes.windows(3).position(|w| w == b"\"x\"").unwrap();
    bytes[x + 1] = 0xff;
    assert!(d.fast_text(None, &bytes).is_none(), "not UTF-8");
}

#[test]
fn the_sequence_number_is_read_in_either_key_order() {
    assert_eq!(
        sequence_number(r#"{"type":"x","sequence_number":12}"#),
        Some(12)
    );
    assert_eq!(
        sequence_number(r#"{"a":"\"sequence_number\":3","sequence_number": 7,"b":1}"#),
        Some(7)
    );
    assert_eq!(sequence_number(r#"{"type":"x"}"#), None);
    assert_eq!(
        sequence_number(r#"{"a":"sequence_number", "sequence_number" : 8}"#),
        Some(8),
        "whitespace around the colon; the name as a value first"
    );
}
