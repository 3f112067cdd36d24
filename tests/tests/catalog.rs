//! The catalogue: `GET /api/catalog`, `whale catalog` and `whale list --available` list the
//! DeepSeek models whale knows, with whether each fits this machine and whether it is pulled.

use serde_json::Value;
use whale_tests::fixtures;
use whale_tests::whaled::Whaled;

fn entry<'a>(catalog: &'a Value, name: &str) -> &'a Value {
    catalog["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|model| model["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {catalog}"))
}

#[test]
fn the_catalogue_says_what_fits_and_what_is_pulled() {
    let daemon = Whaled::builder().env("WHALE_MAX_MEMORY", "24GiB").start();
    let (status, catalog) = daemon.get("/api/catalog");
    assert_eq!(status, 200, "{catalog}");
    assert_eq!(catalog["memory"], 24u64 << 30, "{catalog}");
    let big = entry(&catalog, "deepseek-r1:671b");
    assert_eq!(big["fits"], false, "{big}");
    assert_eq!(big["architecture"], "deepseek2");
    assert_eq!(big["size"], 404_000_000_000u64);
    let small = entry(&catalog, "deepseek-r1:14b");
    assert_eq!(small["fits"], true, "{small}");
    assert_eq!(small["draft"], "deepseek-r1:1.5b", "{small}");
    assert_eq!(small["pulled"], false);
    assert_eq!(entry(&catalog, "deepseek-v3:671b")["template"], "v3");

    // Pulled (here: created under that name) shows as such. Its draft partner too.
    daemon.create_from_gguf("deepseek-r1:14b", &fixtures::deepseek2());
    daemon.create_from_gguf("deepseek-r1:1.5b", &fixtures::deepseek2());
    let (_, catalog) = daemon.get("/api/catalog");
    assert_eq!(entry(&catalog, "deepseek-r1:14b")["pulled"], true);

    // It has no parameters of its own, so it samples with the catalogue's (R1's card:
    // temperature 0.6, top_p 0.95): seeded, as if they were asked for.
    let sample = |options: Value| {
        let mut options = options;
        options["seed"] = 42.into();
        options["num_predict"] = 16.into();
        let (status, body) = daemon.post(
            "/api/generate",
            &serde_json::json!({"model": "deepseek-r1:14b", "prompt": "Hello", "raw": true,
                                "stream": false, "options": options}),
        );
        assert_eq!(status, 200, "{body}");
        body["response"].as_str().unwrap().to_owned()
    };
    let default = sample(serde_json::json!({}));
    assert_eq!(
        default,
        sample(serde_json::json!({"temperature": 0.6, "top_p": 0.95}))
    );
    assert_ne!(
        default,
        sample(serde_json::json!({"temperature": 1.5, "top_p": 1.0}))
    );

    // And its catalogue partner drafts for it.
    let (status, body) = daemon.post(
        "/api/generate",
        &serde_json::json!({"model": "deepseek-r1:14b", "prompt": "Hello", "raw": true,
                            "stream": false, "options": {"temperature": 0, "num_predict": 32}}),
    );
    assert_eq!(status, 200, "{body}");
    assert!(body["draft_count"].as_u64().unwrap_or(0) > 0, "{body}");

    let output = daemon.whale(["catalog"]).output().expect("whale catalog");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    let header = text.lines().next().unwrap_or_default();
    for column in ["NAME", "SIZE", "ARCH", "CONTEXT", "FITS", "PULLED"] {
        assert!(header.contains(column), "{text}");
    }
    let row = |name: &str| {
        text.lines()
            .find(|line| line.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    assert_eq!(
        row("deepseek-r1:671b")[1..],
        ["404", "GB", "deepseek2", "160K", "no", "no"]
    );
    assert_eq!(
        row("deepseek-r1:14b")[1..],
        ["9", "GB", "qwen2", "128K", "yes", "yes"]
    );
    assert_eq!(
        row("deepseek-r1:32b")[1..],
        ["20", "GB", "qwen2", "128K", "yes", "no"]
    );

    let output = daemon
        .whale(["list", "--available", "deepseek-v3"])
        .output()
        .expect("whale list --available");
    let text = String::from_utf8_lossy(&output.stdout);
    let names: Vec<&str> = text
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        [
            "deepseek-v3:671b",
            "deepseek-v3.1:671b",
            "deepseek-v3.2:671b"
        ],
        "{text}"
    );
}

/// A catalogue name whose source is another tag (`deepseek-r1:8b-0528` is the library's
/// `deepseek-r1:8b-0528-qwen3-q4_K_M`) is fetched from there and kept under the catalogue's
/// name, digest for digest; the source tag itself is not added.
#[test]
fn a_catalogue_name_pulls_its_source() {
    let registry = Whaled::start();
    registry.create_from_gguf("deepseek-r1:8b-0528-qwen3-q4_K_M", &fixtures::qwen2());
    let daemon = Whaled::builder()
        .env("WHALE_REGISTRY_MIRROR", registry.url())
        .start();
    let lines = daemon.stream(
        "/api/pull",
        &serde_json::json!({"model": "deepseek-r1:8b-0528", "insecure": true}),
    );
    assert_eq!(
        lines.last().unwrap()["status"],
        "success",
        "pull: {lines:?}"
    );
    let digest = |daemon: &Whaled, name: &str| {
        let (_, tags) = daemon.get("/api/tags");
        tags["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|model| model["name"] == name)
            .map(|model| model["digest"].as_str().unwrap().to_owned())
    };
    let pulled = digest(&daemon, "deepseek-r1:8b-0528").expect("pulled under its catalogue name");
    assert_eq!(
        Some(pulled),
        digest(&registry, "deepseek-r1:8b-0528-qwen3-q4_K_M")
    );
    assert_eq!(digest(&daemon, "deepseek-r1:8b-0528-qwen3-q4_K_M"), None);
    let (status, body) = daemon.post(
        "/api/generate",
        &serde_json::json!({"model": "deepseek-r1:8b-0528", "prompt": "Hi", "raw": true,
                            "stream": false, "options": {"num_predict": 4}}),
    );
    assert_eq!(status, 200, "{body}");
}
