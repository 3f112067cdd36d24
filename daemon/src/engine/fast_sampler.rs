//! Sampling straight from a row of logits, without a candidate array over the vocabulary.
//!
//! llama.cpp's `llama_sampler_sample` fills a `llama_token_data` for every token of the
//! vocabulary (129,280 of them for `DeepSeek`, 1.5 MB written) before its chain even looks at
//! them, for every sequence at every step. On a GPU that host work is the difference between
//! whaled and llama.cpp's own speed. Greedy decoding and the usual chain (repetition penalties,
//! top-k, top-p, min-p, temperature, a seeded draw) need only the few best logits, so this
//! module finds those in two passes over the row — every block's maximum, then only the
//! blocks that can hold one of the best — and does the rest on a handful of candidates.
//!
//! The math is llama.cpp's, in the order whaled's chain applies it: penalties (over the
//! sequence's recent tokens), top-k, top-p, min-p, temperature, then a draw from the softmax.
//! Greedy picks the first token with the highest (penalised) logit, as llama.cpp's greedy
//! sampler does, so greedy output is token for token the same. A seeded draw is reproducible
//! for the same seed, though not the same numbers as llama.cpp's `mt19937`.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Logits compared sixteen at a time (vector registers' worth of lanes).
const LANES: usize = 16;

/// Logits looked at in blocks this long: one whose best cannot be among the k best is skipped.
const SKIP_BLOCK: usize = 128;

/// Penalties on tokens that appeared recently (Ollama's `repeat_penalty`,
/// `frequency_penalty`, `presence_penalty`), with llama.cpp's formula.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Penalties {
    pub repeat: f32,
    pub frequency: f32,
    pub presence: f32,
}

impl Penalties {
    fn none(&self) -> bool {
        (self.repeat - 1.0).abs() <= f32::EPSILON
            && self.frequency.abs() <= f32::EPSILON
            && self.presence.abs() <= f32::EPSILON
    }

    /// A logit of a token seen `count` times in the window.
    fn apply(&self, logit: f32, count: u32) -> f32 {
        let scaled = if logit <= 0.0 {
            logit * self.repeat
        } else {
            logit / self.repeat
        };
        scaled - count as f32 * self.frequency - self.presence
    }
}

/// What a fast sampler does with a row.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct FastOptions {
    /// `None`: greedy.
    pub temperature: Option<f32>,
    /// At least 1.
    pub top_k: usize,
    /// 1.0 keeps all of the top k.
    pub top_p: f32,
    /// 0.0 keeps all.
    pub min_p: f32,
    pub penalties: Penalties,
    pub seed: Option<u32>,
}

/// One sequence's sampler: its options, its random numbers, and a reused buffer (nothing is
/// allocated per token once it has grown).
pub(super) struct FastSampler {
    options: FastOptions,
    rng: StdRng,
    /// The best candidates of a row: (logit, token).
    candidates: Vec<(f32, i32)>,
    top_n: TopN,
}

impl FastSampler {
    pub(super) fn new(options: FastOptions) -> Self {
        let rng = match options.seed {
            Some(seed) => StdRng::seed_from_u64(u64::from(seed)),
            None => StdRng::from_os_rng(),
        };
        Self {
            candidates: Vec::with_capacity(options.top_k + 64),
            top_n: TopN::default(),
            options,
            rng,
        }
    }

    /// Whether the penalties change anything (else the caller need not count the window).
    pub(super) fn penalises(&self) -> bool {
        !self.options.penalties.none()
    }

    /// Picks the next token from `logits` (one row, the whole vocabulary); `window` counts
    /// each of the sequence's recent tokens, which the penalties apply to.
    ///
    /// With a `draft` (a token proposed for this position before the model saw it), a draw
    /// follows the rejection rule of speculative sampling for a proposal that is certain: the
    /// draft is kept with its probability p, otherwise the token is drawn from the other
    /// candidates in proportion to theirs — so each token still comes with its probability
    /// under the chain. Greedy ignores the draft: the caller compares.
    pub(super) fn sample(
        &mut self,
        logits: &[f32],
        window: &HashMap<i32, u32>,
        draft: Option<i32>,
    ) -> i32 {
        let greedy = self.options.temperature.is_none();
        let k = if greedy { 1 } else { self.options.top_k };
        if window.is_empty() && k == 1 {
            return argmax(logits) as i32;
        }
        // The penalised best k are among the best k of the tokens outside the window, and the
        // window's own tokens (whatever the penalties do to them).
        top_n(logits, k, window, &mut self.top_n, &mut self.candidates);
        let penalties = self.options.penalties;
        for (&token, &count) in window {
            if let Some(&logit) = logits.get(token as usize) {
                self.candidates.push((penalties.apply(logit, count), token));
            }
        }
        // Best first; among equals the lower token id first, as llama.cpp meets them.
        self.candidates
            .sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        self.candidates.truncate(k);
        if self.candidates.is_empty() {
            // Nothing comparable (a row of NaN): the first token, as `argmax` answers.
            return 0;
        }
        let Some(temperature) = self.options.temperature else {
            return self.candidates[0].1;
        };
        self.keep_top_p();
        self.keep_min_p();
        self.draw(temperature, draft)
    }

    /// top-p: the fewest best candidates whose probabilities (softmax of the logits, before
    /// temperature) add up to `top_p`.
    fn keep_top_p(&mut self) {
        let p = self.options.top_p;
        if p >= 1.0 || self.candidates.len() <= 1 {
            return;
        }
        let max = self.candidates[0].0;
        let sum: f32 = self.candidates.iter().map(|&(l, _)| (l - max).exp()).sum();
        let mut cumulative = 0.0;
        let mut keep = self.candidates.len();
        for (index, &(logit, _)) in self.candidates.iter().enumerate() {
            cumulative += (logit - max).exp() / sum;
            if cumulative >= p {
                keep = index + 1;
                break;
            }
        }
        self.candidates.truncate(keep);
    }

    /// min-p: candidates at least `min_p` times as likely as the best.
    fn keep_min_p(&mut self) {
        let p = self.options.min_p;
        if p <= 0.0 || self.candidates.len() <= 1 {
            return;
        }
        let floor = self.candidates[0].0 + p.ln();
        let keep = self
            .candidates
            .iter()
            .take_while(|&&(logit, _)| logit >= floor)
            .count()
            .max(1);
        self.candidates.truncate(keep);
    }

    /// A draw from the softmax of the candidates' logits over `temperature`; a `draft` is
    /// kept with its probability, else the draw is over the others (see [`Self::sample`]).
    fn draw(&mut self, temperature: f32, draft: Option<i32>) -> i32 {
        let max = self.candidates[0].0 / temperature;
        let mut sum = 0.0f32;
        let mut draft_weight = 0.0f32;
        for (logit, token) in &mut self.candidates {
            *logit = (*logit / temperature - max).exp();
            sum += *logit;
            if Some(*token) == draft {
                draft_weight = *logit;
            }
        }
        if let Some(draft) = draft
            && draft_weight > 0.0
        {
            if self.rng.random::<f32>() * sum < draft_weight {
                return draft;
            }
            sum -= draft_weight;
        }
        let mut target = self.rng.random::<f32>() * sum;
        let mut last = self.candidates[0].1;
        for &(weight, token) in &self.candidates {
            if draft_weight > 0.0 && Some(token) == draft {
                continue;
            }
            if target < weight {
                return token;
            }
            target -= weight;
            last = token;
        }
        last
    }
}

/// The index of the first highest logit: the best block by its maximum (which the compiler
/// turns into vector instructions), then the first place in it that holds that maximum.
pub(super) fn argmax(logits: &[f32]) -> usize {
    const BLOCK: usize = 512;
    let mut best = f32::NEG_INFINITY;
    let mut best_block = 0;
    for (index, block) in logits.chunks(BLOCK).enumerate() {
        let max = block_max(block);
        if max > best {
            best = max;
            best_block = index;
        }
    }
    let start = best_block * BLOCK;
    start
        + logits[start..]
            .iter()
            .position(|&value| value.total_cmp(&best).is_eq())
            .unwrap_or(0)
}

/// The highest value of `block` (NaN never wins), by lanes, which are then folded in halves
/// (vector instructions too, where one lane after another would cost a block of 128 logits
/// about a third of its time).
fn block_max(block: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let parts = block.chunks_exact(LANES);
    let rest = parts.remainder();
    for part in parts {
        for (lane, &value) in lanes.iter_mut().zip(part) {
            // Not `f32::max`: its NaN rule keeps it from becoming one vector instruction.
            *lane = if value > *lane { value } else { *lane };
        }
    }
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        let (low, high) = lanes.split_at_mut(width);
        for (lane, &other) in low.iter_mut().zip(&*high) {
            *lane = if other > *lane { other } else { *lane };
        }
    }
    rest.iter().fold(
        lanes[0],
        |max, &value| if value > max { value } else { max },
    )
}

/// Whether any of `values` reaches `floor`: all compared at once (vector instructions), no
/// early exit.
#[allow(clippy::needless_bitwise_bool)] // `||` would stop early, one logit at a time
fn any_at_least(values: &[f32], floor: f32) -> bool {
    values
        .iter()
        .fold(false, |any, &value| any | (value >= floor))
}

/// Buffers [`top_n`] reuses from row to row.
#[derive(Debug, Default)]
pub(super) struct TopN {
    /// Each block's maximum, in block order.
    maxima: Vec<f32>,
    /// The same, reordered to find the floor.
    ranked: Vec<f32>,
}

/// The `n` highest logits of tokens not in `skip`, with their tokens, in no order, into `out`
/// (among equal logits the lower tokens). Two passes: every block's maximum (vector
/// instructions, as [`argmax`]), then the tokens of the few blocks that can hold one of the
/// best, sixteen logits at a time. The `(n + skip.len())`-th highest block maximum is a
/// floor: that many blocks reach it, so at least `n` tokens outside `skip` do, and so does
/// every one of the best `n`. Membership of `skip` is looked up only for tokens that reach
/// the floor.
fn top_n(
    logits: &[f32],
    n: usize,
    skip: &HashMap<i32, u32>,
    scratch: &mut TopN,
    out: &mut Vec<(f32, i32)>,
) {
    out.clear();
    if logits.is_empty() {
        return;
    }
    let n = n.min(logits.len()).max(1);
    scratch.maxima.clear();
    scratch
        .maxima
        .extend(logits.chunks(SKIP_BLOCK).map(block_max));
    let rank = n + skip.len() - 1;
    let floor = if rank < scratch.maxima.len() {
        scratch.ranked.clear();
        scratch.ranked.extend_from_slice(&scratch.maxima);
        *scratch
            .ranked
            .select_nth_unstable_by(rank, |a, b| b.total_cmp(a))
            .1
    } else {
        // Fewer blocks than that: every token is a candidate.
        f32::NEG_INFINITY
    };
    for (index, (block, &max)) in logits.chunks(SKIP_BLOCK).zip(&scratch.maxima).enumerate() {
        if max < floor {
            continue;
        }
        // Mostly one logit of the block reaches the floor: look one by one only where one does.
        for (part_index, part) in block.chunks(LANES).enumerate() {
            if !any_at_least(part, floor) {
                continue;
            }
            for (offset, &value) in part.iter().enumerate() {
                let token = (index * SKIP_BLOCK + part_index * LANES + offset) as i32;
                if value >= floor && !skip.contains_key(&token) {
                    out.push((value, token));
                }
            }
        }
    }
    if out.len() > n {
        out.select_nth_unstable_by(n - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        out.truncate(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> FastOptions {
        FastOptions {
            temperature: None,
            top_k: 40,
            top_p: 1.0,
            min_p: 0.0,
            penalties: Penalties {
                repeat: 1.0,
                frequency: 0.0,
                presence: 0.0,
            },
            seed: Some(7),
        }
    }

    fn none() -> HashMap<i32, u32> {
        HashMap::new()
    }

    fn logits(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..n).map(|_| rng.random::<f32>() * 20.0 - 10.0).collect()
    }

    #[test]
    fn greedy_is_the_first_argmax() {
        let mut row = logits(129_280, 1);
        let best = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .unwrap()
            .0;
        let mut sampler = FastSampler::new(options());
        assert_eq!(sampler.sample(&row, &none(), None), best as i32);
        // A tie goes to the lower id.
        row[5] = 100.0;
        row[900] = 100.0;
        assert_eq!(argmax(&row), 5);
        assert_eq!(sampler.sample(&row, &none(), None), 5);
    }

    #[test]
    fn top_n_finds_the_best_in_any_order() {
        let row = logits(10_007, 2);
        let mut out = Vec::new();
        let mut want: Vec<usize> = (0..row.len()).collect();
        want.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        top_n(&row, 40, &none(), &mut TopN::default(), &mut out);
        let mut got: Vec<usize> = out.iter().map(|&(_, t)| t as usize).collect();
        got.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        assert_eq!(got, want[..40]);
        // Skipped tokens are left out, the next best take their place.
        let skip: HashMap<i32, u32> = [(want[0] as i32, 1), (want[3] as i32, 2)].into();
        top_n(&row, 40, &skip, &mut TopN::default(), &mut out);
        let mut got: Vec<usize> = out.iter().map(|&(_, t)| t as usize).collect();
        got.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
        let rest: Vec<usize> = want
            .iter()
            .copied()
            .filter(|&t| t != want[0] && t != want[3])
            .collect();
        assert_eq!(got, rest[..40]);
    }

    #[test]
    fn top_n_is_the_first_n_of_a_full_sort_whatever_the_row() {
        let mut rng = StdRng::seed_from_u64(11);
        let mut out = Vec::new();
        let mut scratch = TopN::default();
        for round in 0..200 {
            let len = rng.random_range(1..5_000);
            // Few distinct values, so ties are everywhere; now and then a NaN or an infinity.
            let row: Vec<f32> = (0..len)
                .map(|_| match rng.random_range(0..100) {
                    0 => f32::NAN,
                    1 => f32::NEG_INFINITY,
                    2 => f32::INFINITY,
                    _ => f32::from(rng.random_range(0u8..20)) / 4.0,
                })
                .collect();
            let skip: HashMap<i32, u32> = (0..rng.random_range(0..70))
                .map(|_| (rng.random_range(0..len), 1))
                .collect();
            let n = [1, 2, 40, 104, 600][round % 5];
            let mut want: Vec<(f32, i32)> = row
                .iter()
                .enumerate()
                .map(|(token, &value)| (value, token as i32))
                .filter(|(value, token)| !value.is_nan() && !skip.contains_key(token))
                .collect();
            want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            want.truncate(n);
            top_n(&row, n, &skip, &mut scratch, &mut out);
            out.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            assert_eq!(out, want, "round {round}: {len} logits, n {n}");
        }
    }

    #[test]
    fn top_n_prefers_lower_tokens_among_equals_and_survives_nan() {
        let mut out = Vec::new();
        let mut scratch = TopN::default();
        let flat = vec![0.5f32; 1000];
        top_n(&flat, 10, &none(), &mut scratch, &mut out);
        let mut got: Vec<i32> = out.iter().map(|&(_, t)| t).collect();
        got.sort_unstable();
        assert_eq!(got, (0..10).collect::<Vec<i32>>());
        // Fewer blocks than candidates wanted: every token is looked at.
        top_n(&[1.0, 3.0, 2.0], 40, &none(), &mut scratch, &mut out);
        assert_eq!(out.len(), 3);
        let nan = vec![f32::NAN; 300];
        let mut sampler = FastSampler::new(FastOptions {
            temperature: Some(0.6),
            top_p: 0.95,
            ..options()
        });
        assert!((0..300).contains(&sampler.sample(&nan, &none(), None)));
    }

    #[test]
    fn penalties_match_llama_cpp_and_can_move_the_best() {
        let penalties = Penalties {
            repeat: 1.5,
            frequency: 0.25,
            presence: 0.5,
        };
        assert!((penalties.apply(3.0, 2) - (2.0 - 0.5 - 0.5)).abs() < 1e-6);
        assert!((penalties.apply(-2.0, 1) - (-3.0 - 0.25 - 0.5)).abs() < 1e-6);
        let mut row = vec![0.0f32; 1000];
        row[10] = 5.0;
        row[20] = 4.0;
        let mut sampler = FastSampler::new(FastOptions {
            penalties,
            ..options()
        });
        assert_eq!(
            sampler.sample(&row, &[(10, 2)].into(), None),
            20,
            "10 penalised below 20"
        );
        assert_eq!(sampler.sample(&row, &none(), None), 10);
    }

    #[test]
    fn seeded_draws_repeat_and_follow_the_softmax() {
        let row: Vec<f32> = vec![2.0, 1.0, 0.0, -1.0, -50.0];
        let draws = |seed| {
            let mut sampler = FastSampler::new(FastOptions {
                temperature: Some(1.0),
                seed: Some(seed),
                ..options()
            });
            (0..20_000)
                .map(|_| sampler.sample(&row, &none(), None))
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(3), draws(3));
        assert_ne!(draws(3), draws(4));
        let counts = draws(3).iter().fold([0usize; 5], |mut counts, &t| {
            counts[t as usize] += 1;
            counts
        });
        let sum: f32 = row.iter().map(|l| l.exp()).sum();
        for (token, &count) in counts.iter().enumerate() {
            let expected = row[token].exp() / sum;
            let seen = count as f32 / 20_000.0;
            assert!(
                (seen - expected).abs() < 0.015,
                "{token}: {seen} vs {expected}"
            );
        }
    }

    #[test]
    fn top_p_min_p_and_temperature_cut_as_llama_cpp() {
        // Probabilities ≈ 0.64, 0.24, 0.09, 0.03: top_p 0.8 keeps two.
        let row = vec![3.0f32, 2.0, 1.0, 0.0];
        let mut sampler = FastSampler::new(FastOptions {
            temperature: Some(1.0),
            top_p: 0.8,
            ..options()
        });
        let seen: std::collections::HashSet<i32> = (0..2000)
            .map(|_| sampler.sample(&row, &none(), None))
            .collect();
        assert_eq!(seen, [0, 1].into_iter().collect());
        // min_p 0.3: e^(l - 3) >= 0.3 keeps logits >= 3 + ln 0.3 ≈ 1.8.
        let mut sampler = FastSampler::new(FastOptions {
            temperature: Some(1.0),
            min_p: 0.3,
            ..options()
        });
        let seen: std::collections::HashSet<i32> = (0..2000)
            .map(|_| sampler.sample(&row, &none(), None))
            .collect();
        assert_eq!(seen, [0, 1].into_iter().collect());
        // top_k 1 with a temperature is the best token.
        let mut sampler = FastSampler::new(FastOptions {
            temperature: Some(0.7),
            top_k: 1,
            ..options()
        });
        assert!((0..100).all(|_| sampler.sample(&row, &none(), None) == 0));
    }

    #[test]
    fn a_checked_draft_leaves_the_distribution_as_it_was() {
        // Probabilities ≈ 0.64, 0.24, 0.09, 0.03 at temperature 1; whatever the draft (likely,
        // unlikely, or cut by top-k), each token comes out with its own probability.
        let row = vec![3.0f32, 2.0, 1.0, 0.0];
        let sum: f32 = row[..3].iter().map(|l| l.exp()).sum();
        for draft in [0, 1, 2, 3] {
            let mut sampler = FastSampler::new(FastOptions {
                temperature: Some(1.0),
                top_k: 3,
                seed: Some(draft as u32),
                ..options()
            });
            let mut counts = [0usize; 4];
            for _ in 0..40_000 {
                counts[sampler.sample(&row, &none(), Some(draft)) as usize] += 1;
            }
            assert_eq!(counts[3], 0, "top-k cut token 3 (draft {draft})");
            for token in 0..3 {
                let expected = row[token].exp() / sum;
                let seen = counts[token] as f32 / 40_000.0;
                assert!(
                    (seen - expected).abs() < 0.012,
                    "draft {draft}, token {token}: {seen} vs {expected}"
                );
            }
        }
    }
}
