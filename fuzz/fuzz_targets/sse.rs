#![no_main]

use libfuzzer_sys::fuzz_target;
use whale_api::stream::{LineSplitter, sse_data};
use whale_fuzz::{chunks, reference_lines, sizes_and_body};

fuzz_target!(|data: &[u8]| {
    let (sizes, body) = sizes_and_body(data);
    let mut splitter = LineSplitter::new();
    let mut events = Vec::new();
    for chunk in chunks(sizes, body) {
        splitter.push(chunk);
        while let Some(line) = splitter.next_line() {
            events.extend(sse_data(line).map(<[u8]>::to_vec));
        }
    }
    events.extend(
        splitter
            .finish()
            .as_deref()
            .and_then(sse_data)
            .map(<[u8]>::to_vec),
    );
    let expected: Vec<&[u8]> = reference_lines(body)
        .into_iter()
        .filter_map(sse_data)
        .collect();
    assert_eq!(events, expected);
    for event in &events {
        if event != b"[DONE]" {
            let _ = serde_json::from_slice::<serde_json::Value>(event);
        }
    }
});
