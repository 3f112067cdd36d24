#![no_main]

use libfuzzer_sys::fuzz_target;
use whale_registry::digest::Digest;

fuzz_target!(|value: &str| {
    let Ok(digest) = Digest::parse(value) else {
        return;
    };
    let shown = digest.to_string();
    assert_eq!(
        Digest::parse(&shown).expect("the display form parses"),
        digest
    );
    assert_eq!(
        Digest::parse(&digest.file_name()).expect("the file name parses"),
        digest
    );
    assert_eq!(digest.hex().len(), 64);
    assert!(digest.hex().starts_with(digest.short()));
});
