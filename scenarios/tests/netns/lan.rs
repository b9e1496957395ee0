//! The test's own network: namespaces removed when dropped, a bridged LAN of hosts, routers
//! that masquerade, nftables rules, and the way a test says it did not run.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

/// The LAN's first three octets; host `i` is `.{i + 1}`.
pub const SUBNET: &str = "10.77.0";

/// 1 % of the packets a host sends on its link are dropped (netem's `loss 1%`, by nftables).
pub const LOSS_RULES: &str = "table inet fdloss {
    chain output {
        type filter hook output priority filter; policy accept;
        oifname \"eth0\" numgen random mod 100 < 1 counter drop
    }
}
";

/// A masquerading router: what leaves by `eth0` (the LAN) takes the router's address; from the
/// LAN to `eth1` (the private side) only replies to connections made from inside pass. Replies
/// from anyone but `peer` on a connection that has carried more than 8 of them are counted
/// (comment `direct`): a working direct connection, made by hole punching (an attempt that fails
/// gets a reset or a close, a packet or two).
fn nat_rules(peer: Ipv4Addr) -> String {
    format!(
        "table ip fdnat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname \"eth0\" counter masquerade
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        iifname \"eth1\" oifname \"eth0\" accept
        iifname \"eth0\" oifname \"eth1\" ip saddr != {peer} ct state established ct reply packets > 8 counter accept comment \"direct\"
        iifname \"eth0\" oifname \"eth1\" ct state established,related accept
    }}
}}
"
    )
}

/// Runs `program args`; on failure, what it said.
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let line = format!("`{program} {}`", args.join(" "));
    let out = Command::new(program).args(args).output().map_err(|e| format!("{line}: cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{line} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

pub fn ip(args: &[&str]) -> Result<String, String> {
    run("ip", args)
}

/// Loads an nftables ruleset inside namespace `netns`.
pub fn nft(netns: &str, rules: &str) -> Result<(), String> {
    let line = format!("`ip netns exec {netns} nft -f -`");
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{line}: cannot run ip: {e}"))?;
    child.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{line} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim()))
    }
}

/// Network namespaces made by a test, deleted when dropped (with the veths and bridge in them).
pub struct Namespaces(Vec<String>);

impl Namespaces {
    fn add(&mut self, name: String) -> Result<String, String> {
        ip(&["netns", "add", &name])?;
        self.0.push(name.clone());
        Ok(name)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            if let Err(e) = ip(&["netns", "del", name]) {
                let _ = writeln!(std::io::stderr(), "cannot remove network namespace {name}: {e}");
            }
        }
    }
}

/// A switch namespace with a bridge, and hosts: namespace `hosts[i]` has `eth0` at
/// `10.77.0.{i + 1}/24`, one end of a veth pair whose other end is a port of the bridge.
pub struct Lan {
    prefix: String,
    switch: String,
    pub hosts: Vec<String>,
    namespaces: Namespaces,
}

/// Runs `ip args`, panicking if it fails: once a namespace could be made, a failing step is a
/// broken test set-up, not a missing permission.
fn set(args: &[&str]) {
    ip(args).unwrap();
}

impl Lan {
    /// Errs with the reason if this machine cannot make a network namespace.
    fn new(tag: &str, hosts: usize) -> Result<Lan, String> {
        let mut namespaces = Namespaces(Vec::new());
        let prefix = format!("fd{}{tag}", std::process::id());
        let switch = namespaces.add(format!("{prefix}-sw"))?;
        let mut lan = Lan { prefix, switch, hosts: Vec::new(), namespaces };
        set(&["-n", &lan.switch, "link", "add", "br0", "type", "bridge"]);
        set(&["-n", &lan.switch, "link", "set", "br0", "up"]);
        for i in 0..hosts {
            let host = lan.namespaces.add(format!("{}-h{i}", lan.prefix)).unwrap();
            lan.plug(&host, &format!("p{i}"), &format!("{SUBNET}.{}/24", i + 1));
            lan.hosts.push(host);
        }
        Ok(lan)
    }

    /// Connects namespace `host` to the bridge through port `port`: its `eth0` gets `addr`.
    fn plug(&self, host: &str, port: &str, addr: &str) {
        set(&["-n", &self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host]);
        set(&["-n", &self.switch, "link", "set", port, "master", "br0", "up"]);
        set(&["-n", host, "addr", "add", addr, "dev", "eth0"]);
        set(&["-n", host, "link", "set", "eth0", "up"]);
        set(&["-n", host, "link", "set", "lo", "up"]);
    }

    /// A host behind its own masquerading router `k`: the router is on the LAN at
    /// `10.77.0.{200 + k}` (`eth0`) and on a private link `10.{100 + k}.0.0/24` (`eth1`); the
    /// host, at `.2` on that link, routes everything through the router. Nothing on the LAN has a
    /// route to the private side, and the router forwards from the LAN only what belongs to
    /// connections made from inside (see [`nat_rules`], which counts `peer` apart). Returns
    /// (router, host) namespaces; errs if `nft` cannot set up the NAT (not installed).
    pub fn behind_nat(&mut self, k: usize, peer: Ipv4Addr) -> Result<(String, String), String> {
        let router = self.namespaces.add(format!("{}-r{k}", self.prefix)).unwrap();
        self.plug(&router, &format!("r{k}"), &format!("{SUBNET}.{}/24", 200 + k));
        let host = self.namespaces.add(format!("{}-n{k}", self.prefix)).unwrap();
        let private = |last: u8| format!("10.{}.0.{last}", 100 + k);
        set(&["-n", &router, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", &host]);
        set(&["-n", &router, "addr", "add", &format!("{}/24", private(1)), "dev", "eth1"]);
        set(&["-n", &router, "link", "set", "eth1", "up"]);
        set(&["-n", &host, "addr", "add", &format!("{}/24", private(2)), "dev", "eth0"]);
        set(&["-n", &host, "link", "set", "eth0", "up"]);
        set(&["-n", &host, "link", "set", "lo", "up"]);
        set(&["-n", &host, "route", "add", "default", "via", &private(1)]);
        set(&["netns", "exec", &router, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.netfilter.nf_conntrack_acct=1"]);
        nft(&router, &nat_rules(peer))?;
        Ok((router, host))
    }

    /// Packets counted so far by the rules of `chain` in `table` (family `family`) in `netns`
    /// (only by the rules with this comment, if one is given).
    pub fn counted(netns: &str, family: &str, table: &str, chain: &str, comment: Option<&str>) -> u64 {
        let text = ip(&["netns", "exec", netns, "nft", "-j", "list", "chain", family, table, chain]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let rules = v["nftables"].as_array().unwrap().iter().map(|item| &item["rule"]);
        let rules = rules.filter(|r| comment.is_none_or(|c| r["comment"].as_str() == Some(c)));
        rules.filter_map(|r| r["expr"].as_array()).flatten().filter_map(|e| e["counter"]["packets"].as_u64()).sum()
    }

    /// Bytes through the link (`eth0`) of namespace `netns` so far, both directions.
    pub fn link_bytes(netns: &str) -> u64 {
        let text = ip(&["-n", netns, "-j", "-s", "link", "show", "dev", "eth0"]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let stats = &v[0]["stats64"];
        stats["rx"]["bytes"].as_u64().unwrap() + stats["tx"]["bytes"].as_u64().unwrap()
    }

    /// A LAN, or a failure that says why there is none: this test belongs to the long tier
    /// (`cargo test --workspace --release -- --ignored`), which is run where its environment is
    /// (root, iproute2, nftables, veth, bridge, netem); it never skips.
    pub fn or_fail(test: &str, hosts: usize) -> Lan {
        Lan::new(test, hosts)
            .unwrap_or_else(|why| unavailable(test, &format!("network namespaces cannot be made here: {why}")))
    }

    /// `tc netem` with `impairment` (e.g. `delay 100ms loss 1%`) on every host's side of its
    /// link, so a packet between two hosts passes it twice.
    pub fn impair(&self, impairment: &str) -> Result<(), String> {
        for host in &self.hosts {
            let mut args = vec!["-n", host, "qdisc", "add", "dev", "eth0", "root", "netem"];
            args.extend(impairment.split_whitespace());
            run("tc", &args)?;
        }
        Ok(())
    }

    /// Bytes host `i` has received on its link.
    pub fn rx_bytes(&self, i: usize) -> u64 {
        let text = ip(&["-n", &self.hosts[i], "-j", "-s", "link", "show", "dev", "eth0"]).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v[0]["stats64"]["rx"]["bytes"].as_u64().unwrap()
    }
}

/// Fails `test`, saying which part of its environment is missing.
pub fn unavailable(test: &str, why: &str) -> ! {
    panic!(
        "{test}: {why} (the long tier needs root, iproute2, nftables, and the kernel's veth, bridge, nftables NAT and netem support)"
    )
}
