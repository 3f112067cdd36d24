//! The sampler of one sequence, built from its `Sampling` options and grammar.
//!
//! Greedy decoding and the usual chain (penalties, top-k, top-p, min-p, temperature, a seeded
//! draw) take the fast path ([`super::fast_sampler`]), straight from the row of logits. The rest
//! — a grammar, `typical_p`, a draw over the whole vocabulary (`top_k` 0) — runs llama.cpp's
//! sampler chain, whose `llama_sampler_sample` applies it to the row and accepts the chosen
//! token. A grammar that applies only after `</think>` is added by building the chain when that
//! text appears; the penalty history is replayed into it so penalties carry over.

use std::collections::{HashMap, VecDeque};

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use super::fast_sampler::{FastOptions, FastSampler, Penalties};
use super::{EngineError, Grammar, GrammarSource, Sampling};

/// The marker after which an `after_think` grammar starts to apply.
const THINK_END: &str = "</think>";

/// llama.cpp's "pick a random seed" value.
const RANDOM_SEED: u32 = u32::MAX;

/// The largest `top_k` the fast path takes; beyond it llama.cpp's sorting does better.
const FAST_TOP_K: i32 = 1024;

pub(super) struct SequenceSampler {
    /// How tokens are picked: the fast path, or llama.cpp's chain.
    picker: Picker,
    options: Sampling,
    /// The grammar waiting for `</think>`, if it applies only after reasoning.
    deferred: Option<String>,
    /// Tail of the generated text, to spot `</think>` across pieces while deferred.
    recent_text: String,
    /// Last tokens seen (prompt and generated), replayed when the chain is rebuilt.
    history: VecDeque<LlamaToken>,
    /// How often each token of `history` occurs, kept for the fast path's penalties (empty
    /// when there are none to apply).
    counts: HashMap<i32, u32>,
    penalty_window: usize,
}

enum Picker {
    // Boxed: the fast sampler carries its random-number state inline.
    Fast(Box<FastSampler>),
    Chain(LlamaSampler),
}

impl SequenceSampler {
    /// Builds the chain. `prompt` feeds the penalty window, as llama.cpp's server does.
    pub(super) fn new(
        model: &LlamaModel,
        options: &Sampling,
        grammar: Option<&Grammar>,
        prompt: &[LlamaToken],
        n_ctx: u32,
    ) -> Result<Self, EngineError> {
        let penalty_window = match options.repeat_last_n {
            n if n < 0 => n_ctx as usize,
            n => n as usize,
        };
        let history: VecDeque<LlamaToken> = prompt[prompt.len().saturating_sub(penalty_window)..]
            .iter()
            .copied()
            .collect();
        let gbnf = match grammar.map(|g| &g.source) {
            Some(GrammarSource::Gbnf(gbnf)) => Some(gbnf.as_str()),
            Some(GrammarSource::JsonSchema(_) | GrammarSource::ToolCalls { .. }) => {
                return Err(EngineError::InvalidInput(
                    "a JSON schema must be turned into GBNF before sampling".to_owned(),
                ));
            }
            None => None,
        };
        let (active, deferred) = match (grammar, gbnf) {
            (Some(g), Some(gbnf)) if g.after_think => (None, Some(gbnf.to_owned())),
            (_, gbnf) => (gbnf, None),
        };
        let picker = match fast_options(options) {
            Some(fast) if active.is_none() => Picker::Fast(Box::new(FastSampler::new(fast))),
            _ => Picker::Chain(build_chain(model, options, active, &history, n_ctx)?),
        };
        let mut sampler = Self {
            picker,
            options: options.clone(),
            deferred,
            recent_text: String::new(),
            history,
            counts: HashMap::new(),
            penalty_window,
        };
        if sampler.counting() {
            for token in &sampler.history {
                *sampler.counts.entry(token.0).or_insert(0) += 1;
            }
        }
        Ok(sampler)
    }

    /// Whether the fast path's penalties need the window counted.
    fn counting(&self) -> bool {
        matches!(&self.picker, Picker::Fast(fast) if fast.penalises())
    }

    /// Whether a drafted token is kept as often as its probability allows: on the fast path,
    /// and in greedy decoding. llama.cpp's chain (grammars, `typical_p`) draws without telling
    /// the probabilities, so a draft there is kept only when the draw happens to pick it —
    /// still exact, rarely worth drafting for.
    pub(super) fn checks_drafts(&self) -> bool {
        matches!(self.picker, Picker::Fast(_)) || self.options.temperature <= 0.0
    }

    /// Samples (and accepts) the next token from output row `index` of the last decode. A
    /// `draft` proposed for this position is kept by the rejection rule that leaves the
    /// distribution unchanged (only when [`Self::checks_drafts`]; else it is ignored).
    pub(super) fn sample(
        &mut self,
        context: &LlamaContext<'_>,
        index: i32,
        draft: Option<LlamaToken>,
    ) -> LlamaToken {
        let token = match &mut self.picker {
            Picker::Fast(fast) => LlamaToken(fast.sample(
                context.get_logits_ith(index),
                &self.counts,
                draft.map(|token| token.0),
            )),
            Picker::Chain(chain) => chain.sample(context, index),
        };
        self.accept(token);
        token
    }

    /// The fast path's picker, to pick a token on another thread ([`FastPick::pick`]); then
    /// [`Self::accept`] the token here. `None` for llama.cpp's chain, which stays on the
    /// engine thread.
    pub(super) fn fast_pick(&mut self) -> Option<FastPick<'_>> {
        match &mut self.picker {
            Picker::Fast(fast) => Some(FastPick {
                fast,
                window: &self.counts,
            }),
            Picker::Chain(_) => None,
        }
    }

    /// Takes `token` as the one picked: the penalties' window moves on.
    pub(super) fn accept(&mut self, token: LlamaToken) {
        if self.penalty_window > 0 {
            let counting = self.counting();
            if self.history.len() == self.penalty_window
                && let Some(old) = self.history.pop_front()
                && counting
                && let Some(count) = self.counts.get_mut(&old.0)
            {
                *count -= 1;
                if *count == 0 {
                    self.counts.remove(&old.0);
                }
            }
            self.history.push_back(token);
            if counting {
                *self.counts.entry(token.0).or_insert(0) += 1;
            }
        }
    }

    /// Tells the sampler the text of the token just sampled; switches a deferred grammar on
    /// once `</think>` has been generated.
    pub(super) fn observe_text(
        &mut self,
        model: &LlamaModel,
        text: &str,
        n_ctx: u32,
    ) -> Result<(), EngineError> {
        if self.deferred.is_none() {
            return Ok(());
        }
        self.recent_text.push_str(text);
        if self.recent_text.contains(THINK_END) {
            let gbnf = self.deferred.take().unwrap_or_default();
            self.picker = Picker::Chain(build_chain(
                model,
                &self.options,
                Some(&gbnf),
                &self.history,
                n_ctx,
            )?);
            self.counts.clear();
            self.recent_text = String::new();
        } else {
            let keep_from = self.recent_text.len().saturating_sub(THINK_END.len());
            let keep_from = (keep_from..=self.recent_text.len())
                .find(|&i| self.recent_text.is_char_boundary(i))
                .unwrap_or(self.recent_text.len());
            self.recent_text.drain(..keep_from);
        }
        Ok(())
    }
}

/// One sequence's fast-path picker, lent out to pick from a row on another thread (it holds no
/// llama.cpp state).
pub(super) struct FastPick<'s> {
    fast: &'s mut FastSampler,
    window: &'s HashMap<i32, u32>,
}

impl FastPick<'_> {
    /// The token for this row of logits, as [`SequenceSampler::sample`] picks it (no draft).
    pub(super) fn pick(&mut self, logits: &[f32]) -> LlamaToken {
        LlamaToken(self.fast.sample(logits, self.window, None))
    }
}

/// What the fast path does with these options, or `None` when it cannot (`typical_p`, or a draw
/// over more than [`FAST_TOP_K`] tokens).
fn fast_options(options: &Sampling) -> Option<FastOptions> {
    let greedy = options.temperature <= 0.0;
    let typical = options.typical_p > 0.0 && options.typical_p < 1.0;
    if !greedy && (typical || options.top_k <= 0 || options.top_k > FAST_TOP_K) {
        return None;
    }
    Some(FastOptions {
        temperature: (!greedy).then_some(options.temperature),
        top_k: options.top_k.clamp(1, FAST_TOP_K) as usize,
        top_p: if options.top_p > 0.0 {
            options.top_p
        } else {
            1.0
        },
        min_p: options.min_p.max(0.0),
        penalties: if options.repeat_last_n == 0 {
            Penalties {
                repeat: 1.0,
                frequency: 0.0,
                presence: 0.0,
            }
        } else {
            Penalties {
                repeat: options.repeat_penalty,
                frequency: options.frequency_penalty,
                presence: options.presence_penalty,
            }
        },
        seed: options.seed,
    })
}

/// Penalties, grammar, then either greedy or the truncation samplers, temperature and a seeded
/// draw — the order Ollama's runner uses.
fn build_chain(
    model: &LlamaModel,
    options: &Sampling,
    grammar: Option<&str>,
    history: &VecDeque<LlamaToken>,
    n_ctx: u32,
) -> Result<LlamaSampler, EngineError> {
    let mut samplers = Vec::new();
    let penalty_last_n = match options.repeat_last_n {
        n if n < 0 => n_ctx as i32,
        n => n,
    };
    let penalised = (options.repeat_penalty - 1.0).abs() > f32::EPSILON
        || options.presence_penalty.abs() > f32::EPSILON
        || options.frequency_penalty.abs() > f32::EPSILON;
    if penalised && penalty_last_n != 0 {
        let mut penalties = LlamaSampler::penalties(
            model.n_vocab(),
            penalty_last_n,
            options.repeat_penalty,
            options.frequency_penalty,
            options.presence_penalty,
        );
        penalties.accept_many(history.iter());
        samplers.push(penalties);
    }
    if let Some(gbnf) = grammar {
        let grammar = LlamaSampler::grammar(model, gbnf, "root")
            .map_err(|error| EngineError::InvalidInput(format!("invalid grammar: {error}")))?;
        samplers.push(grammar);
    }
    if options.temperature <= 0.0 {
        samplers.push(LlamaSampler::greedy());
    } else {
        if options.top_k > 0 {
            samplers.push(LlamaSampler::top_k(options.top_k));
        }
        if options.typical_p > 0.0 && options.typical_p < 1.0 {
            samplers.push(LlamaSampler::typical(options.typical_p, 1));
        }
        if options.top_p > 0.0 && options.top_p < 1.0 {
            samplers.push(LlamaSampler::top_p(options.top_p, 1));
        }
        if options.min_p > 0.0 {
            samplers.push(LlamaSampler::min_p(options.min_p, 1));
        }
        samplers.push(LlamaSampler::temp(options.temperature));
        samplers.push(LlamaSampler::dist(options.seed.unwrap_or(RANDOM_SEED)));
    }
    Ok(LlamaSampler::chain(samplers, true))
}
