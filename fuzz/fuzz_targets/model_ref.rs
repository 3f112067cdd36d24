#![no_main]

use libfuzzer_sys::fuzz_target;
use whale_registry::reference::ModelRef;

fuzz_target!(|name: &str| {
    let Ok(parsed) = ModelRef::parse(name) else {
        return;
    };
    // The full name and the short one `list` prints must both name the same model again.
    let full = parsed.to_string();
    let again = ModelRef::parse(&full).expect("the full name parses");
    assert_eq!(again, parsed, "{full}");
    let short = parsed.short();
    let from_short = ModelRef::parse(&short).expect("the short name parses");
    assert!(from_short.eq_fold(&parsed), "{short} vs {full}");
    let key = ModelRef::parse(&parsed.key()).expect("the key parses");
    assert!(key.eq_fold(&parsed), "{} vs {full}", parsed.key());
    // Every part is one path component under the store root: no `..`, no separators.
    let path = parsed.manifest_path();
    assert_eq!(path.components().count(), 5, "{}", path.display());
    assert!(
        path.components()
            .all(|part| matches!(part, std::path::Component::Normal(_))),
        "{}",
        path.display()
    );
});
