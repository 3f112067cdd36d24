#![no_main]

use libfuzzer_sys::fuzz_target;
use whale_registry::manifest::Manifest;

fuzz_target!(|bytes: &[u8]| {
    let Ok(manifest) = Manifest::parse(bytes) else {
        return;
    };
    let json = manifest.to_json();
    let again = Manifest::parse(&json).expect("a written manifest parses");
    assert_eq!(again, manifest);
    assert_eq!(again.to_json(), json);
    let _ = manifest.total_size();
    let _ = manifest.content_type();
});
