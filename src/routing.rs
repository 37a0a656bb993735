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

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::domain::Event;

/// Most conditions one filter may hold, and how deep it may nest.
const MAX_CONDITIONS: usize = 100;
const MAX_DEPTH: usize = 16;
/// Most steps a transformation may have.
const MAX_STEPS: usize = 50;

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
}

impl PartialEq for Routing {
    fn eq(&self, other: &Self) -> bool {
        self.spec == other.spec
    }
}

impl Routing {
    /// Validates and compiles `spec`; the error names the failing part.
    pub fn compile(spec: RoutingSpec) -> Result<Self, String> {
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
                        "ordering.key: {:?} must be \"actor\" or a path into data (\"data.…\")",
                        o.key
                    ));
                }
                Some(path)
            }
            None => None,
        };
        Ok(Self {
            spec,
            filter,
            transform,
            ordering_key,
        })
    }

    /// Whether the routing does anything (an endpoint without one skips all of this).
    pub fn is_empty(&self) -> bool {
        self.filter.is_none() && self.transform.is_empty() && self.ordering_key.is_none()
    }

    /// Whether `event` passes the filter (always, without one).
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

    /// Applies the transformation to the delivered envelope (unchanged without one).
    pub fn transform(&self, mut body: Value) -> Value {
        for step in &self.transform {
            body = step.apply(body);
        }
        body
    }
}

/// The compiled routing for a stored text, compiled once and shared. A text that no longer
/// compiles (it was valid when saved) yields an empty routing rather than stopping
/// deliveries; `None` text is the empty routing.
pub fn compiled(text: Option<&str>) -> Arc<Routing> {
    static EMPTY: OnceLock<Arc<Routing>> = OnceLock::new();
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Routing>>>> = OnceLock::new();
    let empty = || EMPTY.get_or_init(|| Arc::new(Routing::default())).clone();
    let Some(text) = text.filter(|t| !t.is_empty() && *t != "{}") else {
        return empty();
    };
    let cache = CACHE.get_or_init(Default::default);
    if let Some(hit) = cache.lock().ok().and_then(|c| c.get(text).cloned()) {
        return hit;
    }
    let routing = serde_json::from_str::<RoutingSpec>(text)
        .map_err(|e| e.to_string())
        .and_then(Routing::compile);
    let routing = match routing {
        Ok(r) => Arc::new(r),
        Err(e) => {
            tracing::error!(error = %e, "stored endpoint routing does not compile; ignoring it");
            return empty();
        }
    };
    if let Ok(mut c) = cache.lock() {
        // Bounded: endpoints change rarely, so a full reset now and then costs little.
        if c.len() >= 10_000 {
            c.clear();
        }
        c.insert(text.to_owned(), routing.clone());
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
        let mut parts = raw.split('.');
        let root = parts.next().unwrap_or_default();
        if !matches!(root, "type" | "actor" | "id" | "timestamp" | "data") {
            return Err(format!(
                "path {raw:?} must start with type, actor, id, timestamp or data"
            ));
        }
        let steps: Vec<String> = parts.map(str::to_owned).collect();
        if steps.iter().any(String::is_empty) {
            return Err(format!("path {raw:?} has an empty step"));
        }
        if root != "data" && !steps.is_empty() {
            return Err(format!("path {raw:?}: only data has fields below it"));
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
            "eq" => Op::Eq(arg.clone()),
            "ne" => Op::Ne(arg.clone()),
            "in" => Op::In(
                arg.as_array()
                    .cloned()
                    .ok_or_else(|| format!("{at}.in: must be an array"))?,
            ),
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
                    "{at}: unknown operator {other:?}; use one of {OPS}"
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
    let steps: Vec<String> = raw.split('.').map(str::to_owned).collect();
    if raw.is_empty() || steps.iter().any(String::is_empty) {
        return Err(format!("{at}: {raw:?} is not a dot path"));
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
                            let to = to
                                .as_str()
                                .ok_or_else(|| format!("{at}.rename.{from}: target must be a path"))?;
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
                            Ok((body_path(path, &format!("{at}.set"))?, value.clone()))
                        })
                        .collect::<Result<_, String>>()
                        .map(Step::Set)
                }
                other => Err(format!(
                    "{at}: unknown step {other:?}; use pick, rename or set"
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
            r.transform(body.clone()),
            json!({"text": "disk full", "username": "hookrelay",
                   "fields": {"host": "db1", "source": "hookrelay"}, "data": {"level": 3}})
        );
        assert_eq!(Routing::default().transform(body.clone()), body);
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
        assert!(compiled(Some("not json")).is_empty());
    }
}
