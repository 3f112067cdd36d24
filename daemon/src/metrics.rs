//! What whaled counts for Prometheus: HTTP requests per route, generations and embeddings per
//! model, the loaded models and their memory, and the bytes pulls download. `/metrics`
//! ([`crate::http`]) encodes [`Metrics::encode`]'s text; the daemon's README lists every metric.
//!
//! The counters and histograms are kept up to date by the code that sees the event: the HTTP
//! layer, the inference core ([`Recorder`]), pulls ([`PullProgress`]). What the scheduler knows
//! — which models are loaded, their memory, their queues — is read at scrape time instead
//! ([`SchedulerCollector`]), so that it can never drift from `/api/ps`, and a scrape only
//! reads: it never loads a model nor waits for one.
//!
//! Label values stay few: routes are the router's templates (never raw paths), models are
//! names found in the store (never what a request spelled before it was found), and methods,
//! endpoints and outcomes come from short fixed lists.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use whale_registry::{ModelRef, ProgressEvent, Reporter};

use crate::engine::DoneReason;
use crate::error::Error;
use crate::inference::Chunk;
use crate::scheduler::Scheduler;

/// `Content-Type` of the `OpenMetrics` text format, sent to scrapers that ask for it.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the Prometheus text format (0.0.4), sent to everyone else.
pub const PROMETHEUS_CONTENT_TYPE: &str =
    prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Which text format [`Metrics::encode`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus' classic text format, version 0.0.4.
    Prometheus,
    /// `OpenMetrics` 1.0 text, ending with `# EOF`.
    OpenMetrics,
}

/// Where a generation or embedding came from in the core: `/api/generate` and
/// `/v1/completions` are prompts, `/api/chat` and `/v1/chat/completions` chats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Generate,
    Chat,
    Embed,
}

impl Endpoint {
    fn label(self) -> &'static str {
        match self {
            Endpoint::Generate => "generate",
            Endpoint::Chat => "chat",
            Endpoint::Embed => "embed",
        }
    }
}

/// How a request on a model ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Finished: the last chunk came, or the embeddings did.
    Ok,
    /// Failed with an error, before or during generation.
    Error,
    /// The client went away before the end, or whaled stopped the generation.
    Cancelled,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Cancelled => "cancelled",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    method: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    model: String,
    endpoint: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    model: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The counters and histograms, shared by the registry (which reads them at scrape time) and
/// the code that moves them. Every field is a cheap handle on shared atomics.
struct Instruments {
    http_requests: Family<HttpLabels, Counter>,
    http_duration: HistogramFamily<RouteLabels>,
    requests: Family<RequestLabels, Counter>,
    prompt_tokens: Family<ModelLabels, Counter>,
    generated_tokens: Family<ModelLabels, Counter>,
    draft_tokens: Family<ModelLabels, Counter>,
    draft_accepted_tokens: Family<ModelLabels, Counter>,
    time_to_first_token: HistogramFamily<ModelLabels>,
    token_latency: HistogramFamily<ModelLabels>,
    pull_bytes: Counter,
}

/// HTTP request durations: 5 ms to 5 minutes (a long generation streams for minutes).
fn http_duration_buckets() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    ])
}

/// Time to first token, which includes waiting for a slot and loading the model: 10 ms to
/// 2 minutes.
fn time_to_first_token_buckets() -> Histogram {
    Histogram::new([
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    ])
}

/// Seconds per generated token: 1 ms (a small model on a GPU) to 2.5 s (a large one on a
/// CPU).
fn token_latency_buckets() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ])
}

/// whaled's metrics: the registry `/metrics` encodes, and the handles that move them.
pub struct Metrics {
    registry: Registry,
    instruments: Arc<Instruments>,
}

impl Metrics {
    /// Registers every metric; the scheduler's state is read from `scheduler` at each scrape.
    pub fn new(scheduler: Scheduler) -> Self {
        let instruments = Arc::new(Instruments {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(http_duration_buckets),
            requests: Family::default(),
            prompt_tokens: Family::default(),
            generated_tokens: Family::default(),
            draft_tokens: Family::default(),
            draft_accepted_tokens: Family::default(),
            time_to_first_token: Family::new_with_constructor(time_to_first_token_buckets),
            token_latency: Family::new_with_constructor(token_latency_buckets),
            pull_bytes: Counter::default(),
        });
        let mut registry = Registry::with_prefix("whale");
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template (`other` when no route matched), method and status",
            instruments.http_requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "Time from an HTTP request to the end of its response body (streams included), by route template and method",
            Unit::Seconds,
            instruments.http_duration.clone(),
        );
        registry.register(
            "requests",
            "Generations and embeddings by model, endpoint (generate, chat, embed) and outcome (ok, error, cancelled)",
            instruments.requests.clone(),
        );
        registry.register(
            "prompt_tokens",
            "Prompt tokens evaluated, by model (a prefix reused from the cache is not evaluated again)",
            instruments.prompt_tokens.clone(),
        );
        registry.register(
            "generated_tokens",
            "Tokens generated, by model",
            instruments.generated_tokens.clone(),
        );
        registry.register(
            "draft_tokens",
            "Tokens drafted ahead by speculative decoding, by model",
            instruments.draft_tokens.clone(),
        );
        registry.register(
            "draft_accepted_tokens",
            "Drafted tokens the model accepted, by model",
            instruments.draft_accepted_tokens.clone(),
        );
        registry.register_with_unit(
            "time_to_first_token",
            "Time from a generation request to its first piece of answer, waiting and loading included, by model",
            Unit::Seconds,
            instruments.time_to_first_token.clone(),
        );
        registry.register_with_unit(
            "token_latency",
            "Mean time per generated token of each generation (its eval_duration / eval_count), by model",
            Unit::Seconds,
            instruments.token_latency.clone(),
        );
        // The unit completes the name: `whale_pull_bytes_total`.
        registry.register_with_unit(
            "pull",
            "Blob bytes pulls downloaded into the store (bytes a resumed pull already had are not counted)",
            Unit::Bytes,
            instruments.pull_bytes.clone(),
        );
        registry.register_collector(Box::new(SchedulerCollector { scheduler }));
        Self {
            registry,
            instruments,
        }
    }

    /// Every metric as text in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut text = String::new();
        let written = match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut text, &self.registry)
            }
        };
        written.expect("writing to a String cannot fail");
        text
    }

    /// Counts an answered HTTP request; `route` is the matched route's template. The returned
    /// histogram takes its duration when the response body ends.
    pub fn http_response(&self, route: &str, method: &'static str, status: u16) -> Histogram {
        self.instruments
            .http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                method,
                status,
            })
            .inc();
        self.instruments
            .http_duration
            .get_or_create_owned(&RouteLabels {
                route: route.to_owned(),
                method,
            })
    }

    /// Starts recording a request on `model` (its name in the store), which came in at
    /// `started`.
    pub fn request(&self, model: String, endpoint: Endpoint, started: Instant) -> Recorder {
        Recorder {
            instruments: Arc::clone(&self.instruments),
            model: ModelLabels { model },
            endpoint,
            started,
            answered: false,
            counted: false,
        }
    }

    /// `progress`, counting the bytes a pull receives into `whale_pull_bytes_total`.
    pub fn pull_progress<R: Reporter>(&self, progress: R) -> PullProgress<R> {
        PullProgress {
            progress,
            bytes: self.instruments.pull_bytes.clone(),
        }
    }
}

/// One request on a model, from the moment the model was found in the store. It is counted
/// as soon as its outcome is known, before the client sees the end of the answer; dropped
/// without one — the client went away, the stream was dropped — it counts as cancelled.
pub struct Recorder {
    instruments: Arc<Instruments>,
    model: ModelLabels,
    endpoint: Endpoint,
    started: Instant,
    /// Time to first token has been observed.
    answered: bool,
    /// The request has been counted.
    counted: bool,
}

impl Recorder {
    /// The request failed before it produced anything.
    pub fn failed(mut self) {
        self.count(Outcome::Error);
    }

    /// An embedding request finished, having evaluated `prompt_tokens`.
    pub fn embedded(mut self, prompt_tokens: u32) {
        self.instruments
            .prompt_tokens
            .get_or_create(&self.model)
            .inc_by(u64::from(prompt_tokens));
        self.count(Outcome::Ok);
    }

    /// Follows a generation's chunks as they pass: the first piece of the answer gives the
    /// time to first token, the last chunk the token counts and the outcome.
    pub fn follow<S>(mut self, chunks: S) -> impl futures::Stream<Item = S::Item> + Send + 'static
    where
        S: futures::Stream<Item = Result<Chunk, Error>> + Send + 'static,
    {
        use futures::StreamExt as _;
        chunks.inspect(move |chunk| self.chunk(chunk))
    }

    fn chunk(&mut self, chunk: &Result<Chunk, Error>) {
        match chunk {
            Ok(Chunk::Text { .. } | Chunk::ToolCalls(_)) => self.answer(),
            Ok(Chunk::Done(finished)) => {
                let summary = &finished.summary;
                if summary.eval_count > 0 {
                    // An answer held back whole (a stop string) still had a first token.
                    self.answer();
                    self.instruments
                        .token_latency
                        .get_or_create(&self.model)
                        .observe(per_token(summary.eval_duration, summary.eval_count));
                }
                self.instruments
                    .prompt_tokens
                    .get_or_create(&self.model)
                    .inc_by(u64::from(summary.prompt_eval_count));
                self.instruments
                    .generated_tokens
                    .get_or_create(&self.model)
                    .inc_by(u64::from(summary.eval_count));
                if summary.draft_count > 0 {
                    self.instruments
                        .draft_tokens
                        .get_or_create(&self.model)
                        .inc_by(u64::from(summary.draft_count));
                    self.instruments
                        .draft_accepted_tokens
                        .get_or_create(&self.model)
                        .inc_by(u64::from(summary.draft_accepted_count));
                }
                self.count(match summary.done_reason {
                    DoneReason::Cancelled => Outcome::Cancelled,
                    DoneReason::Stop | DoneReason::Length => Outcome::Ok,
                });
            }
            Err(_) => self.count(Outcome::Error),
        }
    }

    /// Counts the request once, with its first outcome.
    fn count(&mut self, outcome: Outcome) {
        if self.counted {
            return;
        }
        self.counted = true;
        self.instruments
            .requests
            .get_or_create(&RequestLabels {
                model: self.model.model.clone(),
                endpoint: self.endpoint.label(),
                outcome: outcome.label(),
            })
            .inc();
    }

    fn answer(&mut self) {
        if !self.answered {
            self.answered = true;
            self.instruments
                .time_to_first_token
                .get_or_create(&self.model)
                .observe(self.started.elapsed().as_secs_f64());
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.count(Outcome::Cancelled);
    }
}

/// Seconds per token of `count` tokens generated in `duration`.
fn per_token(duration: Duration, count: u32) -> f64 {
    duration.as_secs_f64() / f64::from(count.max(1))
}

/// A pull's progress reporter that also counts the bytes it receives.
pub struct PullProgress<R> {
    progress: R,
    bytes: Counter,
}

impl<R: Reporter> Reporter for PullProgress<R> {
    fn report(&self, event: ProgressEvent) {
        self.progress.report(event);
    }

    fn received(&self, bytes: u64) {
        self.bytes.inc_by(bytes);
        self.progress.received(bytes);
    }
}

/// The scheduler's state, read at every scrape: loaded models, their memory, their queues.
/// It takes only the scheduler's table lock, which is never held across an await.
struct SchedulerCollector {
    scheduler: Scheduler,
}

impl std::fmt::Debug for SchedulerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerCollector").finish_non_exhaustive()
    }
}

/// What the scrape reports of one model name (two entries can share a name: two spellings of
/// it, or a model reloaded with other options for a moment).
#[derive(Default)]
struct LoadedModel {
    ram: u64,
    vram: u64,
    queued: u32,
}

impl Collector for SchedulerCollector {
    // Unlike the registry, a collector's help is written as given: each ends with a full stop.
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let loaded = self.scheduler.loaded();
        let slots = self.scheduler.limits().num_parallel;
        let mut models: BTreeMap<String, LoadedModel> = BTreeMap::new();
        for model in &loaded {
            // The name the request that loaded it used, spelled out as the request metrics
            // name models (`qwen` is `qwen:latest`).
            let name = ModelRef::parse(&model.name)
                .map_or_else(|_| model.name.clone(), |name| name.short());
            let entry = models.entry(name).or_default();
            entry.ram += model.estimate.ram();
            entry.vram += model.estimate.vram;
            entry.queued += model.leases().saturating_sub(slots);
        }

        let count = ConstGauge::new(loaded.len() as u64);
        count.encode(encoder.encode_descriptor(
            "loaded_models",
            "Models loaded now, one runner process each.",
            None,
            count.metric_type(),
        )?)?;

        let bytes = Unit::Bytes;
        let mut memory = encoder.encode_descriptor(
            "model_memory",
            "Memory planned for each loaded model as /api/ps reports it (ram + vram = its size), by model and kind (ram, vram).",
            Some(&bytes),
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (name, model) in &models {
            for (kind, value) in [("ram", model.ram), ("vram", model.vram)] {
                let labels = [("model", name.as_str()), ("kind", kind)];
                ConstGauge::new(value).encode(memory.encode_family(&labels)?)?;
            }
        }

        let mut queue = encoder.encode_descriptor(
            "queue_depth",
            "Requests on each loaded model waiting for one of its WHALE_NUM_PARALLEL slots, by model.",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (name, model) in &models {
            let labels = [("model", name.as_str())];
            ConstGauge::new(u64::from(model.queued)).encode(queue.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;
    use crate::config::KeepAlive;
    use crate::engine::Summary;
    use crate::inference::Finished;
    use crate::runner::Launcher;
    use crate::scheduler::Limits;

    fn metrics() -> Metrics {
        let limits = Limits {
            num_parallel: 1,
            max_queue: 4,
            max_loaded_models: 1,
            max_memory: None,
            gpu_overhead: 0,
            default_keep_alive: KeepAlive::For(Duration::from_mins(5)),
            num_threads: None,
            sample_threads: None,
            workers: Vec::new(),
            kv_pool: None,
        };
        let launcher = Launcher::new("/nonexistent/whaled".into(), "info");
        Metrics::new(Scheduler::new(limits, launcher))
    }

    fn text(piece: &str) -> Chunk {
        Chunk::Text {
            content: piece.to_owned(),
            thinking: String::new(),
            logprobs: Vec::new(),
        }
    }

    fn done(done_reason: DoneReason, prompt: u32, generated: u32) -> Chunk {
        Chunk::Done(Box::new(Finished {
            summary: Summary {
                done_reason,
                prompt_eval_count: prompt,
                prompt_eval_duration: Duration::from_millis(5),
                eval_count: generated,
                eval_duration: Duration::from_millis(40),
                context: Vec::new(),
                draft_count: 0,
                draft_accepted_count: 0,
            },
            total_duration: Duration::from_millis(50),
            load_duration: Duration::ZERO,
        }))
    }

    /// Runs `chunks` through a recorder, reading the first `read` of them.
    fn follow(
        metrics: &Metrics,
        endpoint: Endpoint,
        chunks: Vec<Result<Chunk, Error>>,
        read: usize,
    ) {
        let recorder = metrics.request("m:latest".to_owned(), endpoint, Instant::now());
        let followed = recorder.follow(futures::stream::iter(chunks));
        let read = futures::executor::block_on(followed.take(read).count());
        assert!(read > 0);
    }

    fn lines(metrics: &Metrics) -> Vec<String> {
        metrics
            .encode(Format::Prometheus)
            .lines()
            .map(str::to_owned)
            .collect()
    }

    fn has(lines: &[String], line: &str) -> bool {
        lines.iter().any(|l| l == line)
    }

    #[test]
    fn a_finished_generation_counts_its_tokens_and_times() {
        let metrics = metrics();
        let chunks = vec![
            Ok(text("Hel")),
            Ok(text("lo")),
            Ok(done(DoneReason::Stop, 7, 4)),
        ];
        follow(&metrics, Endpoint::Chat, chunks, 3);
        let lines = lines(&metrics);
        for line in [
            r#"whale_requests_total{model="m:latest",endpoint="chat",outcome="ok"} 1"#,
            r#"whale_prompt_tokens_total{model="m:latest"} 7"#,
            r#"whale_generated_tokens_total{model="m:latest"} 4"#,
            r#"whale_time_to_first_token_seconds_count{model="m:latest"} 1"#,
            r#"whale_token_latency_seconds_count{model="m:latest"} 1"#,
            // 40 ms over 4 tokens.
            r#"whale_token_latency_seconds_sum{model="m:latest"} 0.01"#,
        ] {
            assert!(has(&lines, line), "no {line:?} in {lines:#?}");
        }
    }

    #[test]
    fn a_stream_dropped_midway_is_cancelled() {
        let metrics = metrics();
        let chunks = vec![
            Ok(text("Hel")),
            Ok(text("lo")),
            Ok(done(DoneReason::Stop, 7, 4)),
        ];
        follow(&metrics, Endpoint::Generate, chunks, 1);
        let lines = lines(&metrics);
        assert!(has(
            &lines,
            r#"whale_requests_total{model="m:latest",endpoint="generate",outcome="cancelled"} 1"#
        ));
        assert!(has(
            &lines,
            r#"whale_time_to_first_token_seconds_count{model="m:latest"} 1"#
        ));
        assert!(
            !lines
                .iter()
                .any(|l| l.starts_with("whale_generated_tokens"))
        );
    }

    #[test]
    fn an_error_midway_is_an_error_and_a_cancelled_engine_is_cancelled() {
        let metrics = metrics();
        let failing = vec![
            Ok(text("a")),
            Err(Error::Internal("the engine stopped".to_owned())),
        ];
        follow(&metrics, Endpoint::Chat, failing, 2);
        follow(
            &metrics,
            Endpoint::Chat,
            vec![Ok(done(DoneReason::Cancelled, 3, 0))],
            1,
        );
        let lines = lines(&metrics);
        for outcome in ["error", "cancelled"] {
            let line = format!(
                r#"whale_requests_total{{model="m:latest",endpoint="chat",outcome="{outcome}"}} 1"#
            );
            assert!(has(&lines, &line), "no {line:?} in {lines:#?}");
        }
        // No token came from the cancelled one: one first token in all, one latency not taken.
        assert!(has(
            &lines,
            r#"whale_time_to_first_token_seconds_count{model="m:latest"} 1"#
        ));
        assert!(!lines.iter().any(|l| l.starts_with("whale_token_latency")));
    }

    #[test]
    fn a_failed_or_embedding_request_is_counted_once() {
        let metrics = metrics();
        let recorder = metrics.request("m:latest".to_owned(), Endpoint::Embed, Instant::now());
        recorder.embedded(12);
        let recorder = metrics.request("m:latest".to_owned(), Endpoint::Generate, Instant::now());
        recorder.failed();
        let lines = lines(&metrics);
        for line in [
            r#"whale_requests_total{model="m:latest",endpoint="embed",outcome="ok"} 1"#,
            r#"whale_requests_total{model="m:latest",endpoint="generate",outcome="error"} 1"#,
            r#"whale_prompt_tokens_total{model="m:latest"} 12"#,
        ] {
            assert!(has(&lines, line), "no {line:?} in {lines:#?}");
        }
        assert!(
            !lines
                .iter()
                .any(|l| l.starts_with("whale_requests_total") && l.contains("cancelled"))
        );
    }

    #[test]
    fn pull_progress_passes_events_on_and_counts_bytes() {
        let metrics = metrics();
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel();
        let progress = metrics.pull_progress(sender);
        progress.report(ProgressEvent::status("pulling manifest"));
        progress.received(1000);
        progress.received(24);
        assert_eq!(receiver.try_recv().unwrap().status, "pulling manifest");
        assert!(has(&lines(&metrics), "whale_pull_bytes_total 1024"));
    }

    #[test]
    fn with_nothing_loaded_the_gauges_say_so() {
        let lines = lines(&metrics());
        assert!(has(&lines, "whale_loaded_models 0"));
        assert!(has(&lines, "# TYPE whale_model_memory_bytes gauge"));
        assert!(
            !lines
                .iter()
                .any(|l| l.starts_with("whale_model_memory_bytes"))
        );
        assert!(!lines.iter().any(|l| l.starts_with("whale_queue_depth")));
    }
}
