//! The `Host` check against DNS rebinding: a page on another site can make a visitor's browser
//! resolve its own name to this endpoint's address and read the answers as same-origin; the
//! request then names that site in its `Host` header. Only IP addresses, `localhost` and the
//! names the operator lists are served.

use std::net::IpAddr;

/// Whether a `Host` header value (`name`, `name:port`, `1.2.3.4:port`, `[::1]:port`) is one
/// this endpoint answers: an IP address, `localhost`, or one of `allowed` (lower-case names).
pub(crate) fn allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // An IPv6 literal, with or without a port.
        return rest.split_once(']').is_some_and(|(ip, port)| {
            ip.parse::<std::net::Ipv6Addr>().is_ok() && (port.is_empty() || valid_port(port.strip_prefix(':')))
        });
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if valid_port(Some(port)) => name,
            Some(_) => return false,
            None => host,
        }
    };
    if name.is_empty() {
        return false;
    }
    if name.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || allowed.contains(&name)
}

fn valid_port(port: Option<&str>) -> bool {
    port.is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addresses_localhost_and_listed_names_only() {
        let listed = vec!["metrics.example.org".to_owned()];
        for ok in [
            "127.0.0.1:9464",
            "127.0.0.1",
            "[::1]:9464",
            "[::1]",
            "localhost:9464",
            "LOCALHOST",
            "192.0.2.7:80",
            "metrics.example.org:9464",
            "Metrics.Example.Org.",
        ] {
            assert!(allowed(ok, &listed), "{ok}");
        }
        for refused in [
            "evil.example:9464",
            "evil.example",
            "localhost.evil.example",
            "127.0.0.1.nip.io:9464",
            "",
            ":9464",
            "[::1",
            "[evil]:80",
            "127.0.0.1:port",
            "metrics.example.org:9464:1",
        ] {
            assert!(!allowed(refused, &listed), "{refused}");
        }
    }
}
