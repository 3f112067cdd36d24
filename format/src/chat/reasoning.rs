//! Separating a reasoning model's `<think>…</think>` trace from its answer, while it streams.
//!
//! The engine hands over text pieces as tokens come out; a tag may be cut anywhere (`<th` +
//! `ink>`), so the splitter holds back exactly the text that could still turn into a tag and
//! releases it once it cannot. The rules follow Ollama's generic thinking parser and DeepSeek's
//! output shape: whitespace before an opening `<think>` is dropped; the tags themselves are
//! dropped; whitespace right after `<think>`, right before `</think>` and right after `</think>`
//! is dropped; only a `<think>` at the very start opens a reasoning block (a later one is answer
//! text). R1 prompts end with `<think>\n`, so their output starts inside the block without an
//! opening tag: construct the splitter with `starts_inside`.

/// Opening tag of a reasoning block.
pub const THINK_OPEN: &str = "<think>";
/// Closing tag of a reasoning block.
pub const THINK_CLOSE: &str = "</think>";

/// What to do with reasoning text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThinkingMode {
    /// Reasoning goes to [`ReasoningDelta::thinking`], the answer to `content`.
    Separate,
    /// Reasoning is discarded (`think: false` on a model that reasons anyway).
    Drop,
    /// Nothing is separated: the raw text, tags included, goes to `content` (Ollama before
    /// v0.9). A block the prompt opened gets its `<think>` back so the content reads whole.
    Inline,
}

/// Text released by one step of the splitter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReasoningDelta {
    pub thinking: String,
    pub content: String,
}

impl ReasoningDelta {
    pub fn is_empty(&self) -> bool {
        self.thinking.is_empty() && self.content.is_empty()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing but whitespace seen yet; the output may still open with `<think>`.
    Start,
    /// Inside the reasoning block; `fresh` while the whitespace after `<think>` is being eaten.
    Thinking { fresh: bool },
    /// Just after `</think>`, eating whitespace.
    Closed,
    /// Answer text: everything passes through.
    Answer,
}

/// The streaming splitter. Feed pieces with [`push`](Self::push), then call
/// [`finish`](Self::finish) once to release what was held back.
#[derive(Debug, Clone)]
pub struct ReasoningSplitter {
    mode: ThinkingMode,
    phase: Phase,
    /// Text that may still be (part of) a tag or whitespace to trim; never released early.
    held: String,
    /// Whether any reasoning block was entered (for [`split_complete`]).
    saw_block: bool,
}

impl ReasoningSplitter {
    /// `starts_inside`: the prompt ended inside an open `<think>` block, so the first generated
    /// text is reasoning even though no `<think>` will be emitted.
    pub fn new(starts_inside: bool, mode: ThinkingMode) -> Self {
        let mut splitter = Self {
            mode,
            phase: Phase::Start,
            held: String::new(),
            saw_block: false,
        };
        if mode == ThinkingMode::Inline {
            splitter.phase = Phase::Answer;
            if starts_inside {
                splitter.held.push_str(THINK_OPEN);
                splitter.held.push('\n');
            }
        } else if starts_inside {
            splitter.phase = Phase::Thinking { fresh: true };
            splitter.saw_block = true;
        }
        splitter
    }

    /// Takes the next piece of generated text and returns what can be released now.
    pub fn push(&mut self, piece: &str) -> ReasoningDelta {
        self.held.push_str(piece);
        let mut delta = ReasoningDelta::default();
        while self.step(&mut delta) {}
        delta
    }

    /// Ends the stream: releases held text that never became a tag.
    pub fn finish(&mut self) -> ReasoningDelta {
        let mut delta = ReasoningDelta::default();
        let held = std::mem::take(&mut self.held);
        match self.phase {
            Phase::Start => {
                if !held.trim().is_empty() {
                    delta.content = held;
                }
            }
            Phase::Thinking { .. } => {
                self.emit_thinking(&mut delta, held.trim_end());
            }
            Phase::Closed => {}
            Phase::Answer => delta.content = held,
        }
        delta
    }

    /// One state transition on `held`; `true` when it should run again.
    fn step(&mut self, delta: &mut ReasoningDelta) -> bool {
        match self.phase {
            Phase::Start => {
                let trimmed = self.held.trim_start();
                if let Some(rest) = trimmed.strip_prefix(THINK_OPEN) {
                    self.held = rest.to_owned();
                    self.phase = Phase::Thinking { fresh: true };
                    self.saw_block = true;
                    true
                } else if THINK_OPEN.starts_with(trimmed) {
                    false
                } else {
                    self.phase = Phase::Answer;
                    true
                }
            }
            Phase::Thinking { fresh } => {
                if fresh {
                    let trimmed = self.held.trim_start();
                    if trimmed.is_empty() {
                        self.held.clear();
                        return false;
                    }
                    self.held = trimmed.to_owned();
                    self.phase = Phase::Thinking { fresh: false };
                }
                if let Some(at) = self.held.find(THINK_CLOSE) {
                    let rest = self.held.split_off(at);
                    let thinking = std::mem::take(&mut self.held);
                    self.emit_thinking(delta, thinking.trim_end());
                    rest[THINK_CLOSE.len()..].clone_into(&mut self.held);
                    self.phase = Phase::Closed;
                    return true;
                }
                // Keep a possible partial closing tag and the whitespace before it.
                let keep_from = partial_suffix_start(&self.held, THINK_CLOSE);
                let release_to = self.held[..keep_from].trim_end().len();
                let rest = self.held.split_off(release_to);
                let thinking = std::mem::replace(&mut self.held, rest);
                self.emit_thinking(delta, &thinking);
                false
            }
            Phase::Closed => {
                let trimmed = self.held.trim_start();
                if trimmed.is_empty() {
                    self.held.clear();
                    false
                } else {
                    self.held = trimmed.to_owned();
                    self.phase = Phase::Answer;
                    true
                }
            }
            Phase::Answer => {
                delta.content.push_str(&self.held);
                self.held.clear();
                false
            }
        }
    }

    fn emit_thinking(&self, delta: &mut ReasoningDelta, text: &str) {
        if self.mode == ThinkingMode::Separate {
            delta.thinking.push_str(text);
        }
    }
}

/// Where the longest suffix of `text` that is a proper prefix of `tag` starts (`text.len()`
/// when there is none).
pub(crate) fn partial_suffix_start(text: &str, tag: &str) -> usize {
    let longest = (1..tag.len().min(text.len() + 1)).rev().find(|&n| {
        tag.is_char_boundary(n)
            && text.is_char_boundary(text.len() - n)
            && text.ends_with(&tag[..n])
    });
    text.len() - longest.unwrap_or(0)
}

/// Splits a whole response. Output that does not open with `<think>` but contains `</think>` is
/// read as an R1 response to a `<think>`-primed prompt: everything before `</think>` is reasoning.
/// Empty reasoning comes back as `None`.
pub fn split_complete(text: &str) -> (Option<String>, String) {
    let starts_inside = !text.trim_start().starts_with(THINK_OPEN) && text.contains(THINK_CLOSE);
    let mut splitter = ReasoningSplitter::new(starts_inside, ThinkingMode::Separate);
    let mut delta = splitter.push(text);
    let tail = splitter.finish();
    delta.thinking.push_str(&tail.thinking);
    delta.content.push_str(&tail.content);
    let thinking = Some(delta.thinking).filter(|thinking| !thinking.is_empty());
    (thinking, delta.content)
}

/// The answer part of an earlier assistant turn, for re-rendering history: the text after the
/// last `</think>` (what R1's template does with `.split('</think>')[-1]`), leading whitespace
/// trimmed. Text without a closing tag is returned unchanged.
pub fn strip_reasoning(content: &str) -> String {
    match content.rfind(THINK_CLOSE) {
        Some(at) => content[at + THINK_CLOSE.len()..].trim_start().to_owned(),
        None => content.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pieces: &[&str], starts_inside: bool, mode: ThinkingMode) -> (String, String) {
        let mut splitter = ReasoningSplitter::new(starts_inside, mode);
        let mut thinking = String::new();
        let mut content = String::new();
        for piece in pieces {
            let delta = splitter.push(piece);
            thinking.push_str(&delta.thinking);
            content.push_str(&delta.content);
        }
        let delta = splitter.finish();
        thinking.push_str(&delta.thinking);
        content.push_str(&delta.content);
        (thinking, content)
    }

    fn separate(pieces: &[&str]) -> (String, String) {
        run(pieces, false, ThinkingMode::Separate)
    }

    #[test]
    fn think_block_is_separated_and_tags_dropped() {
        let (thinking, content) = separate(&["<think>\nLet me add.\n</think>\n\nIt is 4."]);
        assert_eq!(thinking, "Let me add.");
        assert_eq!(content, "It is 4.");
    }

    #[test]
    fn tags_split_across_pieces() {
        let pieces = [
            "  \n<th", "ink", ">\n", "rea", "son</", "thi", "nk>", "\n\n", "ans", "wer",
        ];
        assert_eq!(separate(&pieces), ("reason".into(), "answer".into()));
    }

    #[test]
    fn starts_inside_routes_text_before_close_to_thinking() {
        let (thinking, content) = run(
            &["Okay, the user", " asks.\n</thi", "nk>\n\nHello!"],
            true,
            ThinkingMode::Separate,
        );
        assert_eq!(thinking, "Okay, the user asks.");
        assert_eq!(content, "Hello!");
    }

    #[test]
    fn output_without_think_is_all_content() {
        assert_eq!(
            separate(&["Hel", "lo <think>x</think>"]),
            (String::new(), "Hello <think>x</think>".into())
        );
        assert_eq!(
            separate(&["<thin", "g>"]),
            (String::new(), "<thing>".into())
        );
    }

    #[test]
    fn released_as_soon_as_unambiguous() {
        let mut splitter = ReasoningSplitter::new(false, ThinkingMode::Separate);
        assert!(splitter.push("<think>").is_empty());
        assert_eq!(splitter.push("ab").thinking, "ab");
        assert_eq!(splitter.push(" c </").thinking, " c");
        let delta = splitter.push("think> ok");
        assert_eq!(delta.thinking, "");
        assert_eq!(delta.content, "ok");
    }

    #[test]
    fn unterminated_block_is_thinking_at_finish() {
        assert_eq!(
            separate(&["<think>\nstill going </th"]),
            ("still going </th".into(), String::new())
        );
    }

    #[test]
    fn drop_mode_discards_reasoning() {
        let (thinking, content) = run(&["<think>x</think>\n", "answer"], false, ThinkingMode::Drop);
        assert_eq!((thinking.as_str(), content.as_str()), ("", "answer"));
        let (_, content) = run(&["x</think>answer"], true, ThinkingMode::Drop);
        assert_eq!(content, "answer");
    }

    #[test]
    fn inline_mode_keeps_raw_text() {
        let raw = "<think>\nx\n</think>\n\nanswer";
        assert_eq!(
            run(&[raw], false, ThinkingMode::Inline),
            (String::new(), raw.into())
        );
        let (_, content) = run(&["x\n</think>\n\nanswer"], true, ThinkingMode::Inline);
        assert_eq!(content, "<think>\nx\n</think>\n\nanswer");
    }

    #[test]
    fn empty_think_block_yields_nothing() {
        assert_eq!(
            separate(&["<think>\n\n</think>\n\n", "Hi"]),
            (String::new(), "Hi".into())
        );
        assert_eq!(separate(&["  \n "]), (String::new(), String::new()));
    }

    /// Splits `text` at pseudo-random char boundaries (xorshift, fixed seeds).
    fn random_pieces(text: &str, seed: u64) -> Vec<String> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let chars: Vec<char> = text.chars().collect();
        let mut pieces = Vec::new();
        let mut at = 0;
        while at < chars.len() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = 1 + (state % 6) as usize;
            let end = (at + len).min(chars.len());
            pieces.push(chars[at..end].iter().collect());
            at = end;
        }
        pieces
    }

    #[test]
    fn any_splitting_gives_the_same_output() {
        let texts = [
            (
                "\n<think>\nFirst, 2+2.\nThen check ≥ 4 </t.\n</think>\n\nThe answer is **4**.",
                false,
            ),
            (
                "Reasoning ｜ with wide chars </think>  Answer </think> tail",
                true,
            ),
            ("<think></think>Just the answer <think> not a tag", false),
            ("plain answer with </think inside", false),
        ];
        for (text, starts_inside) in texts {
            for mode in [
                ThinkingMode::Separate,
                ThinkingMode::Drop,
                ThinkingMode::Inline,
            ] {
                let whole = run(&[text], starts_inside, mode);
                for seed in 1..300 {
                    let pieces = random_pieces(text, seed);
                    let refs: Vec<&str> = pieces.iter().map(String::as_str).collect();
                    assert_eq!(
                        run(&refs, starts_inside, mode),
                        whole,
                        "{text:?} split as {pieces:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn split_complete_handles_both_shapes() {
        assert_eq!(
            split_complete("<think>\nhmm\n</think>\n\nyes"),
            (Some("hmm".into()), "yes".into())
        );
        assert_eq!(
            split_complete("hmm\n</think>\n\nyes"),
            (Some("hmm".into()), "yes".into())
        );
        assert_eq!(split_complete("just yes"), (None, "just yes".into()));
        assert_eq!(
            split_complete("<think>\n\n</think>\n\nyes"),
            (None, "yes".into())
        );
    }

    #[test]
    fn strip_reasoning_keeps_the_answer() {
        assert_eq!(
            strip_reasoning("<think>\nwhy\n</think>\n\nBecause."),
            "Because."
        );
        assert_eq!(strip_reasoning("no reasoning here"), "no reasoning here");
        assert_eq!(strip_reasoning("<think>a</think>b</think>\nc"), "c");
    }
}
