//! The seam filter: at a seam, text the client already has is dropped.

/// Drops, at the seam, text the client already has: an echo of the whole partial answer, and
/// whitespace that the request had to strip and the model sent again.
#[derive(Debug)]
pub(crate) struct SeamText {
    echo: String,
    ws: String,
    pending: String,
    phase: SeamPhase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeamPhase {
    Echo,
    Whitespace,
    Through,
}

impl SeamText {
    /// `echo`: what a model that repeats the answer so far would send first; `ws`: whitespace
    /// the client has that the request left out.
    pub(crate) fn new(echo: &str, ws: &str) -> Self {
        SeamText {
            echo: echo.to_owned(),
            ws: ws.to_owned(),
            pending: String::new(),
            phase: if !echo.is_empty() {
                SeamPhase::Echo
            } else if !ws.is_empty() {
                SeamPhase::Whitespace
            } else {
                SeamPhase::Through
            },
        }
    }

    /// Whether the filter still changes text.
    pub(crate) fn active(&self) -> bool {
        self.phase != SeamPhase::Through
    }

    /// Appends to `out` what of `piece` the client should get now.
    pub(crate) fn filter(&mut self, piece: &str, out: &mut String) {
        match self.phase {
            SeamPhase::Through => out.push_str(piece),
            SeamPhase::Echo => {
                self.pending.push_str(piece);
                if self.echo.starts_with(self.pending.as_str()) {
                    if self.pending.len() == self.echo.len() {
                        self.pending.clear();
                        self.phase = self.after_echo();
                    }
                    return;
                }
                let pending = std::mem::take(&mut self.pending);
                self.phase = self.after_echo();
                let rest = pending.strip_prefix(self.echo.as_str()).unwrap_or(&pending);
                self.filter(rest, out);
            }
            SeamPhase::Whitespace => {
                let mut keep = piece;
                while let (Some(a), Some(b)) = (self.ws.chars().next(), keep.chars().next()) {
                    if a != b {
                        break;
                    }
                    self.ws.drain(..a.len_utf8());
                    keep = &keep[b.len_utf8()..];
                }
                if !keep.is_empty() || self.ws.is_empty() {
                    self.phase = SeamPhase::Through;
                }
                out.push_str(keep);
            }
        }
    }

    /// The continuation ended: anything held while it looked like an echo goes out after all.
    pub(crate) fn flush(&mut self, out: &mut String) {
        if self.phase == SeamPhase::Echo {
            let pending = std::mem::take(&mut self.pending);
            self.phase = self.after_echo();
            self.filter(&pending, out);
        }
        self.phase = SeamPhase::Through;
    }

    fn after_echo(&self) -> SeamPhase {
        if self.ws.is_empty() {
            SeamPhase::Through
        } else {
            SeamPhase::Whitespace
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seam: &mut SeamText, pieces: &[&str]) -> String {
        let mut out = String::new();
        for p in pieces {
            seam.filter(p, &mut out);
        }
        seam.flush(&mut out);
        out
    }

    #[test]
    fn an_echo_of_the_partial_answer_is_dropped() {
        let mut s = SeamText::new("Hello wor", "");
        assert_eq!(run(&mut s, &["Hel", "lo w", "orld", " again"]), "ld again");
    }

    #[test]
    fn text_that_only_starts_like_the_echo_is_kept() {
        let mut s = SeamText::new("Hello", "");
        assert_eq!(run(&mut s, &["Hel", "p me"]), "Help me");
    }

    #[test]
    fn stripped_whitespace_sent_again_is_dropped_once() {
        let mut s = SeamText::new("", " \n");
        assert_eq!(run(&mut s, &[" ", "\nnext \n"]), "next \n");
        let mut s = SeamText::new("", "\n\n");
        assert_eq!(run(&mut s, &["\nX"]), "X");
    }

    #[test]
    fn a_short_continuation_that_matched_the_echo_is_released_at_the_end() {
        let mut s = SeamText::new("Hello world", "");
        assert_eq!(run(&mut s, &["Hello"]), "Hello");
    }
}
