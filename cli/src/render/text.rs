//! A streamed answer as it arrives: reasoning first (dimmed, between `Thinking...` and
//! `...done thinking.`, or hidden), then the answer, each chunk flushed at once so the text
//! appears as the model writes it.

use std::io::{self, Write};

use console::Style as Ansi;

/// Where the printer is within one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Start,
    Thinking,
    Answering,
}

/// Prints one answer's chunks to `out` (stdout in the CLI).
pub struct Answer<W: Write> {
    out: W,
    show_thinking: bool,
    dim: Ansi,
    phase: Phase,
    /// Whether the last character written was a newline, so `finish` ends the line only once.
    at_line_start: bool,
    /// Right after a label: leading newlines of the next text would only push it down.
    after_label: bool,
}

impl<W: Write> Answer<W> {
    /// `show_thinking` false drops reasoning chunks; `color` dims the reasoning.
    pub fn new(out: W, show_thinking: bool, color: bool) -> Self {
        let dim = Ansi::new().dim().force_styling(color);
        let dim = if color {
            dim
        } else {
            Ansi::new().force_styling(false)
        };
        Self {
            out,
            show_thinking,
            dim,
            phase: Phase::Start,
            at_line_start: true,
            after_label: false,
        }
    }

    /// A piece of reasoning.
    pub fn thinking(&mut self, text: &str) -> io::Result<()> {
        if !self.show_thinking || text.is_empty() {
            return Ok(());
        }
        if self.phase != Phase::Thinking {
            let label = self.dim.clone().bold().apply_to("Thinking...");
            writeln!(self.out, "{label}")?;
            self.phase = Phase::Thinking;
            self.after_label = true;
        }
        self.write(text, true)
    }

    /// A piece of the answer.
    pub fn content(&mut self, text: &str) -> io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        if self.phase == Phase::Thinking {
            self.end_thinking()?;
        }
        self.phase = Phase::Answering;
        self.write(text, false)
    }

    /// Ends the answer: closes an open reasoning block and the last line.
    pub fn finish(&mut self) -> io::Result<()> {
        if self.phase == Phase::Thinking {
            self.end_thinking()?;
        }
        if !self.at_line_start {
            writeln!(self.out)?;
            self.at_line_start = true;
        }
        self.out.flush()
    }

    /// The writer back, for tests.
    pub fn into_inner(self) -> W {
        self.out
    }

    fn end_thinking(&mut self) -> io::Result<()> {
        if !self.at_line_start {
            writeln!(self.out)?;
        }
        let label = self.dim.clone().bold().apply_to("...done thinking.");
        writeln!(self.out, "{label}\n")?;
        self.at_line_start = true;
        self.after_label = true;
        self.phase = Phase::Answering;
        Ok(())
    }

    fn write(&mut self, text: &str, dimmed: bool) -> io::Result<()> {
        // Newlines right after a label would only push the text down.
        let text = if self.after_label {
            text.trim_start_matches('\n')
        } else {
            text
        };
        if text.is_empty() {
            return Ok(());
        }
        self.after_label = false;
        if dimmed {
            write!(self.out, "{}", self.dim.apply_to(text))?;
        } else {
            self.out.write_all(text.as_bytes())?;
        }
        self.at_line_start = text.ends_with('\n');
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(show_thinking: bool, color: bool, chunks: &[(&str, &str)]) -> String {
        let mut answer = Answer::new(Vec::new(), show_thinking, color);
        for (thinking, content) in chunks {
            answer.thinking(thinking).unwrap();
            answer.content(content).unwrap();
        }
        answer.finish().unwrap();
        String::from_utf8(answer.into_inner()).unwrap()
    }

    #[test]
    fn reasoning_is_labelled() {
        let text = render(
            true,
            false,
            &[
                ("\nHmm, ", ""),
                ("the sky.", ""),
                ("", "\n\nBlue"),
                ("", "."),
            ],
        );
        assert_eq!(
            text,
            "Thinking...\nHmm, the sky.\n...done thinking.\n\nBlue.\n"
        );
    }

    #[test]
    fn paragraph_breaks_inside_reasoning_stay() {
        let text = render(
            true,
            false,
            &[("One.\n", ""), ("\nTwo.", ""), ("", "Answer.")],
        );
        assert_eq!(
            text,
            "Thinking...\nOne.\n\nTwo.\n...done thinking.\n\nAnswer.\n"
        );
    }

    #[test]
    fn reasoning_can_be_hidden() {
        let text = render(false, false, &[("Hmm", ""), ("", "Blue.\n")]);
        assert_eq!(text, "Blue.\n");
    }

    #[test]
    fn reasoning_without_answer_is_closed() {
        let text = render(true, false, &[("Hmm", "")]);
        assert_eq!(text, "Thinking...\nHmm\n...done thinking.\n\n");
    }

    #[test]
    fn colour_dims_only_the_reasoning() {
        let text = render(true, true, &[("Hmm", ""), ("", "Blue")]);
        assert!(text.contains("\u{1b}[2m"), "{text:?}");
        assert!(text.ends_with("Blue\n"), "{text:?}");
    }

    #[test]
    fn empty_answer_prints_nothing() {
        assert_eq!(render(true, false, &[]), "");
    }
}
