//! Speculative decoding (prompt lookup) through whaled's API: tokens per second with
//! `speculative: "auto"` (the default) against `"off"`, in alternating rounds of one run.
//!
//! 1. A code-editing prompt, where the model repeats a function with one change: greedy, and
//!    with R1's recommended sampling (temperature 0.6, `top_p` 0.95, seeded). Target: auto ≥ 1.5×
//!    off.
//! 2. A prompt with nothing to copy: free prose, sampled (greedy prose from this small model
//!    soon repeats itself, which prompt lookup then copies): auto costs ≤ 3 % (ratio ≥ 0.97).
//!    Greedy prose is measured too.
//!
//! 3. DeepSeek multi-token prediction: the tiny deepseek2 fixture drafting with its NextN block
//!    (`speculative: "mtp"` against `"off"`). Its weights are random, so every guess is
//!    rejected: this measures what a block that guesses badly costs.
//!
//! Gemma 3 270M `Q4_K_M`, 2 threads, one slot, raw mode, 160 generated tokens, the model kept
//! loaded; the rate is `eval_count / eval_duration` of the final object. Greedy rounds also
//! count how often both modes wrote the same text: llama.cpp's arithmetic differs slightly with
//! the number of tokens in a batch (as it does when other requests share the batch), so a
//! near-tie between two tokens may fall either way.
//!
//! `cargo bench --workspace --bench speculative`

use std::time::Duration;

use serde_json::{Value, json};
use whale_tests::bench::{
    self, CODE_EDIT_PROMPT, FREE_TEXT_PROMPT, Streamed, load_average, median,
};
use whale_tests::fixtures;
use whale_tests::whaled::Whaled;

const TOKENS: usize = 160;
const ROUNDS: usize = 7;
const THREADS: u32 = 2;
const N_CTX: u32 = 1024;
const SETTLE: Duration = Duration::from_millis(300);

fn options(mode: &str, greedy: bool) -> Value {
    if greedy {
        json!({"temperature": 0, "num_predict": TOKENS, "num_ctx": N_CTX, "speculative": mode})
    } else {
        json!({"temperature": 0.6, "top_p": 0.95, "seed": 7, "num_predict": TOKENS,
               "num_ctx": N_CTX, "speculative": mode})
    }
}

/// Alternating rounds of `off` and `mode` on one prompt; prints a table and returns the
/// median ratio mode/off.
fn compare(
    client: &reqwest::blocking::Client,
    daemon: &Whaled,
    (model, mode): (&str, &str),
    label: &str,
    prompt: &str,
    greedy: bool,
) -> f64 {
    let run = |mode: &str| -> Streamed {
        let streamed = bench::generate(client, daemon, model, prompt, &options(mode, greedy));
        assert_eq!(streamed.eval_count, TOKENS as u64, "{label}: stopped early");
        streamed
    };
    // Warm: loads the model and caches the prompt in the slot for both modes alike.
    run("off");
    run(mode);
    println!();
    println!(
        "{label}: {TOKENS} tokens, {} (load average {})",
        if greedy {
            "greedy"
        } else {
            "temperature 0.6, top_p 0.95"
        },
        load_average()
    );
    println!(
        "{:>6}  {:>9}  {:>9}  {:>6}  {:>8}  {:>8}",
        "round",
        "off tok/s",
        format!("{mode} tok/s"),
        "ratio",
        "drafted",
        "accepted"
    );
    let (mut offs, mut autos, mut ratios, mut drafted, mut accepted) =
        (vec![], vec![], vec![], 0, 0);
    let mut same_text = 0;
    for round in 1..=ROUNDS {
        std::thread::sleep(SETTLE);
        let off = run("off");
        std::thread::sleep(SETTLE);
        let auto = run(mode);
        assert_eq!(off.draft_count, 0);
        if greedy {
            same_text += usize::from(auto.text == off.text);
        }
        let ratio = auto.eval_rate() / off.eval_rate();
        println!(
            "{round:>6}  {:>9.1}  {:>9.1}  {ratio:>6.3}  {:>8}  {:>8}",
            off.eval_rate(),
            auto.eval_rate(),
            auto.draft_count,
            auto.draft_accepted_count
        );
        offs.push(off.eval_rate());
        autos.push(auto.eval_rate());
        ratios.push(ratio);
        drafted += auto.draft_count;
        accepted += auto.draft_accepted_count;
    }
    let ratio = median(&ratios);
    println!(
        "{:>6}  {:>9.1}  {:>9.1}  {ratio:>6.3}  {:>8}  {:>8}",
        "median",
        median(&offs),
        median(&autos),
        drafted / ROUNDS as u64,
        accepted / ROUNDS as u64
    );
    if greedy {
        println!("rounds where both modes wrote the same text: {same_text} of {ROUNDS}");
    }
    ratio
}

fn main() {
    let daemon = Whaled::builder()
        .env("WHALE_NUM_THREADS", THREADS.to_string())
        .env("WHALE_NUM_PARALLEL", "1")
        .env("WHALE_KEEP_ALIVE", "-1")
        .env("WHALE_LOG", "warn")
        .start();
    daemon.create_from_gguf("gemma", &fixtures::gemma());
    daemon.create_from_gguf("tiny", &fixtures::deepseek2());
    let client = Whaled::http();
    let gemma = ("gemma", "auto");
    println!(
        "speculative decoding (prompt lookup), Gemma 3 270M Q4_K_M, {THREADS} threads, auto vs off"
    );
    let code = compare(&client, &daemon, gemma, "code edit", CODE_EDIT_PROMPT, true);
    let sampled = compare(
        &client,
        &daemon,
        gemma,
        "code edit, sampled",
        CODE_EDIT_PROMPT,
        false,
    );
    let free_sampled = compare(
        &client,
        &daemon,
        gemma,
        "free text, sampled",
        FREE_TEXT_PROMPT,
        false,
    );
    let free = compare(&client, &daemon, gemma, "free text", FREE_TEXT_PROMPT, true);
    let mtp = compare(
        &client,
        &daemon,
        ("tiny", "mtp"),
        "NextN block guessing badly (tiny deepseek2)",
        FREE_TEXT_PROMPT,
        true,
    );
    println!();
    println!(
        "median auto/off: code edit {code:.3} (target >= 1.5), sampled {sampled:.3}; \
         free text sampled {free_sampled:.3} (target >= 0.97), greedy {free:.3}; \
         mtp/off on random weights {mtp:.3}"
    );
}
