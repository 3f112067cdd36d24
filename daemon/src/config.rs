//! Daemon configuration, resolved once at start-up: flag > environment > default.
//!
//! Every environment variable whaled reads is named here and documented on its flag, so
//! `whaled --help` lists them all. Nothing else in the daemon reads the environment.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
pub use whale_api::KeepAlive;

/// Address the daemon binds and the CLI talks to, parsed by [`whale_api::Host`] for both.
pub const ENV_HOST: &str = whale_api::WHALE_HOST;
/// Root of the model store (Ollama's layout; `~/.ollama/models` can be used as is).
pub const ENV_MODELS: &str = "WHALE_MODELS";
/// Default `keep_alive` of a loaded model.
pub const ENV_KEEP_ALIVE: &str = "WHALE_KEEP_ALIVE";
/// Parallel sequences (slots) per loaded model.
pub const ENV_NUM_PARALLEL: &str = "WHALE_NUM_PARALLEL";
/// Requests allowed to wait per model before answering 503.
pub const ENV_MAX_QUEUE: &str = "WHALE_MAX_QUEUE";
/// Models loaded at once (0 = no limit but memory).
pub const ENV_MAX_LOADED_MODELS: &str = "WHALE_MAX_LOADED_MODELS";
/// Default context length (`num_ctx`) per sequence.
pub const ENV_CONTEXT_LENGTH: &str = "WHALE_CONTEXT_LENGTH";
/// Threads llama.cpp decodes with (default: one per logical CPU).
pub const ENV_NUM_THREADS: &str = "WHALE_NUM_THREADS";
pub const ENV_SAMPLE_THREADS: &str = "WHALE_SAMPLE_THREADS";
/// Registry tried first for names of the default registry (air-gapped sites, tests).
pub const ENV_REGISTRY_MIRROR: &str = "WHALE_REGISTRY_MIRROR";
/// Memory the scheduler may use for models, overriding what the system reports.
pub const ENV_MAX_MEMORY: &str = "WHALE_MAX_MEMORY";
/// GPU memory left unused, in total over all GPUs (subtracted once from their summed free
/// memory, unlike Ollama's per-GPU `OLLAMA_GPU_OVERHEAD`), on top of the planner's own margin.
pub const ENV_GPU_OVERHEAD: &str = "WHALE_GPU_OVERHEAD";
/// Log filter (`info`, `debug`, `whale_daemon=trace`, …).
pub const ENV_LOG: &str = "WHALE_LOG";
/// How long generations in flight may run on after SIGTERM before they are cancelled.
pub const ENV_SHUTDOWN_GRACE: &str = "WHALE_SHUTDOWN_GRACE";

/// Hosts served besides those no other site can borrow (IP literals, localhost, this machine).
pub const ENV_ALLOWED_HOSTS: &str = "WHALE_ALLOWED_HOSTS";
/// Web origins whose pages may call whaled, besides loopback pages and local apps.
pub const ENV_ORIGINS: &str = "WHALE_ORIGINS";
/// Keys a request must carry as `Authorization: Bearer <key>` (whale reads the same variable).
pub const ENV_API_KEY: &str = whale_api::WHALE_API_KEY;
/// Serve beyond loopback without a key, knowingly.
pub const ENV_NO_API_KEY: &str = "WHALE_NO_API_KEY";
/// Connections served at once; more wait to be accepted.
pub const ENV_MAX_CONNECTIONS: &str = "WHALE_MAX_CONNECTIONS";

/// How long a client may take to send request headers (and stay idle between requests).
pub const ENV_HEADER_TIMEOUT: &str = "WHALE_HEADER_TIMEOUT";

/// KV cache cells (tokens) the parallel requests of a model share.
pub const ENV_KV_POOL: &str = "WHALE_KV_POOL";

/// Workers (`whale worker`) whose memory models are split over, `host:port` comma-separated.
pub const ENV_WORKERS: &str = "WHALE_WORKERS";
/// The token the workers require (the same on each worker).
pub const ENV_WORKER_TOKEN: &str = crate::rpc::worker::ENV_WORKER_TOKEN;
/// Certificates whaled trusts when it speaks TLS to its workers.
pub const ENV_WORKER_CA: &str = "WHALE_WORKER_CA";

/// The local model DeepSeek API scripts reach as `deepseek-chat`.
pub const ENV_DEEPSEEK_CHAT: &str = "WHALE_DEEPSEEK_CHAT";
/// The local model DeepSeek API scripts reach as `deepseek-reasoner`.
pub const ENV_DEEPSEEK_REASONER: &str = "WHALE_DEEPSEEK_REASONER";
/// The local model scripts reach as `deepseek-r1-zero` (the name DeepSeek's R1 examples use).
pub const ENV_DEEPSEEK_R1_ZERO: &str = "WHALE_DEEPSEEK_R1_ZERO";

/// The default address: loopback, Ollama's port, so Ollama's clients find whaled.
pub const DEFAULT_HOST: &str = whale_api::DEFAULT_HOST;

/// `whaled`: runs DeepSeek models with llama.cpp and serves the Ollama and DeepSeek APIs.
#[derive(Debug, Clone, Parser)]
#[command(name = "whaled", version, about, long_about = None)]
pub struct Config {
    /// Address to listen on, in `OLLAMA_HOST`'s forms (`host:port`, `:port`, `[v6]:port`, `http://host:port`); a port 0 picks a free one.
    #[arg(long, env = ENV_HOST, default_value = DEFAULT_HOST, value_parser = parse_host)]
    pub host: SocketAddr,

    /// Model store root [default: the platform data dir, e.g. ~/.local/share/whale/models]
    #[arg(long, env = ENV_MODELS)]
    pub models: Option<PathBuf>,

    /// How long a model stays loaded after its last request (`5m`, `1h`, `0`, `-1` = forever, or seconds).
    #[arg(long, env = ENV_KEEP_ALIVE, default_value = "5m", value_parser = parse_keep_alive)]
    pub keep_alive: KeepAlive,

    /// Requests each loaded model serves at once; its KV cache holds `num_ctx` × this many tokens.
    #[arg(long, env = ENV_NUM_PARALLEL, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub num_parallel: u32,

    /// Requests that may wait for a model beyond its parallel slots; more get 503 at once.
    #[arg(long, env = ENV_MAX_QUEUE, default_value_t = 512)]
    pub max_queue: u32,

    /// Models kept loaded at once; 0 means as many as memory allows.
    #[arg(long, env = ENV_MAX_LOADED_MODELS, default_value_t = 0)]
    pub max_loaded_models: u32,

    /// Context length per sequence when neither the request nor the Modelfile sets `num_ctx`.
    #[arg(long, env = ENV_CONTEXT_LENGTH, default_value_t = 4096, value_parser = clap::value_parser!(u32).range(4..=16_777_216))]
    pub context_length: u32,

    /// Threads for decoding [default: one per logical CPU, as the system counts them (SMT siblings included)].
    #[arg(long, env = ENV_NUM_THREADS)]
    pub num_threads: Option<u32>,

    /// Threads that pick the tokens of a step's parallel sequences side by side, for a model
    /// on a GPU serving many streams [default: off; 2 or more turns it on].
    #[arg(long, env = ENV_SAMPLE_THREADS)]
    pub sample_threads: Option<u32>,

    /// Registry tried first for models of the default registry (e.g. `http://10.0.0.5:11434`).
    #[arg(long, env = ENV_REGISTRY_MIRROR)]
    pub registry_mirror: Option<url::Url>,

    /// Memory the scheduler may fill with models, in bytes or with a unit (`12GiB`) [default: available RAM].
    #[arg(long, env = ENV_MAX_MEMORY, value_parser = parse_bytes)]
    pub max_memory: Option<u64>,

    /// GPU memory to leave unused for other programs, in bytes or with a unit (`2GiB`): in total over all GPUs, taken once from their summed free memory, on top of the 1 GiB the planner always leaves.
    #[arg(long, env = ENV_GPU_OVERHEAD, default_value = "0", value_parser = parse_bytes)]
    pub gpu_overhead: u64,

    /// Log filter, as in `RUST_LOG`.
    #[arg(long, env = ENV_LOG, default_value = "info")]
    pub log: String,

    /// Host names served besides IP literals, `localhost`, `*.localhost`, `*.local`, `*.internal` and this machine's name; comma-separated, `*` wildcards (`*.example.com`, `*` for any). Without an API key, a request naming another host is refused (DNS rebinding).
    #[arg(long, env = ENV_ALLOWED_HOSTS, value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// Web origins whose pages may call whaled (and get CORS headers), besides `http(s)://localhost`, `127.0.0.1`, `[::1]`, `0.0.0.0` on any port and the `app:`, `file:`, `tauri:`, `vscode-webview:`, `vscode-file:` schemes; comma-separated, `*` wildcards.
    #[arg(long, env = ENV_ORIGINS, value_delimiter = ',')]
    pub origins: Vec<String>,

    /// API keys (comma-separated): every request but `GET /` and `GET /api/version` must send `Authorization: Bearer <key>`. Required to listen beyond loopback.
    #[arg(long, env = ENV_API_KEY, value_delimiter = ',', hide_env_values = true)]
    pub api_key: Vec<Secret>,

    /// Listen beyond loopback without an API key: anyone who reaches the port can use, pull, push and delete models.
    #[arg(long, env = ENV_NO_API_KEY, value_parser = clap::builder::BoolishValueParser::new())]
    pub no_api_key: bool,

    /// Connections served at once; further ones wait in the system's queue until one closes.
    #[arg(long, env = ENV_MAX_CONNECTIONS, default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// How long a client may take to send a request's headers (`30s`, `1m`); a connection idle that long between requests is closed. A request whose headers are in has as long as it needs.
    #[arg(long, env = ENV_HEADER_TIMEOUT, default_value = "30s", value_parser = parse_duration)]
    pub header_timeout: std::time::Duration,

    /// The local model that `deepseek-chat` (the DeepSeek API's name for its V3 chat model) stands for, on `/v1` and `/api`, unless a model of that very name is stored.
    #[arg(long, env = ENV_DEEPSEEK_CHAT, default_value = "deepseek-v3")]
    pub deepseek_chat: String,

    /// The local model that `deepseek-reasoner` (the DeepSeek API's name for R1) stands for, unless a model of that very name is stored.
    #[arg(long, env = ENV_DEEPSEEK_REASONER, default_value = "deepseek-r1")]
    pub deepseek_reasoner: String,

    /// The local model that `deepseek-r1-zero` (the name DeepSeek's R1 examples use) stands for, unless a model of that very name is stored.
    #[arg(long, env = ENV_DEEPSEEK_R1_ZERO, default_value = "deepseek-r1")]
    pub deepseek_r1_zero: String,

    /// KV cache (in tokens) the parallel requests of one model share (default: a full context for each parallel request). Smaller, a request waits until the pool can hold all it may come to need, and memory follows the pool.
    #[arg(long, env = ENV_KV_POOL)]
    pub kv_pool: Option<u32>,

    /// Workers started with `whale worker` on other machines (`host:port`, comma-separated): models are split over this machine and them, layers in proportion to free memory (`num_gpu` sets how many layers go to the workers).
    #[arg(long, env = ENV_WORKERS, value_delimiter = ',')]
    pub workers: Vec<String>,

    /// The token the workers were started with (`WHALE_WORKER_TOKEN` there too). Required by workers that listen beyond loopback.
    #[arg(long = "worker-token", env = ENV_WORKER_TOKEN, hide_env_values = true, value_parser = parse_worker_token)]
    pub worker_token: Option<Secret>,

    /// Speak TLS to the workers, trusting the certificates this PEM file holds (a CA's, or the workers' own self-signed ones).
    #[arg(long = "worker-ca", env = ENV_WORKER_CA, value_name = "PEM")]
    pub worker_ca: Option<PathBuf>,

    /// On SIGTERM or Ctrl-C, how long requests in flight may go on (`10s`, `1m`, `0`) before
    /// they are cancelled; no new ones are taken meanwhile.
    #[arg(long, env = ENV_SHUTDOWN_GRACE, default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: std::time::Duration,
}

/// A value that is never printed (an API key).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(Self(text.to_owned()))
    }
}

/// `10s`, `1m30s`, `0`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return std::time::Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("invalid duration {text:?}"));
    }
    humantime::parse_duration(text).map_err(|error| format!("invalid duration {text:?}: {error}"))
}

/// Ollama's request forms (`5m`, `1h30m`, `0`, `-1`) plus a bare number of seconds, which
/// the environment variable also accepts.
fn parse_keep_alive(text: &str) -> Result<KeepAlive, String> {
    let text = text.trim().trim_matches(|c| c == '"' || c == '\'');
    match text.parse::<f64>() {
        Ok(seconds) => Ok(KeepAlive::from_seconds(seconds)),
        Err(_) => KeepAlive::parse(text),
    }
}

/// A worker token, checked as workers check theirs.
fn parse_worker_token(text: &str) -> Result<Secret, String> {
    crate::rpc::Token::new(text).map(|_| Secret(text.to_owned()))
}

/// The address to listen on, from any form `WHALE_HOST` takes (see [`whale_api::Host`], which
/// the CLI parses it with too).
pub fn parse_host(text: &str) -> Result<SocketAddr, String> {
    whale_api::Host::parse(text)
        .and_then(|host| host.socket_addr())
        .map_err(|error| error.to_string())
}

/// Parses a byte count: `1234`, `12GiB`, `12GB`, `512MiB`, `1.5G`.
fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let number: f64 = text[..split]
        .parse()
        .map_err(|_| format!("invalid size {text:?}"))?;
    let scale: f64 = match text[split..].trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "kb" => 1e3,
        "m" | "mib" => 1024f64.powi(2),
        "mb" => 1e6,
        "g" | "gib" => 1024f64.powi(3),
        "gb" => 1e9,
        "t" | "tib" => 1024f64.powi(4),
        "tb" => 1e12,
        unit => return Err(format!("invalid size unit {unit:?} in {text:?}")),
    };
    Ok((number * scale) as u64)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn keep_alive_forms() {
        let cases = [
            ("5m", KeepAlive::For(Duration::from_mins(5))),
            ("1h30m", KeepAlive::For(Duration::from_mins(90))),
            ("0", KeepAlive::For(Duration::ZERO)),
            ("-1", KeepAlive::Forever),
            ("-1m", KeepAlive::Forever),
            ("30", KeepAlive::For(Duration::from_secs(30))),
            ("1.5", KeepAlive::For(Duration::from_millis(1500))),
            ("250ms", KeepAlive::For(Duration::from_millis(250))),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_keep_alive(text), Ok(expected), "{text}");
        }
        for bad in ["", "5 minutes", "m", "1x"] {
            assert!(parse_keep_alive(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_forms() {
        let cases = [
            ("127.0.0.1:11434", "127.0.0.1:11434"),
            (":8080", "127.0.0.1:8080"),
            ("0.0.0.0", "0.0.0.0:11434"),
            ("http://127.0.0.1:9000/", "127.0.0.1:9000"),
            ("localhost:1234", "127.0.0.1:1234"),
            ("[::1]:5000", "[::1]:5000"),
            ("[::1]", "[::1]:11434"),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_host(text).unwrap().to_string(), expected, "{text}");
        }
        assert!(parse_host("nonsense:port").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2.5"), Ok(Duration::from_millis(2500)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn host_means_what_it_means_to_the_cli() {
        // A scheme without a port means the scheme's port, as whale reads it and Ollama does.
        for (text, expected) in [
            ("http://0.0.0.0", "0.0.0.0:80"),
            ("https://127.0.0.1", "127.0.0.1:443"),
            ("http://127.0.0.1:8080/base/", "127.0.0.1:8080"),
        ] {
            assert_eq!(parse_host(text).unwrap().to_string(), expected, "{text}");
            let client = whale_api::Client::new(text).unwrap();
            assert_eq!(client.host().socket_addr().unwrap().to_string(), expected);
        }
        let error = parse_host("127.0.0.1:99999").unwrap_err();
        assert!(error.contains("invalid port \"99999\""), "{error}");
    }

    #[test]
    fn byte_sizes() {
        assert_eq!(parse_bytes("12GiB").unwrap(), 12 << 30);
        assert_eq!(parse_bytes("1000").unwrap(), 1000);
        assert_eq!(parse_bytes("1.5G").unwrap(), 3 << 29);
        assert!(parse_bytes("12 parsecs").is_err());
    }

    #[test]
    fn defaults_resolve() {
        let config = Config::try_parse_from(["whaled"]).unwrap();
        assert_eq!(config.num_parallel, 1);
        assert_eq!(config.keep_alive, KeepAlive::For(Duration::from_mins(5)));
        assert_eq!(config.gpu_overhead, 0);
        assert_eq!(config.shutdown_grace, Duration::from_secs(10));
        let config = Config::try_parse_from(["whaled", "--gpu-overhead", "2GiB"]).unwrap();
        assert_eq!(config.gpu_overhead, 2 << 30);
    }
}
