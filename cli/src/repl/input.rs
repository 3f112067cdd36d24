//! Assembles what the user types into whole inputs: a line is an input, unless it opens a
//! `"""` block, which runs until the line that closes it (`"""` may sit at either end of a
//! line, or inside a command such as `/set system """…"""`). The quotes are removed and the
//! lines joined with newlines.

const FENCE: &str = "\"\"\"";

/// What one more line made of the input so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A whole input, ready to use.
    Complete(String),
    /// Inside a `"""` block: ask for another line (prompt `... `).
    Continue,
}

/// Collects lines of a `"""` block.
#[derive(Debug, Default)]
pub struct Assembler {
    /// The lines of an open block; `None` outside a block.
    block: Option<Vec<String>>,
}

impl Assembler {
    /// Feeds one line as read (without its newline).
    pub fn push(&mut self, line: &str) -> Line {
        if let Some(mut lines) = self.block.take() {
            if let Some(at) = line.find(FENCE) {
                lines.push(line[..at].to_owned());
                return Line::Complete(lines.join("\n"));
            }
            lines.push(line.to_owned());
            self.block = Some(lines);
            return Line::Continue;
        }
        let Some(open) = line.find(FENCE) else {
            return Line::Complete(line.to_owned());
        };
        let before = &line[..open];
        let after = &line[open + FENCE.len()..];
        if let Some(close) = after.find(FENCE) {
            return Line::Complete(format!(
                "{before}{}{}",
                &after[..close],
                &after[close + FENCE.len()..]
            ));
        }
        self.block = Some(vec![format!("{before}{after}")]);
        Line::Continue
    }

    /// Whether a block is open (the REPL then prompts with `... `).
    pub fn is_open(&self) -> bool {
        self.block.is_some()
    }

    /// Drops an open block (Ctrl-C while typing it).
    pub fn reset(&mut self) {
        self.block = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(lines: &[&str]) -> Vec<Line> {
        let mut assembler = Assembler::default();
        lines.iter().map(|line| assembler.push(line)).collect()
    }

    #[test]
    fn a_plain_line_is_complete() {
        assert_eq!(
            feed(&["hello there"]),
            [Line::Complete("hello there".into())]
        );
    }

    #[test]
    fn a_block_spans_lines() {
        let got = feed(&["\"\"\"Write a poem", "about whales", "in two lines\"\"\""]);
        assert_eq!(
            got,
            [
                Line::Continue,
                Line::Continue,
                Line::Complete("Write a poem\nabout whales\nin two lines".into())
            ]
        );
    }

    #[test]
    fn fences_on_their_own_lines() {
        let got = feed(&["\"\"\"", "one", "two", "\"\"\""]);
        assert_eq!(got.last(), Some(&Line::Complete("\none\ntwo\n".into())));
    }

    #[test]
    fn a_block_on_one_line() {
        assert_eq!(
            feed(&["\"\"\"quoted\"\"\""]),
            [Line::Complete("quoted".into())]
        );
    }

    #[test]
    fn a_block_inside_a_command() {
        let got = feed(&[
            "/set system \"\"\"You are terse.",
            "Answer in one line.\"\"\"",
        ]);
        assert_eq!(
            got[1],
            Line::Complete("/set system You are terse.\nAnswer in one line.".into())
        );
    }

    #[test]
    fn reset_drops_the_block() {
        let mut assembler = Assembler::default();
        assert_eq!(assembler.push("\"\"\"half"), Line::Continue);
        assert!(assembler.is_open());
        assembler.reset();
        assert_eq!(assembler.push("next"), Line::Complete("next".into()));
    }
}
