//! The sampler chain of one sequence, built from its `Sampling` options and grammar.
//!
//! llama.cpp's `llama_sampler_sample` runs the whole chain over the logits of one output row and
//! accepts the chosen token, so a step costs one call. A grammar that applies only after
//! `</think>` is added by rebuilding the chain when that text appears; the penalty history is
//! replayed into the new chain so penalties carry over.

use std::collections::VecDeque;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

use super::{EngineError, Grammar, GrammarSource, Sampling};

/// The marker after which an `after_think` grammar starts to apply.
const THINK_END: &str = "</think>";

/// llama.cpp's "pick a random seed" value.
const RANDOM_SEED: u32 = u32::MAX;

pub(super) struct SequenceSampler {
    chain: LlamaSampler,
    options: Sampling,
    /// The grammar waiting for `</think>`, if it applies only after reasoning.
    deferred: Option<String>,
    /// Tail of the generated text, to spot `</think>` across pieces while deferred.
    recent_text: String,
    /// Last tokens seen (prompt and generated), replayed when the chain is rebuilt.
    history: VecDeque<LlamaToken>,
    penalty_window: usize,
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
            Some(GrammarSource::JsonSchema(_)) => {
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
        let chain = build_chain(model, options, active, &history, n_ctx)?;
        Ok(Self {
            chain,
            options: options.clone(),
            deferred,
            recent_text: String::new(),
            history,
            penalty_window,
        })
    }

    /// Samples (and accepts) the next token from output row `index` of the last decode.
    pub(super) fn sample(&mut self, context: &LlamaContext<'_>, index: i32) -> LlamaToken {
        let token = self.chain.sample(context, index);
        if self.penalty_window > 0 {
            if self.history.len() == self.penalty_window {
                self.history.pop_front();
            }
            self.history.push_back(token);
        }
        token
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
            self.chain = build_chain(model, &self.options, Some(&gbnf), &self.history, n_ctx)?;
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
