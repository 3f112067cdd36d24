//! Go template tree → minijinja source.
//!
//! The output runs in an environment without whitespace control of its own (trims were applied
//! while lexing) and with [`super::runtime`] registered. Names in the output:
//! - `_root`: the data (`$`); the dot is `_root`, a loop element (`_e1`) or a `with` value;
//! - `_v`: a `namespace()` holding every Go variable under a unique slot (`_v.last_3`), so that
//!   `$x = …` inside a `range` changes the variable outside it, as in Go;
//! - `go_field(x, "A", "B")`: `x.A.B` with Go's rules (a missing struct field or a field of a
//!   list is an error, a missing map key is nil); `go_text(x)`: Go's printing of an action's
//!   value; `go_range(x)`: `[key, element]` pairs; `eq`, `len`, `index`, `printf`, `json`…: the
//!   functions of the same name.
//!
//! `and`, `or` and `not` become Jinja's operators, which short-circuit and return an operand
//! as Go's do, and whose truthiness matches Go's for the values templates see.

use std::fmt::Write as _;

use super::parse::{Command, ControlKind, Node, Operand, ParseError, Pipeline};

type Result<T> = std::result::Result<T, ParseError>;

/// Functions a template may call, with their accepted argument counts.
const FUNCTIONS: &[(&str, usize, usize)] = &[
    ("and", 1, usize::MAX),
    ("or", 1, usize::MAX),
    ("not", 1, 1),
    ("eq", 2, usize::MAX),
    ("ne", 2, 2),
    ("lt", 2, 2),
    ("le", 2, 2),
    ("gt", 2, 2),
    ("ge", 2, 2),
    ("len", 1, 1),
    ("index", 1, usize::MAX),
    ("slice", 1, 4),
    ("print", 0, usize::MAX),
    ("println", 0, usize::MAX),
    ("printf", 1, usize::MAX),
    ("json", 1, 1),
    ("currentDate", 0, usize::MAX),
    ("yesterdayDate", 0, usize::MAX),
    ("toTypeScriptType", 1, 1),
];

/// Go built-ins Ollama templates never use; named in the error rather than "not defined".
const UNSUPPORTED_FUNCTIONS: &[&str] = &["html", "js", "urlquery", "call"];

/// Translates a parsed template into minijinja source.
pub(super) fn translate(nodes: &[Node]) -> Result<String> {
    let mut translator = Translator {
        out: String::from("{% set _v = namespace() %}"),
        scopes: vec![Vec::new()],
        slots: 0,
        loops: 0,
    };
    translator.nodes(nodes, "_root")?;
    Ok(translator.out)
}

struct Translator {
    out: String,
    /// Visible Go variables, innermost scope last: (`$name`, slot expression).
    scopes: Vec<Vec<(String, String)>>,
    /// Counter making slot and loop variable names unique.
    slots: usize,
    loops: usize,
}

impl Translator {
    fn nodes(&mut self, nodes: &[Node], dot: &str) -> Result<()> {
        for node in nodes {
            self.node(node, dot)?;
        }
        Ok(())
    }

    fn node(&mut self, node: &Node, dot: &str) -> Result<()> {
        match node {
            Node::Text(text) => self.text(text),
            Node::Action(pipe) if pipe.variables.is_empty() => {
                let value = self.pipeline(pipe, dot)?;
                write!(self.out, "{{{{ go_text({value}) }}}}").expect("writing to a String");
            }
            Node::Action(pipe) => {
                self.bind(pipe, dot)?;
            }
            Node::Control {
                kind: ControlKind::Range,
                pipe,
                body,
                otherwise,
            } => self.range(pipe, body, otherwise, dot)?,
            Node::Control {
                kind,
                pipe,
                body,
                otherwise,
            } => {
                self.scopes.push(Vec::new());
                let value = if pipe.variables.is_empty() {
                    self.pipeline(pipe, dot)?
                } else {
                    self.bind(pipe, dot)?
                };
                let value = if *kind == ControlKind::With && pipe.variables.is_empty() {
                    // The dot of a `with` body is the value: keep it in a slot of its own.
                    let slot = self.slot("with");
                    write!(self.out, "{{% set {slot} = {value} %}}").expect("writing to a String");
                    slot
                } else {
                    value
                };
                write!(self.out, "{{% if {value} %}}").expect("writing to a String");
                let inner_dot = if *kind == ControlKind::With {
                    value.as_str()
                } else {
                    dot
                };
                self.nodes(body, inner_dot)?;
                if !otherwise.is_empty() {
                    self.out.push_str("{% else %}");
                    self.nodes(otherwise, dot)?;
                }
                self.out.push_str("{% endif %}");
                self.scopes.pop();
            }
            Node::Break => self.out.push_str("{% break %}"),
            Node::Continue => self.out.push_str("{% continue %}"),
        }
        Ok(())
    }

    /// Text as it is, or as a string literal when Jinja could read a delimiter in it.
    fn text(&mut self, text: &str) {
        if text.contains('{') {
            let literal = serde_json::to_string(text).expect("strings serialise");
            write!(self.out, "{{{{ {literal} }}}}").expect("writing to a String");
        } else {
            self.out.push_str(text);
        }
    }

    /// `range [$i,] [$e :=] pipeline`: a `for` over `go_range` pairs.
    fn range(
        &mut self,
        pipe: &Pipeline,
        body: &[Node],
        otherwise: &[Node],
        dot: &str,
    ) -> Result<()> {
        self.scopes.push(Vec::new());
        let value = self.pipeline(pipe, dot)?;
        self.loops += 1;
        let (key, element) = (format!("_k{}", self.loops), format!("_e{}", self.loops));
        write!(
            self.out,
            "{{% for {key}, {element} in go_range({value}) %}}"
        )
        .expect("writing to a String");
        let sources: &[&str] = match pipe.variables.len() {
            1 => &[&element],
            _ => &[&key, &element],
        };
        for (variable, source) in pipe.variables.iter().zip(sources) {
            let slot = self.target(variable, pipe.assign, pipe.line)?;
            write!(self.out, "{{% set {slot} = {source} %}}").expect("writing to a String");
        }
        self.nodes(body, &element)?;
        if !otherwise.is_empty() {
            self.out.push_str("{% else %}");
            self.nodes(otherwise, dot)?;
        }
        self.out.push_str("{% endfor %}");
        self.scopes.pop();
        Ok(())
    }

    /// `$x := pipeline` / `$x = pipeline`: sets the slot, returns it (the pipeline's value).
    fn bind(&mut self, pipe: &Pipeline, dot: &str) -> Result<String> {
        if pipe.variables.len() > 1 {
            return Err(ParseError {
                line: pipe.line,
                message: "too many declarations".to_owned(),
            });
        }
        let value = self.pipeline(pipe, dot)?;
        let slot = self.target(&pipe.variables[0], pipe.assign, pipe.line)?;
        write!(self.out, "{{% set {slot} = {value} %}}").expect("writing to a String");
        Ok(slot)
    }

    /// The slot a declaration creates, or the one an assignment changes.
    fn target(&mut self, variable: &str, assign: bool, line: usize) -> Result<String> {
        if assign {
            return self.lookup(variable, line);
        }
        let slot = self.slot(variable.trim_start_matches('$'));
        self.scopes
            .last_mut()
            .expect("the template scope is never popped")
            .push((variable.to_owned(), slot.clone()));
        Ok(slot)
    }

    fn lookup(&self, variable: &str, line: usize) -> Result<String> {
        if variable == "$" {
            return Ok("_root".to_owned());
        }
        self.scopes
            .iter()
            .rev()
            .flat_map(|scope| scope.iter().rev())
            .find(|(name, _)| name == variable)
            .map(|(_, slot)| slot.clone())
            .ok_or_else(|| ParseError {
                line,
                message: format!("undefined variable {variable:?}"),
            })
    }

    fn slot(&mut self, name: &str) -> String {
        self.slots += 1;
        let name: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        format!("_v.{name}_{}", self.slots)
    }

    fn pipeline(&mut self, pipe: &Pipeline, dot: &str) -> Result<String> {
        let mut value = None;
        for command in &pipe.commands {
            value = Some(self.command(command, value, dot, pipe.line)?);
        }
        value.ok_or_else(|| ParseError {
            line: pipe.line,
            message: "missing value for command".to_owned(),
        })
    }

    /// One command; `piped` is the previous command's value, passed as the last argument.
    fn command(
        &mut self,
        command: &Command,
        piped: Option<String>,
        dot: &str,
        line: usize,
    ) -> Result<String> {
        let error = |message: String| ParseError { line, message };
        let (first, rest) = command
            .operands
            .split_first()
            .expect("parsed commands have an operand");
        let Operand::Function(name) = first else {
            if !rest.is_empty() || piped.is_some() {
                return Err(error(format!(
                    "can't give argument to non-function {}",
                    describe(first)
                )));
            }
            if *first == Operand::Nil {
                return Err(error("nil is not a command".to_owned()));
            }
            return self.operand(first, dot, line);
        };
        let mut arguments = rest
            .iter()
            .map(|operand| self.operand(operand, dot, line))
            .collect::<Result<Vec<_>>>()?;
        arguments.extend(piped);
        call(name, &arguments, line)
    }

    fn operand(&mut self, operand: &Operand, dot: &str, line: usize) -> Result<String> {
        Ok(match operand {
            Operand::Dot => dot.to_owned(),
            Operand::Nil => "none".to_owned(),
            Operand::Bool(value) => value.to_string(),
            Operand::String(value) => serde_json::to_string(value).expect("strings serialise"),
            Operand::Int(value) => value.to_string(),
            Operand::Float(value) => format!("{value:?}"),
            Operand::Field(fields) => fields_of(dot, fields),
            Operand::Variable { name, fields } => fields_of(&self.lookup(name, line)?, fields),
            Operand::Function(name) => call(name, &[], line)?,
            Operand::Chain { pipe, fields } => {
                let value = self.pipeline(pipe, dot)?;
                fields_of(&format!("({value})"), fields)
            }
        })
    }
}

/// A call of a template function: Jinja's operator for `and`, `or`, `not`, else the runtime
/// function of the same name.
fn call(name: &str, arguments: &[String], line: usize) -> Result<String> {
    let error = |message: String| ParseError { line, message };
    if UNSUPPORTED_FUNCTIONS.contains(&name) {
        return Err(error(format!("function {name:?} is not supported")));
    }
    let Some(&(_, min, max)) = FUNCTIONS.iter().find(|(known, ..)| *known == name) else {
        return Err(error(format!("function {name:?} not defined")));
    };
    if arguments.len() < min || arguments.len() > max {
        return Err(error(format!(
            "wrong number of args for {name}: got {}",
            arguments.len()
        )));
    }
    Ok(match name {
        "and" | "or" => format!("({})", arguments.join(&format!(" {name} "))),
        "not" => format!("(not {})", arguments[0]),
        _ => format!("{name}({})", arguments.join(", ")),
    })
}

/// `base.A.B` as `go_field(base, "A", "B")`, which resolves fields the way Go does.
fn fields_of(base: &str, fields: &[String]) -> String {
    if fields.is_empty() {
        return base.to_owned();
    }
    let names: Vec<String> = fields
        .iter()
        .map(|field| serde_json::to_string(field).expect("strings serialise"))
        .collect();
    format!("go_field({base}, {})", names.join(", "))
}

fn describe(operand: &Operand) -> String {
    match operand {
        Operand::Dot => ".".to_owned(),
        Operand::Nil => "nil".to_owned(),
        Operand::Bool(value) => value.to_string(),
        Operand::String(value) => format!("{value:?}"),
        Operand::Int(value) => value.to_string(),
        Operand::Float(value) => value.to_string(),
        Operand::Field(fields) => format!(".{}", fields.join(".")),
        Operand::Variable { name, fields } if fields.is_empty() => name.clone(),
        Operand::Variable { name, fields } => format!("{name}.{}", fields.join(".")),
        Operand::Function(name) => name.clone(),
        Operand::Chain { fields, .. } => format!("(…).{}", fields.join(".")),
    }
}
