#![no_main]

use libfuzzer_sys::fuzz_target;
use whale_format::gguf::GgufFile;

fuzz_target!(|data: &[u8]| {
    // The last byte picks how the claimed file size relates to the bytes there are: the header
    // reader must trust neither, so both a short read and a file that claims to be huge occur.
    let Some((&mode, bytes)) = data.split_last() else {
        return;
    };
    let file_size = match mode % 3 {
        0 => bytes.len() as u64,
        1 => u64::from(mode) << 32,
        _ => u64::MAX,
    };
    let parsed = if mode & 0x80 == 0 {
        GgufFile::parse(bytes, file_size)
    } else {
        GgufFile::parse_full(bytes, file_size)
    };
    if let Ok(gguf) = parsed {
        let _ = gguf.model_info_json(mode & 0x40 != 0);
        let _ = gguf.parameter_size_label();
        let _ = gguf.weights_bytes();
        let _ = gguf.chat_template();
    }
});
