//! Per-endpoint routing beyond event types: payload filters, ordered delivery per key, and
//! payload transformations.
//!
//! An endpoint's routing is given as JSON ([`RoutingSpec`]), validated when the endpoint is
//! saved (with a message naming the failing part), and compiled once into [`Routing`]:
//! events are matched and transformed against the compiled form, never by re-reading the
//! JSON. [`compiled`] keeps compiled routings by their stored text, so an endpoint read from
//! the store again (every ingest reads the tenant's endpoints) is not compiled again.
//!
//! Paths are dot-separated: `type`, `actor`, `id`, `timestamp`, `data`, `data.order.id`,
//! `data.items.0.sku` (a number steps into an array).
//!
//! Everything a tenant can store is bounded (the `MAX_*` constants below), and nothing on the
//! delivery path recurses without a bound: a transformation whose result would nest deeper
//! than [`MAX_BODY_DEPTH`] fails the delivery instead of overflowing the stack when the body
//! is serialized or dropped. A stored routing that no longer compiles (e.g. saved before
//! these bounds) is kept as [`Routing::error`]: deliveries through it fail for good with
//! that error, and nothing else is affected.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::Event;

/// Most conditions one filter may hold, and how deep it may nest.
pub const MAX_CONDITIONS: usize = 100;
pub const MAX_DEPTH: usize = 16;
/// Most steps a transformation may have.
pub const MAX_STEPS: usize = 50;
/// Most steps in a path (`data.order.id` has three), and its longest text in bytes.
pub const MAX_PATH_STEPS: usize = 32;
pub const MAX_PATH_BYTES: usize = 256;
/// Most items in an `in` list.
pub const MAX_IN_ITEMS: usize = 1000;
/// Largest `eq`, `ne` or `set` value (and `in` item) as JSON, in bytes, and its deepest
/// nesting of arrays and objects.
pub const MAX_VALUE_BYTES: usize = 16 * 1024;
pub const MAX_VALUE_DEPTH: usize = 32;
/// Largest routing (filter, ordering and transform together) as stored JSON, in bytes.
pub const MAX_ROUTING_BYTES: usize = 64 * 1024;
/// Deepest nesting a transformed body may reach; a delivery whose transformation would go
/// deeper fails instead.
pub const MAX_BODY_DEPTH: usize = 256;
/// Deepest nesting of a whole routing document: filters nested [`MAX_DEPTH`] levels (two
/// JSON levels each) around a condition with a value of [`MAX_VALUE_DEPTH`], with room.
const MAX_DOCUMENT_DEPTH: usize = 2 * MAX_DEPTH + MAX_VALUE_DEPTH + 8;

/// Routing as the API takes and shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingSpec {
    /// Payload filter; an event that does not match gets no delivery to the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// Ordered delivery per key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<OrderingSpec>,
    /// Steps that reshape the delivered body (which is then signed as sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Object>>)]
    pub transform: Option<Value>,
}

/// `{"key": "data.order_id" | "actor", "on_failure": "block" | "skip"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderingSpec {
    /// Where the key comes from: `actor`, or a path into `data` (`data.order_id`).
    pub key: String,
    /// What a delivery that failed for good does to the ones after it with the same key:
    /// `block` (the default) holds them until it is retried or replayed and delivered;
    /// `skip` lets them go on.
    #[serde(default)]
    pub on_failure: OnFailure,
}

/// See [`OrderingSpec::on_failure`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    #[default]
    Block,
    Skip,
}

/// A compiled routing. Two are equal when their specifications are.
#[derive(Debug, Default)]
pub struct Routing {
    pub spec: RoutingSpec,
    filter: Option<Filter>,
    transform: Vec<Step>,
    ordering_key: Option<Path>,
    /// Set when a stored routing does not compile: why, and the text as stored.
    unusable: Option<Unusable>,
}

#[derive(Debug)]
struct Unusable {
    error: String,
    stored: String,
}

impl PartialEq for Routing {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Routing {
    /// Validates and compiles `spec`; the error names the failing part (and the limit, for
    /// one beyond the bounds).
    pub fn compile(spec: RoutingSpec) -> Result<Self, String> {
        for (name, part) in [("filter", &spec.filter), ("transform", &spec.transform)] {
            if part
                .as_ref()
                .is_some_and(|v| deeper_than(v, MAX_DOCUMENT_DEPTH))
            {
                return Err(format!(
                    "{name}: nested more than {MAX_DOCUMENT_DEPTH} levels deep"
                ));
            }
        }
        let filter = match &spec.filter {
            Some(f) => {
                let mut budget = MAX_CONDITIONS;
                Some(Filter::compile(f, "filter", 0, &mut budget)?)
            }
            None => None,
        };
        let transform = match &spec.transform {
            Some(t) => compile_transform(t)?,
            None => Vec::new(),
        };
        let ordering_key = match &spec.ordering {
            Some(o) => {
                let path = Path::parse(&o.key).map_err(|e| format!("ordering.key: {e}"))?;
                if !matches!(path.root.as_str(), "actor" | "data") {
                    return Err(format!(
                        "ordering.key: {} must be \"actor\" or a path into data (\"data.…\")",
                        shown(&o.key)
                    ));
                }
                Some(path)
            }
            None => None,
        };
        // The parts are within bounds, so serializing them is too.
        let size = serde_json::to_string(&spec).map_or(usize::MAX, |t| t.len());
        if size > MAX_ROUTING_BYTES {
            return Err(format!(
                "routing: {size} bytes of JSON, more than the {MAX_ROUTING_BYTES} allowed"
            ));
        }
        Ok(Self {
            spec,
            filter,
            transform,
            ordering_key,
            unusable: None,
        })
    }

    /// A stored routing that cannot be used: deliveries through it fail with `error`, and
    /// the stored text is written back unchanged until the routing is replaced.
    fn unusable(spec: RoutingSpec, error: String, stored: &str) -> Self {
        Self {
            spec,
            unusable: Some(Unusable {
                error,
                stored: stored.to_owned(),
            }),
            ..Self::default()
        }
    }

    /// Why this stored routing cannot be used, if it cannot: every delivery through it
    /// fails with this.
    pub fn error(&self) -> Option<&str> {
        self.unusable.as_ref().map(|u| u.error.as_str())
    }

    /// The stored text of an unusable routing, kept as it is until replaced.
    pub fn unusable_text(&self) -> Option<&str> {
        self.unusable.as_ref().map(|u| u.stored.as_str())
    }

    /// Whether the routing does anything (an endpoint without one skips all of this).
    pub fn is_empty(&self) -> bool {
        self.filter.is_none()
            && self.transform.is_empty()
            && self.ordering_key.is_none()
            && self.unusable.is_none()
    }

    /// Whether `event` passes the filter (always, without one). An unusable routing lets
    /// every event through, so that its deliveries fail visibly rather than vanish.
    pub fn matches(&self, event: &Event) -> bool {
        self.filter.as_ref().is_none_or(|f| f.eval(event))
    }

    /// The ordering key of `event`, for an ordered endpoint: the key's value as text
    /// (strings as they are, anything else as JSON). Events without the field share the
    /// empty key, so they are ordered among themselves.
    pub fn ordering_key(&self, event: &Event) -> Option<String> {
        let path = self.ordering_key.as_ref()?;
        Some(match lookup_event(event, path) {
            Some(Value::String(s)) => s,
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        })
    }

    /// Whether the delivered body is reshaped.
    pub fn has_transform(&self) -> bool {
        !self.transform.is_empty()
    }

    /// Whether a finally failed delivery holds back later ones of its key.
    pub fn blocks_on_failure(&self) -> bool {
        self.spec
            .ordering
            .as_ref()
            .is_some_and(|o| o.on_failure == OnFailure::Block)
    }

    /// Applies the transformation to the delivered envelope (unchanged without one). Fails
    /// for an unusable routing, and when the body would nest deeper than
    /// [`MAX_BODY_DEPTH`] (each step deepens it by a bounded amount, and this is checked
    /// after each, so the body never gets deep enough to overflow anything).
    pub fn transform(&self, mut body: Value) -> Result<Value, String> {
        if let Some(e) = self.error() {
            return Err(e.to_owned());
        }
        for (i, step) in self.transform.iter().enumerate() {
            body = step.apply(body);
            if !matches!(step, Step::Pick(_)) && deeper_than(&body, MAX_BODY_DEPTH) {
                return Err(format!(
                    "transform[{i}]: the body would nest more than {MAX_BODY_DEPTH} levels deep"
                ));
            }
        }
        Ok(body)
    }
}

/// Whether `v` nests arrays and objects more than `limit` levels deep (a scalar is level
/// 0). Walks without recursion, and stops as soon as it knows.
pub fn deeper_than(v: &Value, limit: usize) -> bool {
    let mut stack: Vec<(&Value, usize)> = vec![(v, 0)];
    while let Some((v, depth)) = stack.pop() {
        // `v` sits `depth` levels down; an array or object adds one more.
        let level = depth + 1;
        match v {
            Value::Array(a) if !a.is_empty() || level > limit => {
                if level > limit {
                    return true;
                }
                stack.extend(a.iter().map(|c| (c, level)));
            }
            Value::Object(m) if !m.is_empty() || level > limit => {
                if level > limit {
                    return true;
                }
                stack.extend(m.values().map(|c| (c, level)));
            }
            _ => {}
        }
    }
    false
}

/// A tenant's text in an error message: quoted, and cut short when long.
fn shown(raw: &str) -> String {
    const MAX: usize = 40;
    match raw.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{:?}…", &raw[..cut]),
        None => format!("{raw:?}"),
    }
}

/// Checks a path's length before it is split: the error names both limits.
fn check_path_size(raw: &str) -> Result<(), String> {
    let steps = raw.split('.').count();
    if raw.len() > MAX_PATH_BYTES || steps > MAX_PATH_STEPS {
        return Err(format!(
            "path {} has {steps} steps and {} bytes; a path has at most {MAX_PATH_STEPS} steps and {MAX_PATH_BYTES} bytes",
            shown(raw),
            raw.len()
        ));
    }
    Ok(())
}

/// Checks a constant (`eq`, `ne`, an `in` item, a `set` value) against the value bounds.
fn check_value(v: &Value, at: &str) -> Result<(), String> {
    if deeper_than(v, MAX_VALUE_DEPTH) {
        return Err(format!(
            "{at}: value nested more than {MAX_VALUE_DEPTH} levels deep"
        ));
    }
    // Within the depth bound, serializing is safe.
    let size = serde_json::to_string(v).map_or(usize::MAX, |t| t.len());
    if size > MAX_VALUE_BYTES {
        return Err(format!(
            "{at}: value of {size} bytes of JSON, more than the {MAX_VALUE_BYTES} allowed"
        ));
    }
    Ok(())
}

/// The compiled routing for a stored text, compiled once and shared; `None` text is the
/// empty routing. A text that does not compile (saved before today's bounds, or written
/// past hookrelay) yields an unusable routing ([`Routing::error`]): every delivery through
/// it fails with that error, and nothing else stops.
pub fn compiled(text: Option<&str>) -> Arc<Routing> {
    #[derive(Default)]
    struct Cache {
        map: HashMap<String, Arc<Routing>>,
        bytes: usize,
    }
    static EMPTY: OnceLock<Arc<Routing>> = OnceLock::new();
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    let empty = || EMPTY.get_or_init(|| Arc::new(Routing::default())).clone();
    let Some(text) = text.filter(|t| !t.is_empty() && *t != "{}") else {
        return empty();
    };
    if text.len() > MAX_ROUTING_BYTES {
        // Not even parsed (nor cached): no routing this large was ever accepted.
        let error = format!(
            "endpoint routing is unusable: {} bytes of JSON, more than the {MAX_ROUTING_BYTES} allowed; replace the endpoint's routing",
            text.len()
        );
        return Arc::new(Routing::unusable(RoutingSpec::default(), error, text));
    }
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().ok().and_then(|c| c.map.get(text).cloned()) {
        return hit;
    }
    let routing = match serde_json::from_str::<RoutingSpec>(text) {
        Ok(spec) => Routing::compile(spec.clone()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "stored endpoint routing does not compile; its deliveries fail");
            let error =
                format!("endpoint routing is unusable: {e}; replace the endpoint's routing");
            Routing::unusable(spec, error, text)
        }),
        Err(e) => {
            tracing::error!(error = %e, "stored endpoint routing is not valid; its deliveries fail");
            let error = format!(
                "endpoint routing is unusable: stored text is not a routing ({e}); replace the endpoint's routing"
            );
            Routing::unusable(RoutingSpec::default(), error, text)
        }
    };
    let routing = Arc::new(routing);
    if let Ok(mut c) = cache.lock() {
        // Bounded in entries and bytes: endpoints change rarely, so a full reset now and
        // then costs little.
        if c.map.len() >= 10_000 || c.bytes >= 64 * 1024 * 1024 {
            *c = Cache::default();
        }
        c.bytes += text.len();
        c.map.insert(text.to_owned(), routing.clone());
    }
    routing
}

/// A dot path: a root (`type`, `actor`, `id`, `timestamp` or `data`) and steps below it.
#[derive(Debug, Clone, PartialEq)]
struct Path {
    root: String,
    steps: Vec<String>,
}

impl Path {
    fn parse(raw: &str) -> Result<Self, String> {
        check_path_size(raw)?;
        let mut parts = raw.split('.');
        let root = parts.next().unwrap_or_default();
        if !matches!(root, "type" | "actor" | "id" | "timestamp" | "data") {
            return Err(format!(
                "path {} must start with type, actor, id, timestamp or data",
                shown(raw)
            ));
        }
        let steps: Vec<String> = parts.map(str::to_owned).collect();
        if steps.iter().any(String::is_empty) {
            return Err(format!("path {} has an empty step", shown(raw)));
        }
        if root != "data" && !steps.is_empty() {
            return Err(format!(
                "path {}: only data has fields below it",
                shown(raw)
            ));
        }
        Ok(Self {
            root: root.to_owned(),
            steps,
        })
    }
}

fn step_into<'a>(value: &'a Value, step: &str) -> Option<&'a Value> {
    match value {
        Value::Object(m) => m.get(step),
        Value::Array(a) => a.get(step.parse::<usize>().ok()?),
        _ => None,
    }
}

/// The value at `path` in `event` (owned only for the roots that are not JSON already).
fn lookup_event(event: &Event, path: &Path) -> Option<Value> {
    match path.root.as_str() {
        "type" => Some(Value::String(event.event_type.clone())),
        "actor" => event.actor.clone().map(Value::String),
        "id" => Some(Value::String(event.id.clone())),
        "timestamp" => Some(Value::String(event.created_at.to_rfc3339())),
        _ => path
            .steps
            .iter()
            .try_fold(&event.data, |v, s| step_into(v, s))
            .cloned(),
    }
}

#[derive(Debug)]
enum Filter {
    And(Vec<Filter>),
    Or(Vec<Filter>),
    Not(Box<Filter>),
    Cond(Path, Op),
}

#[derive(Debug)]
enum Op {
    Eq(Value),
    Ne(Value),
    In(Vec<Value>),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    Exists(bool),
    Prefix(String),
}

const OPS: &str = "eq, ne, in, gt, gte, lt, lte, exists, prefix";

impl Filter {
    fn compile(v: &Value, at: &str, depth: usize, budget: &mut usize) -> Result<Self, String> {
        if depth > MAX_DEPTH {
            return Err(format!("{at}: nested more than {MAX_DEPTH} levels"));
        }
        let obj = v
            .as_object()
            .ok_or_else(|| format!("{at}: must be an object"))?;
        let list = |key: &str, items: &Value, budget: &mut usize| -> Result<Vec<Filter>, String> {
            let items = items
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| format!("{at}.{key}: must be a non-empty array of filters"))?;
            items
                .iter()
                .enumerate()
                .map(|(i, f)| Filter::compile(f, &format!("{at}.{key}[{i}]"), depth + 1, budget))
                .collect()
        };
        if obj.len() == 1 {
            if let Some((key, inner)) = obj.iter().next() {
                match key.as_str() {
                    "and" => return Ok(Self::And(list("and", inner, budget)?)),
                    "or" => return Ok(Self::Or(list("or", inner, budget)?)),
                    "not" => {
                        let inner =
                            Filter::compile(inner, &format!("{at}.not"), depth + 1, budget)?;
                        return Ok(Self::Not(Box::new(inner)));
                    }
                    _ => {}
                }
            }
        }
        // A condition: {"field": PATH, <op>: VALUE}.
        if *budget == 0 {
            return Err(format!("{at}: more than {MAX_CONDITIONS} conditions"));
        }
        *budget -= 1;
        let field = obj
            .get("field")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                format!("{at}: a condition needs \"field\" (a path) and one operator ({OPS}); or use and, or, not")
            })?;
        let path = Path::parse(field).map_err(|e| format!("{at}.field: {e}"))?;
        let mut ops = obj.iter().filter(|(k, _)| *k != "field");
        let (op, arg) = match (ops.next(), ops.next()) {
            (Some(one), None) => one,
            (None, _) => return Err(format!("{at}: no operator; use one of {OPS}")),
            (Some(_), Some(_)) => return Err(format!("{at}: more than one operator")),
        };
        let number = || {
            arg.as_f64()
                .ok_or_else(|| format!("{at}.{op}: must be a number"))
        };
        let op = match op.as_str() {
            "eq" | "ne" => {
                check_value(arg, &format!("{at}.{op}"))?;
                if op == "eq" {
                    Op::Eq(arg.clone())
                } else {
                    Op::Ne(arg.clone())
                }
            }
            "in" => {
                let items = arg
                    .as_array()
                    .ok_or_else(|| format!("{at}.in: must be an array"))?;
                if items.len() > MAX_IN_ITEMS {
                    return Err(format!(
                        "{at}.in: {} items, more than the {MAX_IN_ITEMS} allowed",
                        items.len()
                    ));
                }
                for (i, item) in items.iter().enumerate() {
                    check_value(item, &format!("{at}.in[{i}]"))?;
                }
                Op::In(items.clone())
            }
            "gt" => Op::Gt(number()?),
            "gte" => Op::Gte(number()?),
            "lt" => Op::Lt(number()?),
            "lte" => Op::Lte(number()?),
            "exists" => Op::Exists(
                arg.as_bool()
                    .ok_or_else(|| format!("{at}.exists: must be true or false"))?,
            ),
            "prefix" => Op::Prefix(
                arg.as_str()
                    .ok_or_else(|| format!("{at}.prefix: must be a string"))?
                    .to_owned(),
            ),
            other => {
                return Err(format!(
                    "{at}: unknown operator {}; use one of {OPS}",
                    shown(other)
                ))
            }
        };
        Ok(Self::Cond(path, op))
    }

    fn eval(&self, event: &Event) -> bool {
        match self {
            Self::And(all) => all.iter().all(|f| f.eval(event)),
            Self::Or(any) => any.iter().any(|f| f.eval(event)),
            Self::Not(f) => !f.eval(event),
            Self::Cond(path, op) => {
                let value = lookup_event(event, path);
                let value = value.as_ref().filter(|v| !v.is_null());
                match op {
                    Op::Eq(want) => value.is_some_and(|v| json_eq(v, want)),
                    Op::Ne(want) => !value.is_some_and(|v| json_eq(v, want)),
                    Op::In(set) => value.is_some_and(|v| set.iter().any(|w| json_eq(v, w))),
                    Op::Gt(n) => value.and_then(Value::as_f64).is_some_and(|v| v > *n),
                    Op::Gte(n) => value.and_then(Value::as_f64).is_some_and(|v| v >= *n),
                    Op::Lt(n) => value.and_then(Value::as_f64).is_some_and(|v| v < *n),
                    Op::Lte(n) => value.and_then(Value::as_f64).is_some_and(|v| v <= *n),
                    Op::Exists(want) => value.is_some() == *want,
                    Op::Prefix(p) => value
                        .and_then(Value::as_str)
                        .is_some_and(|s| s.starts_with(p.as_str())),
                }
            }
        }
    }
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// One transformation step.
#[derive(Debug)]
enum Step {
    /// Keep only these paths (nested structure kept).
    Pick(Vec<Vec<String>>),
    /// Move the value at each source path to its target path.
    Rename(Vec<(Vec<String>, Vec<String>)>),
    /// Set constant values.
    Set(Vec<(Vec<String>, Value)>),
}

fn body_path(raw: &str, at: &str) -> Result<Vec<String>, String> {
    check_path_size(raw).map_err(|e| format!("{at}: {e}"))?;
    let steps: Vec<String> = raw.split('.').map(str::to_owned).collect();
    if raw.is_empty() || steps.iter().any(String::is_empty) {
        return Err(format!("{at}: {} is not a dot path", shown(raw)));
    }
    Ok(steps)
}

fn compile_transform(v: &Value) -> Result<Vec<Step>, String> {
    let steps = v
        .as_array()
        .ok_or("transform: must be an array of steps, e.g. [{\"rename\": {\"data.message\": \"text\"}}, {\"pick\": [\"text\"]}]")?;
    if steps.len() > MAX_STEPS {
        return Err(format!("transform: more than {MAX_STEPS} steps"));
    }
    steps
        .iter()
        .enumerate()
        .map(|(i, step)| {
            let at = format!("transform[{i}]");
            let obj = step
                .as_object()
                .filter(|o| o.len() == 1)
                .ok_or_else(|| format!("{at}: a step is one of {{\"pick\": […]}}, {{\"rename\": {{…}}}}, {{\"set\": {{…}}}}"))?;
            let Some((kind, arg)) = obj.iter().next() else {
                return Err(format!("{at}: empty step"));
            };
            match kind.as_str() {
                "pick" => {
                    let paths = arg
                        .as_array()
                        .ok_or_else(|| format!("{at}.pick: must be an array of paths"))?;
                    paths
                        .iter()
                        .map(|p| {
                            p.as_str()
                                .ok_or_else(|| format!("{at}.pick: paths are strings"))
                                .and_then(|p| body_path(p, &format!("{at}.pick")))
                        })
                        .collect::<Result<_, _>>()
                        .map(Step::Pick)
                }
                "rename" => {
                    let map = arg
                        .as_object()
                        .ok_or_else(|| format!("{at}.rename: must be an object of from: to"))?;
                    map.iter()
                        .map(|(from, to)| {
                            let to = to.as_str().ok_or_else(|| {
                                format!("{at}.rename: {}: target must be a path", shown(from))
                            })?;
                            Ok((
                                body_path(from, &format!("{at}.rename"))?,
                                body_path(to, &format!("{at}.rename"))?,
                            ))
                        })
                        .collect::<Result<_, String>>()
                        .map(Step::Rename)
                }
                "set" => {
                    let map = arg
                        .as_object()
                        .ok_or_else(|| format!("{at}.set: must be an object of path: value"))?;
                    map.iter()
                        .map(|(path, value)| {
                            let steps = body_path(path, &format!("{at}.set"))?;
                            check_value(value, &format!("{at}.set: {}", shown(path)))?;
                            Ok((steps, value.clone()))
                        })
                        .collect::<Result<_, String>>()
                        .map(Step::Set)
                }
                other => Err(format!(
                    "{at}: unknown step {}; use pick, rename or set",
                    shown(other)
                )),
            }
        })
        .collect()
}

fn get_path<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, s| step_into(v, s))
}

fn take_path(v: &mut Value, path: &[String]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let parent = parents.iter().try_fold(v, |v, s| match v {
        Value::Object(m) => m.get_mut(s),
        _ => None,
    })?;
    parent.as_object_mut()?.remove(last)
}

fn set_path(v: &mut Value, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for step in parents {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(m) = cur else { return };
        cur = m
            .entry(step.clone())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    if let Value::Object(m) = cur {
        m.insert(last.clone(), value);
    }
}

impl Step {
    fn apply(&self, mut body: Value) -> Value {
        match self {
            Self::Pick(paths) => {
                let mut out = Value::Object(Map::new());
                for p in paths {
                    if let Some(v) = get_path(&body, p) {
                        set_path(&mut out, p, v.clone());
                    }
                }
                out
            }
            Self::Rename(pairs) => {
                for (from, to) in pairs {
                    if let Some(v) = take_path(&mut body, from) {
                        set_path(&mut body, to, v);
                    }
                }
                body
            }
            Self::Set(pairs) => {
                for (path, value) in pairs {
                    set_path(&mut body, path, value.clone());
                }
                body
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(data: Value, actor: Option<&str>) -> Event {
        Event {
            id: "evt_1".into(),
            tenant_id: "t".into(),
            event_type: "order.updated".into(),
            data,
            actor: actor.map(str::to_owned),
            idempotency_key: None,
            traceparent: None,
            created_at: crate::domain::now(),
            deliver_at: None,
        }
    }

    fn routing(spec: Value) -> Result<Routing, String> {
        let spec: RoutingSpec = serde_json::from_value(spec).map_err(|e| e.to_string())?;
        Routing::compile(spec)
    }

    #[test]
    fn filters_match_as_documented() {
        let data = json!({"status": "paid", "amount": 120, "tags": ["vip"], "customer": {"country": "DE", "email": null},
                          "items": [{"sku": "A-1"}]});
        let ev = event(data, Some("user_7"));
        let cases: &[(Value, bool)] = &[
            (json!({"field": "data.status", "eq": "paid"}), true),
            (json!({"field": "data.status", "eq": "open"}), false),
            (json!({"field": "data.status", "ne": "open"}), true),
            (json!({"field": "data.missing", "ne": "x"}), true),
            (
                json!({"field": "data.status", "in": ["paid", "refunded"]}),
                true,
            ),
            (json!({"field": "data.status", "in": ["open"]}), false),
            (json!({"field": "data.amount", "gt": 100}), true),
            (json!({"field": "data.amount", "gt": 120}), false),
            (json!({"field": "data.amount", "gte": 120}), true),
            (json!({"field": "data.amount", "lt": 120.5}), true),
            (json!({"field": "data.amount", "lte": 119}), false),
            (json!({"field": "data.amount", "eq": 120.0}), true),
            (json!({"field": "data.status", "gt": 1}), false),
            (json!({"field": "data.customer.country", "eq": "DE"}), true),
            (
                json!({"field": "data.customer.email", "exists": true}),
                false,
            ),
            (
                json!({"field": "data.customer.email", "exists": false}),
                true,
            ),
            (json!({"field": "data.customer", "exists": true}), true),
            (json!({"field": "data.items.0.sku", "prefix": "A-"}), true),
            (json!({"field": "data.items.1.sku", "exists": true}), false),
            (json!({"field": "data.tags", "eq": ["vip"]}), true),
            (json!({"field": "type", "prefix": "order."}), true),
            (json!({"field": "type", "eq": "order.created"}), false),
            (json!({"field": "actor", "eq": "user_7"}), true),
            (
                json!({"and": [{"field": "data.status", "eq": "paid"}, {"field": "data.amount", "gt": 500}]}),
                false,
            ),
            (
                json!({"or": [{"field": "data.status", "eq": "open"}, {"field": "data.amount", "gt": 100}]}),
                true,
            ),
            (
                json!({"not": {"field": "data.status", "eq": "paid"}}),
                false,
            ),
            (
                json!({"and": [{"not": {"field": "actor", "exists": false}}, {"or": [{"field": "data.customer.country", "in": ["FR", "DE"]}]}]}),
                true,
            ),
        ];
        for (filter, want) in cases {
            let r = routing(json!({ "filter": filter })).unwrap();
            assert_eq!(r.matches(&ev), *want, "{filter}");
        }
        let no_actor = event(json!({}), None);
        let r = routing(json!({"filter": {"field": "actor", "exists": true}})).unwrap();
        assert!(!r.matches(&no_actor));
        assert!(Routing::default().matches(&no_actor));
    }

    #[test]
    fn invalid_filters_name_the_failing_part() {
        let cases: &[(Value, &str)] = &[
            (json!("status=paid"), "filter: must be an object"),
            (
                json!({"field": "status", "eq": 1}),
                "filter.field: path \"status\" must start with",
            ),
            (
                json!({"field": "data.a", "gtt": 1}),
                "unknown operator \"gtt\"",
            ),
            (json!({"field": "data.a"}), "filter: no operator"),
            (
                json!({"field": "data.a", "eq": 1, "ne": 2}),
                "more than one operator",
            ),
            (
                json!({"field": "data.a", "gt": "1"}),
                "filter.gt: must be a number",
            ),
            (
                json!({"field": "data.a", "in": 1}),
                "filter.in: must be an array",
            ),
            (json!({"and": []}), "filter.and: must be a non-empty array"),
            (
                json!({"or": [{"field": "data.a", "eq": 1}, {"fild": "x"}]}),
                "filter.or[1]: a condition needs",
            ),
            (
                json!({"not": {"field": "data..a", "eq": 1}}),
                "filter.not.field: path \"data..a\" has an empty step",
            ),
            (
                json!({"field": "type.x", "eq": 1}),
                "only data has fields below it",
            ),
        ];
        for (filter, needle) in cases {
            let err = routing(json!({ "filter": filter })).unwrap_err();
            assert!(err.contains(needle), "{filter}: {err}");
        }
        let mut deep = json!({"field": "data.a", "eq": 1});
        for _ in 0..20 {
            deep = json!({ "not": deep });
        }
        assert!(routing(json!({ "filter": deep }))
            .unwrap_err()
            .contains("nested"));
        let many: Vec<Value> = (0..101)
            .map(|i| json!({"field": "data.a", "eq": i}))
            .collect();
        assert!(routing(json!({"filter": {"or": many}}))
            .unwrap_err()
            .contains("more than 100"));
        assert!(
            routing(json!({"filtre": {}})).is_err(),
            "unknown routing keys are refused"
        );
    }

    #[test]
    fn transforms_reshape_the_envelope() {
        let body = json!({"id": "evt_1", "type": "alert.raised", "timestamp": "t",
                          "data": {"message": "disk full", "host": {"name": "db1"}, "level": 3}});
        let r = routing(json!({"transform": [
            {"rename": {"data.message": "text", "data.host.name": "fields.host"}},
            {"set": {"username": "hookrelay", "fields.source": "hookrelay"}},
            {"pick": ["text", "username", "fields", "data.level", "nope.x"]}
        ]}))
        .unwrap();
        assert_eq!(
            r.transform(body.clone()).unwrap(),
            json!({"text": "disk full", "username": "hookrelay",
                   "fields": {"host": "db1", "source": "hookrelay"}, "data": {"level": 3}})
        );
        assert_eq!(Routing::default().transform(body.clone()).unwrap(), body);
        for (bad, needle) in [
            (
                json!({"pick": "text"}),
                "transform[0].pick: must be an array",
            ),
            (json!({"rename": {"a": 1}}), "target must be a path"),
            (json!({"drop": ["a"]}), "unknown step \"drop\""),
            (json!({"set": {"a..b": 1}}), "is not a dot path"),
            (json!({"pick": [], "set": {}}), "a step is one of"),
        ] {
            let err = routing(json!({ "transform": [bad] })).unwrap_err();
            assert!(err.contains(needle), "{err}");
        }
        assert!(routing(json!({"transform": {"pick": []}}))
            .unwrap_err()
            .contains("array of steps"));
    }

    #[test]
    fn ordering_keys_come_from_data_or_actor() {
        let r = routing(json!({"ordering": {"key": "data.order.id"}})).unwrap();
        assert!(r.blocks_on_failure());
        assert_eq!(
            r.ordering_key(&event(json!({"order": {"id": "o1"}}), None))
                .as_deref(),
            Some("o1")
        );
        assert_eq!(
            r.ordering_key(&event(json!({"order": {"id": 7}}), None))
                .as_deref(),
            Some("7")
        );
        assert_eq!(r.ordering_key(&event(json!({}), None)).as_deref(), Some(""));
        let by_actor =
            routing(json!({"ordering": {"key": "actor", "on_failure": "skip"}})).unwrap();
        assert!(!by_actor.blocks_on_failure());
        assert_eq!(
            by_actor
                .ordering_key(&event(json!({}), Some("u1")))
                .as_deref(),
            Some("u1")
        );
        assert_eq!(
            Routing::default().ordering_key(&event(json!({}), None)),
            None
        );
        assert!(routing(json!({"ordering": {"key": "type"}}))
            .unwrap_err()
            .contains("ordering.key"));
        assert!(routing(json!({"ordering": {"key": "data.a", "on_failure": "drop"}})).is_err());
    }

    #[test]
    fn compiled_routings_are_shared() {
        let text = r#"{"filter":{"field":"data.a","eq":1}}"#;
        let a = compiled(Some(text));
        let b = compiled(Some(text));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(compiled(None).is_empty());
        assert!(compiled(Some("{}")).is_empty());
    }

    fn dots(n: usize) -> String {
        vec!["a"; n].join(".")
    }

    /// Nests `inner` `levels` arrays deep.
    fn nested(levels: usize, inner: Value) -> Value {
        (0..levels).fold(inner, |v, _| json!([v]))
    }

    #[test]
    fn everything_stored_is_bounded_and_the_error_names_the_limit() {
        let big = "x".repeat(MAX_VALUE_BYTES);
        let many: Vec<Value> = (0..=MAX_IN_ITEMS).map(|i| json!(i)).collect();
        let cases: Vec<(Value, &str)> = vec![
            (
                json!({"transform": [{"set": {dots(100_000): 1}}]}),
                "transform[0].set: path \"a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.\"… has 100000 steps and 199999 bytes; a path has at most 32 steps and 256 bytes",
            ),
            (
                json!({"transform": [{"set": {dots(33): 1}}]}),
                "at most 32 steps",
            ),
            (
                json!({"transform": [{"pick": ["x".repeat(257)]}]}),
                "at most 32 steps and 256 bytes",
            ),
            (
                json!({"transform": [{"rename": {"a": dots(33)}}]}),
                "transform[0].rename: path",
            ),
            (
                json!({"filter": {"field": format!("data.{}", dots(32)), "eq": 1}}),
                "filter.field: path",
            ),
            (
                json!({"ordering": {"key": format!("data.{}", dots(32))}}),
                "ordering.key: path",
            ),
            (
                json!({"filter": {"field": "data.a", "in": many}}),
                "filter.in: 1001 items, more than the 1000 allowed",
            ),
            (
                json!({"filter": {"field": "data.a", "in": [1, nested(33, json!(1))]}}),
                "filter.in[1]: value nested more than 32 levels deep",
            ),
            (
                json!({"filter": {"field": "data.a", "eq": big}}),
                "filter.eq: value of 16386 bytes of JSON, more than the 16384 allowed",
            ),
            (
                json!({"filter": {"field": "data.a", "ne": nested(33, json!(1))}}),
                "filter.ne: value nested more than 32 levels deep",
            ),
            (
                json!({"transform": [{"set": {"a": nested(33, json!(1))}}]}),
                "transform[0].set: \"a\": value nested more than 32 levels deep",
            ),
            (
                json!({"transform": [{"set": {"a": "y".repeat(MAX_VALUE_BYTES)}}]}),
                "more than the 16384 allowed",
            ),
            (
                json!({"transform": (0..5).map(|i| json!({"set": {format!("k{i}"): "z".repeat(15_000)}})).collect::<Vec<_>>()}),
                "routing: 75",
            ),
            (
                json!({"filter": {"field": "data.a", "x".repeat(10_000): 1}}),
                "unknown operator \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"…",
            ),
            (
                json!({"filter": nested(100, json!(1))}),
                "filter: nested more than 72 levels deep",
            ),
        ];
        for (spec, needle) in cases {
            let err = routing(spec).unwrap_err();
            assert!(err.contains(needle), "{needle:?} not in {err:?}");
            assert!(err.len() < 300, "messages stay short: {err}");
        }
        // At the bounds is fine.
        let many: Vec<Value> = (0..MAX_IN_ITEMS).map(|i| json!(i)).collect();
        routing(json!({
            "filter": {"and": [{"field": format!("data.{}", dots(31)), "in": many},
                               {"field": "data.a", "eq": nested(32, json!("x".repeat(1000)))}]},
            "transform": [{"set": {dots(32): nested(32, json!(1))}}],
            "ordering": {"key": format!("data.{}", dots(31))}
        }))
        .unwrap();
    }

    #[test]
    fn transformed_bodies_never_nest_beyond_the_bound() {
        // Each rename moves everything 31 levels further down: within a few steps the body
        // would pass the bound, and the delivery fails instead of overflowing the stack.
        let steps: Vec<Value> = (0..MAX_STEPS)
            .map(|_| json!({"rename": {"data": format!("data.{}", dots(31))}}))
            .collect();
        let r = routing(json!({ "transform": steps })).unwrap();
        let err = r
            .transform(json!({"data": nested(120, json!(1))}))
            .unwrap_err();
        assert!(
            err.contains("the body would nest more than 256 levels deep"),
            "{err}"
        );
        // Data at the parser's limit, moved once, is fine.
        let once =
            routing(json!({"transform": [{"rename": {"data": format!("data.{}", dots(31))}}]}))
                .unwrap();
        let body = once
            .transform(json!({"data": nested(127, json!(1))}))
            .unwrap();
        assert!(!deeper_than(&body, 127 + 32));
        assert!(deeper_than(&body, 127 + 31));
    }

    #[test]
    fn depth_is_measured_without_recursion() {
        assert!(!deeper_than(&json!(1), 0));
        assert!(!deeper_than(&json!([]), 1));
        assert!(deeper_than(&json!([]), 0));
        assert!(!deeper_than(&json!({"a": [1, {"b": 2}]}), 3));
        assert!(deeper_than(&json!({"a": [1, {"b": {}}]}), 3));
        // Deep enough to overflow a recursive walk; built and torn down without recursion.
        let mut v = Value::Null;
        for _ in 0..200_000 {
            v = Value::Array(vec![v]);
        }
        assert!(deeper_than(&v, MAX_BODY_DEPTH));
        while let Value::Array(mut a) = v {
            v = a.pop().unwrap_or_default();
        }
    }

    #[test]
    fn a_stored_routing_that_does_not_compile_fails_its_deliveries() {
        let ev = event(json!({"a": 1}), None);
        let over =
            json!({"transform": [{"set": {dots(33): 1}}], "filter": {"field": "data.a", "eq": 2}})
                .to_string();
        for (text, needle) in [
            (over.as_str(), "at most 32 steps"),
            ("not json", "not a routing"),
            (r#"{"filtre": {}}"#, "not a routing"),
        ] {
            let r = compiled(Some(text));
            let err = r.error().unwrap();
            assert!(err.starts_with("endpoint routing is unusable: "), "{err}");
            assert!(err.contains(needle), "{err}");
            assert!(!r.is_empty());
            assert!(r.matches(&ev), "its deliveries are made, to fail visibly");
            assert_eq!(r.ordering_key(&ev), None);
            assert_eq!(r.transform(json!({})).unwrap_err(), err);
            assert_eq!(r.unusable_text(), Some(text), "kept as stored");
            assert!(Arc::ptr_eq(&r, &compiled(Some(text))), "compiled once");
        }
        let huge = json!({"transform": [{"set": {dots(100_000): 1}}]}).to_string();
        let r = compiled(Some(&huge));
        assert!(
            r.error().unwrap().contains("more than the 65536 allowed"),
            "{:?}",
            r.error()
        );
        assert_eq!(r.unusable_text(), Some(huge.as_str()));
    }
}
