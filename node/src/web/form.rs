//! A POSTed body's fields, as Django reads `request.POST`: URL-encoded
//! (`application/x-www-form-urlencoded`, what Grafana sends) or
//! `multipart/form-data` (what carbon's tag registration sends through
//! urllib3). A pure function over the headers' content type and the bytes.

use super::params::Params;

/// The fields of `body`; none for another content type or a body that
/// does not parse.
pub fn fields(content_type: Option<&str>, body: &[u8]) -> Params {
    let Some(ct) = content_type else {
        return Vec::new();
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/x-www-form-urlencoded" => {
            serde_urlencoded::from_bytes::<Params>(body).unwrap_or_default()
        }
        "multipart/form-data" => boundary(ct)
            .map(|b| multipart(&b, body))
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The text fields of a multipart body (file parts are kept as text too).
fn multipart(boundary: &str, body: &[u8]) -> Params {
    let delimiter = format!("--{boundary}");
    let text = String::from_utf8_lossy(body);
    let mut out = Vec::new();
    for part in text.split(delimiter.as_str()).skip(1) {
        if part.starts_with("--") {
            break;
        }
        let part = part.strip_prefix("\r\n").unwrap_or(part);
        let Some((head, value)) = part.split_once("\r\n\r\n") else {
            continue;
        };
        let value = value.strip_suffix("\r\n").unwrap_or(value);
        let name = head.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            if !k.trim().eq_ignore_ascii_case("content-disposition") {
                return None;
            }
            v.split(';').find_map(|p| {
                let (k, v) = p.trim().split_once('=')?;
                (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string())
            })
        });
        if let Some(name) = name {
            out.push((name, value.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_encodings_give_their_fields_in_order() {
        assert_eq!(
            fields(
                Some("application/x-www-form-urlencoded"),
                b"expr=name%3Dcpu&expr=dc%21%3Dx"
            ),
            vec![
                ("expr".into(), "name=cpu".into()),
                ("expr".into(), "dc!=x".into())
            ]
        );
        let body = b"--xyz\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\na;b=c\r\n--xyz\r\nContent-Disposition: form-data; name=\"path\"\r\n\r\nd;e=f\r\n--xyz--\r\n";
        assert_eq!(
            fields(Some("multipart/form-data; boundary=xyz"), body),
            vec![
                ("path".into(), "a;b=c".into()),
                ("path".into(), "d;e=f".into())
            ]
        );
        assert!(fields(Some("text/plain"), b"a=b").is_empty());
    }
}
