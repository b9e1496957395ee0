//! The operator's live view in a real browser: a federation of real `fd-aggregator` and
//! `fd-node` processes on 127.0.0.1, the aggregator's status page (and node 0's) opened in
//! headless Chromium while the rounds run. The test reads the page as Chromium rendered it
//! (`--dump-dom`, after the page's script fetched `/api/status` and drew its plots) in a loop
//! bounded by a deadline, and checks what a person would see change as rounds complete: the
//! round counter and the points of the accuracy plot. A screenshot of each page is written to
//! the run folder and copied to `target/tmp/live-view/`.
//!
//! Long tier (`--ignored`): it needs Chromium (Debian's `chromium`, which `.ci/run` installs);
//! without it the test fails and says so, it never skips.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Procs, launch_aggregator_tcp, node_toml, scenario, spawn_run, wait_exit};
use scenarios::setup;

/// Chromium's binary: `FD_CHROMIUM`, else `chromium` or `chromium-browser` on PATH.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("FD_CHROMIUM") {
        return p.into();
    }
    for name in ["chromium", "chromium-browser"] {
        if Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success()) {
            return name.into();
        }
    }
    panic!(
        "Chromium is missing: this test opens the live view in a real browser (apt-get install chromium, as .ci/run does, or set FD_CHROMIUM)"
    );
}

fn headless(chromium: &Path) -> Command {
    let mut c = Command::new(chromium);
    // As root in a container: no sandbox; no GPU; a fixed window; time for the page's fetch.
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--window-size=1280,1400",
        "--virtual-time-budget=3000",
    ]);
    c
}

/// The page at `url` as Chromium rendered it, after its script ran.
fn dump_dom(chromium: &Path, url: &str) -> String {
    let out = headless(chromium).arg("--dump-dom").arg(url).output().unwrap();
    assert!(out.status.success(), "chromium --dump-dom {url}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn screenshot(chromium: &Path, url: &str, png: &Path) {
    let out = headless(chromium).arg(format!("--screenshot={}", png.display())).arg(url).output().unwrap();
    assert!(out.status.success(), "chromium --screenshot {url}: {}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(png).unwrap();
    assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "{} is not a page's screenshot", png.display());
    let kept = Path::new(env!("CARGO_TARGET_TMPDIR")).join("live-view");
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::copy(png, kept.join(png.file_name().unwrap())).unwrap();
}

/// The text of the element with `id` in a dumped page.
fn text_of(dom: &str, id: &str) -> Option<String> {
    let start = dom.find(&format!("id=\"{id}\""))?;
    let rest = &dom[start..];
    let open = rest.find('>')? + 1;
    let close = rest[open..].find('<')?;
    Some(rest[open..open + close].to_owned())
}

/// The points drawn in the SVG with `id`.
fn points_in(dom: &str, id: &str) -> usize {
    let Some(start) = dom.find(&format!("id=\"{id}\"")) else { return 0 };
    let svg = &dom[start..];
    let svg = &svg[..svg.find("</svg>").unwrap_or(svg.len())];
    svg.matches("class=\"point ").count()
}

/// The address the process whose log is `log` serves its HTTP endpoint at.
fn endpoint(log: &Path, limit: Duration) -> String {
    let mut found = None;
    common::wait_until(&format!("the HTTP endpoint in {}", log.display()), limit, || {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        found = text.find("metrics at http://").map(|i| {
            let rest = &text[i + "metrics at http://".len()..];
            rest[..rest.find('/').unwrap_or(rest.len())].to_owned()
        });
        found.is_some()
    });
    found.unwrap()
}

#[test]
#[ignore = "long tier: opens the live view in headless Chromium during a real federation"]
fn the_live_view_follows_the_rounds_in_chromium() {
    let chromium = chromium();
    const ROUNDS: u64 = 5;
    // Four on the roster, three running: each round waits for the fourth until its deadline
    // (the quorum is 3), long enough for several renders of the page while the rounds run.
    let s = scenario("live-view", 4, ROUNDS);
    let mut p = common::prepare(&s, "live");
    p.aggregator.round.deadline_secs = 4.0;
    p.aggregator.round.quorum = Some(3);
    p.aggregator.metrics = Some("127.0.0.1:0".parse().unwrap());
    p.aggregator.http.status = true;
    p.nodes[0].metrics = Some("127.0.0.1:0".parse().unwrap());
    p.nodes[0].http.status = true;
    let dir = p.dir.clone();
    let (agg, _) = launch_aggregator_tcp(&mut p);
    let mut procs = Procs(vec![agg]);
    for i in 0..3 {
        setup::write_toml(&node_toml(&dir, i), &p.nodes[i]).unwrap();
        procs.0.push(spawn_run("fd-node", None, &node_toml(&dir, i), &dir.node_log(i)));
    }
    let url = format!("http://{}/", endpoint(&dir.aggregator_log(), Duration::from_secs(60)));
    let node_url = format!("http://{}/", endpoint(&dir.node_log(0), Duration::from_secs(60)));

    // What the page shows, each time Chromium renders it: (the round counter, accuracy points).
    let mut seen: Vec<(String, usize)> = Vec::new();
    let start = Instant::now();
    let mut shot = false;
    loop {
        if procs.0[0].try_wait().unwrap().is_some() {
            break; // the federation is over: the page is gone with the process
        }
        assert!(start.elapsed() < Duration::from_secs(600), "the federation did not finish; the page showed {seen:?}");
        let dom = dump_dom(&chromium, &url);
        // No page, or the page without its data ("–": its status request failed) after rounds
        // were shown: the aggregator is stopping (the loop's top sees it exit).
        let stopping = |r: &String| r.is_empty() || (r == "–" && seen.iter().any(|(s, _)| s != "–"));
        let Some(round) = text_of(&dom, "round").filter(|r| !stopping(r)) else {
            continue;
        };
        let points = points_in(&dom, "accuracy-plot");
        if seen.last() != Some(&(round.clone(), points)) {
            seen.push((round, points));
        }
        if points >= 2 && !shot {
            let node = dump_dom(&chromium, &node_url);
            let answered: usize = text_of(&node, "answered").unwrap_or_default().parse().unwrap_or(0);
            assert!(answered >= 1, "node 0's page shows no answered round:\n{node}");
            assert!(text_of(&node, "sent").is_some_and(|t| t.ends_with('B')), "no egress total:\n{node}");
            screenshot(&chromium, &node_url, &dir.root().join("live-view-node.png"));
            screenshot(&chromium, &url, &dir.root().join("live-view-aggregator.png"));
            shot = true;
        }
    }
    let status = wait_exit(&mut procs.0[0], Duration::from_secs(60));
    assert!(status.success(), "aggregator: {}", std::fs::read_to_string(dir.aggregator_log()).unwrap_or_default());
    eprintln!("the live view showed, in turn: {seen:?}");
    assert!(shot, "the page never showed two rounds' accuracy: {seen:?}");
    // The counter reads "N of 5" and moved; the points grew as rounds completed, never shrank.
    assert!(seen.iter().all(|(r, _)| r == "–" || r.ends_with(&format!(" of {ROUNDS}"))), "{seen:?}");
    let rounds: Vec<&String> = seen.iter().map(|(r, _)| r).collect();
    assert!(rounds.windows(2).any(|w| w[0] != w[1]), "the round counter never changed: {seen:?}");
    assert!(seen.windows(2).all(|w| w[0].1 <= w[1].1), "points disappeared: {seen:?}");
    let distinct: std::collections::BTreeSet<usize> = seen.iter().map(|(_, n)| *n).collect();
    assert!(distinct.len() >= 2, "the plot never gained a point while the page was open: {seen:?}");
}
