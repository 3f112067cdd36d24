//! Helpers shared by the fuzz targets.

/// Cuts `body` into chunks whose sizes come from `sizes` (each byte a size of 1 to 256,
/// cycled), so the fuzzer explores chunk boundaries as well as contents.
pub fn chunks<'a>(sizes: &[u8], mut body: &'a [u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut index = 0;
    while !body.is_empty() {
        let size = sizes
            .get(index % sizes.len().max(1))
            .map_or(body.len(), |&size| usize::from(size) + 1)
            .min(body.len());
        let (chunk, rest) = body.split_at(size);
        out.push(chunk);
        body = rest;
        index += 1;
    }
    out
}

/// Splits fuzz input into a chunk-size prefix and a body: the first byte says how many size
/// bytes follow (at most 16).
pub fn sizes_and_body(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return (&[], &[]);
    };
    rest.split_at(usize::from(count % 17).min(rest.len()))
}

/// The lines of a whole body as a stream splitter must give them: split at `\n`, trimmed of
/// ASCII whitespace, blank ones dropped.
pub fn reference_lines(body: &[u8]) -> Vec<&[u8]> {
    body.split(|&b| b == b'\n')
        .map(<[u8]>::trim_ascii)
        .filter(|line| !line.is_empty())
        .collect()
}

use whale_format::chat::template::{SpecialTokens, ToolCall};
use whale_format::chat::{ChatMessage, ChatTemplate, RenderInput, TemplateSyntax, ThinkLevel};

/// Compiles `source` when it is written in `syntax` and renders a small conversation with it
/// in the ways the daemon does: with and without tools and thinking, and as fill-in-the-middle.
/// Errors are fine; panics, hangs and unbounded memory are not.
pub fn compile_and_render(source: &str, syntax: TemplateSyntax) {
    if TemplateSyntax::detect(source) != syntax {
        return;
    }
    let special = SpecialTokens {
        bos: Some("<s>".to_owned()),
        eos: Some("</s>".to_owned()),
    };
    let Ok(template) = ChatTemplate::new(source, special) else {
        return;
    };
    let mut assistant = ChatMessage::new("assistant", "Let me look.");
    assistant.thinking = Some("The user wants the weather.".to_owned());
    assistant.tool_calls.push(ToolCall {
        name: "get_weather".to_owned(),
        arguments: serde_json::json!({"city": "Paris"}),
    });
    let mut tool = ChatMessage::new("tool", "{\"temp\": 21}");
    tool.tool_name = Some("get_weather".to_owned());
    let messages = [
        ChatMessage::new("system", "You are terse."),
        ChatMessage::new("user", "Weather in Paris?"),
        assistant,
        tool,
        ChatMessage::new("user", "Thanks"),
    ];
    let tools = [serde_json::json!({
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}
        }
    })];
    let plain = RenderInput {
        messages: &messages,
        tools: None,
        add_generation_prompt: true,
        think: None,
        think_level: None,
    };
    let full = RenderInput {
        tools: Some(&tools),
        think: Some(true),
        think_level: Some(ThinkLevel::High),
        ..plain
    };
    for input in [plain, full] {
        if let Ok(prompt) = template.render(&input) {
            let _ = template.starts_with_bos(&prompt);
        }
    }
    if template.capabilities().insert {
        let _ = template.render_insert("fn main() {", "}", &plain);
    }
}
