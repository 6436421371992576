//! The run filter grammar, MLflow's: clauses joined by `and`, each `ENTITY.KEY OP VALUE`, e.g.
//! `metrics.rmse < 0.7 and params.max_depth = '5' and tags.model != 'tree'`. The key is what
//! follows the entity's dot, dots included (`tags.mlflow.parentRunId`); keys with spaces or other
//! signs are quoted with backticks or double quotes (`` metrics.`max depth` > 3 ``). Text values
//! also take `IN ('a', 'b')` and `NOT IN (…)`; params and tags `IS NULL` / `IS NOT NULL`;
//! `datasets.name|digest|context` match the datasets a run logged. As in MLflow, a run attribute
//! may be written bare (`run_name = 'x'`, `start_time > 0`). Parsing is pure; the store turns the
//! result into SQL.

use crate::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entity {
    Metric,
    Param,
    Tag,
    Attribute,
    /// A dataset the run used (MLflow's `datasets.name`, `.digest`, `.context`).
    Dataset,
    /// A trace's request metadata (MLflow's `request_metadata.KEY`, also `metadata.KEY`).
    Metadata,
    /// A field of any of a trace's spans (MLflow's `span.name`, `span.type`, `span.status`,
    /// `span.attributes.KEY`).
    Span,
}

/// The span fields a trace filter compares.
pub const SPAN_FIELDS: [&str; 3] = ["name", "type", "status"];
/// A span's whole content (its JSON as MLflow's `Span.to_dict` writes it), searched with LIKE
/// or ILIKE only; `trace.text` is MLflow's name for the same search over a trace's spans.
pub const SPAN_CONTENT: &str = "content";
const TRACE_TEXT: &str = "text";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
    ILike,
    In,
    NotIn,
    /// `IS NULL` / `IS NOT NULL` (params and tags of runs): whether the run has the key at all.
    IsNull,
    IsNotNull,
}

impl Op {
    pub fn sql(self) -> &'static str {
        match self {
            Op::Eq => "=",
            Op::Ne => "<>",
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Like | Op::ILike => "LIKE",
            Op::In => "IN",
            Op::NotIn => "NOT IN",
            Op::IsNull => "IS NULL",
            Op::IsNotNull => "IS NOT NULL",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Number(f64),
    Text(String),
    /// The values of `IN (…)` / `NOT IN (…)`.
    List(Vec<String>),
    /// What `IS NULL` and `IS NOT NULL` compare with.
    Null,
}

/// One `ENTITY.KEY OP VALUE` clause.
#[derive(Clone, Debug, PartialEq)]
pub struct Clause {
    pub entity: Entity,
    pub key: String,
    pub op: Op,
    pub value: Value,
}

/// One `ENTITY.KEY [ASC|DESC]` ordering term.
#[derive(Clone, Debug, PartialEq)]
pub struct OrderBy {
    pub entity: Entity,
    pub key: String,
    pub ascending: bool,
}

/// Run attributes that may be filtered and ordered on, with their column.
pub fn attribute_column(key: &str) -> Option<&'static str> {
    Some(match key {
        "status" => "r.status",
        // MLflow also takes its UI's column names ("Run Name", "Created").
        "run_name" | "display_name" | "run name" | "Run name" | "Run Name" => "r.display_name",
        "run_id" | "id" => "r.id",
        "start_time" | "started_at" => "r.started_at",
        "end_time" | "ended_at" => "r.ended_at",
        "created" | "Created" | "created_at" => "r.created_at",
        _ => return None,
    })
}

/// Run attributes MLflow shows without a column of their own here, which the store derives:
/// `user_id` (who created the run, else its `mlflow.user` tag, else empty) and `artifact_uri` (the run's
/// `mlflow-artifacts:/…` location). Text, filtered and ordered on like the others.
pub const DERIVED_ATTRIBUTES: [&str; 2] = ["user_id", "artifact_uri"];

/// True for every run attribute a filter or an order may name.
pub fn is_run_attribute(key: &str) -> bool {
    attribute_column(key).is_some() || DERIVED_ATTRIBUTES.contains(&key)
}

/// True for attributes compared as numbers (times in ms).
pub fn attribute_is_numeric(key: &str) -> bool {
    matches!(attribute_column(key), Some("r.started_at" | "r.ended_at" | "r.created_at"))
}

struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

#[derive(Debug, PartialEq)]
enum Tok {
    Ident(String),
    Quoted(String),
    Number(f64),
    Op(Op),
    Dot,
    Comma,
    Open,
    Close,
}

impl<'a> Lexer<'a> {
    fn tokens(s: &'a str) -> Result<Vec<Tok>, Error> {
        Ok(Self::tokens_at(s)?.into_iter().map(|(_, t)| t).collect())
    }

    /// The tokens with the byte position where each starts.
    fn tokens_at(s: &'a str) -> Result<Vec<(usize, Tok)>, Error> {
        let mut lx = Lexer { s, pos: 0 };
        let mut out = Vec::new();
        loop {
            while lx.peek().is_some_and(char::is_whitespace) {
                lx.pos += 1;
            }
            let at = lx.pos;
            match lx.next()? {
                Some(t) => out.push((at, t)),
                None => return Ok(out),
            }
        }
    }

    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn next(&mut self) -> Result<Option<Tok>, Error> {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
        let Some(c) = self.peek() else { return Ok(None) };
        let start = self.pos;
        let rest = &self.s[self.pos..];
        for (text, op) in [
            ("<=", Op::Le),
            (">=", Op::Ge),
            ("!=", Op::Ne),
            ("<>", Op::Ne),
            ("=", Op::Eq),
            ("<", Op::Lt),
            (">", Op::Gt),
        ] {
            if rest.starts_with(text) {
                self.pos += text.len();
                return Ok(Some(Tok::Op(op)));
            }
        }
        match c {
            '.' if !rest[1..].starts_with(|d: char| d.is_ascii_digit()) => {
                self.pos += 1;
                Ok(Some(Tok::Dot))
            }
            ',' => {
                self.pos += 1;
                Ok(Some(Tok::Comma))
            }
            '(' => {
                self.pos += 1;
                Ok(Some(Tok::Open))
            }
            ')' => {
                self.pos += 1;
                Ok(Some(Tok::Close))
            }
            '\'' | '"' | '`' => {
                let end = rest[1..].find(c).ok_or_else(|| {
                    Error::invalid(format!("unclosed {c} at position {start} of the filter"))
                })?;
                self.pos += end + 2;
                Ok(Some(Tok::Quoted(rest[1..1 + end].to_string())))
            }
            c if c.is_ascii_digit() || c == '-' || c == '.' => {
                let len = rest
                    .find(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '.' || ch == '-' || ch == '+'))
                    .unwrap_or(rest.len());
                let text = &rest[..len];
                self.pos += len;
                // Rust reads `-inf` and `-nan` as numbers; MLflow's grammar has no such literals
                // (and a NaN bound into SQL compares differently on each backend).
                text.parse::<f64>()
                    .ok()
                    .filter(|_| text.bytes().any(|b| b.is_ascii_digit()))
                    .map(|n| Some(Tok::Number(n)))
                    .ok_or_else(|| Error::invalid(format!("{text:?} at position {start} is not a number")))
            }
            c if c.is_alphanumeric() || c == '_' => {
                let len = rest
                    .find(|ch: char| !(ch.is_alphanumeric() || ch == '_' || ch == '-'))
                    .unwrap_or(rest.len());
                self.pos += len;
                Ok(Some(Tok::Ident(rest[..len].to_string())))
            }
            other => Err(Error::invalid(format!("unexpected {other:?} at position {start} of the filter"))),
        }
    }
}

fn entity(word: &str) -> Result<Entity, Error> {
    match word.to_ascii_lowercase().as_str() {
        "metric" | "metrics" => Ok(Entity::Metric),
        "param" | "params" | "parameter" | "parameters" => Ok(Entity::Param),
        "tag" | "tags" => Ok(Entity::Tag),
        "attribute" | "attributes" | "attr" | "run" => Ok(Entity::Attribute),
        "dataset" | "datasets" => Ok(Entity::Dataset),
        "request_metadata" | "metadata" => Ok(Entity::Metadata),
        // A trace's attributes, as MLflow's trace search also names them.
        "trace" => Ok(Entity::Attribute),
        "span" | "spans" => Ok(Entity::Span),
        "feedback" | "expectation" | "assessment" | "issue" | "prompt" => Err(Error::invalid(format!(
            "this server does not search traces by their {word}s: use tags., request_metadata., span. or attributes."
        ))),
        other => Err(Error::invalid(format!(
            "unknown entity {other:?}: use metrics., params., tags., attributes. or datasets."
        ))),
    }
}

/// What a filter searches: runs, experiments (MLflow's `search_experiments`: `name`,
/// `creation_time`, `last_update_time`, bare or as `attributes.`, and `tags.KEY`) or logged
/// models (MLflow's `search_logged_models`: the attributes below, bare or as `attributes.`, and
/// `metrics.`, `params.`, `tags.`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Runs,
    Experiments,
    LoggedModels,
    Traces,
}

const EXPERIMENT_ATTRIBUTES: [&str; 3] = ["name", "creation_time", "last_update_time"];

/// A logged model's attributes, with MLflow's aliases of its two times.
pub const LOGGED_MODEL_ATTRIBUTES: [&str; 11] = [
    "name",
    "model_id",
    "source_run_id",
    "status",
    "model_type",
    "experiment_id",
    "creation_timestamp_ms",
    "creation_timestamp",
    "creation_time",
    "last_updated_timestamp_ms",
    "last_updated_timestamp",
];

/// A logged-model attribute's canonical name (MLflow's aliases resolved), or None.
pub fn logged_model_attribute(key: &str) -> Option<&'static str> {
    match key {
        "creation_timestamp" | "creation_time" => Some("creation_timestamp_ms"),
        "last_updated_timestamp" => Some("last_updated_timestamp_ms"),
        k => LOGGED_MODEL_ATTRIBUTES.iter().find(|a| **a == k).copied(),
    }
}

/// A trace's attributes (MLflow's `search_traces`), each with its canonical name: MLflow's aliases
/// (`request_id`, `timestamp`, `execution_time`, `end_time`, `state`) resolved. `name` is the
/// trace's `mlflow.traceName` tag and `run_id` its `mlflow.sourceRun` metadata, as there.
pub fn trace_attribute(key: &str) -> Option<&'static str> {
    Some(match key {
        "trace_id" | "request_id" => "trace_id",
        "timestamp_ms" | "timestamp" => "timestamp_ms",
        "execution_time_ms" | "execution_time" => "execution_time_ms",
        "end_time_ms" | "end_time" => "end_time_ms",
        "status" | "state" => "status",
        "client_request_id" => "client_request_id",
        "name" => "name",
        "run_id" => "run_id",
        "experiment_id" => "experiment_id",
        _ => return None,
    })
}

/// The trace attributes compared as numbers (times in ms).
fn trace_attribute_is_numeric(key: &str) -> bool {
    matches!(trace_attribute(key), Some("timestamp_ms" | "execution_time_ms" | "end_time_ms"))
}

fn is_numeric(target: Target, entity: Entity, key: &str) -> bool {
    match (target, entity) {
        (Target::Traces, Entity::Attribute) => trace_attribute_is_numeric(key),
        (_, Entity::Metric) => true,
        (Target::Runs, Entity::Attribute) => attribute_is_numeric(key),
        (Target::Experiments, Entity::Attribute) => key != "name",
        (Target::LoggedModels, Entity::Attribute) => {
            logged_model_attribute(key).is_some_and(|a| a.ends_with("_ms"))
        }
        _ => false,
    }
}

/// Reads `ENTITY.KEY` from the front of `toks`.
fn identifier_of(toks: &[Tok], i: &mut usize, target: Target) -> Result<(Entity, String), Error> {
    // A quoted word stands for a backticked column name (`` `Run Name` ``).
    let word = match toks.get(*i) {
        Some(Tok::Ident(w)) => Some(w),
        Some(Tok::Quoted(w)) if target == Target::Runs => Some(w),
        _ => None,
    };
    if let Some(w) = word {
        let bare = match target {
            Target::Traces => trace_attribute(w).is_some(),
            Target::Experiments => EXPERIMENT_ATTRIBUTES.contains(&w.as_str()),
            Target::LoggedModels => logged_model_attribute(w).is_some(),
            Target::Runs => is_run_attribute(w),
        };
        if bare && toks.get(*i + 1) != Some(&Tok::Dot) {
            *i += 1;
            return Ok((Entity::Attribute, w.clone()));
        }
    }
    let ent = match toks.get(*i) {
        Some(Tok::Ident(w)) => entity(w)?,
        other => {
            return Err(Error::invalid(format!(
                "expected metrics./params./tags./attributes., found {other:?}"
            )))
        }
    };
    if toks.get(*i + 1) != Some(&Tok::Dot) {
        return Err(Error::invalid("expected a '.' after the entity (e.g. metrics.rmse)"));
    }
    let start = *i;
    let mut key = match toks.get(*i + 2) {
        Some(Tok::Ident(k)) | Some(Tok::Quoted(k)) => k.clone(),
        other => return Err(Error::invalid(format!("expected a key after the '.', found {other:?}"))),
    };
    *i += 3;
    // Unquoted, the key runs on through its own dots (MLflow splits at the first dot only).
    while let (Some(Tok::Dot), Some(Tok::Ident(part))) = (toks.get(*i), toks.get(*i + 1)) {
        key = format!("{key}.{part}");
        *i += 2;
    }
    // A key that is not allowed is reported at the identifier, not after it.
    check_identifier(target, ent, &key).inspect_err(|_| *i = start)?;
    Ok((ent, key))
}

fn check_identifier(target: Target, ent: Entity, key: &str) -> Result<(), Error> {
    if target == Target::Traces {
        return match ent {
            Entity::Attribute if trace_attribute(key).is_some() || key == TRACE_TEXT => Ok(()),
            Entity::Tag | Entity::Metadata => Ok(()),
            Entity::Span if SPAN_FIELDS.contains(&key) || key == SPAN_CONTENT => Ok(()),
            Entity::Span => match key.strip_prefix("attributes.") {
                Some(attr) if !attr.is_empty() && !attr.contains(['"', '\\']) => Ok(()),
                Some(attr) => Err(Error::invalid(format!(
                    "span attribute name {attr:?} must be non-empty, without '\"' or '\\'"
                ))),
                None => Err(Error::invalid(format!(
                    "this server searches traces by their spans' {}, content, attributes.KEY, not by span.{key}",
                    SPAN_FIELDS.join(", ")
                ))),
            },
            _ => Err(Error::invalid(format!(
                "a trace filter compares tags.KEY, request_metadata.KEY, span.name|type|status or one of trace_id, \
                 timestamp_ms, execution_time_ms, end_time_ms, status, client_request_id, name, run_id, \
                 not {key:?}"
            ))),
        };
    }
    if ent == Entity::Metadata {
        return Err(Error::invalid(format!("request_metadata.{key} applies to traces only")));
    }
    if ent == Entity::Span {
        return Err(Error::invalid(format!("span.{key} applies to traces only")));
    }
    if target == Target::Experiments {
        return match ent {
            Entity::Attribute if EXPERIMENT_ATTRIBUTES.contains(&key) => Ok(()),
            Entity::Tag => Ok(()),
            _ => Err(Error::invalid(format!(
                "an experiment filter compares name, creation_time, last_update_time or tags.KEY, not {key:?}"
            ))),
        };
    }
    if target == Target::LoggedModels {
        return match ent {
            Entity::Attribute if logged_model_attribute(key).is_some() => Ok(()),
            Entity::Metric | Entity::Param | Entity::Tag => Ok(()),
            _ => Err(Error::invalid(format!(
                "a logged-model filter compares metrics.KEY, params.KEY, tags.KEY or one of {}, not {key:?}",
                LOGGED_MODEL_ATTRIBUTES.join(", ")
            ))),
        };
    }
    if ent == Entity::Attribute && !is_run_attribute(key) {
        return Err(Error::invalid(format!(
            "unknown attribute {key:?}: use status, run_name, run_id, start_time, end_time, created, \
             user_id or artifact_uri"
        )));
    }
    if ent == Entity::Dataset && !matches!(key, "name" | "digest" | "context") {
        return Err(Error::invalid(format!("unknown dataset field {key:?}: use name, digest or context")));
    }
    Ok(())
}

/// Parses a filter; an empty string means "every run". Errors name the position (in bytes,
/// from 0) of the token where parsing stopped.
pub fn parse_filter(filter: &str) -> Result<Vec<Clause>, Error> {
    parse_for(filter, Target::Runs)
}

/// Parses an experiment filter (MLflow's `search_experiments`): `name`, `creation_time` and
/// `last_update_time` (bare or as `attributes.`), and `tags.KEY`, joined by `and`.
pub fn parse_experiment_filter(filter: &str) -> Result<Vec<Clause>, Error> {
    parse_for(filter, Target::Experiments)
}

/// Parses a trace filter (MLflow's `search_traces`): `tags.KEY` and `request_metadata.KEY` as text
/// (also `IS NULL` / `IS NOT NULL`), and the attributes of [`trace_attribute`] (bare or as
/// `attributes.`/`trace.`; the times as numbers), joined by `and`.
pub fn parse_trace_filter(filter: &str) -> Result<Vec<Clause>, Error> {
    parse_for(filter, Target::Traces)
}

/// Parses a logged-model filter (MLflow's `search_logged_models`): `metrics.KEY` compared as a
/// number, `params.KEY` and `tags.KEY` as text, and the attributes of `LOGGED_MODEL_ATTRIBUTES`
/// (bare or as `attributes.`; the times as numbers), joined by `and`.
pub fn parse_logged_model_filter(filter: &str) -> Result<Vec<Clause>, Error> {
    parse_for(filter, Target::LoggedModels)
}

fn parse_for(filter: &str, target: Target) -> Result<Vec<Clause>, Error> {
    let located = Lexer::tokens_at(filter)?;
    let (starts, toks): (Vec<usize>, Vec<Tok>) = located.into_iter().unzip();
    let mut i = 0;
    parse_clauses(&toks, &mut i, target).map_err(|e| match e {
        Error::Invalid(m) => {
            let at = starts.get(i).copied().unwrap_or(filter.len());
            Error::Invalid(format!("{m} (at position {at})"))
        }
        other => other,
    })
}

fn parse_clauses(toks: &[Tok], i: &mut usize, target: Target) -> Result<Vec<Clause>, Error> {
    let mut clauses = Vec::new();
    while *i < toks.len() {
        if !clauses.is_empty() {
            match toks.get(*i) {
                Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("and") => *i += 1,
                other => {
                    return Err(Error::invalid(format!(
                        "expected 'and' between clauses, found {other:?} (only 'and' is supported)"
                    )))
                }
            }
        }
        let (mut entity, mut key) = identifier_of(toks, i, target)?;
        if target == Target::Traces && entity == Entity::Attribute && key == TRACE_TEXT {
            (entity, key) = (Entity::Span, SPAN_CONTENT.to_string());
        }
        if matches!(toks.get(*i), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("is")) {
            let not = matches!(toks.get(*i + 1), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("not"));
            let at = *i + 1 + usize::from(not);
            if !matches!(toks.get(at), Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("null")) {
                return Err(Error::invalid(format!(
                    "expected NULL or NOT NULL after IS, found {:?}",
                    toks.get(at)
                )));
            }
            let nullable = match target {
                Target::Runs => matches!(entity, Entity::Param | Entity::Tag),
                Target::Traces => matches!(entity, Entity::Tag | Entity::Metadata),
                _ => false,
            };
            if !nullable {
                return Err(Error::invalid(format!(
                    "IS NULL applies to a run's params and tags and a trace's tags and metadata, not to {key:?}"
                )));
            }
            *i = at + 1;
            let op = if not { Op::IsNotNull } else { Op::IsNull };
            clauses.push(Clause { entity, key, op, value: Value::Null });
            continue;
        }
        let op = match toks.get(*i) {
            Some(Tok::Op(op)) => *op,
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("like") => Op::Like,
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("ilike") => Op::ILike,
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("in") => Op::In,
            Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("not") => match toks.get(*i + 1) {
                Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("in") => {
                    *i += 1;
                    Op::NotIn
                }
                other => return Err(Error::invalid(format!("expected IN after NOT, found {other:?}"))),
            },
            other => {
                return Err(Error::invalid(format!("expected a comparison after {key:?}, found {other:?}")))
            }
        };
        if entity == Entity::Span && key == SPAN_CONTENT && !matches!(op, Op::Like | Op::ILike) {
            return Err(Error::invalid(
                "a span's content (span.content, trace.text) is searched with LIKE or ILIKE",
            ));
        }
        *i += 1;
        let value = match toks.get(*i) {
            Some(Tok::Open) if matches!(op, Op::In | Op::NotIn) => Value::List(list(toks, i)?),
            Some(Tok::Number(n)) => Value::Number(*n),
            Some(Tok::Quoted(s)) => Value::Text(s.clone()),
            other if matches!(op, Op::In | Op::NotIn) => {
                return Err(Error::invalid(format!(
                    "expected a list ('a', 'b') after IN on {key:?}, found {other:?}"
                )))
            }
            other => {
                return Err(Error::invalid(format!(
                    "expected a value after the comparison on {key:?}, found {other:?}"
                )))
            }
        };
        *i += 1;
        if matches!(value, Value::List(_)) {
            if is_numeric(target, entity, &key) {
                return Err(Error::invalid(format!("IN applies to text, not to {key:?}")));
            }
            clauses.push(Clause { entity, key, op, value });
            continue;
        }
        if matches!(op, Op::In | Op::NotIn) {
            return Err(Error::invalid(format!("expected a list ('a', 'b') after IN on {key:?}")));
        }
        if entity == Entity::Dataset && key == "context" && op != Op::Eq {
            return Err(Error::invalid("datasets.context takes = or IN"));
        }
        let numeric = is_numeric(target, entity, &key);
        match (&value, numeric) {
            (Value::Text(_), true) => {
                return Err(Error::invalid(format!(
                    "{key:?} is compared as a number: write the value without quotes"
                )))
            }
            (Value::Number(_), false) => {
                return Err(Error::invalid(format!("{key:?} is compared as text: quote the value ('...')")))
            }
            _ => {}
        }
        if numeric && matches!(op, Op::Like | Op::ILike) {
            return Err(Error::invalid(format!("LIKE applies to text, not to {key:?}")));
        }
        if !numeric && !matches!(op, Op::Eq | Op::Ne | Op::Like | Op::ILike) {
            return Err(Error::invalid(format!("{key:?} is text: use =, !=, LIKE or ILIKE")));
        }
        clauses.push(Clause { entity, key, op, value });
    }
    Ok(clauses)
}

/// Reads `( 'a', 'b', … )` from `toks[*i]` on, leaving `*i` at the `)`.
fn list(toks: &[Tok], i: &mut usize) -> Result<Vec<String>, Error> {
    let mut values = Vec::new();
    loop {
        *i += 1;
        match toks.get(*i) {
            Some(Tok::Quoted(s)) => values.push(s.clone()),
            Some(Tok::Close) if values.is_empty() => {
                return Err(Error::invalid("IN () needs at least one value"))
            }
            other => {
                return Err(Error::invalid(format!("expected a quoted value in the list, found {other:?}")))
            }
        }
        *i += 1;
        match toks.get(*i) {
            Some(Tok::Comma) => {}
            Some(Tok::Close) => return Ok(values),
            other => return Err(Error::invalid(format!("expected ',' or ')' in the list, found {other:?}"))),
        }
    }
}

/// Parses `order_by` terms such as `metrics.rmse ASC` or `attributes.start_time DESC`.
pub fn parse_order_by(terms: &[String]) -> Result<Vec<OrderBy>, Error> {
    order_by_for(terms, Target::Runs)
}

/// Parses a trace search's `order_by` terms: its attributes (`timestamp_ms DESC`), tags and
/// request metadata.
pub fn parse_trace_order_by(terms: &[String]) -> Result<Vec<OrderBy>, Error> {
    order_by_for(terms, Target::Traces)
}

fn order_by_for(terms: &[String], target: Target) -> Result<Vec<OrderBy>, Error> {
    terms
        .iter()
        .map(|term| {
            let toks = Lexer::tokens(term)?;
            let mut i = 0;
            let (entity, key) = identifier_of(&toks, &mut i, target)?;
            if entity == Entity::Dataset {
                return Err(Error::invalid(format!(
                    "order_by {term:?}: runs cannot be ordered by their datasets"
                )));
            }
            if entity == Entity::Span || (entity == Entity::Attribute && key == TRACE_TEXT) {
                return Err(Error::invalid(format!("order_by {term:?}: a trace has many spans to order by")));
            }
            let ascending = match toks.get(i) {
                None => true,
                Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("asc") => true,
                Some(Tok::Ident(w)) if w.eq_ignore_ascii_case("desc") => false,
                other => {
                    return Err(Error::invalid(format!(
                        "expected ASC or DESC in order_by {term:?}, found {other:?}"
                    )))
                }
            };
            if toks.len() > i + 1 {
                return Err(Error::invalid(format!("unexpected text after {term:?}")));
            }
            Ok(OrderBy { entity, key, ascending })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_errors_name_the_position() {
        let e = parse_filter("metrics.acc >> 1").unwrap_err().to_string();
        assert!(e.contains("at position 13"), "{e}");
        let e = parse_filter("params.a = 'x' or params.b = 'y'").unwrap_err().to_string();
        assert!(e.contains("at position 15"), "{e}");
        let e = parse_filter("metrics.acc <").unwrap_err().to_string();
        assert!(e.contains("at position 13"), "{e}");
    }

    #[test]
    fn infinities_and_nans_are_not_numbers_of_the_grammar() {
        for filter in ["metrics.x > -inf", "metrics.x < -nan", "metrics.x != -Infinity"] {
            let e = parse_filter(filter).unwrap_err().to_string();
            assert!(e.contains("is not a number"), "{filter}: {e}");
        }
        let c = parse_filter("metrics.x < 1e400").unwrap();
        assert_eq!(
            c[0].value,
            Value::Number(f64::INFINITY),
            "an overflowing literal is infinite, as in Python"
        );
    }

    #[test]
    fn parses_the_usual_filters() {
        let c = parse_filter("metrics.rmse < 0.7 and params.max_depth = '5'").unwrap();
        assert_eq!(
            c[0],
            Clause { entity: Entity::Metric, key: "rmse".into(), op: Op::Lt, value: Value::Number(0.7) }
        );
        assert_eq!(
            c[1],
            Clause {
                entity: Entity::Param,
                key: "max_depth".into(),
                op: Op::Eq,
                value: Value::Text("5".into())
            }
        );
        let c = parse_filter("metrics.`max depth` >= -1e3 AND tags.\"model.kind\" LIKE 'tree%' and attributes.status != 'Failed'").unwrap();
        assert_eq!(c[0].key, "max depth");
        assert_eq!(c[0].value, Value::Number(-1000.0));
        assert_eq!((c[1].key.as_str(), c[1].op), ("model.kind", Op::Like));
        assert_eq!(c[2].entity, Entity::Attribute);
        assert!(parse_filter("").unwrap().is_empty());
        assert_eq!(parse_filter("metrics.a>.5").unwrap()[0].value, Value::Number(0.5));
    }

    #[test]
    fn dotted_keys_lists_and_datasets() {
        let c = parse_filter("tags.mlflow.parentRunId = 'abc' and tags.mlflow.source.git.commit LIKE 'a%'")
            .unwrap();
        assert_eq!((c[0].entity, c[0].key.as_str()), (Entity::Tag, "mlflow.parentRunId"));
        assert_eq!(c[1].key, "mlflow.source.git.commit");
        let c = parse_filter("attributes.run_id IN ('a', 'b') and params.p NOT IN ('x')").unwrap();
        assert_eq!((c[0].op, &c[0].value), (Op::In, &Value::List(vec!["a".into(), "b".into()])));
        assert_eq!((c[1].op, &c[1].value), (Op::NotIn, &Value::List(vec!["x".into()])));
        let c = parse_filter("datasets.name = 'wine' and dataset.context IN ('training', 'eval')").unwrap();
        assert_eq!((c[0].entity, c[1].entity), (Entity::Dataset, Entity::Dataset));
        for (bad, expect) in [
            ("attributes.run_id IN ()", "at least one value"),
            ("attributes.run_id IN ('a' 'b')", "expected ',' or ')'"),
            ("attributes.run_id IN 'a'", "expected a list"),
            ("metrics.m IN ('1')", "IN applies to text"),
            ("attributes.start_time IN ('1')", "IN applies to text"),
            ("params.p NOT 'x'", "expected IN after NOT"),
            ("datasets.size = '3'", "unknown dataset field"),
            ("datasets.context LIKE 'tr%'", "datasets.context takes = or IN"),
        ] {
            let err = parse_filter(bad).unwrap_err().to_string();
            assert!(err.contains(expect), "{bad}: {err}");
        }
        assert!(parse_order_by(&["datasets.name".into()]).is_err());
    }

    #[test]
    fn says_what_is_wrong() {
        for (bad, expect) in [
            ("metrics.rmse < 'x'", "as a number"),
            ("params.depth > '3'", "use =, !=, LIKE"),
            ("params.depth = 3", "quote the value"),
            ("metric.rmse < 0.7 or metrics.x > 1", "only 'and'"),
            ("foo.rmse < 1", "unknown entity"),
            ("metrics.rmse <", "expected a value"),
            ("params.a = 'unclosed", "unclosed"),
            ("attributes.colour = 'red'", "unknown attribute"),
        ] {
            let err = parse_filter(bad).unwrap_err().to_string();
            assert!(err.contains(expect), "{bad}: {err}");
        }
    }

    /// MLflow reads a bare identifier as a run attribute, and lets params and tags be tested for
    /// absence.
    #[test]
    fn bare_attributes_and_is_null() {
        let c = parse_filter("run_name LIKE '%a%' and status = 'FINISHED' and start_time > 0").unwrap();
        assert!(c.iter().all(|c| c.entity == Entity::Attribute), "{c:?}");
        assert_eq!(c[0].key, "run_name");
        let c = parse_filter("tags.team IS NULL and params.alpha is not null and metrics.a > 1").unwrap();
        assert_eq!((c[0].op, &c[0].value), (Op::IsNull, &Value::Null));
        assert_eq!((c[1].entity, c[1].op), (Entity::Param, Op::IsNotNull));
        assert_eq!(c[2].entity, Entity::Metric);
        for (bad, expect) in [
            ("metrics.a IS NULL", "IS NULL applies to a run's params and tags"),
            ("tags.a IS 'x'", "expected NULL or NOT NULL"),
            ("colour = 'red'", "unknown entity"),
        ] {
            let err = parse_filter(bad).unwrap_err().to_string();
            assert!(err.contains(expect), "{bad}: {err}");
        }
        let err = parse_experiment_filter("tags.a IS NULL").unwrap_err().to_string();
        assert!(err.contains("IS NULL applies"), "{err}");
        let o = parse_order_by(&["start_time DESC".into(), "`Run Name`".into()]);
        assert!(o.is_ok(), "{o:?}");
    }

    #[test]
    fn parses_order_by() {
        let o = parse_order_by(&["metrics.rmse".into(), "attributes.start_time DESC".into()]).unwrap();
        assert!(o[0].ascending && !o[1].ascending);
        assert!(parse_order_by(&["metrics.rmse sideways".into()]).is_err());
    }

    /// MLflow's `search_traces` grammar: attributes under their aliases, tags and request
    /// metadata (with absence tests), and clear refusals of what traces do not have.
    #[test]
    fn parses_trace_filters_and_order() {
        let c = parse_trace_filter(
            "trace.status = 'OK' and timestamp > 10 and attributes.execution_time_ms <= 5 and \
             request_metadata.`mlflow.sourceRun` = 'r1' and metadata.mlflow.user IS NOT NULL and \
             tags.team IS NULL and name IN ('a', 'b') and run_id = 'r1'",
        )
        .unwrap();
        let keys: Vec<_> = c.iter().map(|c| (c.entity, c.key.as_str())).collect();
        assert_eq!(
            keys,
            [
                (Entity::Attribute, "status"),
                (Entity::Attribute, "timestamp"),
                (Entity::Attribute, "execution_time_ms"),
                (Entity::Metadata, "mlflow.sourceRun"),
                (Entity::Metadata, "mlflow.user"),
                (Entity::Tag, "team"),
                (Entity::Attribute, "name"),
                (Entity::Attribute, "run_id"),
            ]
        );
        assert_eq!(trace_attribute("timestamp"), Some("timestamp_ms"));
        assert_eq!((c[4].op, c[5].op), (Op::IsNotNull, Op::IsNull));
        for (bad, expect) in [
            ("timestamp_ms > '5'", "compared as a number"),
            ("status = 5", "compared as text"),
            (
                "span.contents LIKE 'x'",
                "spans' name, type, status, content, attributes.KEY, not by span.contents",
            ),
            ("span.content = 'x'", "with LIKE or ILIKE (at position 13)"),
            ("trace.text IN ('x')", "with LIKE or ILIKE"),
            ("span.`attributes.a\"b` = 'x'", "without '\"'"),
            ("span.name IS NULL", "IS NULL applies"),
            ("span.name = 5", "compared as text"),
            ("feedback.rating = 'yes'", "does not search traces by their feedbacks"),
            ("metrics.a > 1", "a trace filter compares"),
            ("colour = 'red'", "unknown entity"),
            ("status IS NULL", "IS NULL applies"),
        ] {
            let err = parse_trace_filter(bad).unwrap_err().to_string();
            assert!(err.contains(expect), "{bad}: {err}");
        }
        // Request metadata and spans are a trace's alone.
        assert!(parse_filter("request_metadata.a = 'x'").unwrap_err().to_string().contains("traces only"));
        assert!(parse_filter("span.name = 'x'").unwrap_err().to_string().contains("traces only"));
        let c = parse_trace_filter(
            "span.type = 'LLM' AND span.name ILIKE 'p%' AND span.attributes.mlflow.spanType = 'X'",
        )
        .unwrap();
        assert_eq!((c[0].entity, c[0].key.as_str(), c[1].op), (Entity::Span, "type", Op::ILike));
        assert_eq!(c[2].key, "attributes.mlflow.spanType");
        assert!(parse_trace_order_by(&["span.name".into()]).unwrap_err().to_string().contains("many spans"));
        assert!(parse_trace_order_by(&["trace.text".into()]).unwrap_err().to_string().contains("many spans"));
        // MLflow's full-text search: a span's content, or `trace.text` for the same.
        let c = parse_trace_filter("span.content LIKE '%Paris%' AND trace.text ILIKE '%weather%'").unwrap();
        assert_eq!((c[0].entity, c[0].key.as_str(), c[0].op), (Entity::Span, "content", Op::Like));
        assert_eq!((c[1].entity, c[1].key.as_str(), c[1].op), (Entity::Span, "content", Op::ILike));
        let o = parse_trace_order_by(&["timestamp_ms DESC".into(), "tags.team".into()]).unwrap();
        assert!(!o[0].ascending && o[1].ascending && o[1].entity == Entity::Tag);
        assert!(parse_trace_order_by(&["start_time".into()]).is_err());
    }
}
