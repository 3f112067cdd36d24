//! Draft models: a small model that shares the loaded model's tokenizer guesses its next
//! tokens (e.g. the R1 1.5B distill for the Qwen-based 7B–32B distills).
//!
//! The draft model runs in a context of its own with the same slots as the model it drafts for:
//! sequence `i` of both is slot `i`. Before a step, each drafting sequence's text is caught up in
//! the draft context (only what it does not hold yet: the tokens accepted since the last step),
//! then the draft model decodes greedily, one token per drafting sequence per decode, as many
//! tokens as the sequence's [`Drafter`](super::lookup::Drafter) asks for. The worker verifies
//! them like any draft, so the output is the model's own whatever the draft model says.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

use super::fast_sampler::argmax;

/// Most vocabulary entries two models may differ by and still share a tokenizer: padded
/// vocabularies of one family differ by a few unused entries (Qwen 2.5's 1.5B has 151,936,
/// its 7B 152,064).
const VOCAB_SIZE_SLACK: i32 = 256;

/// A sequence that wants drafts this step.
pub(super) struct Request<'a> {
    /// The slot (sequence) it runs in.
    pub seq: usize,
    /// The tokens the model holds for it, then the token it decodes next.
    pub history: &'a [LlamaToken],
    pub next: LlamaToken,
    /// Most tokens to draft.
    pub want: usize,
}

/// The draft model's context and what each of its sequences holds.
pub(super) struct DraftModel<'m> {
    model: &'m LlamaModel,
    context: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    n_batch: usize,
    /// Tokens the target model may take: a draft past them ends there.
    n_vocab_target: i32,
    /// Per slot, the tokens whose KV entries the draft context holds (positions `0..len`).
    cached: Vec<Vec<LlamaToken>>,
}

impl<'m> DraftModel<'m> {
    /// Wraps a loaded draft model and its context (made like the model's own, so with as many
    /// slots of the same size) after checking that it tokenizes as `target` does.
    pub(super) fn new(
        model: &'m LlamaModel,
        context: LlamaContext<'m>,
        target: &LlamaModel,
        slots: usize,
    ) -> Result<Self, String> {
        check_same_tokenizer(model, target)?;
        let n_batch = context.n_batch() as usize;
        Ok(Self {
            model,
            context,
            batch: LlamaBatch::new(n_batch, 1),
            n_batch,
            n_vocab_target: target.n_vocab(),
            cached: vec![Vec::new(); slots],
        })
    }

    /// Drafts greedily for every request; the drafts come back in the requests' order, each
    /// at most `want` long (shorter where the draft model ends the text or leaves the target's
    /// vocabulary). On a llama.cpp error the draft context is emptied and nothing is drafted.
    pub(super) fn propose(&mut self, requests: &[Request<'_>]) -> Vec<Vec<LlamaToken>> {
        let mut drafts = vec![Vec::new(); requests.len()];
        if let Err(error) = self.run(requests, &mut drafts) {
            tracing::warn!(%error, "the draft model failed; drafting nothing this step");
            self.context.clear_kv_cache();
            self.cached.iter_mut().for_each(Vec::clear);
            drafts.iter_mut().for_each(Vec::clear);
        }
        drafts
    }

    fn run(
        &mut self,
        requests: &[Request<'_>],
        drafts: &mut [Vec<LlamaToken>],
    ) -> Result<(), String> {
        // Catch up: each sequence's text from where the draft context's copy of it differs,
        // in as many decodes as the batch needs. The last token is always decoded again, for
        // the logits of the first draft.
        let mut feeds: Vec<(usize, usize)> = Vec::with_capacity(requests.len());
        for (index, request) in requests.iter().enumerate() {
            let len = request.history.len() + 1;
            let cached = &mut self.cached[request.seq];
            let keep = cached
                .iter()
                .enumerate()
                .take_while(|&(i, token)| *token == token_at(request, i))
                .count()
                .min(len - 1);
            if keep < cached.len() {
                let seq = request.seq as u32;
                let removed = self
                    .context
                    .clear_kv_cache_seq(Some(seq), Some(keep as u32), None)
                    .unwrap_or(false);
                if removed {
                    cached.truncate(keep);
                } else {
                    let _ = self.context.clear_kv_cache_seq(Some(seq), None, None);
                    cached.clear();
                }
            }
            feeds.push((index, cached.len()));
        }
        let mut last_rows: Vec<(usize, i32)> = Vec::new();
        let mut feed = 0;
        while feed < feeds.len() {
            self.batch.clear();
            last_rows.clear();
            while feed < feeds.len() && (self.batch.n_tokens() as usize) < self.n_batch {
                let (index, from) = feeds[feed];
                let request = &requests[index];
                let len = request.history.len() + 1;
                let room = self.n_batch - self.batch.n_tokens() as usize;
                let to = len.min(from + room);
                for position in from..to {
                    let last = position + 1 == len;
                    self.batch
                        .add(
                            token_at(request, position),
                            position as i32,
                            &[request.seq as i32],
                            last,
                        )
                        .map_err(|error| error.to_string())?;
                    if last {
                        last_rows.push((index, self.batch.n_tokens() - 1));
                    }
                }
                self.cached[request.seq].extend((from..to).map(|i| token_at(request, i)));
                if to == len {
                    feed += 1;
                } else {
                    feeds[feed].1 = to;
                }
            }
            self.context
                .decode(&mut self.batch)
                .map_err(|error| error.to_string())?;
            for &(index, row) in &last_rows {
                self.pick(index, row, &requests[index], drafts);
            }
        }
        // Draft: one token per drafting sequence per decode.
        loop {
            self.batch.clear();
            last_rows.clear();
            for (index, request) in requests.iter().enumerate() {
                let draft = &drafts[index];
                let Some(&token) = draft.last() else {
                    continue;
                };
                if draft.len() >= request.want || self.ended(token) {
                    continue;
                }
                let position = request.history.len() + draft.len();
                self.batch
                    .add(token, position as i32, &[request.seq as i32], true)
                    .map_err(|error| error.to_string())?;
                self.cached[request.seq].push(token);
                last_rows.push((index, self.batch.n_tokens() - 1));
            }
            if last_rows.is_empty() {
                break;
            }
            self.context
                .decode(&mut self.batch)
                .map_err(|error| error.to_string())?;
            for &(index, row) in &last_rows {
                self.pick(index, row, &requests[index], drafts);
            }
        }
        // A draft ends before an end token or a token the target does not have.
        for draft in drafts.iter_mut() {
            if let Some(end) = draft.iter().position(|&token| self.ended(token)) {
                draft.truncate(end);
            }
        }
        Ok(())
    }

    /// Appends the draft model's greedy pick at `row` to the request's draft.
    fn pick(&self, index: usize, row: i32, request: &Request<'_>, drafts: &mut [Vec<LlamaToken>]) {
        if drafts[index].len() < request.want {
            let logits = self.context.get_logits_ith(row);
            drafts[index].push(LlamaToken(argmax(logits) as i32));
        }
    }

    /// Whether drafting stops at `token`: the end of the text, or not in the target's
    /// vocabulary.
    fn ended(&self, token: LlamaToken) -> bool {
        token.0 >= self.n_vocab_target || self.model.vocab().is_eog(token)
    }
}

/// Token `i` of the request's text (its history, then `next`).
fn token_at(request: &Request<'_>, i: usize) -> LlamaToken {
    request.history.get(i).copied().unwrap_or(request.next)
}

/// Refuses a draft model whose tokens mean other text than the target's: drafts would then be
/// guesses in another language, all rejected.
fn check_same_tokenizer(draft: &LlamaModel, target: &LlamaModel) -> Result<(), String> {
    let (draft_vocab, target_vocab) = (draft.vocab(), target.vocab());
    if draft_vocab.vocab_type() != target_vocab.vocab_type() {
        return Err("it uses another kind of tokenizer".to_owned());
    }
    let (n_draft, n_target) = (draft.n_vocab(), target.n_vocab());
    if (n_draft - n_target).abs() > VOCAB_SIZE_SLACK {
        return Err(format!(
            "its vocabulary has {n_draft} tokens and the model's {n_target}"
        ));
    }
    if draft_vocab.bos() != target_vocab.bos() || draft_vocab.eos() != target_vocab.eos() {
        return Err("its start and end tokens differ from the model's".to_owned());
    }
    let differs = (0..n_draft.min(n_target))
        .map(LlamaToken)
        .find(|&token| draft_vocab.text(token) != target_vocab.text(token));
    if let Some(token) = differs {
        return Err(format!(
            "its token {} is {:?} where the model's is {:?}",
            token.0,
            draft_vocab.text(token).map(|text| text.to_string_lossy()),
            target_vocab.text(token).map(|text| text.to_string_lossy()),
        ));
    }
    Ok(())
}
