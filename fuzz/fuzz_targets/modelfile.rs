#![no_main]

use libfuzzer_sys::fuzz_target;
use whale_api::modelfile;

fuzz_target!(|text: &str| {
    let Ok(parsed) = modelfile::parse(text) else {
        return;
    };
    // Written out and read back, a Modelfile says the same thing. Compared as text because
    // a parameter may be NaN, which is not equal to itself.
    let written = parsed.to_string();
    let again = modelfile::parse(&written)
        .unwrap_or_else(|error| panic!("the written Modelfile does not parse: {error}\n{written}"));
    assert_eq!(again.to_string(), written);
});
