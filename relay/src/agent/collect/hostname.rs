//! The host's node in metric paths, by diamond's `hostname_method`s
//! (`smart` by default: the short FQDN unless that is `localhost`, then the
//! short host name), or `hostname` as written.

use std::ffi::{CStr, CString};
use std::sync::Mutex;

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

/// A method and the `hostname` setting it was asked with.
type Asked = (String, Option<String>);

/// The host name node for `method`; `configured` is the `hostname` setting
/// (used as is, except under `shell`, where it is the command to run).
/// `None` for method `none`: paths then have no host node.
pub fn resolve(method: &str, configured: Option<&str>) -> Result<Option<String>, Error> {
    // diamond asks once per method; so do we (every collector, every
    // config check, one lookup or one shell command).
    static CACHE: Mutex<Vec<(Asked, Option<String>)>> = Mutex::new(Vec::new());
    let key = (method.to_ascii_lowercase(), configured.map(str::to_string));
    let cache = || CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, name)) = cache().iter().find(|(k, _)| *k == key) {
        return Ok(name.clone());
    }
    let name = lookup(&key.0, configured)?;
    cache().push((key, name.clone()));
    Ok(name)
}

fn lookup(method: &str, configured: Option<&str>) -> Result<Option<String>, Error> {
    let method = method.to_string();
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

/// The host's fully qualified name as Python's `socket.getfqdn()` finds
/// it: the host name's address looked up in reverse, then the first of the
/// primary name and its aliases with a dot (else the primary name); the
/// host name itself when there is no answer.
fn fqdn() -> String {
    let host = gethostname();
    let Ok(c_host) = CString::new(host.clone()) else {
        return host;
    };
    // SAFETY: a zeroed addrinfo is a valid "no hints" value; getaddrinfo
    // owns the result list until freeaddrinfo, and the address is copied
    // out before that. gethostbyaddr_r writes into the buffer it is given;
    // the hostent it returns points into that buffer, read before it goes.
    unsafe {
        let hints: libc::addrinfo = std::mem::zeroed();
        let mut res: *mut libc::addrinfo = std::ptr::null_mut();
        if libc::getaddrinfo(c_host.as_ptr(), std::ptr::null(), &hints, &mut res) != 0
            || res.is_null()
        {
            return host;
        }
        let ai = &*res;
        let (family, addr): (libc::c_int, Vec<u8>) = match ai.ai_family {
            libc::AF_INET => {
                let sin = &*(ai.ai_addr as *const libc::sockaddr_in);
                (libc::AF_INET, sin.sin_addr.s_addr.to_ne_bytes().to_vec())
            }
            libc::AF_INET6 => {
                let sin6 = &*(ai.ai_addr as *const libc::sockaddr_in6);
                (libc::AF_INET6, sin6.sin6_addr.s6_addr.to_vec())
            }
            _ => {
                libc::freeaddrinfo(res);
                return host;
            }
        };
        libc::freeaddrinfo(res);
        let mut entry: libc::hostent = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 16 * 1024];
        let mut result: *mut libc::hostent = std::ptr::null_mut();
        let mut herr: libc::c_int = 0;
        let rc = gethostbyaddr_r(
            addr.as_ptr().cast(),
            addr.len() as libc::socklen_t,
            family,
            &mut entry,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
            &mut herr,
        );
        if rc != 0 || result.is_null() || entry.h_name.is_null() {
            return host;
        }
        let primary = CStr::from_ptr(entry.h_name).to_string_lossy().into_owned();
        let mut names = vec![primary.clone()];
        let mut alias = entry.h_aliases;
        while !alias.is_null() && !(*alias).is_null() {
            names.push(CStr::from_ptr(*alias).to_string_lossy().into_owned());
            alias = alias.add(1);
        }
        names
            .into_iter()
            .find(|n| n.contains('.'))
            .unwrap_or(primary)
    }
}

extern "C" {
    // glibc's reentrant reverse lookup (not in the libc crate).
    #[allow(clippy::too_many_arguments)]
    fn gethostbyaddr_r(
        addr: *const libc::c_void,
        len: libc::socklen_t,
        family: libc::c_int,
        ret: *mut libc::hostent,
        buf: *mut libc::c_char,
        buflen: libc::size_t,
        result: *mut *mut libc::hostent,
        h_errnop: *mut libc::c_int,
    ) -> libc::c_int;
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
