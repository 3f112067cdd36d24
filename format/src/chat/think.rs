//! The `think` request policy for DeepSeek models: what a request's `think` value means for the
//! template, the prompt and the reasoning splitter.
//!
//! Ollama's rules (reference §1.7): an unset `think` on a thinking-capable model means on; `true`
//! and levels mean on; a model whose template knows no reasoning answers `think: true` with
//! `"<model>" does not support thinking`. DeepSeek specifics: R1 templates end the generation
//! prompt with `<think>\n`, so the output starts inside the block, and they ignore the
//! `thinking` switch — to turn reasoning off whale closes the block itself with an empty
//! `<think>\n\n</think>\n\n`, the shape R1 produces when it skips reasoning. V3.1 templates read
//! `thinking` and end with `</think>` when it is off; nothing needs adding then.

use super::ChatError;
use super::reasoning::{THINK_CLOSE, THINK_OPEN, ThinkingMode};
use super::template::TemplateCapabilities;

/// The assistant turn opener of DeepSeek templates.
const ASSISTANT_TAG: &str = "<｜Assistant｜>";

/// A reasoning effort level (Ollama accepts these strings for `think`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThinkLevel {
    Low,
    Medium,
    High,
    Max,
}

impl ThinkLevel {
    /// The level's name, as Ollama spells it and as a Jinja template's `reasoning_effort`
    /// (DeepSeek V4's, gpt-oss's) reads it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Low => "low",
            Self::Medium => "medium",
            Self::High => "high",
            Self::Max => "max",
        }
    }
}

/// A request's `think` field.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Think {
    /// The field was absent: the model's default (on, for a thinking model).
    #[default]
    Unset,
    On,
    Off,
    Level(ThinkLevel),
}

impl Think {
    /// Whether the request asked for reasoning explicitly (`true` or a level).
    fn requested(self) -> bool {
        matches!(self, Self::On | Self::Level(_))
    }
}

/// Decided before rendering: the value for the template's `thinking` / `enable_thinking`.
///
/// Fails with [`ChatError::ThinkingUnsupported`] when reasoning is requested from a model whose
/// template cannot show it.
pub fn template_switch(
    model: &str,
    capabilities: TemplateCapabilities,
    think: Think,
) -> Result<Option<bool>, ChatError> {
    if !capabilities.thinking {
        if think.requested() {
            return Err(ChatError::ThinkingUnsupported {
                model: model.to_owned(),
            });
        }
        return Ok(None);
    }
    Ok(Some(think != Think::Off))
}

/// Decided after rendering: how to finish the prompt and how to read the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThinkPlan {
    /// Text to append to the rendered prompt (an empty think block when reasoning is off).
    pub prompt_suffix: String,
    /// The output starts inside an open `<think>` block (construct the splitter with it).
    pub starts_inside: bool,
    /// What the splitter does with reasoning text.
    pub mode: ThinkingMode,
}

/// Plans a generation from the rendered `prompt`; call [`template_switch`] first (its error is
/// repeated here so a caller cannot skip it).
pub fn plan(
    model: &str,
    capabilities: TemplateCapabilities,
    think: Think,
    prompt: &str,
) -> Result<ThinkPlan, ChatError> {
    let Some(enabled) = template_switch(model, capabilities, think)? else {
        // No reasoning in the template: whatever the model writes is content, as Ollama leaves
        // it for models without the thinking capability.
        return Ok(ThinkPlan {
            prompt_suffix: String::new(),
            starts_inside: false,
            mode: ThinkingMode::Inline,
        });
    };
    let open_at_end = ends_inside_think(prompt);
    if enabled {
        return Ok(ThinkPlan {
            prompt_suffix: String::new(),
            starts_inside: open_at_end,
            mode: ThinkingMode::Separate,
        });
    }
    let prompt_suffix = if open_at_end {
        // `<think>` + its whitespace so far, completed to `<think>\n\n</think>\n\n`.
        let whitespace = &prompt[prompt.trim_end().len()..];
        let missing = "\n\n".strip_prefix(whitespace).unwrap_or("");
        format!("{missing}{THINK_CLOSE}\n\n")
    } else if prompt.ends_with(ASSISTANT_TAG) {
        format!("{THINK_OPEN}\n\n{THINK_CLOSE}\n\n")
    } else {
        String::new()
    };
    Ok(ThinkPlan {
        prompt_suffix,
        starts_inside: false,
        mode: ThinkingMode::Drop,
    })
}

/// Whether the prompt ends with an opening `<think>` (and whitespace): generation continues
/// inside the reasoning block.
pub fn ends_inside_think(prompt: &str) -> bool {
    prompt.trim_end().ends_with(THINK_OPEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    const THINKING: TemplateCapabilities = TemplateCapabilities {
        tools: false,
        thinking: true,
        insert: false,
    };
    const PLAIN: TemplateCapabilities = TemplateCapabilities {
        tools: false,
        thinking: false,
        insert: false,
    };
    const R1_PROMPT: &str = "<｜User｜>hi<｜Assistant｜><think>\n";

    #[test]
    fn thinking_on_by_default_and_primed_prompt_starts_inside() {
        for think in [Think::Unset, Think::On, Think::Level(ThinkLevel::High)] {
            assert_eq!(template_switch("m", THINKING, think).unwrap(), Some(true));
            let plan = plan("m", THINKING, think, R1_PROMPT).unwrap();
            assert!(plan.starts_inside);
            assert_eq!(plan.mode, ThinkingMode::Separate);
            assert_eq!(plan.prompt_suffix, "");
        }
        assert!(
            !plan("m", THINKING, Think::On, "<｜Assistant｜>")
                .unwrap()
                .starts_inside
        );
    }

    #[test]
    fn think_off_closes_an_r1_block() {
        let plan = plan("m", THINKING, Think::Off, R1_PROMPT).unwrap();
        assert_eq!(
            format!("{R1_PROMPT}{}", plan.prompt_suffix),
            "<｜User｜>hi<｜Assistant｜><think>\n\n</think>\n\n"
        );
        assert!(!plan.starts_inside);
        assert_eq!(plan.mode, ThinkingMode::Drop);
    }

    #[test]
    fn think_off_adds_an_empty_block_after_a_bare_assistant_tag() {
        let plan = plan("m", THINKING, Think::Off, "<｜User｜>hi<｜Assistant｜>").unwrap();
        assert_eq!(plan.prompt_suffix, "<think>\n\n</think>\n\n");
    }

    #[test]
    fn think_off_leaves_a_v31_prompt_alone() {
        assert_eq!(
            template_switch("m", THINKING, Think::Off).unwrap(),
            Some(false)
        );
        let plan = plan(
            "m",
            THINKING,
            Think::Off,
            "<｜User｜>hi<｜Assistant｜></think>",
        )
        .unwrap();
        assert_eq!(plan.prompt_suffix, "");
    }

    #[test]
    fn model_without_thinking_refuses_think_true() {
        let error = template_switch("deepseek-v3:671b", PLAIN, Think::On).unwrap_err();
        assert_eq!(
            error.to_string(),
            "\"deepseek-v3:671b\" does not support thinking"
        );
        assert!(plan("m", PLAIN, Think::Level(ThinkLevel::Low), "").is_err());
        let plan = plan("m", PLAIN, Think::Unset, "<｜Assistant｜>").unwrap();
        assert_eq!(plan.mode, ThinkingMode::Inline);
        assert_eq!(plan.prompt_suffix, "");
        assert!(template_switch("m", PLAIN, Think::Off).unwrap().is_none());
    }
}
