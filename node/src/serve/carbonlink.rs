//! Carbonlink: graphite-web's query channel into carbon-cache's memory, so a
//! stock graphite-web can list graunt in `CARBONLINK_HOSTS`. Requests and
//! answers are length-prefixed pickles: `cache-query`, `cache-query-bulk`,
//! `get-metadata` and `set-metadata` (key `aggregationMethod`), as carbon's
//! CacheManagementHandler answers them.

use std::collections::BTreeMap;
use std::sync::Arc;

use graunt_relay::codec::pickle::next_frame;
use graunt_relay::tls::Conn;
use graunt_storage::whisper::{self, AggregationMethod};
use serde_pickle::{DeOptions, HashableValue, SerOptions, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

use graunt_relay::net::read_some;
use graunt_relay::receive::{serve_connections, Limits};
use graunt_relay::shutdown::Shutdown;

use super::sink::StoreSink;

/// Accepts carbonlink connections until shutdown.
pub async fn serve(
    listener: TcpListener,
    node: Arc<StoreSink>,
    limits: Limits,
    shutdown: Shutdown,
) {
    serve_connections(
        listener,
        node,
        limits,
        shutdown,
        "carbonlink",
        None,
        move |stream, node, shutdown| async move {
            connection(stream, &node, limits, shutdown).await
        },
    )
    .await;
}

fn dict(entries: Vec<(&str, Value)>) -> Value {
    Value::Dict(
        entries
            .into_iter()
            .map(|(k, v)| (HashableValue::String(k.to_string()), v))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn error(message: String) -> Value {
    dict(vec![("error", Value::String(message))])
}

fn field<'a>(request: &'a BTreeMap<HashableValue, Value>, key: &str) -> Option<&'a Value> {
    request
        .get(&HashableValue::String(key.to_string()))
        .or_else(|| request.get(&HashableValue::Bytes(key.as_bytes().to_vec())))
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        Value::Bytes(b) => String::from_utf8(b.clone()).ok(),
        _ => None,
    }
}

fn datapoints(ingest: &StoreSink, metric: &str) -> Value {
    Value::List(
        ingest
            .store
            .cache
            .get(metric)
            .into_iter()
            .map(|(ts, v)| Value::Tuple(vec![Value::I64(ts), Value::F64(v)]))
            .collect(),
    )
}

/// Answers one request.
fn answer(ingest: &StoreSink, payload: &[u8]) -> Value {
    if let Err(e) = graunt_relay::codec::pickle_scan::check_plain(payload) {
        return error(format!("refused request: {e}"));
    }
    let request = match serde_pickle::value_from_slice(payload, DeOptions::new().decode_strings()) {
        Ok(Value::Dict(d)) => d,
        Ok(_) => return error("request is not a dict".into()),
        Err(e) => return error(format!("undecodable request: {e}")),
    };
    let kind = text(field(&request, "type")).unwrap_or_default();
    let metric = text(field(&request, "metric")).unwrap_or_default();
    match kind.as_str() {
        "cache-query" => {
            ingest.telemetry.cache_queries.inc();
            dict(vec![("datapoints", datapoints(ingest, &metric))])
        }
        "cache-query-bulk" => {
            ingest.telemetry.cache_queries.inc();
            let metrics = match field(&request, "metrics") {
                Some(Value::List(items) | Value::Tuple(items)) => items.clone(),
                _ => Vec::new(),
            };
            let by_metric = metrics
                .iter()
                .filter_map(|m| text(Some(m)))
                .map(|m| (HashableValue::String(m.clone()), datapoints(ingest, &m)))
                .collect();
            dict(vec![("datapointsByMetric", Value::Dict(by_metric))])
        }
        "get-metadata" | "set-metadata" => {
            let key = text(field(&request, "key")).unwrap_or_default();
            if key != "aggregationMethod" {
                return error(format!("Unsupported metadata key \"{key}\""));
            }
            if let Err(e) = graunt_storage::metric::validate_name(&metric) {
                return error(format!("{e}: {metric:?}"));
            }
            if kind == "get-metadata" {
                return match ingest.store.aggregation_of(&metric) {
                    Ok(m) => dict(vec![("value", Value::String(m.name().into()))]),
                    Err(e) => error(e.to_string()),
                };
            }
            let value = text(field(&request, "value")).unwrap_or_default();
            let method = match value.parse::<AggregationMethod>() {
                Ok(m) => m,
                Err(e) => return error(e.to_string()),
            };
            match whisper::set_aggregation(&ingest.store.path_of(&metric), method, None) {
                Ok((old, _)) => dict(vec![
                    ("old_value", Value::String(old.name().into())),
                    ("new_value", Value::String(value)),
                ]),
                Err(e) => error(e.to_string()),
            }
        }
        other => error(format!("Invalid request type \"{other}\"")),
    }
}

async fn connection(mut stream: Conn, ingest: &StoreSink, limits: Limits, mut shutdown: Shutdown) {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        if read_some(
            &mut stream,
            &mut buf,
            4096,
            limits.idle_timeout,
            &mut shutdown,
        )
        .await
        .is_none()
        {
            return;
        }
        let mut at = 0;
        let mut out = Vec::new();
        loop {
            match next_frame(&buf[at..], limits.max_pickle_frame) {
                Ok(Some((payload, used))) => {
                    // Reads files and may wait on a file lock (set-metadata).
                    let response = tokio::task::block_in_place(|| answer(ingest, payload));
                    let bytes = serde_pickle::value_to_vec(&response, SerOptions::new().proto_v2())
                        .unwrap_or_default();
                    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
                    out.extend_from_slice(&bytes);
                    at += used;
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
        buf.drain(..at);
        if !out.is_empty() && stream.write_all(&out).await.is_err() {
            return;
        }
    }
}
