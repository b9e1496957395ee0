//! What the integration tests that check against Python share: finding an interpreter with the
//! packages of `tests/python/requirements*.txt`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `learning` crate's folder.
fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd`; its stdout, or what went wrong with its output.
fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A Python interpreter on which `probe` (Python code, e.g. `import onnx`) runs: `$FD_PYTHON` if
/// set (`.ci/run` sets it), otherwise a virtual environment in `target/python`, made from PyPI on
/// first use with `tests/python/requirements.txt` and then, with `--no-deps`,
/// `tests/python/requirements-no-deps.txt` (opacus, whose torch dependency is not needed).
/// A test binary asks with one probe: the answer is kept.
pub fn python(probe: &str) -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let works = |py: &Path| run(Command::new(py).args(["-c", probe])).is_ok();
        if let Some(py) = std::env::var_os("FD_PYTHON") {
            let py = PathBuf::from(py);
            assert!(works(&py), "FD_PYTHON={} cannot run `{probe}`", py.display());
            return py;
        }
        let venv = manifest().join("../target/python");
        let py = venv.join("bin/python");
        if !works(&py) {
            let requirements = manifest().join("tests/python/requirements.txt");
            let no_deps = manifest().join("tests/python/requirements-no-deps.txt");
            let pip = |extra: &[&str], file: &Path| {
                let install = ["-m", "pip", "install", "--quiet", "--disable-pip-version-check"];
                run(Command::new(&py).args(install).args(extra).arg("-r").arg(file))
            };
            let made = run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
                .and_then(|_| pip(&[], &requirements))
                .and_then(|_| pip(&["--no-deps"], &no_deps));
            if let Err(e) = made {
                panic!(
                    "this check needs Python 3 with the packages of {} (and, installed with --no-deps, {}); \
                     creating {} from PyPI failed. Without FD_PYTHON this test needs network access to PyPI; \
                     offline, install those packages into a Python environment and set FD_PYTHON to its \
                     interpreter. It never skips.\n{e}",
                    requirements.display(),
                    no_deps.display(),
                    venv.display()
                );
            }
            assert!(works(&py), "{} was created but cannot run `{probe}`", py.display());
        }
        py
    })
}
