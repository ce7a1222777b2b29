//! The host's node in metric paths, by diamond's `hostname_method`s
//! (`smart` by default: the short FQDN unless that is `localhost`, then the
//! short host name), or `hostname` as written.

use std::ffi::{CStr, CString};

use crate::error::Error;

/// The methods diamond accepts for `hostname_method`.
pub const METHODS: &[&str] = &[
    "smart",
    "fqdn_short",
    "fqdn",
    "fqdn_rev",
    "uname_short",
    "uname_rev",
    "hostname",
    "hostname_short",
    "hostname_rev",
    "shell",
    "none",
];

/// The host name node for `method`; `configured` is the `hostname` setting
/// (used as is, except under `shell`, where it is the command to run).
/// `None` for method `none`: paths then have no host node.
pub fn resolve(method: &str, configured: Option<&str>) -> Result<Option<String>, Error> {
    let method = method.to_ascii_lowercase();
    if let (Some(name), false) = (configured, method == "shell") {
        return Ok(Some(name.to_string()));
    }
    let empty = || {
        Error::config(format!(
            "hostname_method = {method:?} gave an empty host name: set hostname"
        ))
    };
    let nonempty = |s: String| {
        if s.is_empty() {
            Err(empty())
        } else {
            Ok(Some(s))
        }
    };
    let first = |s: &str| s.split('.').next().unwrap_or_default().to_string();
    let reversed = |s: &str| s.split('.').rev().collect::<Vec<_>>().join(".");
    match method.as_str() {
        "smart" => {
            let short = first(&fqdn());
            if short != "localhost" && !short.is_empty() {
                Ok(Some(short))
            } else {
                nonempty(first(&gethostname()))
            }
        }
        "fqdn_short" => nonempty(first(&fqdn())),
        "fqdn" => nonempty(fqdn().replace('.', "_")),
        "fqdn_rev" => nonempty(reversed(&fqdn())),
        // uname's node name is the kernel's host name on Linux.
        "uname_short" | "hostname_short" => nonempty(first(&gethostname())),
        "uname_rev" | "hostname_rev" => nonempty(reversed(&gethostname())),
        "hostname" => nonempty(gethostname()),
        "shell" => {
            let command = configured.ok_or_else(|| {
                Error::config(
                    "hostname_method = \"shell\" needs hostname set to the command to run",
                )
            })?;
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(command)
                .output()
                .map_err(|e| Error::io(format!("cannot run hostname command {command:?}"), e))?;
            if !out.status.success() {
                return Err(Error::config(format!(
                    "hostname command {command:?} failed ({})",
                    out.status
                )));
            }
            nonempty(String::from_utf8_lossy(&out.stdout).trim().to_string())
        }
        "none" => Ok(None),
        other => Err(Error::config(format!(
            "hostname_method = {other:?}: use one of {}",
            METHODS.join(", ")
        ))),
    }
}

/// The kernel's host name.
fn gethostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at
    // most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The host's canonical name as the resolver gives it (Python's
/// `socket.getfqdn()`), or the host name when it has none.
fn fqdn() -> String {
    let host = gethostname();
    let Ok(c_host) = CString::new(host.clone()) else {
        return host;
    };
    // SAFETY: a zeroed addrinfo is a valid "no hints" value; getaddrinfo
    // owns the result list until freeaddrinfo.
    unsafe {
        let mut hints: libc::addrinfo = std::mem::zeroed();
        hints.ai_flags = libc::AI_CANONNAME;
        let mut res: *mut libc::addrinfo = std::ptr::null_mut();
        if libc::getaddrinfo(c_host.as_ptr(), std::ptr::null(), &hints, &mut res) != 0
            || res.is_null()
        {
            return host;
        }
        let canon = (*res).ai_canonname;
        let name = if canon.is_null() {
            host
        } else {
            CStr::from_ptr(canon).to_string_lossy().into_owned()
        };
        libc::freeaddrinfo(res);
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_shape_the_name() {
        assert_eq!(
            resolve("smart", Some("web01")).unwrap().as_deref(),
            Some("web01")
        );
        assert_eq!(resolve("none", None).unwrap(), None);
        assert_eq!(
            resolve("shell", Some("echo a.b")).unwrap().as_deref(),
            Some("a.b")
        );
        assert!(resolve("telepathy", None).is_err());
        let short = resolve("hostname_short", None).unwrap().unwrap();
        assert!(!short.contains('.'));
    }
}
