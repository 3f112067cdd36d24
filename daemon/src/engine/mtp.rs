//! Multi-token prediction: `DeepSeek` V3 and R1 were trained with a NextN block after their
//! trunk that guesses the token after next from the trunk's last hidden state and the next
//! token. Their GGUFs can keep it (`{arch}.nextn_predict_layers`); llama.cpp loads it and runs it
//! in a context of its own type (`LLAMA_CONTEXT_TYPE_MTP`) over the same weights. Its guesses
//! are drafts like any other: the worker verifies them, so the output is the model's own.
//!
//! The block reads, at each position `p`, the token `x_p` with the trunk's hidden state at
//! `p - 1` (the state that predicted `x_p`). Its context keeps those pairs in a KV cache of one
//! layer, sequence `i` for slot `i`, as the model's context keeps the trunk's:
//!
//! - after each decode of the model, the positions it accepted are queued for the block
//!   ([`Mtp::accepted`], then [`Mtp::catch_up`]) with copies of the hidden states that decode
//!   produced (llama.cpp hands them out when asked to); they are fed to it, all slots in one
//!   decode, before it drafts or once [`DEFER_ROWS`] are waiting, so a slot pausing after
//!   rejected drafts costs the block one decode per that many tokens, not one per step;
//! - to draft after `next`, the block decodes `(next, h_{n-1})` and its logits give the first
//!   draft; each further draft decodes the previous one with the block's own output state. The
//!   entries past `next`'s position are then removed: they were built from the block's states,
//!   not the trunk's.
//!
//! The block's cache of a slot always holds exactly what a fresh run over the slot's text would
//! put there, so drafts, and with them a seeded draw, do not depend on what the slot held
//! before: a job reusing a cached prefix keeps only what the block holds of it, and the model
//! decodes again from there ([`Mtp::reusable`]); where a hidden state is missing (after a
//! context shift) the block stops following that slot's text and drafts nothing for it.
//!
//! llama-cpp-2 does not wrap the extended batch (a token and a state per entry) nor the NextN
//! outputs, so this module calls llama.cpp directly and allows `unsafe`; each block says why it
//! is sound.
#![allow(unsafe_code)]

use std::ptr::NonNull;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use llama_cpp_sys_2 as sys;

use super::draft::Request;
use super::fast_sampler::argmax;
use super::worker::common_prefix;

// llama.cpp's staging API (`src/llama-ext.h`): not in `llama.h`, so not in the generated
// bindings, and compiled without C linkage, so reached by their Itanium C++ names (the ABI of
// Linux and macOS; their arguments are passed as C passes them).
unsafe extern "C" {
    /// Whether the context outputs the hidden states the NextN block reads; `masked`: only for
    /// entries marked as outputs (else for every entry of a batch).
    #[link_name = "_Z26llama_set_embeddings_nextnP13llama_contextbb"]
    fn llama_set_embeddings_nextn(ctx: *mut sys::llama_context, value: bool, masked: bool);
    /// The hidden state of output `i` of the last batch (`n_embd` floats), or null.
    #[link_name = "_Z30llama_get_embeddings_nextn_ithP13llama_contexti"]
    fn llama_get_embeddings_nextn_ith(ctx: *mut sys::llama_context, i: i32) -> *mut f32;
}

/// The `ctx` pointer inside a [`LlamaContext`]. llama-cpp-2 keeps it private and prints it in
/// the context's `Debug` output (`LlamaContext { context: 0x… }`), which is where it is read.
fn raw_context(context: &LlamaContext<'_>) -> Result<NonNull<sys::llama_context>, String> {
    let shown = format!("{context:?}");
    let address = shown
        .split_once("context: 0x")
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_hexdigit()).next())
        .and_then(|hex| usize::from_str_radix(hex, 16).ok())
        .ok_or_else(|| format!("cannot find llama.cpp's context in {shown:?}"))?;
    let pointer = NonNull::new(address as *mut sys::llama_context)
        .ok_or_else(|| "llama.cpp's context is null".to_owned())?;
    // SAFETY: the pointer was printed from the live context `context` borrows, so it points at
    // a llama_context; llama_n_ctx only reads it. A mismatch means the text held another value.
    let n_ctx = unsafe { sys::llama_n_ctx(pointer.as_ptr()) };
    if n_ctx != context.n_ctx() {
        return Err("the address read is not the context's".to_owned());
    }
    Ok(pointer)
}

/// Whether `context`'s cache drops a sequence's tail only by rolling back to snapshots it
/// keeps (`n_rs_seq`: V4's compressed cache, recurrent states) rather than freely, as a plain
/// KV cache does. llama.cpp keeps the snapshots asked for only for such caches. A context that
/// cannot be read counts as one that needs them (the cautious answer: no drafting).
pub(super) fn needs_snapshots(context: &LlamaContext<'_>) -> bool {
    let Ok(raw) = raw_context(context) else {
        return true;
    };
    // SAFETY: a live context; this reads one of its parameters.
    unsafe { sys::llama_n_rs_seq(raw.as_ptr()) > 0 }
}

/// Where each slot stands in the block's cache.
#[derive(Debug, Default)]
struct Seq {
    /// The tokens whose entries the block's cache holds (positions `0..held.len()`, each
    /// computed from the trunk's hidden state before it), nothing past them.
    held: Vec<LlamaToken>,
    /// The trunk's hidden state at position `last_at`: the one the next position pairs with.
    last: Vec<f32>,
    last_at: Option<usize>,
}

/// Most accepted positions waiting for the block before they are fed to it.
const DEFER_ROWS: usize = 64;

/// Positions the model accepted in one decode, waiting to be fed to the block.
#[derive(Debug)]
struct Accepted {
    seq: usize,
    /// Position of the first token decoded.
    from: usize,
    /// The slot's whole text (the tokens decoded are `text[from..]`).
    text: Vec<LlamaToken>,
    /// Row of each decoded token in the model's batch (its hidden state's index).
    rows: Vec<i32>,
    /// The hidden state after each decoded token (`n_embd` floats each), copied by
    /// [`Mtp::catch_up`] before the model decodes again.
    hidden: Vec<f32>,
}

impl Accepted {
    /// Position one past the last token decoded.
    fn end(&self) -> usize {
        self.from + self.hidden_rows()
    }

    fn hidden_rows(&self) -> usize {
        self.rows.len()
    }
}

/// The NextN block's context and what each of its sequences holds.
pub(super) struct Mtp<'m> {
    model: &'m LlamaModel,
    /// Kept for its lifetime (and its logits); driven through `raw`.
    context: LlamaContext<'m>,
    raw: NonNull<sys::llama_context>,
    /// The model's own context, whose hidden states the block reads.
    target: NonNull<sys::llama_context>,
    batch: NonNull<sys::llama_batch_ext>,
    /// Entries in `batch`, and most it takes.
    batch_len: usize,
    n_batch: usize,
    /// Floats in one hidden state (llama.cpp's `n_embd_out`).
    n_embd: usize,
    zeros: Vec<f32>,
    seqs: Vec<Seq>,
    queue: Vec<Accepted>,
    /// Accepted positions whose hidden states are copied, waiting to be fed to the block.
    deferred: Vec<Accepted>,
    deferred_rows: usize,
    /// Spare `Accepted` buffers.
    spare: Vec<Accepted>,
    /// Whether the model's context hands out its hidden states (only while a job follows the
    /// block: a copy of every decoded token's state that nothing else reads).
    outputs: bool,
}

impl<'m> Mtp<'m> {
    /// Wraps the block's context (made on the model with the MTP context type, shaped like
    /// `target`, the model's context, whose hidden states it reads; see [`Self::follow`]).
    pub(super) fn new(
        model: &'m LlamaModel,
        context: LlamaContext<'m>,
        target: &LlamaContext<'m>,
        slots: usize,
    ) -> Result<Self, String> {
        let raw = raw_context(&context)?;
        let target = raw_context(target)?;
        // SAFETY: `raw` is the live MTP context; the batch it makes is freed in Drop, before the
        // context (fields drop after `drop` runs).
        let batch = NonNull::new(unsafe { sys::llama_batch_ext_init(raw.as_ptr()) })
            .ok_or_else(|| "llama.cpp could not make a batch for the NextN block".to_owned())?;
        // SAFETY: a live context; this sets a flag read at its next decode.
        unsafe { llama_set_embeddings_nextn(raw.as_ptr(), true, true) };
        // A hidden state is as wide as the model's output, which the block's batch also takes:
        // `n_embd` for V3/R1, wider where the model carries several residual streams (V4).
        let n_embd =
            usize::try_from(model.n_embd_out()).map_err(|_| "bad n_embd_out".to_owned())?;
        Ok(Self {
            model,
            n_batch: context.n_batch() as usize,
            context,
            raw,
            target,
            batch,
            batch_len: 0,
            n_embd,
            zeros: vec![0.0; n_embd],
            seqs: (0..slots).map(|_| Seq::default()).collect(),
            queue: Vec::new(),
            deferred: Vec::new(),
            deferred_rows: 0,
            spare: Vec::new(),
            outputs: false,
        })
    }

    /// Before the model's decode: whether any job in it is followed by the block, so whether
    /// the model must hand out its hidden states.
    pub(super) fn follow(&mut self, any: bool) {
        if any != self.outputs {
            // SAFETY: the model's live context; this sets a flag read at its next decode.
            unsafe { llama_set_embeddings_nextn(self.target.as_ptr(), any, false) };
            self.outputs = any;
        }
    }

    /// How much of `prompt` slot `seq` may keep in the model's cache for the block to follow
    /// exactly: the block needs the trunk's hidden state before each position it has not
    /// computed, and only a decode gives it, so the model decodes again from one token before
    /// where the block's copy of the text ends.
    pub(super) fn reusable(&mut self, seq: usize, prompt: &[LlamaToken]) -> usize {
        self.flush();
        common_prefix(&self.seqs[seq].held, prompt).saturating_sub(1)
    }

    /// The model's last decode took slot `seq`'s `text` from position `from` on, the `i`-th
    /// token after `from` at batch row `rows[i]`. Their hidden states are copied by the next
    /// [`Self::catch_up`], which must run before the model decodes again.
    pub(super) fn accepted(
        &mut self,
        seq: usize,
        from: usize,
        text: &[LlamaToken],
        rows: impl Iterator<Item = i32>,
    ) {
        let mut entry = self.spare.pop().unwrap_or(Accepted {
            seq,
            from,
            text: Vec::new(),
            rows: Vec::new(),
            hidden: Vec::new(),
        });
        entry.seq = seq;
        entry.from = from;
        entry.text.clear();
        entry.text.extend_from_slice(text);
        entry.rows.clear();
        entry
            .rows
            .extend(rows.take(text.len().saturating_sub(from)));
        self.queue.push(entry);
    }

    /// Slot `seq`'s positions were renumbered (a context shift): the block's entries and the
    /// hidden state kept for it no longer apply.
    pub(super) fn forget(&mut self, seq: usize) {
        self.remove_from(seq, 0);
        self.seqs[seq].last_at = None;
        self.queue.retain(|entry| entry.seq != seq);
        self.deferred.retain(|entry| entry.seq != seq);
        self.deferred_rows = self.deferred.iter().map(Accepted::hidden_rows).sum();
    }

    /// Copies the hidden states of the positions the last decode accepted (the model's next
    /// decode overwrites them), and feeds the block once enough are waiting.
    pub(super) fn catch_up(&mut self) {
        let (target, n_embd) = (self.target, self.n_embd);
        for mut entry in self.queue.drain(..) {
            entry.hidden.clear();
            let mut rows = 0;
            for &row in &entry.rows {
                // SAFETY: `target` is the model's live context; the rows of its last batch
                // stay valid until its next decode, which the worker runs after this returns.
                let Some(hidden) = (unsafe { hidden_row(target, n_embd, row) }) else {
                    break;
                };
                entry.hidden.extend_from_slice(hidden);
                rows += 1;
            }
            entry.rows.truncate(rows);
            self.deferred_rows += rows;
            self.deferred.push(entry);
        }
        if self.deferred_rows >= DEFER_ROWS {
            self.flush();
        }
    }

    /// Feeds every waiting position to the block, paired with the hidden state before it, and
    /// keeps each slot's last hidden state. On a llama.cpp error the block's cache is emptied
    /// (drafts then start over); the model is not affected.
    fn flush(&mut self) {
        if self.deferred.is_empty() {
            return;
        }
        let mut deferred = std::mem::take(&mut self.deferred);
        self.deferred_rows = 0;
        if let Err(error) = self.feed(&deferred) {
            tracing::warn!(%error, "the NextN block failed; its cache starts over");
            self.reset();
        }
        for entry in &deferred {
            let rows = entry.hidden_rows();
            if rows == 0 {
                continue;
            }
            let seq = &mut self.seqs[entry.seq];
            seq.last.clear();
            seq.last
                .extend_from_slice(&entry.hidden[(rows - 1) * self.n_embd..rows * self.n_embd]);
            seq.last_at = Some(entry.end() - 1);
        }
        self.spare.append(&mut deferred);
        self.deferred = deferred;
    }

    fn feed(&mut self, queue: &[Accepted]) -> Result<(), String> {
        let n_embd = self.n_embd;
        // Per slot, where its text fed so far ends and the hidden state there.
        let mut latest: Vec<Option<(usize, *const f32)>> = vec![None; self.seqs.len()];
        self.clear_batch();
        for entry in queue {
            let seq = entry.seq;
            let end = entry.end();
            // What the block holds of this text is right as it is (the draft leaves `next`'s
            // entry); the rest goes, after what the batch holds is decoded.
            let start = common_prefix(&self.seqs[seq].held, &entry.text[..end]);
            if start < self.seqs[seq].held.len() && self.batch_len > 0 {
                self.process()?;
                self.clear_batch();
            }
            self.remove_from(seq, start);
            for position in start..end {
                // The hidden state before `position`: from this decode, from the one before
                // (waiting with it or kept), or zeros at the start of the text. Without it the
                // block cannot follow.
                let before = if position > entry.from {
                    let row = position - 1 - entry.from;
                    Some(entry.hidden[row * n_embd..].as_ptr())
                } else if position == 0 {
                    Some(self.zeros.as_ptr())
                } else if let Some((_, state)) = latest[seq].filter(|&(at, _)| at == position) {
                    Some(state)
                } else if self.seqs[seq].last_at == Some(position - 1) {
                    Some(self.seqs[seq].last.as_ptr())
                } else {
                    None
                };
                let Some(before) = before else {
                    break;
                };
                if self.batch_len == self.n_batch {
                    self.process()?;
                    self.clear_batch();
                }
                self.add(entry.text[position], position, seq, before, false)?;
                self.seqs[seq].held.push(entry.text[position]);
            }
            if let Some(rows) = entry.hidden_rows().checked_sub(1) {
                latest[seq] = Some((end, entry.hidden[rows * n_embd..].as_ptr()));
            }
        }
        if self.batch_len > 0 {
            self.process()?;
        }
        Ok(())
    }

    /// Drafts greedily for every request: the block decodes `next` with the slot's last
    /// hidden state, then each draft with its own. Drafts come back in the requests' order,
    /// each at most `want` long; a request whose slot has no hidden state for the position
    /// before `next` gets none.
    pub(super) fn propose(&mut self, requests: &[Request<'_>]) -> Vec<Vec<LlamaToken>> {
        self.flush();
        let mut drafts = vec![Vec::new(); requests.len()];
        if let Err(error) = self.draft(requests, &mut drafts) {
            tracing::warn!(%error, "the NextN block failed; drafting nothing this step");
            self.reset();
            drafts.iter_mut().for_each(Vec::clear);
        }
        // What the block decoded past `next` came from its own states: drop it.
        for request in requests {
            self.remove_from(request.seq, request.history.len() + 1);
        }
        drafts
    }

    fn draft(
        &mut self,
        requests: &[Request<'_>],
        drafts: &mut [Vec<LlamaToken>],
    ) -> Result<(), String> {
        // Per request: the batch index of its last entry, and the block's state there.
        let mut rows: Vec<Option<i32>> = vec![None; requests.len()];
        let mut states: Vec<Vec<f32>> = vec![Vec::new(); requests.len()];
        self.clear_batch();
        for (index, request) in requests.iter().enumerate() {
            let n = request.history.len();
            let seq = &self.seqs[request.seq];
            // The block must hold the text before `next`, and the trunk's state after it.
            if seq.held.len() < n || n == 0 || seq.last_at != Some(n - 1) {
                continue;
            }
            let before = seq.last.as_ptr();
            if request.want == 0 || self.batch_len == self.n_batch {
                continue;
            }
            self.remove_from(request.seq, n);
            rows[index] = Some(self.add(request.next, n, request.seq, before, true)?);
            self.seqs[request.seq].held.push(request.next);
        }
        while self.batch_len > 0 {
            self.process()?;
            let picked = std::mem::replace(&mut rows, vec![None; requests.len()]);
            for (index, row) in picked.into_iter().enumerate() {
                let Some(row) = row else { continue };
                let logits = self.context.get_logits_ith(row);
                let token = LlamaToken(argmax(logits) as i32);
                drafts[index].push(token);
                // SAFETY: `raw` is live and `row` an output of its last batch; the state is
                // `n_embd` floats, copied before the next decode.
                if let Some(state) = unsafe { hidden_row(self.raw, self.n_embd, row) } {
                    states[index].clear();
                    states[index].extend_from_slice(state);
                }
            }
            self.clear_batch();
            for (index, request) in requests.iter().enumerate() {
                let draft = &drafts[index];
                let Some(&token) = draft.last() else { continue };
                if draft.len() >= request.want || self.ended(token) || states[index].is_empty() {
                    continue;
                }
                let position = request.history.len() + draft.len();
                let state = states[index].as_ptr();
                rows[index] = Some(self.add(token, position, request.seq, state, true)?);
                self.seqs[request.seq].held.push(token);
            }
        }
        // A draft ends before an end token or a token the model does not have.
        for draft in drafts.iter_mut() {
            if let Some(end) = draft.iter().position(|&token| self.ended(token)) {
                draft.truncate(end);
            }
        }
        Ok(())
    }

    /// Whether drafting stops at `token`: the end of the text, or past the vocabulary.
    fn ended(&self, token: LlamaToken) -> bool {
        token.0 < 0 || token.0 >= self.model.n_vocab() || self.model.vocab().is_eog(token)
    }

    fn reset(&mut self) {
        for seq in 0..self.seqs.len() {
            self.remove_from(seq, 0);
        }
    }

    /// Removes slot `seq`'s entries at `position` and after.
    fn remove_from(&mut self, seq: usize, position: usize) {
        if self.seqs[seq].held.len() <= position {
            return;
        }
        // SAFETY: `raw` is live; seq_rm only edits its KV cache's bookkeeping.
        let removed = unsafe {
            let memory = sys::llama_get_memory(self.raw.as_ptr());
            sys::llama_memory_seq_rm(memory, seq as i32, position as i32, -1)
        };
        let keep = if removed { position } else { 0 };
        if !removed {
            // SAFETY: as above; removing a whole sequence always succeeds.
            unsafe {
                let memory = sys::llama_get_memory(self.raw.as_ptr());
                sys::llama_memory_seq_rm(memory, seq as i32, -1, -1);
            }
        }
        self.seqs[seq].held.truncate(keep);
    }

    fn clear_batch(&mut self) {
        // SAFETY: `batch` is live (freed only in Drop).
        unsafe { sys::llama_batch_ext_clear(self.batch.as_ptr()) }
        self.batch_len = 0;
    }

    /// Adds `token` at `position` of `seq`, paired with the `n_embd` floats at `state` (which
    /// must stay put until the batch is decoded); returns its index in the batch.
    fn add(
        &mut self,
        token: LlamaToken,
        position: usize,
        seq: usize,
        state: *const f32,
        output: bool,
    ) -> Result<i32, String> {
        let batch = self.batch.as_ptr();
        let embd = sys::llama_embd {
            data: state,
            n_rows: 1,
            n_embd: self.n_embd,
        };
        let pos = [position as sys::llama_pos, 0, 0, 0];
        // SAFETY: `batch` is live; llama.cpp copies the position and keeps the state pointer,
        // which the callers keep valid until `process`.
        let index = unsafe { sys::llama_batch_ext_add_token(batch, seq as i32, token.0) };
        if index < 0 {
            return Err(format!("the NextN batch refused a token ({index})"));
        }
        let set = unsafe {
            sys::llama_batch_ext_set_pos(batch, index, pos.as_ptr())
                && sys::llama_batch_ext_set_embd_token(batch, index, embd)
                && (!output || sys::llama_batch_ext_set_output_logits(batch, index, true))
        };
        if !set {
            return Err("the NextN batch refused an entry".to_owned());
        }
        self.batch_len += 1;
        Ok(index)
    }

    fn process(&mut self) -> Result<(), String> {
        // SAFETY: both are live; the states the batch points at are held by `self` or the
        // model's context, untouched until this returns.
        let status = unsafe {
            sys::llama_process(
                self.raw.as_ptr(),
                sys::LLAMA_PROCESS_TYPE_DECODE,
                self.batch.as_ptr(),
            )
        };
        if status == 0 {
            Ok(())
        } else {
            Err(format!("llama_process returned {status}"))
        }
    }
}

/// Row `row` of the hidden states `context` output in its last decode (`n_embd` floats).
///
/// # Safety
///
/// `context` must be live, and the slice must not be used after its next decode.
unsafe fn hidden_row<'a>(
    context: NonNull<sys::llama_context>,
    n_embd: usize,
    row: i32,
) -> Option<&'a [f32]> {
    let data = unsafe { llama_get_embeddings_nextn_ith(context.as_ptr(), row) };
    (!data.is_null()).then(|| unsafe { std::slice::from_raw_parts(data, n_embd) })
}

impl Drop for Mtp<'_> {
    fn drop(&mut self) {
        // SAFETY: made by llama_batch_ext_init, freed once; the context outlives this call.
        unsafe { sys::llama_batch_ext_free(self.batch.as_ptr()) }
    }
}
