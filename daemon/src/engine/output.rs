//! Turns a stream of token bytes into text that is safe to send: complete UTF-8 only, and
//! never any part of a stop string.
//!
//! Tokens split multi-byte characters, and stop strings span tokens, so both need a small
//! hold-back buffer. Pure Rust, no llama.cpp, so it is unit-tested here.

/// The text side of one generating sequence.
#[derive(Debug, Default)]
pub(super) struct TextOutput {
    /// Bytes of an incomplete UTF-8 character at the end of the last piece.
    partial: Vec<u8>,
    /// Decoded text that may still be the start of a stop string.
    held: String,
    stop: Vec<String>,
}

/// What pushing a piece produced.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pushed {
    /// Text that can be sent now (may be empty).
    Text(String),
    /// A stop string matched: the text before it, after which the sequence ends.
    Stopped(String),
}

impl TextOutput {
    pub(super) fn new(stop: Vec<String>) -> Self {
        let stop = stop.into_iter().filter(|s| !s.is_empty()).collect();
        Self {
            stop,
            ..Self::default()
        }
    }

    /// Adds the bytes of one token.
    pub(super) fn push(&mut self, bytes: &[u8]) -> Pushed {
        self.partial.extend_from_slice(bytes);
        let complete = complete_utf8_len(&self.partial);
        match std::str::from_utf8(&self.partial[..complete]) {
            Ok(text) => self.held.push_str(text),
            // Invalid bytes (not merely incomplete) cannot become valid later.
            Err(_) => self
                .held
                .push_str(&String::from_utf8_lossy(&self.partial[..complete])),
        }
        self.partial.drain(..complete);

        if let Some(at) = self
            .stop
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()))
            .min()
        {
            self.held.truncate(at);
            return Pushed::Stopped(std::mem::take(&mut self.held));
        }
        let keep = self.held_back_len();
        let emit_to = self.held.len() - keep;
        let rest = self.held.split_off(emit_to);
        Pushed::Text(std::mem::replace(&mut self.held, rest))
    }

    /// The text still held back, for when the sequence ends without a stop string.
    pub(super) fn finish(&mut self) -> String {
        let mut text = std::mem::take(&mut self.held);
        text.push_str(&String::from_utf8_lossy(&self.partial));
        self.partial.clear();
        text
    }

    /// Length of the longest suffix of `held` that is a proper prefix of some stop string.
    fn held_back_len(&self) -> usize {
        let mut keep = 0;
        for stop in &self.stop {
            let longest = (stop.len() - 1).min(self.held.len());
            for len in (keep + 1..=longest).rev() {
                let start = self.held.len() - len;
                if self.held.is_char_boundary(start) && stop.starts_with(&self.held[start..]) {
                    keep = len;
                    break;
                }
            }
        }
        keep
    }
}

/// How many leading bytes of `bytes` can be decoded now: everything except an incomplete
/// (but so far valid) character at the very end.
fn complete_utf8_len(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(error) if error.error_len().is_none() => error.valid_up_to(),
        // An invalid sequence somewhere: decode all of it lossily, unless the very end is an
        // incomplete character that the next token may finish.
        Err(_) => {
            let tail_start = bytes.len().saturating_sub(3);
            (tail_start..bytes.len())
                .find(|&start| {
                    let tail = &bytes[start..];
                    matches!(std::str::from_utf8(tail), Err(e) if e.valid_up_to() == 0 && e.error_len().is_none())
                })
                .unwrap_or(bytes.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stop: &[&str], pieces: &[&[u8]]) -> (String, bool) {
        let mut output = TextOutput::new(stop.iter().map(|s| (*s).to_owned()).collect());
        let mut text = String::new();
        for piece in pieces {
            match output.push(piece) {
                Pushed::Text(t) => text.push_str(&t),
                Pushed::Stopped(t) => {
                    text.push_str(&t);
                    return (text, true);
                }
            }
        }
        text.push_str(&output.finish());
        (text, false)
    }

    #[test]
    fn multibyte_character_split_across_tokens_is_never_replaced() {
        let snowman = "☃".as_bytes();
        let (text, _) = run(&[], &[b"a", &snowman[..1], &snowman[1..], b"b"]);
        assert_eq!(text, "a☃b");
    }

    #[test]
    fn incomplete_character_is_held_until_complete() {
        let mut output = TextOutput::new(vec![]);
        let euro = "€".as_bytes();
        assert_eq!(output.push(&euro[..2]), Pushed::Text(String::new()));
        assert_eq!(output.push(&euro[2..]), Pushed::Text("€".to_owned()));
    }

    #[test]
    fn stop_string_across_tokens_is_cut() {
        let (text, stopped) = run(&["7, 8"], &[b" 6", b",", b" 7", b",", b" 8", b","]);
        assert_eq!(text, " 6, ");
        assert!(stopped);
    }

    #[test]
    fn prefix_of_stop_is_held_then_released() {
        let mut output = TextOutput::new(vec!["</s>".to_owned()]);
        assert_eq!(output.push(b"a</"), Pushed::Text("a".to_owned()));
        assert_eq!(output.push(b"b"), Pushed::Text("</b".to_owned()));
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let (text, stopped) = run(&["cd", "b"], &[b"abcd"]);
        assert_eq!(text, "a");
        assert!(stopped);
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        let (text, _) = run(&[], &[b"a\xffb"]);
        assert_eq!(text, "a\u{fffd}b");
    }
}
