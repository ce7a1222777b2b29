//! graphite-web 1.1.10's events API, which Grafana reads annotations from:
//! `POST /events/` (JSON `what`, `tags`, `when`, `data`), `GET
//! /events/get_data` (`from`, `until`, `tags`, `set`, `jsonp`), `GET
//! /events/` (a page listing them), `GET /events/<id>/` (a page, or JSON
//! with `Accept: application/json`), and graunt's own `DELETE
//! /events/<id>/` (graphite-web deletes through its admin pages). Events are
//! kept by an [`EventBook`]: this node's file, or the cluster's raft state.
//! A tenant's login does not see or post events: they are the estate's.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use axum::extract::{Extension, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use graunt_query::pyfmt::float_repr;
use graunt_query::time;
use graunt_storage::events::{Event, Events, NewEvent, SetOperation};
use jiff::Timestamp;
use serde_json::{json, Map, Value};

use super::auth::Identity;
use super::params::{param, Params};
use super::Api;

/// A future an [`EventBook`] answers with.
pub type BookFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// Where events are kept.
pub trait EventBook: Send + Sync {
    /// The events as this node sees them now.
    fn current(&self) -> Arc<Events>;
    /// Adds an event; done once [`EventBook::current`] shows it.
    fn add(&self, event: NewEvent) -> BookFuture<'_, ()>;
    /// Removes an event; done once [`EventBook::current`] no longer shows it.
    fn delete(&self, id: u64) -> BookFuture<'_, ()>;
}

/// The events of a node that is no cluster member, in
/// `<data_dir>/events.json`.
pub struct LocalEvents(Arc<Local>);

struct Local {
    path: PathBuf,
    /// Held only to swap the events in and out: readers never wait on a write.
    events: Mutex<Arc<Events>>,
    /// One change at a time, held through its fsync.
    writing: Mutex<()>,
}

impl LocalEvents {
    /// Opens the events kept at `path`.
    pub fn open(path: PathBuf) -> std::io::Result<LocalEvents> {
        let events = Events::load(&path)?;
        Ok(LocalEvents(Arc::new(Local {
            path,
            events: Mutex::new(Arc::new(events)),
            writing: Mutex::new(()),
        })))
    }

    /// Applies `f` to a copy, writes it, then shows it (on a blocking
    /// thread: the file is fsynced).
    fn change(&self, f: impl FnOnce(&mut Events) + Send + 'static) -> BookFuture<'_, ()> {
        let local = self.0.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || local.change(f))
                .await
                .map_err(|e| format!("writing events failed: {e}"))?
        })
    }
}

impl Local {
    fn change(&self, f: impl FnOnce(&mut Events)) -> Result<(), String> {
        let _writing = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = (**self.events.lock().unwrap_or_else(|e| e.into_inner())).clone();
        f(&mut next);
        next.save(&self.path)
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))?;
        *self.events.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(())
    }
}

impl EventBook for LocalEvents {
    fn current(&self) -> Arc<Events> {
        self.0
            .events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn add(&self, event: NewEvent) -> BookFuture<'_, ()> {
        self.change(move |e| {
            e.add(event);
        })
    }

    fn delete(&self, id: u64) -> BookFuture<'_, ()> {
        self.change(move |e| {
            e.remove(id);
        })
    }
}

/// graphite-web answers a plain `HttpResponse` as HTML.
const HTML: &str = "text/html; charset=utf-8";

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn py_json(value: &Value) -> String {
    let mut out = String::new();
    super::pyjson::write_py_json_text(&mut out, value);
    out
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    text(
        status,
        "application/json",
        py_json(&json!({ "error": message.into() })),
    )
}

fn refused_for_tenant() -> Response {
    error(
        StatusCode::FORBIDDEN,
        "events belong to the whole estate; a tenant's login cannot read or post them",
    )
}

/// An event as `get_data` answers it.
fn as_dict(e: &Event) -> Value {
    json!({
        "when": e.when(),
        "what": e.what,
        "data": e.data,
        "tags": e.shown_tags(),
        "id": e.id,
    })
}

/// Python's `str()` of a JSON value (graphite-web stores `data` that way).
fn py_str(v: &Value) -> String {
    fn repr(v: &Value, out: &mut String) {
        match v {
            Value::Null => out.push_str("None"),
            Value::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
            Value::Number(n) => match n.as_i64() {
                Some(i) => out.push_str(&i.to_string()),
                None => out.push_str(&float_repr(n.as_f64().unwrap_or(f64::NAN))),
            },
            Value::String(s) => out.push_str(&graunt_query::pyfmt::repr_str(s)),
            Value::Array(a) => {
                out.push('[');
                for (i, v) in a.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    repr(v, out);
                }
                out.push(']');
            }
            Value::Object(m) => {
                out.push('{');
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    repr(&Value::String(k.clone()), out);
                    out.push_str(": ");
                    repr(v, out);
                }
                out.push('}');
            }
        }
    }
    match v {
        Value::String(s) => s.clone(),
        v => {
            let mut out = String::new();
            repr(v, &mut out);
            out
        }
    }
}

/// Reads a posted event as graphite-web's `post_event` does; what it would
/// fail on with a 500 is a 400 naming the problem here.
fn parse_post(body: &[u8], now_us: i64) -> Result<NewEvent, Box<Response>> {
    let bad = |m: &str| Err(Box::new(error(StatusCode::BAD_REQUEST, m)));
    let Ok(Value::Object(event)) = serde_json::from_slice::<Value>(body) else {
        return bad(
            "the body must be a JSON object: {\"what\": …, \"tags\": …, \"when\": …, \"data\": …}",
        );
    };
    let tags = match event.get("tags") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => Some(
            list.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Some(_) => {
            // graphite-web's own answer, as it writes it.
            return Err(Box::new(text(
                StatusCode::BAD_REQUEST,
                HTML,
                py_json(&json!({"error": "\"tags\" must be an array or space-separated string"})),
            )));
        }
    };
    let when_us = match event.get("when") {
        None => Some(now_us),
        // Python's bool is an int.
        Some(Value::Bool(b)) => Some(i64::from(*b) * 1_000_000),
        Some(Value::Number(n)) => n.as_f64().and_then(when_us),
        Some(_) => None,
    };
    let Some(when_us) = when_us else {
        return bad("\"when\" must be seconds since the epoch, within years 1 to 9999");
    };
    let what = match event.get("what") {
        None | Some(Value::Null) => {
            return bad("\"what\" is required: a string saying what happened")
        }
        // graphite-web's text column keeps `str()` of anything else.
        Some(v) => py_str(v),
    };
    let data = match event.get("data") {
        None => String::new(),
        Some(Value::Null) => return bad("\"data\" cannot be null"),
        Some(v) => py_str(v),
    };
    let new = NewEvent {
        when_us,
        what,
        data,
        tags,
    };
    if let Err(e) = new.check() {
        return Err(Box::new(error(StatusCode::PAYLOAD_TOO_LARGE, e)));
    }
    Ok(new)
}

/// Seconds as Python's `datetime.utcfromtimestamp` takes them: the
/// fraction rounded to microseconds half to even; `None` outside the years
/// 1 to 9999 a datetime can hold.
fn when_us(seconds: f64) -> Option<i64> {
    if !(-62_135_596_800.0..253_402_300_800.0).contains(&seconds) {
        return None;
    }
    let whole = seconds.trunc();
    let mut us = ((seconds - whole) * 1e6).round_ties_even() as i64;
    let mut whole = whole as i64;
    if us >= 1_000_000 {
        whole += 1;
        us -= 1_000_000;
    } else if us < 0 {
        whole -= 1;
        us += 1_000_000;
    }
    Some(whole * 1_000_000 + us)
}

fn now_us() -> i64 {
    Timestamp::now().as_microsecond()
}

/// `GET /events/`: the page listing events; `POST /events/`: adds one.
pub async fn view(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    Query(params): Query<Params>,
) -> Response {
    let found = match listed(&api, &who, &params) {
        Ok(f) => f,
        Err(e) => return *e,
    };
    let mut rows = String::new();
    for e in &found {
        rows.push_str(&format!(
            "      <tr><td>{}</td><td><a href=\"/events/{}/\">{}</a></td><td>[{}]</td></tr>\n",
            html_when(e),
            e.id,
            escape(&e.what),
            e.shown_tags()
                .iter()
                .map(|t| format!("&#39;{}&#39;", escape(t)))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let main = if found.is_empty() {
        "    <br/>No events. Add events by posting (eg, curl -X POST http://&lt;host&gt;/events/ -d '{\"what\": \"Something Interesting\", \"tags\" : \"tag1\"}')\n".to_string()
    } else {
        format!(
            "    <table class=\"styledtable\" width=100%>\n      <tr><th>when</th><th>what</th><th>tags</th></tr>\n{rows}    </table>\n"
        )
    };
    text(
        StatusCode::OK,
        HTML,
        page("Events", "graphite events", &main),
    )
}

/// `POST /events/`.
pub async fn post(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    body: axum::body::Bytes,
) -> Response {
    if who.namespaces.is_some() {
        return refused_for_tenant();
    }
    let new = match parse_post(&body, now_us()) {
        Ok(n) => n,
        Err(e) => return *e,
    };
    match api.events.add(new).await {
        Ok(()) => text(StatusCode::OK, HTML, String::new()),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// graphite-web's `fetch`: `from` (default the epoch), `until` (default
/// now), `tags` (split on single spaces), `set`.
fn listed(api: &Api, who: &Identity, params: &Params) -> Result<Vec<Event>, Box<Response>> {
    if who.namespaces.is_some() {
        return Err(Box::new(refused_for_tenant()));
    }
    let events = api.events.current();
    let clock = Timestamp::now();
    let tz = jiff::tz::TimeZone::UTC;
    let at = |key: &str| -> Result<Option<i64>, Box<Response>> {
        match param(params, key) {
            None => Ok(None),
            Some(s) => time::parse(s, &tz, clock)
                .map(|t| Some(t.as_microsecond()))
                .map_err(|e| Box::new(error(StatusCode::BAD_REQUEST, format!("{key}: {e}")))),
        }
    };
    let from = at("from")?.unwrap_or(0);
    let until = at("until")?.unwrap_or_else(|| clock.as_microsecond());
    let tags: Option<Vec<String>> =
        param(params, "tags").map(|t| t.split(' ').map(str::to_string).collect());
    let op = SetOperation::parse(param(params, "set"));
    Ok(events
        .find(from, until, tags.as_deref(), op)
        .into_iter()
        .cloned()
        .collect())
}

/// `GET /events/get_data`: the events as JSON (or JSONP with `jsonp`).
pub async fn get_data(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    Query(params): Query<Params>,
) -> Response {
    let found = match listed(&api, &who, &params) {
        Ok(f) => f,
        Err(e) => return *e,
    };
    let body = py_json(&Value::Array(found.iter().map(as_dict).collect()));
    match param(&params, "jsonp") {
        Some(cb) => text(StatusCode::OK, "text/javascript", format!("{cb}({body})")),
        None => text(StatusCode::OK, "application/json", body),
    }
}

/// Django's JSON spelling of a datetime: ISO 8601, milliseconds when there
/// are microseconds, `Z` for UTC.
fn django_when(e: &Event) -> String {
    let t = Timestamp::from_microsecond(e.when_us).unwrap_or(Timestamp::UNIX_EPOCH);
    let base = t.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    match e.when_us.rem_euclid(1_000_000) {
        0 => format!("{base}Z"),
        us => format!("{base}.{:03}Z", us / 1000),
    }
}

/// graphite-web's page date: `H:i:s D d M Y`.
fn html_when(e: &Event) -> String {
    let t = Timestamp::from_microsecond(e.when_us).unwrap_or(Timestamp::UNIX_EPOCH);
    t.strftime("%H:%M:%S %a %d %b %Y").to_string()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn page(title: &str, heading: &str, main: &str) -> String {
    format!(
        "<html>\n  <head>\n    <title>{}</title>\n    <style type=\"text/css\">\n    body {{ font-family: sans-serif; font-size: 16px; margin: 50px; max-width: 1200px; }}\n    table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; }}\n    </style>\n  </head>\n  <body>\n    <div id=\"title\" style=\"text-align:center\"><h1>{}</h1></div>\n{main}  </body>\n</html>\n",
        escape(title),
        escape(heading)
    )
}

/// `GET /events/<id>/`: the event's page, or with `Accept:
/// application/json` (exactly, as graphite-web checks) the event as JSON.
pub async fn detail(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if who.namespaces.is_some() {
        return refused_for_tenant();
    }
    let json_wanted = headers
        .get(header::ACCEPT)
        .is_some_and(|a| a.as_bytes() == b"application/json");
    let events = api.events.current();
    let event = id
        .trim_end_matches('/')
        .parse::<u64>()
        .ok()
        .filter(|_| id.trim_end_matches('/').bytes().all(|b| b.is_ascii_digit()))
        .and_then(|id| events.get(id));
    let Some(e) = event else {
        return if json_wanted {
            error(StatusCode::NOT_FOUND, "Event matching query does not exist")
        } else {
            text(
                StatusCode::NOT_FOUND,
                HTML,
                page("Not found", "No such event", ""),
            )
        };
    };
    if json_wanted {
        let mut m = Map::new();
        m.insert("id".into(), e.id.into());
        m.insert("when".into(), django_when(e).into());
        m.insert("what".into(), e.what.clone().into());
        m.insert("data".into(), e.data.clone().into());
        m.insert("tags".into(), json!(e.shown_tags()));
        return text(
            StatusCode::OK,
            "application/json",
            py_json(&Value::Object(m)),
        );
    }
    let row = |k: &str, v: &str| format!("      <tr><td>{k}</td><td>{v}</td></tr>\n");
    let main = format!(
        "    <table class=\"styledtable\" width=100%>\n{}{}{}{}    </table>\n",
        row("when", &html_when(e)),
        row("what", &escape(&e.what)),
        row("data", &escape(&e.data)),
        row(
            "tags",
            &e.shown_tags()
                .iter()
                .map(|t| escape(t))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    );
    text(StatusCode::OK, HTML, page(&e.what, &e.what, &main))
}

/// `DELETE /events/<id>/` (graunt's own: graphite-web deletes in its admin).
pub async fn delete(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    Path(id): Path<String>,
) -> Response {
    if who.namespaces.is_some() {
        return refused_for_tenant();
    }
    let Ok(id) = id.trim_end_matches('/').parse::<u64>() else {
        return error(StatusCode::NOT_FOUND, "Event matching query does not exist");
    };
    if api.events.current().get(id).is_none() {
        return error(StatusCode::NOT_FOUND, "Event matching query does not exist");
    }
    match api.events.delete(id).await {
        Ok(()) => text(
            StatusCode::OK,
            "application/json",
            py_json(&json!({ "deleted": id })),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posted_events_read_as_graphite_web_stores_them() {
        let e = parse_post(
            br#"{"what":"deploy","tags":["web","prod"],"when":1700000100.75,"data":{"a":[1,2.5,true,null,"it's"]}}"#,
            0,
        )
        .unwrap();
        assert_eq!(e.tags.as_deref(), Some("web prod"));
        assert_eq!(e.when_us, 1_700_000_100_750_000);
        assert_eq!(e.data, r#"{'a': [1, 2.5, True, None, "it's"]}"#);
        assert!(parse_post(br#"{"what":"x","tags":5}"#, 0).is_err());
        assert!(parse_post(br#"{"tags":"a"}"#, 0).is_err());
        assert!(parse_post(br#"{"what":"x","when":1e12}"#, 0).is_err());
        let odd = parse_post(br#"{"what":5,"when":true,"data":"a\u0000b"}"#, 0).unwrap();
        assert_eq!((odd.what.as_str(), odd.when_us), ("5", 1_000_000));
        assert_eq!(py_str(&json!(["a\u{0}b"])), r"['a\x00b']");
        // Python rounds the fraction half to even, apart from the seconds.
        assert_eq!(when_us(1700000000.8359995), Some(1_700_000_000_835_999));
        assert_eq!(when_us(-1.5), Some(-1_500_000));
        assert!(parse_post(b"not json", 0).is_err());
        let now = parse_post(br#"{"what":"x"}"#, 42).unwrap();
        assert_eq!((now.when_us, now.tags, now.data), (42, None, String::new()));
    }

    #[test]
    fn when_in_djangos_spelling() {
        let mut e = Event {
            id: 1,
            when_us: 1_700_000_100_750_000,
            what: String::new(),
            data: String::new(),
            tags: None,
        };
        assert_eq!(django_when(&e), "2023-11-14T22:15:00.750Z");
        e.when_us = 1_700_000_000_000_000;
        assert_eq!(django_when(&e), "2023-11-14T22:13:20Z");
        assert_eq!(html_when(&e), "22:13:20 Tue 14 Nov 2023");
    }
}
