#![no_main]

use libfuzzer_sys::fuzz_target;
use whale_api::stream::LineSplitter;
use whale_fuzz::{chunks, reference_lines, sizes_and_body};

fuzz_target!(|data: &[u8]| {
    let (sizes, body) = sizes_and_body(data);
    let mut splitter = LineSplitter::new();
    let mut lines = Vec::new();
    for chunk in chunks(sizes, body) {
        splitter.push(chunk);
        while let Some(line) = splitter.next_line() {
            lines.push(line.to_vec());
        }
    }
    lines.extend(splitter.finish());
    assert_eq!(lines, reference_lines(body));
    assert!(splitter.pending().is_empty());
    // What the client does with each line; it must not panic on any bytes.
    for line in &lines {
        let _ = serde_json::from_slice::<whale_api::ChatResponse>(line);
    }
});
