//! A chat with one model: its settings (system message, options, think, format, keep-alive)
//! and its history, and the turn that sends them with `POST /api/chat` (`stream: true`) and
//! renders the answer as it streams. `whale run MODEL PROMPT` is a conversation of one turn;
//! the REPL keeps one across turns.

use std::time::Duration;

use futures::StreamExt as _;
use whale_api::{ChatRequest, Client, Format, KeepAlive, Message, Options, Think};

use crate::error::{Error, not_found};
use crate::render::Style;
use crate::render::stats::Metrics;
use crate::render::text::Answer;

/// A conversation's settings and history.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    pub model: String,
    pub system: Option<String>,
    /// Runtime options set for this session (`/set parameter`), typed by whale-api.
    pub options: Options,
    pub think: Option<Think>,
    pub format: Option<Format>,
    pub keep_alive: Option<KeepAlive>,
    pub hide_thinking: bool,
    pub verbose: bool,
    /// The user and assistant messages so far (the system message is sent from `system`).
    pub history: Vec<Message>,
}

/// How a turn ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Answered,
    /// Ctrl-C: the stream was dropped, which closes the connection and frees the daemon's slot.
    Cancelled,
}

impl Conversation {
    /// Sends `prompt` with the history, prints the answer, and on success appends both to the
    /// history. A cancelled turn leaves the history as it was.
    pub async fn turn(
        &mut self,
        client: &Client,
        prompt: &str,
        style: Style,
    ) -> Result<Outcome, Error> {
        let mut messages = Vec::with_capacity(self.history.len() + 2);
        if let Some(system) = &self.system {
            messages.push(Message::new("system", system.as_str()));
        }
        messages.extend(self.history.iter().cloned());
        messages.push(Message::new("user", prompt));
        let request = self.request(messages);

        // Reasoning is shown to a person reading along; into a pipe only when asked for.
        let show_thinking = !self.hide_thinking && (style.terminal || self.think.is_some());
        let mut answer = Answer::new(std::io::stdout(), show_thinking, style.color);
        // Ctrl-C is watched from the request on: while the model loads, too.
        let interrupt = tokio::signal::ctrl_c();
        tokio::pin!(interrupt);
        let mut stream = tokio::select! {
            stream = client.chat_stream(&request) => {
                stream.map_err(|error| not_found(error, &self.model))?
            }
            _ = &mut interrupt => return Ok(Outcome::Cancelled),
        };
        let mut reply = Message::new("assistant", "");
        let mut thinking = String::new();
        let mut metrics = Metrics::default();
        loop {
            let chunk = tokio::select! {
                chunk = stream.next() => chunk,
                _ = &mut interrupt => {
                    drop(stream);
                    answer.finish()?;
                    return Ok(Outcome::Cancelled);
                }
            };
            let Some(chunk) = chunk else { break };
            let chunk = chunk?;
            if let Some(text) = chunk.message.thinking.as_deref() {
                answer.thinking(text)?;
                thinking.push_str(text);
            }
            answer.content(&chunk.message.content)?;
            reply.content.push_str(&chunk.message.content);
            if chunk.done {
                metrics = metrics_of(&chunk.metrics);
                break;
            }
        }
        answer.finish()?;
        if self.verbose {
            crate::output::note(metrics.summary().trim_end());
        }
        reply.thinking = (!thinking.is_empty()).then_some(thinking);
        self.history.push(Message::new("user", prompt));
        self.history.push(reply);
        Ok(Outcome::Answered)
    }

    /// Loads the model without generating (an empty chat), so the REPL's first answer does
    /// not wait for the load and load errors show before the prompt.
    pub async fn load(&self, client: &Client) -> Result<(), Error> {
        let request = self.request(Vec::new());
        let mut stream = client
            .chat_stream(&request)
            .await
            .map_err(|error| not_found(error, &self.model))?;
        while let Some(chunk) = stream.next().await {
            chunk?;
        }
        Ok(())
    }

    /// Sets a `/set parameter` value: `stop` takes every value (replacing earlier ones),
    /// other parameters one value, typed and checked by whale-api.
    pub fn set_parameter(&mut self, name: &str, values: &[String]) -> Result<(), Error> {
        let mut options = self.options.clone();
        if name == "stop" {
            options.stop = None;
            for value in values {
                options.set_parameter(name, value)?;
            }
        } else {
            options.set_parameter(name, &values.join(" "))?;
        }
        self.options = options;
        Ok(())
    }

    fn request(&self, messages: Vec<Message>) -> ChatRequest {
        ChatRequest {
            model: self.model.clone(),
            messages,
            stream: Some(true),
            options: (self.options != Options::default()).then(|| self.options.clone()),
            think: self.think,
            format: self.format.clone(),
            keep_alive: self.keep_alive,
            ..ChatRequest::default()
        }
    }
}

fn metrics_of(metrics: &whale_api::Metrics) -> Metrics {
    let nanos = |value: Option<u64>| Duration::from_nanos(value.unwrap_or(0));
    Metrics {
        total_duration: nanos(metrics.total_duration),
        load_duration: nanos(metrics.load_duration),
        prompt_eval_count: metrics.prompt_eval_count.unwrap_or(0),
        prompt_eval_duration: nanos(metrics.prompt_eval_duration),
        eval_count: metrics.eval_count.unwrap_or(0),
        eval_duration: nanos(metrics.eval_duration),
        draft_count: metrics.draft_count.unwrap_or(0),
        draft_accepted_count: metrics.draft_accepted_count.unwrap_or(0),
    }
}

/// Parses `--format`: `json`, or a JSON schema object given inline.
pub fn parse_format(text: &str) -> Result<Format, Error> {
    if text.trim() == "json" {
        return Ok(Format::Json);
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(schema @ serde_json::Value::Object(_)) => Ok(Format::Schema(schema)),
        _ => Err(Error::Usage(format!(
            "invalid format '{text}': use json or a JSON schema object"
        ))),
    }
}

/// Parses `--keepalive` (`5m`, `1h30m`, `0`, `-1` for ever).
pub fn parse_keep_alive(text: &str) -> Result<KeepAlive, Error> {
    KeepAlive::parse(text).map_err(|reason| Error::Usage(format!("invalid keep-alive: {reason}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_typed_by_the_api() {
        let mut conversation = Conversation::default();
        conversation
            .set_parameter("num_ctx", &["8192".into()])
            .unwrap();
        conversation
            .set_parameter("temperature", &["0.6".into()])
            .unwrap();
        conversation
            .set_parameter("stop", &["<a>".into(), "</b>".into()])
            .unwrap();
        conversation.set_parameter("stop", &["<c>".into()]).unwrap();
        assert_eq!(conversation.options.num_ctx, Some(8192));
        assert_eq!(conversation.options.stop, Some(vec!["<c>".to_owned()]));
        let request = serde_json::to_value(conversation.request(Vec::new())).unwrap();
        assert_eq!(request["options"]["temperature"], serde_json::json!(0.6));
        // A wrong value leaves the options as they were.
        assert!(
            conversation
                .set_parameter("num_ctx", &["lots".into()])
                .is_err()
        );
        assert!(
            conversation
                .set_parameter("colour", &["blue".into()])
                .is_err()
        );
        assert_eq!(conversation.options.num_ctx, Some(8192));
    }

    #[test]
    fn requests_stream_and_carry_the_settings() {
        let conversation = Conversation {
            model: "deepseek-r1:1.5b".into(),
            think: Some(Think::Enabled(false)),
            format: Some(Format::Json),
            keep_alive: Some(parse_keep_alive("10m").unwrap()),
            ..Conversation::default()
        };
        let request =
            serde_json::to_value(conversation.request(vec![Message::new("user", "hi")])).unwrap();
        assert_eq!(request["stream"], serde_json::json!(true));
        assert_eq!(request["think"], serde_json::json!(false));
        assert_eq!(request["format"], serde_json::json!("json"));
        assert!(request["keep_alive"].is_string() || request["keep_alive"].is_number());
        assert!(request.get("options").is_none());
    }

    #[test]
    fn formats() {
        assert_eq!(parse_format("json").unwrap(), Format::Json);
        assert!(matches!(
            parse_format(r#"{"type":"object"}"#).unwrap(),
            Format::Schema(_)
        ));
        assert!(matches!(parse_format("xml"), Err(Error::Usage(_))));
    }
}
