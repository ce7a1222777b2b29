//! graphite-web 1.1.10's function catalog: the JSON its `/functions`
//! endpoint serves (recorded from it, see `tests/fixtures/README.md`), and
//! the parameter lists read from it that bind and convert call arguments the
//! way graphite-web's `validateParams` does.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::Value as Json;

/// `/functions` as graphite-web 1.1.10 answers it (series functions).
pub const FUNCTIONS_JSON: &str = include_str!("graphite-functions.json");
/// `/functions?type=pie`.
pub const PIE_FUNCTIONS_JSON: &str = include_str!("graphite-pie-functions.json");

/// One declared parameter of a function.
#[derive(Debug, Clone)]
pub struct Param {
    /// Its name, as keyword arguments use it.
    pub name: String,
    /// graphite's parameter type: `seriesList`, `float`, `integer`, `intOrInf`,
    /// `boolean`, `interval`, `node`, `nodeOrTag`, `string`, `aggFunc`, ….
    pub kind: String,
    /// Whether graphite-web insists on it.
    pub required: bool,
    /// Whether it takes every remaining positional argument.
    pub multiple: bool,
    /// The only values it accepts, when graphite-web lists them.
    pub options: Vec<Json>,
    /// The Python argument's name, when it differs from `name` (graphite-web
    /// passes keyword arguments on under the name they were given).
    pub py_name: String,
    /// Whether the Python function has a default for it, so leaving out a
    /// "required" one is no error (graphite-web does not enforce `required`).
    pub has_default: bool,
}

/// Parameters by function name.
pub static PARAMS: LazyLock<HashMap<String, Vec<Param>>> = LazyLock::new(|| {
    // serde_json has no infinity; the catalog writes it as 1e9999.
    let text = FUNCTIONS_JSON.replace("1e9999", "\"inf\"");
    let catalog: HashMap<String, Json> =
        serde_json::from_str(&text).expect("the embedded function catalog is valid JSON");
    catalog
        .into_iter()
        .map(|(name, info)| {
            let signature = info["function"].as_str().unwrap_or_default();
            let python = python_args(&signature[(name.len() + 1).min(signature.len())..]);
            let params = info["params"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .enumerate()
                        .map(|(i, p)| Param {
                            py_name: python.get(i).map_or_else(
                                || p["name"].as_str().unwrap_or_default().to_string(),
                                |(n, _)| n.clone(),
                            ),
                            has_default: python.get(i).is_some_and(|(_, d)| *d),
                            name: p["name"].as_str().unwrap_or_default().to_string(),
                            kind: p["type"].as_str().unwrap_or_default().to_string(),
                            required: p["required"].as_bool().unwrap_or(false),
                            multiple: p["multiple"].as_bool().unwrap_or(false),
                            options: p["options"].as_array().cloned().unwrap_or_default(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            (name, params)
        })
        .collect()
});

/// The arguments of a Python signature text `a, b=1, *rest)`: each name and
/// whether it has a default (a `*rest` has: it may be empty).
fn python_args(signature: &str) -> Vec<(String, bool)> {
    let body = signature.strip_suffix(')').unwrap_or(signature);
    let mut out = Vec::new();
    let (mut depth, mut quote, mut current) = (0i32, None::<char>, String::new());
    for c in body.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, '(' | '[' | '{') => depth += 1,
            (None, ')' | ']' | '}') => depth -= 1,
            (None, ',') if depth == 0 => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out.iter()
        .map(|a| {
            let a = a.trim();
            let name = a
                .split('=')
                .next()
                .unwrap_or("")
                .trim()
                .trim_start_matches('*');
            (name.to_string(), a.contains('=') || a.starts_with('*'))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_catalog_has_graphites_functions() {
        assert_eq!(PARAMS.len(), 154);
        let scale = &PARAMS["scale"];
        assert_eq!(scale[1].name, "factor");
        assert_eq!(scale[1].kind, "float");
        assert!(PARAMS["sumSeries"][0].multiple);
        let shift = &PARAMS["timeShift"][3];
        assert_eq!(
            (shift.name.as_str(), shift.py_name.as_str()),
            ("alignDst", "alignDST")
        );
        assert!(shift.has_default);
        assert!(PARAMS["highest"][1].has_default);
        assert!(!PARAMS["scale"][1].has_default);
    }
}
