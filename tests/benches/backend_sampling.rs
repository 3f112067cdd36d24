//! Where a token is chosen: on the host, or inside llama.cpp's graph (its experimental backend
//! sampling, samplers attached to the context per sequence).
//!
//! The tiny deepseek2 fixture (129,280 logits per row), 2 threads, 512 tokens per sequence, one
//! sequence and eight in one batch. Four raw llama-cpp-2 loops, side by side in each round:
//! the non-sampling loop of `bench host` (the baseline: random next tokens, logits still
//! computed and copied), llama.cpp's greedy sampler chain on the host, and backend sampling
//! with a greedy chain and with R1's chain (`top_k` 40, `top_p` 0.95, temperature 0.6, a
//! seeded draw). With backend sampling llama.cpp copies no logits out and the host reads one
//! token per row, which is what a GPU wants; this measures what it costs on a CPU.
//!
//! `cargo bench --workspace --bench backend_sampling`

use llama_cpp_2::sampling::LlamaSampler;
use whale_tests::bench::{column_medians, load_average};
use whale_tests::fixtures;
use whale_tests::raw::{RawDecode, load_quietly};

const TOKENS: usize = 512;
const ROUNDS: usize = 5;
const THREADS: u32 = 2;
const N_CTX: u32 = 1024;
const PROMPTS: [&str; 8] = [
    "Hello", "One", "The sea", "Why", "Listen", "Numbers", "A story", "Rust",
];

/// A sequence's chain inside llama.cpp's graph: greedy, or R1's.
fn chain(r1: bool) -> LlamaSampler {
    if r1 {
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
    }
}

fn main() {
    let (backend, model) = load_quietly(&fixtures::deepseek2());
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
        raw.run_on_backend(&backend, &model, || chain(false));
        let mut rows: Vec<[f64; 7]> = Vec::new();
        for round in 1..=ROUNDS {
            let none = raw.run_without_sampling(&backend, &model);
            let host = raw.run(&backend, &model);
            let greedy = raw.run_on_backend(&backend, &model, || chain(false));
            let r1 = raw.run_on_backend(&backend, &model, || chain(true));
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
        let medians = column_medians(&rows);
        print_row(&streams.to_string(), "median", &medians);
    }
}

fn print_row(streams: &str, label: &str, row: &[f64]) {
    println!(
        "| {streams} | {label} | {:.0} | {:.0} | {:.3} | {:.0} | {:.3} | {:.0} | {:.3} |",
        row[0], row[1], row[2], row[3], row[4], row[5], row[6]
    );
}
