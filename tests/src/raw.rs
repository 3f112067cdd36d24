//! Raw llama-cpp-2 decoding: the baseline the benchmarks compare whaled's engine and API with.
//! A plain loop of greedy sampling and one `decode` per step, nothing of whale's own.

use std::num::NonZeroU32;
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;

/// What a raw run decodes: one sequence per prompt, all in the same batch at each step.
pub struct RawDecode<'a> {
    pub prompts: &'a [&'a str],
    /// Tokens generated per sequence.
    pub tokens: usize,
    pub threads: u32,
    /// Context per sequence (the context holds `n_ctx × prompts`, as whaled's slots do).
    pub n_ctx: u32,
}

/// The context after one prefill of every prompt.
struct Prefilled<'m> {
    context: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    /// Each sequence's next position.
    positions: Vec<i32>,
    /// Each sequence's output row in the last decode.
    rows: Vec<i32>,
}

impl RawDecode<'_> {
    /// Generated tokens per second over all sequences, timed from the first sample to the last
    /// (as whaled's `eval_duration`). Panics if a sequence ends early.
    pub fn run(&self, backend: &LlamaBackend, model: &LlamaModel) -> f64 {
        let context = model.new_context(backend, self.params()).expect("context");
        let Prefilled {
            mut context,
            mut batch,
            mut positions,
            mut rows,
            ..
        } = self.prefill(model, context);
        let vocab = model.vocab();
        let mut samplers: Vec<LlamaSampler> = (0..self.prompts.len())
            .map(|_| LlamaSampler::chain([LlamaSampler::greedy()], true))
            .collect();
        let started = Instant::now();
        for step in 1..=self.tokens {
            batch.clear();
            for (seq, sampler) in samplers.iter_mut().enumerate() {
                let token = sampler.sample(&context, rows[seq]);
                assert!(!vocab.is_eog(token), "raw sequence {seq} ended early");
                if step < self.tokens {
                    batch
                        .add(token, positions[seq], &[seq as i32], true)
                        .expect("batch");
                    positions[seq] += 1;
                    rows[seq] = seq as i32;
                }
            }
            if step < self.tokens {
                context.decode(&mut batch).expect("decode");
            }
        }
        (self.tokens * self.prompts.len()) as f64 / started.elapsed().as_secs_f64()
    }

    /// As [`Self::run`], but nothing is sampled: each step decodes a random token for every
    /// sequence, with its logits computed, as llama-bench's generation test does (`rand() %
    /// n_vocab`). What llama.cpp alone costs per step, the baseline for whaled's host work. The
    /// tokens vary from step to step and from sequence to sequence, as generated text does: in a
    /// mixture-of-experts model the token picks the experts, so one token fed again and again
    /// would keep the same experts' weights in cache and flatter the baseline.
    pub fn run_without_sampling(&self, backend: &LlamaBackend, model: &LlamaModel) -> f64 {
        let context = model.new_context(backend, self.params()).expect("context");
        let Prefilled {
            mut context,
            mut batch,
            mut positions,
            ..
        } = self.prefill(model, context);
        let mut tokens = RandomTokens::new(model.n_vocab());
        let started = Instant::now();
        for _ in 0..self.tokens {
            batch.clear();
            for (seq, position) in positions.iter_mut().enumerate() {
                batch
                    .add(tokens.next(), *position, &[seq as i32], true)
                    .expect("batch");
                *position += 1;
            }
            context.decode(&mut batch).expect("decode");
        }
        (self.tokens * self.prompts.len()) as f64 / started.elapsed().as_secs_f64()
    }

    /// As [`Self::run`], with each sequence's sampler chain (`chain()` makes one) inside
    /// llama.cpp's graph (its backend sampling): no logits are copied out, the host reads one
    /// token per row.
    pub fn run_on_backend(
        &self,
        backend: &LlamaBackend,
        model: &LlamaModel,
        chain: impl Fn() -> LlamaSampler,
    ) -> f64 {
        let samplers = (0..self.prompts.len()).map(|seq| (seq as i32, chain()));
        let context = model
            .new_context_with_samplers(backend, self.params(), samplers)
            .expect("context with backend samplers");
        let Prefilled {
            mut context,
            mut batch,
            mut positions,
            mut rows,
            ..
        } = self.prefill(model, context);
        let started = Instant::now();
        for _ in 0..self.tokens {
            batch.clear();
            for (seq, row) in rows.iter_mut().enumerate() {
                let token = context.sampled_token_ith(*row).expect("a sampled token");
                batch
                    .add(token, positions[seq], &[seq as i32], true)
                    .expect("batch");
                positions[seq] += 1;
                *row = seq as i32;
            }
            context.decode(&mut batch).expect("decode");
        }
        (self.tokens * self.prompts.len()) as f64 / started.elapsed().as_secs_f64()
    }

    /// A context of `n_ctx` per sequence, `threads` threads.
    fn params(&self) -> LlamaContextParams {
        let sequences = self.prompts.len() as u32;
        LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(self.n_ctx * sequences))
            .with_n_batch(512)
            .with_n_seq_max(sequences)
            .with_n_threads(self.threads as i32)
            .with_n_threads_batch(self.threads as i32)
    }

    /// One prefill for all prompts; each sequence samples from its prompt's last row.
    fn prefill<'m>(&self, model: &LlamaModel, mut context: LlamaContext<'m>) -> Prefilled<'m> {
        let vocab = model.vocab();
        let sequences = self.prompts.len();
        let mut batch = LlamaBatch::new(512, sequences as i32);
        let mut positions = Vec::with_capacity(sequences);
        let mut rows = Vec::with_capacity(sequences);
        for (seq, prompt) in self.prompts.iter().enumerate() {
            let prompt = vocab.tokenize(prompt.as_bytes(), true, true);
            for (i, &token) in prompt.iter().enumerate() {
                batch
                    .add(token, i as i32, &[seq as i32], i + 1 == prompt.len())
                    .expect("batch");
            }
            positions.push(prompt.len() as i32);
            rows.push(batch.n_tokens() - 1);
        }
        context.decode(&mut batch).expect("prefill");
        Prefilled {
            context,
            batch,
            positions,
            rows,
        }
    }
}

/// The same stream of tokens spread over the whole vocabulary in every run (a 64-bit linear
/// congruential generator, its high bits), so that runs compare like with like.
struct RandomTokens {
    state: u64,
    n_vocab: u64,
}

impl RandomTokens {
    fn new(n_vocab: i32) -> Self {
        Self {
            state: 0x853c_49e6_748f_ea9b,
            n_vocab: u64::try_from(n_vocab).expect("a vocabulary"),
        }
    }

    fn next(&mut self) -> LlamaToken {
        self.state = self
            .state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let token = (self.state >> 32) % self.n_vocab;
        LlamaToken(i32::try_from(token).expect("a token id"))
    }
}

/// llama.cpp's backend with its logs off, and the model at `path` loaded on the CPU: what the
/// raw loops run on.
pub fn load_quietly(path: &std::path::Path) -> (LlamaBackend, LlamaModel) {
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(false));
    let backend = LlamaBackend::init().expect("llama.cpp backend");
    let model = LlamaModel::load_from_file(&backend, path, &LlamaModelParams::default())
        .expect("load the model");
    (backend, model)
}
