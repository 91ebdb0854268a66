//! Server-sent events, cut at event boundaries without copying.
//!
//! The [`Framer`] turns upstream body frames into complete events. An event that lies within
//! one frame is handed out as a range of that frame, so forwarding it costs a refcount, not a
//! copy. An event that spans frames keeps its earlier parts as slices of the frames they came
//! in (`head`), and is copied once into a reused scratch buffer only so that it can be read as
//! one slice. Nothing that is not a complete event ever leaves the framer: a failure mid-event
//! cannot hand the client half an event.
//!
//! An event dribbled in many small frames would cost one slice handle per frame (32 bytes
//! each, and every frame's buffer kept alive): past [`MAX_HEAD_PIECES`] slices, they are copied
//! into one owned buffer (`carry`), so what an event holds stays within a small multiple of its
//! size however it was cut.
//!
//! Line ends may be LF, CRLF or CR (the SSE spec allows all three); an event ends at an empty
//! line. A CR that ends the empty line ends the event at once, even at the very end of a frame:
//! waiting to see whether an LF follows would hold a complete event back (and lose it to a
//! stall). When the next frame does start with that LF, it is handed out as an event of its
//! own, with no fields, and relayed as it came: no byte is lost, and where the relay holds
//! back the event before it, the client sees an empty line, which every parser ignores.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

/// Slices of earlier frames kept for an unfinished event before they are copied into one
/// buffer: enough that an event spread over a few frames is forwarded without a copy.
const MAX_HEAD_PIECES: usize = 8;

/// Cuts a stream of frames into complete SSE events.
#[derive(Debug)]
pub(crate) struct Framer {
    /// The frame being cut.
    frame: Bytes,
    /// Where the next event starts in `frame`.
    start: usize,
    /// How far `frame` has been scanned.
    scan: usize,
    /// Earlier parts of an event that began in previous frames, after `carry`.
    head: Vec<Bytes>,
    /// The oldest parts of that event, copied together once `head` held too many slices.
    carry: BytesMut,
    /// Bytes of the unfinished event in `carry` and `head`.
    head_len: usize,
    /// Set when the last event handed out used `head`, which is cleared on the next call.
    head_used: bool,
    /// Contiguous copy of an event that spans frames.
    scratch: Vec<u8>,
    /// The current line is empty so far (we are right after a line end, or at an event start).
    at_line_start: bool,
    /// The previous byte was a CR: an LF right after it is the rest of a CRLF, not a new line.
    after_cr: bool,
    max_event: usize,
}

/// A complete event, as bytes to forward and as one slice to read.
#[derive(Debug)]
pub(crate) struct Event<'a> {
    /// The whole event, line ends and the closing empty line included.
    pub(crate) raw: &'a [u8],
    /// The frame `tail` is a range of.
    pub(crate) frame: &'a Bytes,
    /// Parts from earlier frames (empty when the event lies within the current frame).
    pub(crate) head: &'a [Bytes],
    /// The part in the current frame.
    pub(crate) tail: Range<usize>,
}

impl Event<'_> {
    /// The event as one `Bytes`: a slice of the frame when it lies within one, else a copy.
    pub(crate) fn to_bytes(&self) -> Bytes {
        if self.head.is_empty() {
            self.frame.slice(self.tail.clone())
        } else {
            Bytes::copy_from_slice(self.raw)
        }
    }
}

/// An event grew past the per-event limit before it was complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Oversized {
    pub(crate) limit: usize,
}

impl Framer {
    pub(crate) fn new(max_event: usize) -> Self {
        Framer {
            frame: Bytes::new(),
            start: 0,
            scan: 0,
            head: Vec::new(),
            carry: BytesMut::new(),
            head_len: 0,
            head_used: false,
            scratch: Vec::new(),
            at_line_start: true,
            after_cr: false,
            max_event,
        }
    }

    /// Forget everything: a new upstream attempt starts.
    pub(crate) fn reset(&mut self) {
        self.frame = Bytes::new();
        self.start = 0;
        self.scan = 0;
        self.head.clear();
        self.carry.clear();
        self.head_len = 0;
        self.head_used = false;
        self.at_line_start = true;
        self.after_cr = false;
    }

    /// Start cutting a new frame. Call after `next` returned `None` for the previous one.
    pub(crate) fn push(&mut self, frame: Bytes) {
        debug_assert!(self.start == self.frame.len(), "previous frame not drained");
        self.frame = frame;
        self.start = 0;
        self.scan = 0;
    }

    /// The next complete event of the current frame, if any.
    pub(crate) fn next_event(&mut self) -> Option<Result<Event<'_>, Oversized>> {
        if self.head_used {
            self.head.clear();
            self.head_len = 0;
            self.head_used = false;
        }
        match self.find_boundary() {
            Some(end) => {
                let start = self.start;
                self.start = end;
                let len = self.head_len + (end - start);
                if len > self.max_event {
                    return Some(Err(Oversized {
                        limit: self.max_event,
                    }));
                }
                Some(Ok(self.event(start..end)))
            }
            None => {
                // Keep the unfinished tail as a slice of this frame (no copy).
                if self.start < self.frame.len() {
                    let rest = self.frame.slice(self.start..);
                    self.head_len += rest.len();
                    self.head.push(rest);
                    if self.head.len() > MAX_HEAD_PIECES {
                        self.coalesce();
                    }
                }
                // Let go of the frame: while anyone holds it, hyper cannot reuse its read
                // buffer and allocates a new one for the next read.
                self.frame = Bytes::new();
                self.start = 0;
                self.scan = 0;
                if self.head_len > self.max_event {
                    return Some(Err(Oversized {
                        limit: self.max_event,
                    }));
                }
                None
            }
        }
    }

    /// The body ended. An unfinished event whose last line is complete (only the closing
    /// empty line is missing, as some servers do after their final event) is completed and
    /// returned; anything else is a torn event and is dropped.
    pub(crate) fn finish(&mut self) -> Option<Event<'_>> {
        if self.head_used {
            self.head.clear();
            self.head_len = 0;
            self.head_used = false;
        }
        if self.head_len == 0 || !self.at_line_start {
            return None;
        }
        // After a bare CR, an LF would only complete a CRLF: the empty line must be a CR too.
        let blank: &'static [u8] = if self.after_cr { b"\r" } else { b"\n" };
        self.after_cr = false;
        self.head.push(Bytes::from_static(blank));
        self.head_len += 1;
        self.frame = Bytes::new();
        self.start = 0;
        self.scan = 0;
        Some(self.event(0..0))
    }

    /// Copies the slices of `head` into `carry`, letting go of the frames they kept alive.
    /// `carry` grows by doubling: each byte is copied a bounded number of times on average.
    fn coalesce(&mut self) {
        for part in self.head.drain(..) {
            self.carry.extend_from_slice(&part);
        }
    }

    fn event(&mut self, tail: Range<usize>) -> Event<'_> {
        if !self.carry.is_empty() {
            // The event is complete: `carry` leaves as its first part, its buffer with it.
            let carried = std::mem::take(&mut self.carry).freeze();
            self.head.insert(0, carried);
        }
        if self.head_len == 0 {
            return Event {
                raw: &self.frame[tail.clone()],
                frame: &self.frame,
                head: &[],
                tail,
            };
        }
        self.head_used = true;
        self.scratch.clear();
        for part in &self.head {
            self.scratch.extend_from_slice(part);
        }
        self.scratch.extend_from_slice(&self.frame[tail.clone()]);
        Event {
            raw: &self.scratch,
            frame: &self.frame,
            head: &self.head,
            tail,
        }
    }

    /// Scans for the end of the event that starts at `self.start`; returns the index just
    /// past its closing empty line.
    fn find_boundary(&mut self) -> Option<usize> {
        let bytes = &self.frame[..];
        let len = bytes.len();
        let mut i = self.scan.max(self.start);
        if self.after_cr && i < len {
            self.after_cr = false;
            if bytes[i] == b'\n' {
                i += 1;
                if i - 1 == self.start && self.head_len == 0 {
                    // The rest of a CRLF that ended the previous event: hand it out alone, so
                    // it reaches the client whatever becomes of the next event.
                    self.scan = i;
                    return Some(i);
                }
            }
        }
        while i < len {
            let Some(off) = memchr::memchr2(b'\n', b'\r', &bytes[i..]) else {
                self.at_line_start = false;
                i = len;
                break;
            };
            if off > 0 {
                self.at_line_start = false;
            }
            let at = i + off;
            i = at + 1;
            if bytes[at] == b'\r' {
                if i < len {
                    if bytes[i] == b'\n' {
                        i += 1;
                    }
                } else {
                    self.after_cr = true;
                }
            }
            if self.at_line_start {
                // An empty line: the event is complete.
                self.scan = i;
                return Some(i);
            }
            self.at_line_start = true;
        }
        self.scan = i;
        None
    }
}

/// The fields of one event that the dialects look at.
#[derive(Debug, Default)]
pub(crate) struct Fields<'a> {
    /// The `event:` field, if any.
    pub(crate) event: Option<&'a [u8]>,
    /// The first `data:` line.
    data: Option<&'a [u8]>,
    /// More than one `data:` line: join them (with `\n`) through [`Fields::data`].
    multi_data: bool,
    /// The event has at least one field (it is not only comments and empty lines).
    pub(crate) has_fields: bool,
}

impl<'a> Fields<'a> {
    /// Reads the fields of a complete event.
    pub(crate) fn parse(raw: &'a [u8]) -> Self {
        Self::parse_common(raw).unwrap_or_else(|| Self::parse_any(raw))
    }

    /// The shapes nearly every event has, `[event: NAME\n]data: DATA\n\n`, read with one
    /// search per line; `None` for anything else.
    fn parse_common(raw: &'a [u8]) -> Option<Self> {
        if memchr::memchr(b'\r', raw).is_some() {
            return None;
        }
        let mut rest = raw;
        let mut event = None;
        if let Some(after) = rest.strip_prefix(b"event: ") {
            let end = memchr::memchr(b'\n', after)?;
            event = Some(&after[..end]);
            rest = &after[end + 1..];
        }
        let after = rest.strip_prefix(b"data: ")?;
        let end = memchr::memchr(b'\n', after)?;
        let data = &after[..end];
        if &after[end + 1..] != b"\n" {
            return None;
        }
        Some(Fields {
            event,
            data: Some(data),
            multi_data: false,
            has_fields: true,
        })
    }

    fn parse_any(raw: &'a [u8]) -> Self {
        let mut fields = Fields::default();
        for line in Lines(raw) {
            if line.is_empty() || line[0] == b':' {
                continue;
            }
            fields.has_fields = true;
            let (name, value) = match memchr::memchr(b':', line) {
                Some(colon) => {
                    let value = &line[colon + 1..];
                    (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
                }
                None => (line, &b""[..]),
            };
            match name {
                b"event" => fields.event = Some(value),
                b"data" => {
                    if fields.data.is_some() {
                        fields.multi_data = true;
                    } else {
                        fields.data = Some(value);
                    }
                }
                _ => {}
            }
        }
        fields
    }

    /// The event's data: the single `data:` line as a slice, or several joined into `scratch`.
    pub(crate) fn data<'s>(&self, raw: &'s [u8], scratch: &'s mut Vec<u8>) -> Option<&'s [u8]>
    where
        'a: 's,
    {
        let first = self.data?;
        if !self.multi_data {
            return Some(first);
        }
        scratch.clear();
        let mut any = false;
        for line in Lines(raw) {
            if let Some(value) = line.strip_prefix(b"data") {
                let value = match value.first() {
                    Some(b':') => {
                        let v = &value[1..];
                        v.strip_prefix(b" ").unwrap_or(v)
                    }
                    None => value,
                    Some(_) => continue,
                };
                if any {
                    scratch.push(b'\n');
                }
                scratch.extend_from_slice(value);
                any = true;
            }
        }
        Some(&scratch[..])
    }
}

/// The lines of an event, without their line ends (LF, CRLF or CR).
struct Lines<'a>(&'a [u8]);

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.0.is_empty() {
            return None;
        }
        let bytes = self.0;
        match memchr::memchr2(b'\n', b'\r', bytes) {
            Some(at) => {
                let mut next = at + 1;
                if bytes[at] == b'\r' && bytes.get(next) == Some(&b'\n') {
                    next += 1;
                }
                self.0 = &bytes[next..];
                Some(&bytes[..at])
            }
            None => {
                self.0 = &[];
                Some(bytes)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(chunks: &[&[u8]], max: usize) -> (Vec<Vec<u8>>, bool) {
        let mut framer = Framer::new(max);
        let mut events = Vec::new();
        for chunk in chunks {
            framer.push(Bytes::copy_from_slice(chunk));
            while let Some(ev) = framer.next_event() {
                match ev {
                    Ok(ev) => {
                        // The parts to forward and the readable copy must agree.
                        let mut joined = Vec::new();
                        for h in ev.head {
                            joined.extend_from_slice(h);
                        }
                        joined.extend_from_slice(&ev.frame[ev.tail.clone()]);
                        assert_eq!(joined, ev.raw);
                        events.push(ev.raw.to_vec());
                    }
                    Err(_) => return (events, true),
                }
            }
        }
        (events, false)
    }

    #[test]
    fn events_within_one_frame_are_cut_at_blank_lines() {
        let (evs, _) = cut(&[b"data: a\n\ndata: b\n\n: c\n\n"], 1024);
        assert_eq!(
            evs,
            vec![
                b"data: a\n\n".to_vec(),
                b"data: b\n\n".to_vec(),
                b": c\n\n".to_vec()
            ]
        );
    }

    #[test]
    fn an_event_split_across_frames_is_held_until_complete() {
        let (evs, _) = cut(&[b"event: x\nda", b"ta: 1", b"\n", b"\ndata: 2\n\n"], 1024);
        assert_eq!(
            evs,
            vec![b"event: x\ndata: 1\n\n".to_vec(), b"data: 2\n\n".to_vec()]
        );
    }

    #[test]
    fn crlf_and_cr_line_ends_are_understood_even_when_split() {
        let (evs, _) = cut(
            &[
                b"data: a\r\n\r",
                b"\ndata: b\r\r",
                b"\ndata: c\r",
                b"\n\r\n",
            ],
            1024,
        );
        // A CR that ends the blank line ends the event at once; when it turns out to be the
        // first half of a CRLF, the LF follows as an event of its own (no fields), so the
        // bytes the client sees are the same however the frames were cut.
        assert_eq!(
            evs,
            vec![
                b"data: a\r\n\r".to_vec(),
                b"\n".to_vec(),
                b"data: b\r\r".to_vec(),
                b"\n".to_vec(),
                b"data: c\r\n\r\n".to_vec()
            ]
        );
    }

    #[test]
    fn an_event_over_the_limit_is_reported_before_it_completes() {
        let (evs, over) = cut(&[b"data: 0123456789", b"0123456789"], 16);
        assert!(evs.is_empty());
        assert!(over);
    }

    #[test]
    fn an_event_dribbled_one_byte_per_frame_is_held_in_a_few_pieces() {
        let event = format!("event: e\ndata: {}\n\n", "x".repeat(100_000));
        let mut framer = Framer::new(1 << 20);
        let (mut most_pieces, mut most_bytes) = (0, 0);
        let mut got = Vec::new();
        for byte in event.bytes() {
            framer.push(Bytes::copy_from_slice(&[byte]));
            while let Some(ev) = framer.next_event() {
                got.push(ev.unwrap().raw.to_vec());
            }
            most_pieces = most_pieces.max(framer.head.len());
            // The slice handles and the owned copy: what the carry costs beyond the frames.
            let held =
                framer.head.capacity() * std::mem::size_of::<Bytes>() + framer.carry.capacity();
            most_bytes = most_bytes.max(held);
        }
        assert_eq!(got, vec![event.as_bytes().to_vec()]);
        assert!(
            most_pieces <= MAX_HEAD_PIECES + 1,
            "{most_pieces} pieces held"
        );
        assert!(
            most_bytes <= 3 * event.len(),
            "{most_bytes} bytes held for an event of {}",
            event.len()
        );
    }

    #[test]
    fn an_event_in_a_few_frames_is_forwarded_as_slices_of_them() {
        let frames: Vec<Bytes> = [&b"data: a"[..], b"bc", b"de", b"\n\n"]
            .iter()
            .map(|f| Bytes::copy_from_slice(f))
            .collect();
        let mut framer = Framer::new(1024);
        for frame in &frames[..3] {
            framer.push(frame.clone());
            assert!(framer.next_event().is_none());
        }
        framer.push(frames[3].clone());
        let ev = framer.next_event().unwrap().unwrap();
        assert_eq!(ev.raw, b"data: abcde\n\n");
        let pointers: Vec<*const u8> = ev.head.iter().map(|h| h.as_ptr()).collect();
        let sent: Vec<*const u8> = frames[..3].iter().map(|f| f.as_ptr()).collect();
        assert_eq!(pointers, sent, "no copy below the coalescing threshold");
    }

    #[test]
    fn a_final_event_missing_only_its_blank_line_is_completed_at_eof() {
        let mut framer = Framer::new(1024);
        framer.push(Bytes::from_static(b"data: [DONE]\n"));
        assert!(framer.next_event().is_none());
        let ev = framer.finish().expect("completed");
        assert_eq!(ev.raw, b"data: [DONE]\n\n");
        let mut framer = Framer::new(1024);
        framer.push(Bytes::from_static(b"data: x\r"));
        assert!(framer.next_event().is_none());
        assert_eq!(framer.finish().expect("completed").raw, b"data: x\r\r");
        let mut framer = Framer::new(1024);
        framer.push(Bytes::from_static(b"data: [DO"));
        assert!(framer.next_event().is_none());
        assert!(framer.finish().is_none(), "a torn line is never completed");
    }

    #[test]
    fn fields_join_multi_line_data_and_skip_comments() {
        let raw = b": hi\nevent: e\ndata: a\ndata:b\ndata\n\n";
        let f = Fields::parse(raw);
        assert_eq!(f.event, Some(&b"e"[..]));
        let mut scratch = Vec::new();
        assert_eq!(f.data(raw, &mut scratch), Some(&b"a\nb\n"[..]));
        let c = Fields::parse(b": keep-alive\n\n");
        assert!(!c.has_fields);
        // The common shapes, read fast, agree with the general reading.
        for raw in [
            &b"event: ping\ndata: {}\n\n"[..],
            b"data: [DONE]\n\n",
            b"data: a\r\n\r\n",
            b"event: x\ndata: a\ndata: b\n\n",
            b"event: x\r\ndata: a\n\n",
            b"data:a\n\n",
        ] {
            let (fast, any) = (Fields::parse(raw), Fields::parse_any(raw));
            let (mut s1, mut s2) = (Vec::new(), Vec::new());
            assert_eq!(fast.event, any.event, "{}", String::from_utf8_lossy(raw));
            assert_eq!(
                fast.data(raw, &mut s1),
                any.data(raw, &mut s2),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
