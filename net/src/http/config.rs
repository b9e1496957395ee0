//! [`HttpConfig`]: the `[http]` table of `federation.toml` and `node.toml`, which says how the
//! endpoint at the config's `metrics` address is served.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// How the HTTP endpoint is served (the `[http]` table; every key optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Serve the live view (a status page at `/` and its data at `/api/status`) beside
    /// `/metrics`. Off by default.
    #[serde(default)]
    pub status: bool,
    /// Allow an address other than loopback (the endpoint has no authentication). Off by
    /// default: start-up refuses such an address without it.
    #[serde(default)]
    pub public: bool,
    /// Host names (without port) that requests may name in their `Host` header, besides IP
    /// addresses and `localhost`: the names a browser or Prometheus reaches the endpoint by. Any
    /// other name is refused (a page on another site that rebinds its name to this address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
}

impl HttpConfig {
    /// Whether every key has its default (the table is then left out of a resolved config).
    pub fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Refuses an address other than loopback unless `public` is set, and host names that are
    /// not names.
    pub fn check(&self, addr: SocketAddr) -> Result<(), Error> {
        if !addr.ip().is_loopback() && !self.public {
            return Err(Error::NotLoopback { addr: addr.to_string() });
        }
        Ok(())
    }

    /// Checks the table against the config's `metrics` address: `Err((key, why))` names the
    /// key at fault.
    pub fn validate(&self, metrics: Option<SocketAddr>) -> Result<(), (&'static str, String)> {
        match metrics {
            Some(addr) => self.check(addr).map_err(|e| ("http.public", e.to_string()))?,
            None if !self.is_default() => {
                return Err(("metrics", "the [http] table configures the endpoint at the `metrics` address; set one (e.g. \"127.0.0.1:9464\")".into()));
            }
            None => {}
        }
        if let Some(h) = self.hosts.iter().find(|h| h.is_empty() || h.contains([':', '/', ' ', '[', ']'])) {
            return Err(("http.hosts", format!("{h:?} is not a host name (give names without port or scheme)")));
        }
        Ok(())
    }

    /// The host names a request may name, lower-cased.
    pub(crate) fn allowed_hosts(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_other_than_loopback_needs_public() {
        let off = HttpConfig::default();
        for ok in ["127.0.0.1:9464", "[::1]:9464", "127.0.0.2:0"] {
            off.check(ok.parse().expect("addr")).expect(ok);
        }
        for refused in ["0.0.0.0:9464", "[::]:9464", "192.0.2.1:9464"] {
            let e = off.check(refused.parse().expect("addr")).expect_err(refused);
            assert!(e.to_string().contains("public = true"), "{e}");
        }
        let public = HttpConfig { public: true, ..Default::default() };
        public.check("0.0.0.0:9464".parse().expect("addr")).expect("public");
    }
}
