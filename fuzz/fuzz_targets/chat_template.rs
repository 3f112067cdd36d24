#![no_main]

use libfuzzer_sys::fuzz_target;
use whale_format::chat::TemplateSyntax;

fuzz_target!(|source: &str| whale_fuzz::compile_and_render(source, TemplateSyntax::Jinja));
