//! Server-sent events, cut at event boundaries without copying, their fields found on the way.
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
//! The scan that finds an event's end visits every line end, so it also reads each line's
//! field name there and records where the `event:`, `data:` and `id:` values lie ([`Fields`]):
//! nothing scans the event a second time to read it.
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
    /// Set when the last event handed out used `head` or `fields`, which are cleared on the
    /// next call.
    used: bool,
    /// Contiguous copy of an event that spans frames.
    scratch: Vec<u8>,
    /// The current line is empty so far (we are right after a line end, or at an event start).
    at_line_start: bool,
    /// The previous byte was a CR: an LF right after it is the rest of a CRLF, not a new line.
    after_cr: bool,
    /// Where the current line began, counted from the start of its event.
    line: usize,
    /// The first bytes of the current line, kept when the line runs past the end of a frame.
    prefix: Prefix,
    /// The fields of the event being cut, as far as it has been scanned.
    fields: Fields,
    max_event: usize,
}

/// The first bytes of a line that spans frames: enough to read its field name.
#[derive(Debug, Default, Clone, Copy)]
struct Prefix {
    bytes: [u8; PREFIX],
    len: usize,
}

/// `event: ` is the longest field name (and its space) the framer reads.
const PREFIX: usize = 8;

/// Where an event's fields lie, as ranges of its raw bytes (a value without its name, colon
/// and the one space after the colon).
#[derive(Debug, Default)]
pub(crate) struct Fields {
    event: Option<Range<usize>>,
    data: Vec<Range<usize>>,
    id: Option<Range<usize>>,
    /// The event has at least one field (it is not only comments and empty lines).
    has_fields: bool,
    /// Its lines that are not empty, comments included.
    lines: usize,
}

impl Fields {
    fn clear(&mut self) {
        self.event = None;
        self.data.clear();
        self.id = None;
        self.has_fields = false;
        self.lines = 0;
    }

    /// The `event:` field's value (the last one), if any.
    pub(crate) fn event(&self) -> Option<Range<usize>> {
        self.event.clone()
    }

    /// The value of each `data:` line, in order.
    pub(crate) fn data(&self) -> &[Range<usize>] {
        &self.data
    }

    /// The `id:` field's value (the last one), if any: once one reaches the client, the
    /// openai Python SDK dispatches an event at every blank line.
    pub(crate) fn id(&self) -> Option<Range<usize>> {
        self.id.clone()
    }

    /// Whether the event has a field at all (else it is only comments and empty lines).
    pub(crate) fn has_fields(&self) -> bool {
        self.has_fields
    }

    /// Whether the event is only line ends: no line at all, not even a comment (the LF of a
    /// CRLF a frame cut from the event before, or a stray empty line).
    pub(crate) fn is_blank(&self) -> bool {
        self.lines == 0
    }

    /// The event is its `data:` lines and at most one `event:` line, nothing else: whoever
    /// reads those has read every byte of it.
    pub(crate) fn plain(&self) -> bool {
        self.lines == self.data.len() + usize::from(self.event.is_some())
    }

    /// Records the line `line` (without its line end), whose first bytes are `head`.
    fn record(&mut self, head: &[u8], line: Range<usize>) {
        let len = line.end - line.start;
        if len == 0 {
            return;
        }
        self.lines += 1;
        let Some(&first) = head.first() else {
            return;
        };
        if first == b':' {
            return;
        }
        self.has_fields = true;
        // The two lines nearly every event is made of, in the spelling nearly every server
        // uses; the rest below.
        match head {
            [b'd', b'a', b't', b'a', b':', b' ', ..] => {
                self.data.push(line.start + 6..line.end);
                return;
            }
            [b'e', b'v', b'e', b'n', b't', b':', b' ', ..] => {
                self.event = Some(line.start + 7..line.end);
                return;
            }
            _ => {}
        }
        // A name, then a colon (or the end of the line), then an optional space.
        let value = |name: usize| {
            if len == name {
                return Some(line.end..line.end);
            }
            if head.get(name) != Some(&b':') {
                return None;
            }
            let skip = usize::from(len > name + 1 && head.get(name + 1) == Some(&b' '));
            Some(line.start + name + 1 + skip..line.end)
        };
        match first {
            b'd' if head.starts_with(b"data") => {
                if let Some(v) = value(4) {
                    self.data.push(v);
                }
            }
            b'e' if head.starts_with(b"event") => {
                if let Some(v) = value(5) {
                    self.event = Some(v);
                }
            }
            b'i' if head.starts_with(b"id") => {
                if let Some(v) = value(2) {
                    self.id = Some(v);
                }
            }
            _ => {}
        }
    }
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
    /// Where its fields lie in `raw`.
    pub(crate) fields: &'a Fields,
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
            used: false,
            scratch: Vec::new(),
            at_line_start: true,
            after_cr: false,
            line: 0,
            prefix: Prefix::default(),
            fields: Fields::default(),
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
        self.used = false;
        self.at_line_start = true;
        self.after_cr = false;
        self.line = 0;
        self.prefix = Prefix::default();
        self.fields.clear();
    }

    /// Start cutting a new frame. Call after `next` returned `None` for the previous one.
    pub(crate) fn push(&mut self, frame: Bytes) {
        debug_assert!(self.start == self.frame.len(), "previous frame not drained");
        self.frame = frame;
        self.start = 0;
        self.scan = 0;
    }

    /// The previous event has been handed out and read: start the next one afresh.
    fn release(&mut self) {
        if self.used {
            self.head.clear();
            self.head_len = 0;
            self.fields.clear();
            self.line = 0;
            self.used = false;
        }
    }

    /// The next complete event of the current frame, if any.
    pub(crate) fn next_event(&mut self) -> Option<Result<Event<'_>, Oversized>> {
        self.release();
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
                // Keep the unfinished tail as a slice of this frame (no copy), and the first
                // bytes of its unfinished line, to read the line's name once it ends.
                if self.start < self.frame.len() {
                    if !self.at_line_start {
                        let begin = self.line_begin_in_frame();
                        let part = &self.frame[begin..];
                        let take = (PREFIX - self.prefix.len).min(part.len());
                        self.prefix.bytes[self.prefix.len..self.prefix.len + take]
                            .copy_from_slice(&part[..take]);
                        self.prefix.len += take;
                    }
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
        self.release();
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
        self.used = true;
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
                fields: &self.fields,
            };
        }
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
            fields: &self.fields,
        }
    }

    /// `pos` of the current frame, counted from the start of the event being cut.
    fn rel(&self, pos: usize) -> usize {
        self.head_len + pos - self.start
    }

    /// Where the current line begins in the current frame (0 when it began in an earlier one).
    fn line_begin_in_frame(&self) -> usize {
        (self.line + self.start).saturating_sub(self.head_len)
    }

    /// Reads the line that ends at `at` of the current frame into the event's fields.
    fn end_line(&mut self, at: usize) {
        let end = self.rel(at);
        let line = self.line..end;
        if self.line >= self.head_len {
            // The whole line is in this frame.
            let begin = self.line + self.start - self.head_len;
            let head = &self.frame[begin..at.min(begin + PREFIX)];
            self.fields.record(head, line);
        } else {
            // It began in an earlier frame: its first bytes were kept, the rest are here.
            let mut head = self.prefix;
            let take = (PREFIX - head.len).min(at);
            head.bytes[head.len..head.len + take].copy_from_slice(&self.frame[..take]);
            head.len += take;
            self.fields.record(&head.bytes[..head.len], line);
        }
        self.prefix.len = 0;
    }

    /// Scans for the end of the event that starts at `self.start`; returns the index just
    /// past its closing empty line.
    fn find_boundary(&mut self) -> Option<usize> {
        let len = self.frame.len();
        let mut i = self.scan.max(self.start);
        if self.after_cr && i < len {
            self.after_cr = false;
            if self.frame[i] == b'\n' {
                i += 1;
                if i - 1 == self.start && self.head_len == 0 {
                    // The rest of a CRLF that ended the previous event: hand it out alone, so
                    // it reaches the client whatever becomes of the next event.
                    self.scan = i;
                    return Some(i);
                }
                self.line = self.rel(i);
            }
        }
        while i < len {
            // After a field, the next line is most often the empty one that ends the event:
            // look at its first byte before searching.
            let off = if self.at_line_start && matches!(self.frame[i], b'\n' | b'\r') {
                0
            } else if let Some(off) = memchr::memchr2(b'\n', b'\r', &self.frame[i..]) {
                off
            } else {
                self.at_line_start = false;
                i = len;
                break;
            };
            if off > 0 {
                self.at_line_start = false;
            }
            let at = i + off;
            i = at + 1;
            if self.frame[at] == b'\r' {
                if i < len {
                    if self.frame[i] == b'\n' {
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
            self.end_line(at);
            self.line = self.rel(i);
            self.at_line_start = true;
        }
        self.scan = i;
        None
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

    /// An event's (name, data lines joined, id, whether it has a field).
    type Read = (Option<Vec<u8>>, Option<Vec<u8>>, Option<Vec<u8>>, bool);

    /// An event's fields as a spec-following parser reads them: written apart from the framer,
    /// line by line.
    fn reference(raw: &[u8]) -> Read {
        let (mut event, mut data, mut id, mut any) = (None, None::<Vec<u8>>, None, false);
        let mut rest = raw;
        while !rest.is_empty() {
            let at = rest
                .iter()
                .position(|&b| b == b'\n' || b == b'\r')
                .unwrap_or(rest.len());
            let line = &rest[..at];
            let mut next = (at + 1).min(rest.len());
            if rest.get(at) == Some(&b'\r') && rest.get(at + 1) == Some(&b'\n') {
                next += 1;
            }
            rest = &rest[next..];
            if line.is_empty() || line[0] == b':' {
                continue;
            }
            any = true;
            let (name, value) = match line.iter().position(|&b| b == b':') {
                Some(c) => (
                    &line[..c],
                    line[c + 1..].strip_prefix(b" ").unwrap_or(&line[c + 1..]),
                ),
                None => (line, &b""[..]),
            };
            match name {
                b"event" => event = Some(value.to_vec()),
                b"id" => id = Some(value.to_vec()),
                b"data" => match &mut data {
                    Some(d) => {
                        d.push(b'\n');
                        d.extend_from_slice(value);
                    }
                    None => data = Some(value.to_vec()),
                },
                _ => {}
            }
        }
        (event, data, id, any)
    }

    fn read(ev: &Event<'_>) -> Read {
        let f = ev.fields;
        let data = (!f.data().is_empty()).then(|| {
            f.data()
                .iter()
                .map(|r| ev.raw[r.clone()].to_vec())
                .collect::<Vec<_>>()
                .join(&b'\n')
        });
        (
            f.event().map(|r| ev.raw[r].to_vec()),
            data,
            f.id().map(|r| ev.raw[r].to_vec()),
            f.has_fields(),
        )
    }

    #[test]
    fn fields_are_read_in_the_same_scan_however_the_event_is_cut() {
        let stream: &[u8] = b": hi\nevent: e\ndata: a\ndata:b\ndata\nid: 7\n\nevent:x\r\ndata:  two spaces\r\n\r\n: only a comment\n\nretry: 5\n\ndata2: no\ndatum\neventful: no\nevent\n\ndata: [DONE]\r\rid\n\n";
        // Every way of cutting the stream in two or three frames reads the same fields.
        let whole = {
            let mut framer = Framer::new(1024);
            framer.push(Bytes::from_static(stream));
            let mut out = Vec::new();
            while let Some(ev) = framer.next_event() {
                let ev = ev.unwrap();
                assert_eq!(
                    read(&ev),
                    reference(ev.raw),
                    "{:?}",
                    String::from_utf8_lossy(ev.raw)
                );
                out.push((ev.raw.to_vec(), read(&ev)));
            }
            out
        };
        assert_eq!(whole.len(), 7);
        assert_eq!(whole[0].1 .0.as_deref(), Some(&b"e"[..]));
        assert_eq!(whole[0].1 .1.as_deref(), Some(&b"a\nb\n"[..]));
        assert_eq!(whole[0].1 .2.as_deref(), Some(&b"7"[..]));
        assert_eq!(whole[1].1 .1.as_deref(), Some(&b" two spaces"[..]));
        assert!(!whole[2].1 .3, "a comment is not a field");
        assert!(whole[3].1 .3, "retry is a field");
        for a in 0..=stream.len() {
            for b in [a, (a + 3).min(stream.len()), (a + 11).min(stream.len())] {
                let mut framer = Framer::new(1024);
                let mut got = Vec::new();
                for part in [&stream[..a], &stream[a..b], &stream[b..]] {
                    framer.push(Bytes::copy_from_slice(part));
                    while let Some(ev) = framer.next_event() {
                        let ev = ev.unwrap();
                        assert_eq!(read(&ev), reference(ev.raw), "cut at {a}, {b}");
                        got.push(ev.raw.to_vec());
                    }
                }
                let joined: Vec<u8> = got.concat();
                assert_eq!(joined, stream, "cut at {a}, {b}");
            }
        }
    }

    #[test]
    fn a_field_name_split_across_frames_is_read() {
        let mut framer = Framer::new(1024);
        let mut names = Vec::new();
        for part in [&b"ev"[..], b"en", b"t: x\nda", b"ta: 1", b"\r", b"\n\r\n"] {
            framer.push(Bytes::copy_from_slice(part));
            while let Some(ev) = framer.next_event() {
                let ev = ev.unwrap();
                names.push(read(&ev));
            }
        }
        assert_eq!(
            names,
            vec![(Some(b"x".to_vec()), Some(b"1".to_vec()), None, true)]
        );
    }
}
