//! What the three binaries (`fd-node`, `fd-aggregator`, `fd-scenarios`) set up the same way:
//! the log subscriber and the shutdown signal (libraries never call these; binaries do, once),
//! and the text of the `--addr-file` that a listening binary reports its addresses in.

use tokio_util::sync::CancellationToken;

/// How log lines are written to standard error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text (colours only on a terminal, so that log files stay plain).
    #[default]
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The `--log-format` flag the three binaries share (`#[command(flatten)]` it into their CLI).
#[derive(Clone, Copy, Debug, Default, clap::Args)]
pub struct LogArgs {
    /// How log lines are written to standard error: `text`, or `json` (one object a line, with
    /// `timestamp`, `level`, `fields` and `target`, for log collectors).
    #[arg(long, global = true, value_enum, default_value_t)]
    pub log_format: LogFormat,
}

impl LogArgs {
    /// Installs the global subscriber in this format (see [`init_logging`]).
    pub fn init(&self, default_filter: &str) {
        init_logging(default_filter, self.log_format);
    }

    /// What `main` returns: in JSON, a failure is logged as one JSON line (its cause chain in
    /// `fields.error`) and the process exits with status 1, so that standard error stays
    /// parseable; in text, the error is returned for Rust to print as usual.
    pub fn finish<E>(&self, result: Result<(), E>) -> Result<(), E>
    where
        E: AsRef<dyn std::error::Error + Send + Sync + 'static>,
    {
        if let (LogFormat::Json, Err(e)) = (self.log_format, &result) {
            let error: &(dyn std::error::Error + 'static) = e.as_ref();
            tracing::error!(error = %crate::error::Chain(error), "failed");
            std::process::exit(1);
        }
        result
    }
}

/// Installs the global `tracing` subscriber. `RUST_LOG` overrides `default_filter`.
pub fn init_logging(default_filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.json().with_current_span(false).init(),
    }
}

/// A token cancelled on the first ctrl-c (SIGINT) or SIGTERM (what `systemctl stop` sends).
/// Must be called inside a tokio runtime. The handlers are registered before this returns, so a
/// signal that arrives any time after the call is a clean stop (registered in the spawned task
/// instead, a SIGTERM that came before the task first ran killed the process).
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let handlers = signal(SignalKind::interrupt()).and_then(|int| Ok((int, signal(SignalKind::terminate())?)));
        tokio::spawn(async move {
            match handlers {
                Ok((mut int, mut term)) => {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGINT and SIGTERM; ctrl-c only");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            tracing::info!("shutdown requested");
            t.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested");
        t.cancel();
    });
    token
}

/// What `--addr-file` reports: `addrs`, each with `/p2p/<who>`, one a line. The binary writes it
/// with one atomic write (`learning::fs::atomic_write`), so that a reader never sees half of it.
pub fn addr_file_text(who: &protocol::ParticipantId, addrs: &[libp2p::Multiaddr]) -> String {
    let id = libp2p::multiaddr::Protocol::P2p(crate::ids::peer_id(who));
    addrs.iter().map(|a| format!("{}\n", a.clone().with(id.clone()))).collect()
}

/// A config file that does not parse: the dotted key at fault (`round.encoding`, or `(file)` when
/// the error is not at a key) and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {detail}")]
pub struct TomlError {
    /// The dotted key at fault.
    pub field: String,
    /// The parser's message, with the file name.
    pub detail: String,
}

/// Reads and parses a TOML config file; an unreadable file is reported as `(file)`.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T, TomlError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| TomlError { field: "(file)".into(), detail: format!("cannot read {}: {e}", path.display()) })?;
    parse_toml(path, &text)
}

/// Parses a TOML config file's text, naming the key at fault when it does not parse.
pub fn parse_toml<T: serde::de::DeserializeOwned>(path: &std::path::Path, text: &str) -> Result<T, TomlError> {
    toml::from_str(text).map_err(|e: toml::de::Error| TomlError {
        field: e.span().map(|s| key_at(text, s.start)).unwrap_or_else(|| "(file)".into()),
        detail: format!("{}: {}", path.display(), e.message()),
    })
}

/// The dotted key of the line holding byte `at`: the last `[table]` header above it, then the
/// key before `=` on that line (or the key named by serde's "unknown field `x`" messages). On a
/// header line, the table the header names (an unknown `[simulation]` is `simulation`).
fn key_at(text: &str, at: usize) -> String {
    let at = at.min(text.len());
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    if line.trim_start().starts_with('[') {
        return line.trim().trim_matches(|c| c == '[' || c == ']').trim().to_owned();
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && l.ends_with(']'))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_owned());
    let key = line.split('=').next().map(str::trim).filter(|k| !k.is_empty() && !k.starts_with('['));
    match (table, key) {
        (Some(t), Some(k)) => format!("{t}.{k}"),
        (None, Some(k)) => k.to_owned(),
        (Some(t), None) => t,
        (None, None) => "(file)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cfg {
        name: String,
        round: Round,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Round {
        samples: u32,
    }

    #[test]
    fn a_bad_value_or_unknown_key_is_named_with_its_table() {
        let p = std::path::Path::new("x.toml");
        let e = parse_toml::<Cfg>(p, "name = \"a\"\n[round]\nsamples = \"many\"\n").unwrap_err();
        assert_eq!(e.field, "round.samples", "{e}");
        let e = parse_toml::<Cfg>(p, "name = \"a\"\nsimulation = 3\n[round]\nsamples = 1\n").unwrap_err();
        assert_eq!(e.field, "simulation", "{e}");
        assert!(e.detail.contains("x.toml"));
        let e = parse_toml::<Cfg>(p, "name = \"a\"\n[round]\nsamples = 1\n[simulation]\ndelay_ms = 3\n").unwrap_err();
        assert_eq!(e.field, "simulation", "an unknown table is named, not the one above it: {e}");
        assert!(parse_toml::<Cfg>(p, "name = \"a\"\n[round]\nsamples = 1\n").is_ok());
    }
}
