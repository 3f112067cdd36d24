//! Prompt lookup: drafting a sequence's next tokens from its own text.
//!
//! Much of what a model writes repeats what it has read — code it edits, names, quotes, the
//! same phrase again. When the last tokens of a sequence occurred before, the tokens that
//! followed them then are a good guess for what follows now. Those guesses go into the next
//! batch behind the sequence's real next token; one decode scores them all, and the worker keeps
//! the longest run the model agrees with (see the worker's `after_decode`). A wrong guess costs a
//! little compute in that decode, never a different output.
//!
//! A [`Drafter`] also decides how much to guess: it drafts more while guesses are accepted, and
//! after a guess is rejected outright it pauses for a while, longer each time, so that text with
//! nothing to copy pays almost nothing.

use llama_cpp_2::token::LlamaToken;

use super::{Speculation, SpeculationMode};

/// The longest suffix matched: longer matches are not better guesses.
const MAX_NGRAM: usize = 4;

/// The shortest suffix that counts as a match under `auto` (two tokens recur too often by
/// chance) and under `ngram`.
const AUTO_MIN_NGRAM: usize = 3;
const NGRAM_MIN_NGRAM: usize = 2;

/// How far back a match is looked for.
const WINDOW: usize = 1 << 16;

/// Under `auto`, the most sequences generating together for drafting to go on: beyond it the
/// batch is already wide and drafts take room from other sequences.
pub(super) const AUTO_MAX_STREAMS: usize = 4;

/// The longest pause (in steps) after rejected drafts.
const MAX_COOLDOWN: u32 = 64;

/// Where a step's drafts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// Prompt lookup, on a suffix match of at least this many tokens.
    Lookup(usize),
    /// The draft model.
    Model,
    /// The model's own NextN block (multi-token prediction).
    Mtp,
}

/// What can draft besides prompt lookup: a draft model, the model's NextN block.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Drafters {
    pub model: bool,
    pub mtp: bool,
}

/// One sequence's drafting state and counts.
#[derive(Debug)]
pub(super) struct Drafter {
    mode: SpeculationMode,
    max: usize,
    /// Tokens drafted at the next match: grows while drafts are accepted, shrinks when not.
    len: usize,
    /// Steps left before drafting again.
    cooldown: u32,
    /// The pause after the next rejection.
    next_cooldown: u32,
    /// The tokens drafted into the current batch.
    pub(super) drafts: Vec<LlamaToken>,
    /// Totals for the job's summary.
    pub(super) drafted: u32,
    pub(super) accepted: u32,
}

impl Drafter {
    pub(super) fn new(speculation: Speculation) -> Self {
        let max = speculation.draft_max as usize;
        Self {
            mode: speculation.mode,
            max,
            len: max.min(4),
            cooldown: 0,
            next_cooldown: 1,
            drafts: Vec::with_capacity(max),
            drafted: 0,
            accepted: 0,
        }
    }

    /// Whether and how this step drafts, and at most how many tokens: `None` when it does not
    /// (mode, cooldown, no room). `room` bounds the draft; `streams` is how many sequences
    /// generate in this step; `cheap_check` says whether the sampler keeps a draft as often as
    /// its probability allows (else `auto` does not draft); `drafters` what is loaded besides
    /// (`auto` prefers a draft model to lookup; the NextN block drafts when asked for). Clears
    /// the previous step's drafts.
    pub(super) fn plan(
        &mut self,
        room: usize,
        streams: usize,
        cheap_check: bool,
        drafters: Drafters,
    ) -> Option<(Source, usize)> {
        self.drafts.clear();
        let source = match self.mode {
            SpeculationMode::Auto if streams > AUTO_MAX_STREAMS || !cheap_check => return None,
            SpeculationMode::Auto | SpeculationMode::Draft if drafters.model => Source::Model,
            SpeculationMode::Mtp if drafters.mtp => Source::Mtp,
            SpeculationMode::Auto => Source::Lookup(AUTO_MIN_NGRAM),
            SpeculationMode::Ngram => Source::Lookup(NGRAM_MIN_NGRAM),
            SpeculationMode::Off | SpeculationMode::Draft | SpeculationMode::Mtp => return None,
        };
        if self.cooldown > 0 {
            self.cooldown -= 1;
            return None;
        }
        let want = self.len.min(room).min(self.max);
        (want > 0).then_some((source, want))
    }

    /// Drafts up to `want` tokens to follow `history` then `next` from the text itself, on a
    /// suffix match of at least `min_ngram` tokens.
    pub(super) fn look_up(
        &mut self,
        history: &[LlamaToken],
        next: LlamaToken,
        min_ngram: usize,
        want: usize,
    ) {
        if let Some(from) = find(history, next, min_ngram) {
            let tail = &history[from..];
            let take = want.min(tail.len() + 1);
            self.drafts.extend(tail.iter().copied().take(take));
            if self.drafts.len() < take {
                // The match ran up to the end: `next` itself continues it.
                self.drafts.push(next);
            }
            self.drafted += self.drafts.len() as u32;
        }
    }

    /// Whether the job drafts with the NextN block (so the block must follow its text).
    pub(super) fn may_use_mtp(&self) -> bool {
        self.mode == SpeculationMode::Mtp && self.max > 0
    }

    /// Takes `tokens`, drafted by the draft model or the NextN block, as this step's drafts.
    pub(super) fn take(&mut self, tokens: &[LlamaToken]) {
        self.drafts.clear();
        self.drafts.extend_from_slice(tokens);
        self.drafted += tokens.len() as u32;
    }

    /// The model kept `accepted` of [`Self::drafts`] (each already counted in
    /// [`Self::accepted`] as it was kept): adapts how much is drafted next.
    pub(super) fn settle(&mut self, accepted: usize) {
        let drafted = self.drafts.len();
        if drafted == 0 {
            return;
        }
        if accepted == drafted {
            self.len = (self.len + 2).min(self.max);
            self.next_cooldown = 1;
        } else {
            self.len = (accepted + 1).max(1);
            if accepted == 0 {
                self.cooldown = self.next_cooldown;
                self.next_cooldown = (self.next_cooldown * 2).min(MAX_COOLDOWN);
            }
        }
        self.drafts.clear();
    }
}

/// Where the continuation of the text `history` then `next` starts in `history`: after the most
/// recent earlier occurrence of its longest suffix of `min_ngram..=MAX_NGRAM` tokens.
fn find(history: &[LlamaToken], next: LlamaToken, min_ngram: usize) -> Option<usize> {
    let len = history.len();
    // Token `i` of the whole text (`history` then `next`).
    let at = |i: usize| if i == len { next } else { history[i] };
    let start = len.saturating_sub(WINDOW);
    let mut best: Option<(usize, usize)> = None;
    // A candidate end `end` (inclusive, < len) matches the text's end when the tokens before
    // it equal those before `next`.
    for end in (start..len).rev() {
        if history[end] != next {
            continue;
        }
        let mut n = 1;
        while n < MAX_NGRAM && n <= end && at(end - n) == at(len - n) {
            n += 1;
        }
        if n >= min_ngram && best.is_none_or(|(longest, _)| n > longest) {
            best = Some((n, end + 1));
            if n == MAX_NGRAM {
                break;
            }
        }
    }
    best.map(|(_, from)| from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(ids: &[i32]) -> Vec<LlamaToken> {
        ids.iter().map(|&id| LlamaToken(id)).collect()
    }

    impl Drafter {
        /// One step of prompt lookup, as the worker runs it without a draft model.
        fn draft(
            &mut self,
            history: &[LlamaToken],
            next: LlamaToken,
            room: usize,
            streams: usize,
            cheap_check: bool,
        ) {
            if let Some((Source::Lookup(min_ngram), want)) =
                self.plan(room, streams, cheap_check, Drafters::default())
            {
                self.look_up(history, next, min_ngram, want);
            }
        }
    }

    fn ngram(max: u32) -> Drafter {
        Drafter::new(Speculation {
            mode: SpeculationMode::Ngram,
            draft_max: max,
        })
    }

    #[test]
    fn drafts_what_followed_the_last_occurrence() {
        // ... 5 6 7 8 9 ... 5 6 | 7 → drafts 8 9 1
        let history = tokens(&[1, 5, 6, 7, 8, 9, 1, 2, 5, 6]);
        let mut drafter = ngram(3);
        drafter.len = 3;
        drafter.draft(&history, LlamaToken(7), 16, 1, true);
        assert_eq!(drafter.drafts, tokens(&[8, 9, 1]));
        assert_eq!(drafter.drafted, 3);
    }

    #[test]
    fn prefers_the_longest_then_the_latest_match() {
        // "3 4" occurs twice; "2 3 4" once, earlier: the longer one wins.
        let history = tokens(&[2, 3, 4, 10, 11, 9, 3, 4, 20, 21, 2, 3]);
        let mut drafter = ngram(2);
        drafter.draft(&history, LlamaToken(4), 16, 1, true);
        assert_eq!(drafter.drafts, tokens(&[10, 11]));
        // Only "3 4" matches: the later occurrence.
        let history = tokens(&[7, 3, 4, 10, 11, 9, 3, 4, 20, 21, 8, 3]);
        let mut drafter = ngram(2);
        drafter.draft(&history, LlamaToken(4), 16, 1, true);
        assert_eq!(drafter.drafts, tokens(&[20, 21]));
    }

    #[test]
    fn a_repeating_run_continues_through_its_end() {
        // 1 2 1 2 1 | 2 → the match at the end continues with `next`'s own pattern.
        let history = tokens(&[1, 2, 1, 2, 1]);
        let mut drafter = ngram(8);
        drafter.len = 8;
        drafter.draft(&history, LlamaToken(2), 16, 1, true);
        assert_eq!(drafter.drafts, tokens(&[1, 2]));
    }

    #[test]
    fn auto_needs_three_tokens_few_streams_and_a_cheap_check() {
        let history = tokens(&[1, 5, 6, 7, 8, 9, 2, 6]);
        let mut auto = Drafter::new(Speculation::default());
        auto.draft(&history, LlamaToken(7), 16, 1, true);
        assert!(auto.drafts.is_empty(), "a two-token match is chance");
        let history = tokens(&[1, 5, 6, 7, 8, 9, 2, 5, 6]);
        auto.draft(&history, LlamaToken(7), 16, AUTO_MAX_STREAMS + 1, true);
        assert!(auto.drafts.is_empty(), "too many streams");
        auto.draft(&history, LlamaToken(7), 16, 1, false);
        assert!(auto.drafts.is_empty(), "the sampler cannot check cheaply");
        auto.draft(&history, LlamaToken(7), 16, 1, true);
        assert_eq!(auto.drafts, tokens(&[8, 9, 2, 5]));
        let mut off = Drafter::new(Speculation::off());
        off.draft(&history, LlamaToken(7), 16, 1, true);
        assert!(off.drafts.is_empty());
    }

    #[test]
    fn drafters_are_chosen_by_mode_and_what_is_loaded() {
        let speculation = |mode| Speculation { mode, draft_max: 8 };
        let none = Drafters::default();
        let model = Drafters {
            model: true,
            mtp: false,
        };
        let mtp = Drafters {
            model: false,
            mtp: true,
        };
        let both = Drafters {
            model: true,
            mtp: true,
        };
        let mut auto = Drafter::new(speculation(SpeculationMode::Auto));
        assert_eq!(auto.plan(16, 1, true, model), Some((Source::Model, 4)));
        assert_eq!(auto.plan(16, 1, true, both), Some((Source::Model, 4)));
        assert_eq!(auto.plan(16, 1, true, mtp), Some((Source::Lookup(3), 4)));
        assert_eq!(auto.plan(16, 1, true, none), Some((Source::Lookup(3), 4)));
        assert_eq!(auto.plan(16, AUTO_MAX_STREAMS + 1, true, both), None);
        let mut draft = Drafter::new(speculation(SpeculationMode::Draft));
        assert_eq!(
            draft.plan(2, AUTO_MAX_STREAMS + 1, false, model),
            Some((Source::Model, 2))
        );
        assert_eq!(draft.plan(16, 1, true, mtp), None);
        let mut by_mtp = Drafter::new(speculation(SpeculationMode::Mtp));
        assert_eq!(
            by_mtp.plan(3, AUTO_MAX_STREAMS + 1, false, both),
            Some((Source::Mtp, 3))
        );
        assert_eq!(by_mtp.plan(16, 1, true, model), None);
        assert!(by_mtp.may_use_mtp() && !auto.may_use_mtp() && !draft.may_use_mtp());
        let mut ngram = Drafter::new(speculation(SpeculationMode::Ngram));
        assert_eq!(ngram.plan(16, 1, true, both), Some((Source::Lookup(2), 4)));
        draft.take(&tokens(&[3, 4, 5]));
        draft.settle(3);
        assert_eq!((draft.drafted, draft.len), (3, 6));
    }

    #[test]
    fn rejections_shrink_the_draft_and_pause_longer_each_time() {
        let history = tokens(&[1, 5, 6, 7, 8, 9, 10, 11, 2, 5, 6]);
        let mut drafter = ngram(8);
        drafter.draft(&history, LlamaToken(7), 16, 1, true);
        assert_eq!(drafter.drafts.len(), 4);
        drafter.settle(4);
        assert_eq!(drafter.len, 6);
        drafter.draft(&history, LlamaToken(7), 16, 1, true);
        assert_eq!(drafter.drafts.len(), 6);
        drafter.settle(0);
        assert_eq!((drafter.len, drafter.cooldown), (1, 1));
        drafter.draft(&history, LlamaToken(7), 16, 1, true);
        assert!(drafter.drafts.is_empty(), "paused one step");
        drafter.draft(&history, LlamaToken(7), 16, 1, true);
        drafter.settle(0);
        assert_eq!(drafter.cooldown, 2, "the next pause is longer");
        // Room in the batch bounds the draft.
        drafter.cooldown = 0;
        drafter.len = 8;
        drafter.draft(&history, LlamaToken(7), 2, 1, true);
        assert_eq!(drafter.drafts.len(), 2);
    }
}
