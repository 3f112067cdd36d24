//! JSON-schema `format`s become GBNF grammars through llama.cpp's own converter, so
//! structured output matches what llama-server accepts.

use super::EngineError;

/// The GBNF grammar for a JSON schema (`format: {...}` in a request).
pub fn grammar_from_json_schema(schema: &serde_json::Value) -> Result<String, EngineError> {
    let text = serde_json::to_string(schema)
        .map_err(|error| EngineError::InvalidInput(format!("format schema: {error}")))?;
    llama_cpp_2::json_schema_to_grammar(&text)
        .map_err(|error| EngineError::InvalidInput(format!("format schema: {error}")))
}
