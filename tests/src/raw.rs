//! Raw llama-cpp-2 decoding: the baseline the benchmarks compare whaled's engine and API with.
//! A plain loop of greedy sampling and one `decode` per step, nothing of whale's own.

use std::num::NonZeroU32;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::sampling::LlamaSampler;

/// What a raw run decodes: one sequence per prompt, all in the same batch at each step.
pub struct RawDecode<'a> {
    pub prompts: &'a [&'a str],
    /// Tokens generated per sequence.
    pub tokens: usize,
    pub threads: u32,
    /// Context per sequence (the context holds `n_ctx × prompts`, as whaled's slots do).
    pub n_ctx: u32,
}

impl RawDecode<'_> {
    /// Generated tokens per second over all sequences, timed from the first sample to the last
    /// (as whaled's `eval_duration`). Panics if a sequence ends early.
    pub fn run(&self, backend: &LlamaBackend, model: &LlamaModel) -> f64 {
        let sequences = self.prompts.len();
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(self.n_ctx * sequences as u32))
            .with_n_batch(512)
            .with_n_seq_max(sequences as u32)
            .with_n_threads(self.threads as i32)
            .with_n_threads_batch(self.threads as i32);
        let mut context = model.new_context(backend, params).expect("context");
        let vocab = model.vocab();
        // One prefill for all prompts; each sequence samples from its prompt's last row.
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
        let mut samplers: Vec<LlamaSampler> = (0..sequences)
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
        (self.tokens * sequences) as f64 / started.elapsed().as_secs_f64()
    }

    /// As [`Self::run`], but nothing is sampled: each step decodes the same next token for
    /// every sequence, with its logits computed, as llama-bench's generation test does. What
    /// llama.cpp alone costs per step, the baseline for whaled's host work.
    pub fn run_without_sampling(&self, backend: &LlamaBackend, model: &LlamaModel) -> f64 {
        let sequences = self.prompts.len();
        let params = LlamaContextParams::default()
            .with_n_ctx(NonZeroU32::new(self.n_ctx * sequences as u32))
            .with_n_batch(512)
            .with_n_seq_max(sequences as u32)
            .with_n_threads(self.threads as i32)
            .with_n_threads_batch(self.threads as i32);
        let mut context = model.new_context(backend, params).expect("context");
        let vocab = model.vocab();
        let mut batch = LlamaBatch::new(512, sequences as i32);
        let mut positions = Vec::with_capacity(sequences);
        let mut next = Vec::with_capacity(sequences);
        for (seq, prompt) in self.prompts.iter().enumerate() {
            let prompt = vocab.tokenize(prompt.as_bytes(), true, true);
            for (i, &token) in prompt.iter().enumerate() {
                batch
                    .add(token, i as i32, &[seq as i32], i + 1 == prompt.len())
                    .expect("batch");
            }
            positions.push(prompt.len() as i32);
            next.push(*prompt.last().expect("a prompt"));
        }
        context.decode(&mut batch).expect("prefill");
        let started = Instant::now();
        for _ in 0..self.tokens {
            batch.clear();
            for (seq, &token) in next.iter().enumerate() {
                batch
                    .add(token, positions[seq], &[seq as i32], true)
                    .expect("batch");
                positions[seq] += 1;
            }
            context.decode(&mut batch).expect("decode");
        }
        (self.tokens * sequences) as f64 / started.elapsed().as_secs_f64()
    }
}
