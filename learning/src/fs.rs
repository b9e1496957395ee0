//! File helpers shared by every crate that writes state: the workspace's one atomic write (a
//! crash leaves the old file or the new one, never a mix), private state folders, and the
//! resolution of paths given in config files.
//!
//! [`atomic_write`] is the only way state files are written: a temporary file in the same
//! folder, fsync of the file, rename over the target, fsync of the folder. Once it returns, the
//! new bytes are durable; if it fails or the machine crashes, readers see the old file or the
//! new one, whole. Crates that depend on this one call it rather than writing their own.
//!
//! State is private to its owner: folders this module creates are 0700 and files it writes
//! 0600 (on Unix). The temporary file of an atomic write has an unpredictable name (`tempfile`),
//! created exclusively, so that nobody can plant a file or a link where it will be written.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::Error;

/// Creates `dir` and any missing parents as private folders (0700 on Unix). A folder that
/// already existed is left as it is: `init --dir .` must not change who can read the current
/// folder (the files written in it are private in any case). The folders it creates are durable
/// when it returns (the folder holding each one is synced).
pub fn create_private_dir(dir: &Path) -> Result<(), Error> {
    let io = |e| Error::Io { path: dir.to_owned(), source: e };
    // The folders this call creates, deepest first.
    let missing: Vec<&Path> = dir.ancestors().take_while(|d| !d.as_os_str().is_empty() && !d.is_dir()).collect();
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder.create(dir).map_err(io)?;
        // The umask may have taken bits from the mode; only the folders created here are set.
        for created in &missing {
            std::fs::set_permissions(created, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
    }
    #[cfg(not(unix))]
    builder.create(dir).map_err(io)?;
    for created in missing {
        sync_dir(folder_of(created)).map_err(io)?;
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically and durably: a temporary file (private, at an
/// unpredictable name) in the same folder, written and fsynced, renamed over `path`, then an
/// fsync of the folder so that the rename itself survives a crash. A crash leaves either the
/// old file or the new one, never a mix; on an error the temporary file is removed and `path`
/// is untouched. Missing parent folders are created private (and durable).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut file = AtomicFile::create(path)?;
    file.write(bytes)?;
    file.commit()
}

/// [`atomic_write`] in pieces, for a file too large to hold in memory: the temporary file is
/// created at once, written as the pieces come, and renamed over the target only by
/// [`AtomicFile::commit`]; dropped before that, it is removed and the target left as it was.
#[derive(Debug)]
pub struct AtomicFile {
    path: PathBuf,
    tmp: tempfile::NamedTempFile,
}

impl AtomicFile {
    /// Creates the temporary file beside `path` (private, at an unpredictable name, created
    /// exclusively), and missing parent folders private.
    pub fn create(path: &Path) -> Result<Self, Error> {
        let io = |e| Error::Io { path: path.to_owned(), source: e };
        let dir = folder_of(path);
        let name = path
            .file_name()
            .ok_or_else(|| io(std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file name")))?;
        if !dir.is_dir() {
            create_private_dir(dir)?;
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!(".{}.", name.to_string_lossy()))
            .suffix(".tmp")
            .tempfile_in(dir)
            .map_err(io)?;
        Ok(Self { path: path.to_owned(), tmp })
    }

    /// Appends `bytes`.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.tmp.write_all(bytes).map_err(|e| Error::Io { path: self.path.clone(), source: e })
    }

    /// The temporary file, to read back what was written before it is committed.
    pub fn temporary(&self) -> &Path {
        self.tmp.path()
    }

    /// Syncs the file, renames it over the target and syncs the folder: from then on the new
    /// bytes are durable.
    pub fn commit(self) -> Result<(), Error> {
        let Self { path, tmp } = self;
        let io = |e| Error::Io { path: path.clone(), source: e };
        tmp.as_file().sync_all().map_err(io)?;
        // On failure the temporary file is removed when it drops.
        tmp.persist(&path).map_err(|e| io(e.error))?;
        sync_dir(folder_of(&path)).map_err(io)
    }
}

/// The folder that holds `path` (`.` for a bare file name).
fn folder_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Makes the entries of `dir` (files created, renamed or removed in it) durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
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

    #[test]
    fn a_failed_write_leaves_the_target_whole_and_no_temporary_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // The rename cannot replace a folder that holds a file.
        let target = dir.join("taken");
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("inside"), b"old").unwrap();
        assert!(matches!(atomic_write(&target, b"new"), Err(Error::Io { .. })));
        assert_eq!(std::fs::read(target.join("inside")).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 1, "no temporary file left behind");
    }

    #[test]
    fn missing_folders_are_created_and_a_bare_name_lives_in_the_current_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("a").join("b").join("c.json");
        atomic_write(&file, b"{}").unwrap();
        assert_eq!(std::fs::read(&file).unwrap(), b"{}");
        assert_eq!(folder_of(Path::new("c.json")), Path::new("."));
        assert_eq!(folder_of(&file), tmp.path().join("a").join("b"));
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
        // A folder that already existed (`init --dir .`) is left as it is; what is made in it
        // is private.
        let loose = base.join("loose");
        std::fs::create_dir_all(&loose).unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&loose).unwrap();
        assert_eq!(mode(&loose), 0o755, "an existing folder's mode was changed");
        create_private_dir(&loose.join("new")).unwrap();
        assert_eq!((mode(&loose), mode(&loose.join("new"))), (0o755, 0o700));
    }
}
