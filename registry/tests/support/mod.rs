//! Test support: a stock CNCF distribution registry (`docker-registry`) started on a free
//! loopback port, the crate's own `/v2/` server on port 0, and random models.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rand::RngCore;
use whale_registry::manifest::media_type;
use whale_registry::{Digest, Layer, Manifest, ModelRef, PullOptions, Store};

/// A running `docker-registry`, killed when dropped.
pub struct Distribution {
    child: Child,
    pub addr: SocketAddr,
    dir: tempfile::TempDir,
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Distribution {
    pub async fn start() -> Distribution {
        let binary = "/usr/bin/docker-registry";
        assert!(
            Path::new(binary).exists() || which("docker-registry"),
            "docker-registry (the CNCF distribution registry) is not installed; \
             run `sudo apt-get install docker-registry` (scripts/setup-deps.sh does it)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("registry.log")).unwrap())
            .spawn()
            .expect("start docker-registry");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let registry = Distribution { child, addr, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = reqwest::Client::new();
        loop {
            if let Ok(response) = client.get(format!("http://{addr}/v2/")).send().await
                && response.status().is_success()
            {
                return registry;
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not start on {addr}: {}",
                std::fs::read_to_string(registry.dir.path().join("registry.log"))
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(name).is_file()))
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves a router on a fresh loopback port; the server lives as long as the runtime.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// A model held in memory: manifest bytes plus every blob.
#[derive(Clone)]
pub struct Model {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub blobs: Vec<(Digest, Vec<u8>)>,
}

pub fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    bytes
}

fn layer(media_type: &str, bytes: &[u8]) -> Layer {
    Layer {
        media_type: media_type.to_owned(),
        digest: Digest::of_bytes(bytes),
        size: bytes.len() as u64,
        from: None,
        name: None,
    }
}

/// A model with a random weights layer of `model_size` bytes, a template, params and config.
pub fn random_model(model_size: usize) -> Model {
    let weights = random_bytes(model_size);
    let template = format!("{{{{ .Prompt }}}} {}", rand::random::<u64>()).into_bytes();
    let params = format!("{{\"temperature\":0.6,\"seed\":{}}}", rand::random::<u32>()).into_bytes();
    let config = format!(
        "{{\"model_format\":\"gguf\",\"model_family\":\"test\",\"architecture\":\"amd64\",\"os\":\"linux\",\"n\":{}}}",
        rand::random::<u64>()
    )
    .into_bytes();
    let manifest = Manifest::new(
        layer(media_type::DOCKER_CONFIG, &config),
        vec![
            layer(media_type::MODEL, &weights),
            layer(media_type::TEMPLATE, &template),
            layer(media_type::PARAMS, &params),
        ],
    );
    let blobs = vec![
        (Digest::of_bytes(&weights), weights),
        (Digest::of_bytes(&template), template),
        (Digest::of_bytes(&params), params),
        (Digest::of_bytes(&config), config),
    ];
    Model {
        manifest_bytes: manifest.to_json(),
        manifest,
        blobs,
    }
}

impl Model {
    /// Writes the model into a store under `reference`.
    pub async fn put(&self, store: &Store, reference: &ModelRef) {
        for (digest, bytes) in &self.blobs {
            store.write_blob(digest, &bytes[..]).await.unwrap();
        }
        store
            .write_manifest_bytes(reference, self.manifest_bytes.clone())
            .await
            .unwrap();
    }

    pub fn blob(&self, digest: &Digest) -> &[u8] {
        &self.blobs.iter().find(|(d, _)| d == digest).unwrap().1
    }

    /// Asserts that `store` holds this model under `reference`, byte for byte.
    pub async fn assert_in(&self, store: &Store, reference: &ModelRef) {
        let bytes = store.read_manifest_bytes(reference).await.unwrap();
        assert_eq!(
            Digest::of_bytes(&bytes),
            Digest::of_bytes(&self.manifest_bytes)
        );
        for (digest, blob) in &self.blobs {
            let on_disk = std::fs::read(store.blob_path(digest)).unwrap();
            assert!(on_disk == *blob, "blob {digest} differs");
        }
    }
}

/// Pull options for loopback tests: plain http, short timings, small parts.
pub fn options() -> PullOptions {
    PullOptions {
        insecure: true,
        part_size: Some(1024 * 1024),
        stall_timeout: Duration::from_millis(500),
        max_attempts: 3,
        retry_delay: Duration::from_millis(10),
        progress_interval: Duration::from_millis(20),
        ..PullOptions::default()
    }
}

/// Lists every file under `dir`, relative to it.
pub fn files_under(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, base, out);
            } else {
                out.push(path.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Counts the blob bytes a pull reports it received, and drops its progress lines.
#[derive(Default)]
pub struct Received(pub std::sync::atomic::AtomicU64);

impl Received {
    pub fn bytes(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl whale_registry::Reporter for Received {
    fn report(&self, _event: whale_registry::ProgressEvent) {}

    fn received(&self, bytes: u64) {
        self.0
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
    }
}
