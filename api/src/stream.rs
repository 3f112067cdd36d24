//! Splitting a streamed response body into lines, whatever the chunk boundaries.
//!
//! NDJSON (whaled's own streams) and server-sent events (an OpenAI-compatible upstream) both
//! arrive as byte chunks that cut lines anywhere, even inside a UTF-8 character. The splitting
//! lives here, apart from the HTTP code, so it can be tested and fuzzed on its own.

/// Collects body chunks and hands out whole lines.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buffer: Vec<u8>,
    /// Bytes at the front of `buffer` already handed out; dropped on the next push rather
    /// than per line, so a chunk holding many lines is not shifted once per line.
    start: usize,
    /// Bytes of `buffer` known to hold no newline, so a long line that arrives in many small
    /// chunks is scanned once, not once per chunk.
    scanned: usize,
}

impl LineSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends the next chunk of the body.
    pub fn push(&mut self, chunk: &[u8]) {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buffer.extend_from_slice(chunk);
    }

    /// The next whole line, without its newline and surrounding ASCII whitespace (`\r` of
    /// CRLF included); blank lines are skipped. `None` until more of the body arrives.
    pub fn next_line(&mut self) -> Option<&[u8]> {
        loop {
            let newline = self.buffer[self.scanned..]
                .iter()
                .position(|&b| b == b'\n')
                .map(|at| self.scanned + at);
            let Some(newline) = newline else {
                self.scanned = self.buffer.len();
                return None;
            };
            let begin = self.start;
            self.start = newline + 1;
            self.scanned = self.start;
            if !self.buffer[begin..newline].trim_ascii().is_empty() {
                return Some(self.buffer[begin..newline].trim_ascii());
            }
        }
    }

    /// The body has ended: the last line if it had no newline after it. Leaves the splitter
    /// empty.
    pub fn finish(&mut self) -> Option<Vec<u8>> {
        let rest = self.buffer[self.start..].trim_ascii().to_vec();
        self.buffer.clear();
        self.start = 0;
        self.scanned = 0;
        (!rest.is_empty()).then_some(rest)
    }

    /// Bytes received but not yet handed out as a line.
    pub fn pending(&self) -> &[u8] {
        &self.buffer[self.start..]
    }
}

/// The payload of a server-sent event line: what follows `data:`, trimmed. `None` for the
/// other lines (comments, `event:`, `id:`, `retry:`), which a chat stream has no use for.
pub fn sse_data(line: &[u8]) -> Option<&[u8]> {
    line.trim_ascii()
        .strip_prefix(b"data:")
        .map(<[u8]>::trim_ascii)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut splitter = LineSplitter::new();
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.push(chunk);
            while let Some(line) = splitter.next_line() {
                lines.push(line.to_vec());
            }
        }
        lines.extend(splitter.finish());
        lines
    }

    #[test]
    fn lines_spanning_chunks_come_out_whole() {
        let lines = lines_of(&[b"{\"a\":", b"1}\n{\"b\"", b":2}\r\n\n  \n{\"c\":3}"]);
        assert_eq!(lines, [&b"{\"a\":1}"[..], b"{\"b\":2}", b"{\"c\":3}"]);
    }

    #[test]
    fn a_character_cut_between_chunks_is_joined() {
        let text = "{\"t\":\"é🐋\"}\n".as_bytes();
        let chunks: Vec<&[u8]> = text.chunks(1).collect();
        assert_eq!(lines_of(&chunks), [&text[..text.len() - 1]]);
    }

    #[test]
    fn pending_keeps_the_unfinished_line() {
        let mut splitter = LineSplitter::new();
        splitter.push(b"one\ntw");
        assert_eq!(splitter.next_line(), Some(&b"one"[..]));
        assert_eq!(splitter.next_line(), None);
        assert_eq!(splitter.pending(), b"tw");
        splitter.push(b"o\n");
        assert_eq!(splitter.next_line(), Some(&b"two"[..]));
        assert_eq!(splitter.finish(), None);
    }

    #[test]
    fn sse_data_lines_give_their_payload_and_others_nothing() {
        assert_eq!(sse_data(b"data: {\"x\":1}\r"), Some(&b"{\"x\":1}"[..]));
        assert_eq!(sse_data(b"data:[DONE]"), Some(&b"[DONE]"[..]));
        assert_eq!(sse_data(b": keep-alive"), None);
        assert_eq!(sse_data(b"event: message"), None);
    }
}
