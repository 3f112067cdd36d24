//! `Store::verify`: every blob re-hashed, every manifest checked against the blobs; repair
//! removes what is corrupt so that a pull fetches it again.

mod support;

use std::sync::{Arc, Mutex};

use support::random_model;
use whale_registry::{ModelRef, Store};

#[tokio::test]
async fn a_whole_store_verifies_clean_and_damage_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let first = random_model(64 * 1024);
    let second = random_model(32 * 1024);
    let one = ModelRef::parse("one:1").unwrap();
    let two = ModelRef::parse("two:2").unwrap();
    first.put(&store, &one).await;
    second.put(&store, &two).await;

    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let report = store
        .verify(false, move |digest, bytes| {
            sink.lock().unwrap().push((digest.clone(), bytes));
        })
        .await
        .unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.blobs, 8);
    let total: u64 = first
        .blobs
        .iter()
        .chain(&second.blobs)
        .map(|(_, b)| b.len() as u64)
        .sum();
    assert_eq!(report.bytes, total);
    assert_eq!(seen.lock().unwrap().len(), 8);

    // One blob flipped on disk, one gone, one manifest that is not one, a partial download.
    let (flipped, _) = &first.blobs[0];
    let path = store.blob_path(flipped);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let (gone, _) = &second.blobs[1];
    std::fs::remove_file(store.blob_path(gone)).unwrap();
    let bogus = dir
        .path()
        .join("manifests/registry.ollama.ai/library/bogus/latest");
    std::fs::create_dir_all(bogus.parent().unwrap()).unwrap();
    std::fs::write(&bogus, b"{not json").unwrap();
    let partial = dir
        .path()
        .join(format!("blobs/sha256-{}-partial", "ab".repeat(32)));
    std::fs::write(&partial, b"half").unwrap();

    let report = store.verify(false, |_, _| {}).await.unwrap();
    assert!(!report.is_clean());
    assert_eq!(report.corrupt, vec![flipped.clone()]);
    let mut missing = report.missing.clone();
    missing.sort_by_key(|(reference, _)| reference.short());
    assert_eq!(
        missing,
        vec![(one.clone(), flipped.clone()), (two.clone(), gone.clone())]
    );
    assert_eq!(report.invalid_manifests, vec![bogus.clone()]);
    assert_eq!(report.leftovers, vec![partial.clone()]);
    assert!(store.has_blob(flipped), "verify alone changes nothing");

    // Repair removes the corrupt blob; the models still lack it until pulled again.
    let report = store.verify(true, |_, _| {}).await.unwrap();
    assert_eq!(report.corrupt, vec![flipped.clone()]);
    assert!(!store.has_blob(flipped));
    let report = store.verify(false, |_, _| {}).await.unwrap();
    assert!(report.corrupt.is_empty());
    assert_eq!(report.missing.len(), 2);
}
