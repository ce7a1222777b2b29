//! Request parameters as graphite-web reads them: the query string, with a
//! POSTed form merged in; the last value of a repeated key wins.

/// `(key, value)` pairs in request order.
pub type Params = Vec<(String, String)>;

/// The last value given for `key`.
pub fn param<'a>(params: &'a Params, key: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}
