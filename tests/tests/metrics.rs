//! End-to-end: a real `whaled`'s `/metrics`, read with a Prometheus text parser, moving with the
//! pulls, generations and chats it serves; and the request ids it gives every request and
//! writes into its log.

use std::io;

use prometheus_parse::{Sample, Scrape, Value as Reading};
use serde_json::{Value, json};
use whale_tests::fixtures;
use whale_tests::whaled::Whaled;

/// The model label whaled gives `qwen-tiny`: its full name in the store.
const MODEL: &str = "qwen-tiny:latest";

/// `GET /metrics` in Prometheus' text format, parsed.
fn scrape(daemon: &Whaled) -> Scrape {
    let response = Whaled::http()
        .get(format!("{}/metrics", daemon.url()))
        .send()
        .expect("scrape");
    assert_eq!(response.status().as_u16(), 200);
    let content_type = header(&response, "content-type");
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let text = response.text().expect("body");
    Scrape::parse(text.lines().map(|line| Ok::<_, io::Error>(line.to_owned()))).expect("parse")
}

fn header(response: &reqwest::blocking::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("ASCII header")
        .to_owned()
}

/// The value of the counter or gauge `name` whose labels include `labels`; 0 when there is
/// none (a counter not moved yet has no sample). Every one whaled serves is a whole number.
fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> u64 {
    let matching: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name && has_labels(sample, labels))
        .map(|sample| match sample.value {
            Reading::Counter(v) | Reading::Gauge(v) | Reading::Untyped(v) => v,
            ref other => panic!("{name} is not a counter or gauge: {other:?}"),
        })
        .collect();
    assert!(
        matching.len() <= 1,
        "{name} {labels:?} matches {matching:?}"
    );
    whole(matching.first().copied().unwrap_or(0.0))
}

fn whole(value: f64) -> u64 {
    assert!(
        value >= 0.0 && value.fract() == 0.0,
        "{value} is not a count"
    );
    value as u64
}

/// How many observations the histogram `name` with `labels` holds (its `+Inf` bucket).
fn observations(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> u64 {
    scrape
        .samples
        .iter()
        .filter(|sample| sample.metric == name && has_labels(sample, labels))
        .map(|sample| match &sample.value {
            Reading::Histogram(buckets) => whole(
                buckets
                    .iter()
                    .find(|bucket| bucket.less_than.is_infinite())
                    .expect("+Inf bucket")
                    .count,
            ),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .sum()
}

fn has_labels(sample: &Sample, labels: &[(&str, &str)]) -> bool {
    labels
        .iter()
        .all(|(key, value)| sample.labels.get(key) == Some(*value))
}

/// Every metric name the scrape holds a sample of.
fn names(scrape: &Scrape) -> Vec<&str> {
    scrape.samples.iter().map(|s| s.metric.as_str()).collect()
}

fn greedy() -> Value {
    json!({"temperature": 0, "seed": 1, "num_predict": 8, "num_ctx": 512})
}

#[test]
fn metrics_follow_pulls_generations_and_loaded_models() {
    let source = Whaled::start();
    source.create_from_gguf("qwen-tiny", &fixtures::qwen2());
    let daemon = Whaled::builder()
        .env("WHALE_REGISTRY_MIRROR", source.url())
        .start();

    let before = scrape(&daemon);
    assert_eq!(value(&before, "whale_loaded_models", &[]), 0);
    assert_eq!(value(&before, "whale_pull_bytes_total", &[]), 0);

    // A pull counts every blob byte it downloads.
    let lines = daemon.stream(
        "/api/pull",
        &json!({"model": "qwen-tiny", "insecure": true}),
    );
    assert_eq!(lines.last().unwrap()["status"], "success", "{lines:?}");
    let (status, manifest) = source.get("/v2/library/qwen-tiny/manifests/latest");
    assert_eq!(status, 200, "{manifest}");
    let blobs: u64 = std::iter::once(&manifest["config"])
        .chain(manifest["layers"].as_array().unwrap())
        .map(|blob| blob["size"].as_u64().unwrap())
        .sum();
    let pulled = scrape(&daemon);
    assert_eq!(value(&pulled, "whale_pull_bytes_total", &[]), blobs);
    assert_eq!(
        value(
            &pulled,
            "whale_http_requests_total",
            &[
                ("route", "/api/pull"),
                ("method", "POST"),
                ("status", "200")
            ]
        ),
        1
    );
    // A scrape reads what is loaded; it loads nothing.
    assert_eq!(value(&pulled, "whale_loaded_models", &[]), 0);
    let (status, ps) = daemon.get("/api/ps");
    assert_eq!(status, 200);
    assert_eq!(ps["models"], json!([]), "{ps}");

    // A generation, under the client's request id.
    let response = Whaled::http()
        .post(format!("{}/api/generate", daemon.url()))
        .header("X-Request-Id", "metrics-generate-1")
        .json(&json!({"model": "qwen-tiny", "prompt": "Hi", "stream": false, "options": greedy()}))
        .send()
        .expect("generate");
    assert_eq!(header(&response, "x-request-id"), "metrics-generate-1");
    assert_eq!(response.status().as_u16(), 200);
    let generated: Value = response.json().expect("JSON");
    let generate_eval = generated["eval_count"].as_u64().unwrap();
    let generate_prompt = generated["prompt_eval_count"].as_u64().unwrap();
    assert!(generate_eval >= 1, "{generated}");
    // The model was loaded while handling it, so the load's log line names the request.
    assert!(
        daemon.log_shows(
            |line| line.contains("request{id=metrics-generate-1") && line.contains(" loaded ")
        ),
        "{}",
        daemon.log()
    );

    // A chat through the OpenAI API; whaled makes up its id.
    let response = Whaled::http()
        .post(format!("{}/v1/chat/completions", daemon.url()))
        .json(&json!({
            "model": "qwen-tiny",
            "messages": [{"role": "user", "content": "Hello there"}],
            "temperature": 0,
            "seed": 1,
            "max_tokens": 8,
        }))
        .send()
        .expect("chat");
    let id = header(&response, "x-request-id");
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id:?}"
    );
    assert_eq!(response.status().as_u16(), 200);
    let chat: Value = response.json().expect("JSON");
    let chat_eval = chat["usage"]["completion_tokens"].as_u64().unwrap();
    let chat_prompt = chat["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(chat_eval >= 1, "{chat}");

    let after = scrape(&daemon);
    let model = [("model", MODEL)];
    for endpoint in ["generate", "chat"] {
        assert_eq!(
            value(
                &after,
                "whale_requests_total",
                &[("model", MODEL), ("endpoint", endpoint), ("outcome", "ok")]
            ),
            1,
            "{endpoint}"
        );
    }
    assert_eq!(
        value(&after, "whale_generated_tokens_total", &model),
        generate_eval + chat_eval
    );
    // The chat's prompt may reuse a prefix the generation left in the cache; usage counts it
    // all the same, the metric counts what was evaluated.
    let prompt = value(&after, "whale_prompt_tokens_total", &model);
    assert!(
        prompt > generate_prompt && prompt <= generate_prompt + chat_prompt,
        "{prompt} prompt tokens; the generation evaluated {generate_prompt}, the chat has {chat_prompt}"
    );
    assert_eq!(
        observations(&after, "whale_time_to_first_token_seconds", &model),
        2
    );
    assert_eq!(
        observations(&after, "whale_token_latency_seconds", &model),
        2
    );
    for route in ["/api/generate", "/v1/chat/completions"] {
        let labels = [("route", route), ("method", "POST")];
        assert_eq!(
            value(
                &after,
                "whale_http_requests_total",
                &[labels[0], labels[1], ("status", "200")]
            ),
            1,
            "{route}"
        );
        assert_eq!(
            observations(&after, "whale_http_request_duration_seconds", &labels),
            1,
            "{route}"
        );
    }

    // The model is loaded now: the gauges say what `/api/ps` says.
    let (_, ps) = daemon.get("/api/ps");
    let listed = &ps["models"][0];
    assert_eq!(value(&after, "whale_loaded_models", &[]), 1, "{ps}");
    let ram = value(
        &after,
        "whale_model_memory_bytes",
        &[("model", MODEL), ("kind", "ram")],
    );
    let vram = value(
        &after,
        "whale_model_memory_bytes",
        &[("model", MODEL), ("kind", "vram")],
    );
    assert!(ram > 0);
    assert_eq!(vram, listed["size_vram"].as_u64().unwrap(), "{ps}");
    assert_eq!(ram + vram, listed["size"].as_u64().unwrap(), "{ps}");
    assert_eq!(value(&after, "whale_queue_depth", &model), 0);
    assert!(names(&after).contains(&"whale_queue_depth"));

    // Paths no route serves share one label, whatever they are.
    let (status, _) = daemon.get("/no/such/path/42");
    assert_eq!(status, 404);
    let last = scrape(&daemon);
    assert_eq!(
        value(
            &last,
            "whale_http_requests_total",
            &[("route", "other"), ("method", "GET"), ("status", "404")]
        ),
        1
    );
    assert!(
        last.samples
            .iter()
            .all(|sample| !sample.labels.values().any(|v| v.contains("no/such"))),
        "a raw path became a label"
    );
    assert_eq!(
        value(
            &last,
            "whale_http_requests_total",
            &[("route", "/metrics"), ("method", "GET"), ("status", "200")]
        ),
        // The scrapes before this one; each is counted once it is answered.
        3
    );
}

#[test]
fn openmetrics_for_scrapers_that_ask() {
    let daemon = Whaled::start();
    let openmetrics = || {
        let response = Whaled::http()
            .get(format!("{}/metrics", daemon.url()))
            .header(
                "Accept",
                "application/openmetrics-text;version=1.0.0;q=0.6,text/plain;version=0.0.4;q=0.3",
            )
            .send()
            .expect("scrape");
        assert_eq!(
            header(&response, "content-type"),
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        response.text().unwrap()
    };
    let first = openmetrics();
    assert!(first.ends_with("# EOF\n"), "{first}");
    assert!(
        first.contains("# TYPE whale_pull_bytes counter\n# UNIT whale_pull_bytes bytes\n"),
        "{first}"
    );
    assert!(first.contains("\nwhale_loaded_models 0\n"), "{first}");
    // The first scrape is counted once it was answered.
    let second = openmetrics();
    assert!(
        second.contains("# TYPE whale_http_requests counter\n"),
        "{second}"
    );
    assert!(
        second.contains(
            "\nwhale_http_requests_total{route=\"/metrics\",method=\"GET\",status=\"200\"} 1\n"
        ),
        "{second}"
    );
}

#[test]
fn a_refused_load_is_an_error_and_unknown_models_add_no_series() {
    // Room for no model: every load is refused with a server error, which is logged.
    let daemon = Whaled::builder().env("WHALE_MAX_MEMORY", "1").start();
    daemon.create_from_gguf("qwen-tiny", &fixtures::qwen2());

    let response = Whaled::http()
        .post(format!("{}/api/generate", daemon.url()))
        .header("X-Request-Id", "doomed-load-7")
        .json(&json!({"model": "qwen-tiny", "prompt": "Hi", "stream": false}))
        .send()
        .expect("generate");
    assert_eq!(response.status().as_u16(), 500);
    // The warning about the failure names the request.
    assert_eq!(header(&response, "x-request-id"), "doomed-load-7");
    assert!(
        daemon.log_shows(|line| line.contains("WARN")
            && line.contains("request{id=doomed-load-7")
            && line.contains("request failed")),
        "{}",
        daemon.log()
    );

    let metrics = scrape(&daemon);
    let error = [
        ("model", MODEL),
        ("endpoint", "generate"),
        ("outcome", "error"),
    ];
    assert_eq!(value(&metrics, "whale_requests_total", &error), 1);
    let model = [("model", MODEL)];
    assert_eq!(
        observations(&metrics, "whale_time_to_first_token_seconds", &model),
        0
    );
    assert_eq!(value(&metrics, "whale_loaded_models", &[]), 0);

    // Requests for models the store does not have are not per-model series.
    let (status, _) = daemon.post(
        "/api/generate",
        &json!({"model": "not-there-1", "prompt": "Hi"}),
    );
    assert_eq!(status, 404);
    let metrics = scrape(&daemon);
    assert!(
        metrics
            .samples
            .iter()
            .filter_map(|sample| sample.labels.get("model"))
            .all(|model| model == MODEL),
        "an unknown model became a label"
    );
}

#[test]
fn request_ids_are_echoed_when_sane_and_made_otherwise() {
    let daemon = Whaled::start();
    let id = |sent: Option<&str>| {
        let mut request = Whaled::http().get(format!("{}/api/version", daemon.url()));
        if let Some(sent) = sent {
            request = request.header("X-Request-Id", sent);
        }
        let response = request.send().expect("request");
        assert_eq!(response.status().as_u16(), 200);
        header(&response, "x-request-id")
    };
    assert_eq!(id(Some("abc-123_DEF.4")), "abc-123_DEF.4");
    let made = id(None);
    assert!(
        made.len() == 16 && made.bytes().all(|b| b.is_ascii_hexdigit()),
        "{made:?}"
    );
    assert_ne!(id(None), made, "ids differ");
    // Too long, or with a space: replaced, so never copied into the log.
    for insane in ["x".repeat(65), "two words".to_owned()] {
        let replaced = id(Some(&insane));
        assert_ne!(replaced, insane);
        assert_eq!(replaced.len(), 16, "{replaced:?}");
    }
    // Requests no route serves get one too.
    let response = Whaled::http()
        .get(format!("{}/no/such/path", daemon.url()))
        .header("X-Request-Id", "lost-1")
        .send()
        .expect("request");
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(header(&response, "x-request-id"), "lost-1");
}
