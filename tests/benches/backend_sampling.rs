//! Where a token is chosen: on the host, or inside llama.cpp's graph (its experimental backend
//! sampling, samplers attached to the context per sequence).
//!
//! The tiny deepseek2 fixture (129,280 logits per row), 2 threads, 512 tokens per sequence, one
//! sequence and eight in one batch. Four raw llama-cpp-2 loops, side by side in each round:
//! the non-sampling loop of `bench host` (the baseline: the next token fixed, logits still
//! computed and copied), llama.cpp's greedy sampler chain on the host, and backend sampling
//! with a greedy chain and with R1's chain (`top_k` 40, `top_p` 0.95, temperature 0.6, a
//! seeded draw). With backend sampling llama.cpp copies no logits out and the host reads one
//! token per row, which is what a GPU wants; this measures what it costs on a CPU.
//!
//! `cargo bench --workspace --bench backend_sampling`

use std::num::NonZeroU32;
use std::time::Instant;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::sampling::LlamaSampler;
use whale_tests::bench::{load_average, median};
use whale_tests::fixtures;
use whale_tests::raw::RawDecode;

const TOKENS: usize = 512;
const ROUNDS: usize = 5;
const THREADS: u32 = 2;
const N_CTX: u32 = 1024;
const PROMPTS: [&str; 8] = [
    "Hello", "One", "The sea", "Why", "Listen", "Numbers", "A story", "Rust",
];

/// Generated tokens per second with each sequence's sampler chain inside llama.cpp's graph.
fn on_backend(backend: &LlamaBackend, model: &LlamaModel, prompts: &[&str], r1: bool) -> f64 {
    let sequences = prompts.len();
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(N_CTX * sequences as u32))
        .with_n_batch(512)
        .with_n_seq_max(sequences as u32)
        .with_n_threads(THREADS as i32)
        .with_n_threads_batch(THREADS as i32);
    let samplers = (0..sequences).map(|seq| {
        let chain = if r1 {
            LlamaSampler::chain(
                [
                    LlamaSampler::top_k(40),
                    LlamaSampler::top_p(0.95, 1),
                    LlamaSampler::temp(0.6),
                    LlamaSampler::dist(42),
                ],
                true,
            )
        } else {
            LlamaSampler::chain([LlamaSampler::greedy()], true)
        };
        (seq as i32, chain)
    });
    let mut context = model
        .new_context_with_samplers(backend, params, samplers)
        .expect("context with backend samplers");
    let vocab = model.vocab();
    let mut batch = LlamaBatch::new(512, sequences as i32);
    let mut positions = Vec::with_capacity(sequences);
    let mut rows = Vec::with_capacity(sequences);
    for (seq, prompt) in prompts.iter().enumerate() {
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
    let started = Instant::now();
    for _ in 0..TOKENS {
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
    (TOKENS * sequences) as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(false));
    let backend = LlamaBackend::init().expect("llama.cpp backend");
    let model = LlamaModel::load_from_file(
        &backend,
        fixtures::deepseek2(),
        &LlamaModelParams::default(),
    )
    .expect("load the fixture");
    println!(
        "where the token is chosen: tiny deepseek2 fixture, {THREADS} threads, {TOKENS} tokens per \
         sequence, tok/s and ratio to the non-sampling loop (load average {})",
        load_average()
    );
    println!(
        "| streams | round | no sampling | host greedy (llama.cpp chain) | ratio | backend greedy | \
         ratio | backend R1 | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for streams in [1, 8] {
        let prompts = &PROMPTS[..streams];
        let raw = RawDecode {
            prompts,
            tokens: TOKENS,
            threads: THREADS,
            n_ctx: N_CTX,
        };
        // Warm up: page the weights in, build each kind of graph once.
        raw.run_without_sampling(&backend, &model);
        on_backend(&backend, &model, prompts, false);
        let mut rows: Vec<[f64; 7]> = Vec::new();
        for round in 1..=ROUNDS {
            let none = raw.run_without_sampling(&backend, &model);
            let host = raw.run(&backend, &model);
            let greedy = on_backend(&backend, &model, prompts, false);
            let r1 = on_backend(&backend, &model, prompts, true);
            let row = [
                none,
                host,
                host / none,
                greedy,
                greedy / none,
                r1,
                r1 / none,
            ];
            print_row(&streams.to_string(), &round.to_string(), &row);
            rows.push(row);
        }
        let medians: Vec<f64> = (0..7)
            .map(|column| median(&rows.iter().map(|row| row[column]).collect::<Vec<_>>()))
            .collect();
        print_row(&streams.to_string(), "median", &medians);
    }
}

fn print_row(streams: &str, label: &str, row: &[f64]) {
    println!(
        "| {streams} | {label} | {:.0} | {:.0} | {:.3} | {:.0} | {:.3} | {:.0} | {:.3} |",
        row[0], row[1], row[2], row[3], row[4], row[5], row[6]
    );
}
