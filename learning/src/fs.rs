//! File helpers shared by every crate that writes state: atomic writes (a crash leaves the old
//! file or the new one, never a mix), private state folders, and the resolution of paths given
//! in config files.
//!
//! State is private to its owner: folders this module creates are 0700 and files it writes
//! 0600 (on Unix). The temporary file of an atomic write has an unpredictable name (`tempfile`),
//! created exclusively, so that nobody can plant a file or a link where it will be written.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::Error;

/// Creates `dir` and any missing parents as private folders (0700 on Unix), and makes `dir`
/// itself private if it already existed.
pub fn create_private_dir(dir: &Path) -> Result<(), Error> {
    let io = |e| Error::Io { path: dir.to_owned(), source: e };
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(dir).map_err(io)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    }
    #[cfg(not(unix))]
    builder.create(dir).map_err(io)?;
    Ok(())
}

/// Writes `bytes` to `path` atomically: a temporary file (private, at an unpredictable name) in
/// the same directory, fsync, rename, then fsync of the directory. A crash leaves either the old
/// file or the new one, never a mix. Missing parent folders are created private.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let io = |e| Error::Io { path: path.to_owned(), source: e };
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name =
        path.file_name().ok_or_else(|| io(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name")))?;
    if !dir.is_dir() {
        create_private_dir(dir)?;
    }
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    // On failure the temporary file is removed when `tmp` drops.
    tmp.persist(path).map_err(|e| io(e.error))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// A path from a config file: absolute as it is, relative to the config file's folder `base`.
pub fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() { path.to_owned() } else { base.join(path) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_a_file_and_refuses_a_path_without_a_file_name() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let file = dir.join("a.txt");
        atomic_write(&file, b"one").unwrap();
        atomic_write(&file, b"two").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"two");
        assert!(matches!(atomic_write(&dir.join(".."), b"x"), Err(Error::Io { .. })));
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1, "no temporary file left behind");
    }

    #[cfg(unix)]
    #[test]
    fn state_is_private_and_a_planted_temporary_name_is_not_followed() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("base");
        let file = base.join("state").join("deep").join("model.bpk");
        // The old, predictable temporary name, planted as a link to a file someone else wants
        // overwritten: the write neither follows it nor fails on it.
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        create_private_dir(file.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(
            &victim,
            file.parent().unwrap().join(format!(".model.bpk.{}.tmp", std::process::id())),
        )
        .unwrap();
        atomic_write(&file, b"weights").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&base.join("state")), 0o700);
        assert_eq!(mode(&base.join("state").join("deep")), 0o700);
        // A folder that already existed loosely is made private.
        let loose = base.join("loose");
        std::fs::create_dir_all(&loose).unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&loose).unwrap();
        assert_eq!(mode(&loose), 0o700);
    }
}
