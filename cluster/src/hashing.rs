//! Where a metric goes: the consistent-hash rings carbon and carbon-c-relay
//! use, so a graunt relay places every metric exactly where the relay it
//! replaces did (and existing nodes keep their data).
//!
//! - `carbon_ch`: carbon 1.1's `ConsistentHashRing` (md5 of the Python
//!   repr of `(server, instance)` plus `:i`, 100 replicas, a colliding
//!   position moved up by one, a walk for distinct nodes) and its router's
//!   replica choice (distinct servers unless `diverse_replicas` is off).
//! - `fnv1a_ch`, `jump_fnv1a_ch`: as carbon-c-relay's `consistent-hash.c`.
//!
//! Written here rather than with the `consistent_hash` crate: that crate
//! hashes its own way and cannot reproduce these rings' placement (carbon's
//! collision rule, its Python-repr keys, its quirky walk), which is the point.

use md5::{Digest, Md5};

/// One destination: `host:port[:instance]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    /// Host (name or address), as written.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Instance name, if given.
    pub instance: Option<String>,
}

impl Destination {
    /// Parses `host:port[:instance]` (`[v6]:port[:instance]` too).
    pub fn parse(text: &str) -> Result<Destination, String> {
        let (host, rest) = if let Some(stripped) = text.strip_prefix('[') {
            let (h, r) = stripped
                .split_once("]:")
                .ok_or_else(|| format!("destination {text:?}: use [address]:port[:instance]"))?;
            (h.to_string(), r)
        } else {
            let (h, r) = text
                .split_once(':')
                .ok_or_else(|| format!("destination {text:?}: use host:port[:instance]"))?;
            (h.to_string(), r)
        };
        let (port, instance) = match rest.split_once(':') {
            Some((p, i)) => (p, Some(i.to_string()).filter(|i| !i.is_empty())),
            None => (rest, None),
        };
        let port = port
            .parse()
            .map_err(|_| format!("destination {text:?}: {port:?} is not a port"))?;
        if host.is_empty() {
            return Err(format!("destination {text:?}: no host"));
        }
        Ok(Destination {
            host,
            port,
            instance,
        })
    }

    /// `host:port:instance` as carbon-lookup prints it (`None` without one).
    pub fn display(&self) -> String {
        format!(
            "{}:{}:{}",
            self.host,
            self.port,
            self.instance.as_deref().unwrap_or("None")
        )
    }
}

/// A hashing method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// carbon's md5 ring.
    CarbonCh,
    /// carbon-c-relay's FNV-1a ring.
    Fnv1aCh,
    /// carbon-c-relay's jump consistent hash over FNV-1a 64.
    JumpFnv1aCh,
}

impl Method {
    /// `carbon_ch`, `fnv1a_ch` or `jump_fnv1a_ch`.
    pub fn parse(name: &str) -> Result<Method, String> {
        match name {
            "carbon_ch" => Ok(Method::CarbonCh),
            "fnv1a_ch" => Ok(Method::Fnv1aCh),
            "jump_fnv1a_ch" => Ok(Method::JumpFnv1aCh),
            other => Err(format!(
                "hashing method {other:?}: use carbon_ch, fnv1a_ch or jump_fnv1a_ch"
            )),
        }
    }
}

/// Python's `repr()` of a str (carbon hashes the repr of a tuple).
fn py_repr(s: &str) -> String {
    graunt_query::pyfmt::repr_str(s)
}

fn md5_pos(key: &str) -> u32 {
    let digest = Md5::digest(key.as_bytes());
    (u32::from(digest[0]) << 8) | u32::from(digest[1])
}

/// FNV-1a 32 as carbon-c-relay computes it (bytes as C `char`: signed).
fn fnv1a_32(data: &[u8]) -> u32 {
    data.iter().fold(2166136261u32, |h, &b| {
        (h ^ (b as i8 as i32 as u32)).wrapping_mul(16777619)
    })
}

fn fnv1a_64(data: &[u8]) -> u64 {
    data.iter().fold(14695981039346656037u64, |h, &b| {
        (h ^ (b as i8 as i64 as u64)).wrapping_mul(1099511628211)
    })
}

fn fnv1a_pos(data: &[u8]) -> u32 {
    let h = fnv1a_32(data);
    (h >> 16) ^ (h & 0xffff)
}

/// carbon-c-relay's `jump_bucketpos` (Lamping and Veach).
fn jump_bucket(mut key: u64, buckets: i64) -> usize {
    let (mut b, mut j) = (-1i64, 0i64);
    while j < buckets {
        b = j;
        key = key.wrapping_mul(2862933555777941757).wrapping_add(1);
        j = ((b + 1) as f64 * ((1i64 << 31) as f64 / ((key >> 33) + 1) as f64)) as i64;
    }
    b as usize
}

/// A ring over a set of destinations.
#[derive(Debug, Clone)]
pub struct Ring {
    method: Method,
    destinations: Vec<Destination>,
    /// (position, destination index), sorted.
    entries: Vec<(u32, usize)>,
    replication: usize,
    diverse: bool,
}

impl Ring {
    /// Builds the ring. `replication` copies per metric; `diverse` (carbon's
    /// `DIVERSE_REPLICAS`) puts them on distinct hosts.
    pub fn new(
        method: Method,
        destinations: Vec<Destination>,
        replication: usize,
        diverse: bool,
    ) -> Result<Ring, String> {
        if destinations.is_empty() {
            return Err("no destinations".into());
        }
        let mut seen = std::collections::HashSet::new();
        for d in &destinations {
            if !seen.insert((d.host.clone(), d.instance.clone())) && method == Method::CarbonCh {
                return Err(format!(
                    "destination instance ({}, {}) already configured",
                    d.host,
                    d.instance.as_deref().unwrap_or("None")
                ));
            }
        }
        let mut entries: Vec<(u32, usize)> = Vec::new();
        match method {
            Method::CarbonCh => {
                let mut taken = std::collections::HashSet::new();
                for (n, d) in destinations.iter().enumerate() {
                    let instance = d.instance.as_deref().map_or("None".to_string(), py_repr);
                    let node = format!("({}, {instance})", py_repr(&d.host));
                    for i in 0..100 {
                        let mut pos = md5_pos(&format!("{node}:{i}"));
                        while taken.contains(&pos) {
                            pos += 1;
                        }
                        taken.insert(pos);
                        entries.push((pos, n));
                    }
                }
                entries.sort_unstable();
            }
            Method::Fnv1aCh => {
                for (n, d) in destinations.iter().enumerate() {
                    for i in 0..100 {
                        let key = match &d.instance {
                            None => format!("{i}-{}:{}", d.host, d.port),
                            Some(inst) => format!("{i}-{inst}"),
                        };
                        entries.push((fnv1a_pos(key.as_bytes()), n));
                    }
                }
                let dests = &destinations;
                entries.sort_by(|a, b| {
                    a.0.cmp(&b.0)
                        .then_with(|| dests[a.1].host.cmp(&dests[b.1].host))
                        .then_with(|| dests[a.1].port.cmp(&dests[b.1].port))
                });
                // Equal positions all answer with the first one's server.
                for i in 1..entries.len() {
                    if entries[i].0 == entries[i - 1].0 {
                        entries[i].1 = entries[i - 1].1;
                    }
                }
            }
            Method::JumpFnv1aCh => {
                let mut order: Vec<usize> = (0..destinations.len()).collect();
                let dests = &destinations;
                order.sort_by(|&a, &b| match (&dests[a].instance, &dests[b].instance) {
                    (None, None) => a.cmp(&b),
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (Some(x), Some(y)) => match (x.parse::<i64>(), y.parse::<i64>()) {
                        (Ok(p), Ok(q)) => p.cmp(&q),
                        _ => x.as_bytes().cmp(y.as_bytes()),
                    },
                });
                entries = order
                    .into_iter()
                    .enumerate()
                    .map(|(i, n)| (i as u32, n))
                    .collect();
            }
        }
        Ok(Ring {
            method,
            destinations,
            entries,
            replication: replication.max(1),
            diverse,
        })
    }

    /// The destinations.
    pub fn destinations(&self) -> &[Destination] {
        &self.destinations
    }

    /// Indexes of the destinations `metric` goes to, in the order the
    /// original relay lists them.
    pub fn route(&self, metric: &str) -> Vec<usize> {
        match self.method {
            Method::CarbonCh => self.route_carbon(metric),
            Method::Fnv1aCh => self.route_c_relay(fnv1a_pos(metric.as_bytes())),
            Method::JumpFnv1aCh => self.route_jump(metric),
        }
    }

    /// carbon's `ConsistentHashRing.get_nodes`, with its quirks: a ring of
    /// one node yields it twice; the entry just before the start is never
    /// visited.
    fn carbon_nodes(&self, metric: &str) -> Vec<usize> {
        let nodes = self.destinations.len();
        let mut out = Vec::new();
        if nodes == 1 {
            out.push(0);
        }
        let pos = md5_pos(metric);
        let len = self.entries.len();
        let mut index = self.entries.partition_point(|e| e.0 < pos) % len;
        let last = (index + len - 1) % len;
        let mut seen = vec![false; nodes];
        let mut found = 0;
        while found < nodes && index != last {
            let node = self.entries[index].1;
            if !seen[node] {
                seen[node] = true;
                found += 1;
                out.push(node);
            }
            index = (index + 1) % len;
        }
        out
    }

    fn route_carbon(&self, metric: &str) -> Vec<usize> {
        let mut out = Vec::new();
        if self.diverse {
            let mut hosts: Vec<&str> = Vec::new();
            for n in self.carbon_nodes(metric) {
                let host = self.destinations[n].host.as_str();
                if hosts.contains(&host) {
                    continue;
                }
                hosts.push(host);
                out.push(n);
                if hosts.len() >= self.replication {
                    break;
                }
            }
        } else {
            out = self.carbon_nodes(metric);
            out.truncate(self.replication);
        }
        out
    }

    /// carbon-c-relay's `ch_get_nodes` for the ring types.
    fn route_c_relay(&self, pos: u32) -> Vec<usize> {
        let len = self.entries.len();
        let mut t = self.entries.partition_point(|e| e.0 < pos);
        let want = self.replication.min(self.distinct_servers());
        let mut out: Vec<usize> = Vec::with_capacity(want);
        let mut steps = 0;
        while out.len() < want && steps < len * 2 {
            if t >= len {
                t = 0;
            }
            let server = self.entries[t].1;
            if !out.contains(&server) {
                out.push(server);
            }
            t += 1;
            steps += 1;
        }
        out
    }

    fn distinct_servers(&self) -> usize {
        self.destinations.len()
    }

    fn route_jump(&self, metric: &str) -> Vec<usize> {
        let mut buckets: Vec<usize> = self.entries.iter().map(|e| e.1).collect();
        let mut hash = fnv1a_64(metric.as_bytes());
        let mut out = Vec::new();
        let mut left = self.replication.min(buckets.len());
        while !buckets.is_empty() {
            let j = jump_bucket(hash, buckets.len() as i64);
            out.push(buckets[j]);
            left -= 1;
            if left == 0 {
                break;
            }
            hash ^= hash >> 12;
            hash ^= hash << 25;
            hash ^= hash >> 27;
            hash = hash.wrapping_mul(2685821657736338717);
            let last = buckets.pop().expect("not empty");
            if j < buckets.len() {
                buckets[j] = last;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dests(list: &[&str]) -> Vec<Destination> {
        list.iter()
            .map(|d| Destination::parse(d).unwrap())
            .collect()
    }

    #[test]
    fn destinations_parse() {
        let d = Destination::parse("10.0.0.1:2004:a").unwrap();
        assert_eq!(d.display(), "10.0.0.1:2004:a");
        assert_eq!(
            Destination::parse("h:2004").unwrap().display(),
            "h:2004:None"
        );
        assert!(Destination::parse("nohost").is_err());
        assert!(Destination::parse("h:port").is_err());
    }

    #[test]
    fn python_repr_of_node_keys() {
        assert_eq!(py_repr("127.0.0.1"), "'127.0.0.1'");
        assert_eq!(py_repr("it's"), "\"it's\"");
    }

    #[test]
    fn replicas_land_on_distinct_hosts() {
        let ring = Ring::new(
            Method::CarbonCh,
            dests(&["a:1:x", "a:2:y", "b:1:x", "c:1:x"]),
            2,
            true,
        )
        .unwrap();
        for m in ["a.b.c", "servers.web1.cpu", "x"] {
            let r = ring.route(m);
            assert_eq!(r.len(), 2);
            let hosts: std::collections::HashSet<_> = r
                .iter()
                .map(|&i| ring.destinations()[i].host.clone())
                .collect();
            assert_eq!(hosts.len(), 2);
        }
        let jump = Ring::new(Method::JumpFnv1aCh, dests(&["a:1", "b:1", "c:1"]), 3, false).unwrap();
        let mut r = jump.route("some.metric");
        r.sort();
        assert_eq!(r, vec![0, 1, 2]);
    }
}
