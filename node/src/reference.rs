//! The node's copy of the public reference set: the set whose SHA-256 `node.toml` pins
//! (`policy.reference_sha256`) and no other. A local copy is checked against the pin before the
//! node starts; without one, the pinned set is fetched from the aggregator in chunks, checked,
//! and written atomically. A copy is never replaced: a file that does not match the pin stops
//! the node with an error that names the setting.
//!
//! Nodes simulated in one process share one decoded copy ([`read_pinned`]): a file already read
//! and checked in this process (the same file, unchanged: device, inode, size and modification
//! time, and the same pin) is not read again while a node still holds it. A simulation of 1,000
//! nodes whose copies are hard links of one file holds the set once instead of 1,000 times
//! (16 MB each for MNIST's 5,000 rows).
//!
//! The copy is memory-mapped, not read ([`ReferenceSet::from_shared`]): node processes on one
//! machine whose copies are the same file (hard links, as `fd-scenarios` lays them out) share
//! its pages in the page cache instead of each holding 16 MB of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use net::Client;
use protocol::{FederationId, Message, ParticipantId, RefSetChunk, RefSetRequest, ReferenceSet, ReferenceSetId};

use crate::error::Error;

/// Largest reference set a node fetches.
const MAX_REFERENCE_BYTES: u64 = 4 << 30;
/// Bytes asked for in one chunk request.
const CHUNK: u32 = 1 << 20;

fn bad(detail: impl Into<String>) -> Error {
    Error::Reference { detail: detail.into() }
}

/// What names a file's content in this process: its device, inode, size and modification time.
type FileKey = (u64, u64, u64, i64, i64);

fn file_key(path: &Path) -> Option<FileKey> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// Reads the local copy at `path`, if there is one, and checks it against the pin; a copy read
/// and checked already in this process, and still held, is shared instead (see the module's
/// documentation). Blocking.
pub(crate) fn read_pinned(path: &Path, pin: ReferenceSetId) -> Result<Option<Arc<ReferenceSet>>, Error> {
    use std::sync::{Mutex, Weak};
    type Cache = Vec<(FileKey, ReferenceSetId, Weak<ReferenceSet>)>;
    static SHARED: Mutex<Cache> = Mutex::new(Vec::new());
    let Some(key) = file_key(path) else { return read_checked(path, pin).map(|rs| rs.map(Arc::new)) };
    // Held while reading: nodes starting together wait for the first one's copy.
    let mut shared = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    shared.retain(|(_, _, w)| w.strong_count() > 0);
    if let Some(rs) = shared.iter().find(|(k, p, _)| *k == key && *p == pin).and_then(|(_, _, w)| w.upgrade()) {
        return Ok(Some(rs));
    }
    let Some(rs) = read_checked(path, pin)?.map(Arc::new) else { return Ok(None) };
    // Changed while it was read: not shared.
    if file_key(path) == Some(key) {
        shared.push((key, pin, Arc::downgrade(&rs)));
    }
    Ok(Some(rs))
}

/// Reads the copy at `path`, if there is one, and checks it against the pin. Blocking.
fn read_checked(path: &Path, pin: ReferenceSetId) -> Result<Option<ReferenceSet>, Error> {
    let io = |source| Error::Io { path: path.to_owned(), source };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io(source)),
    };
    let bytes = map(&file).map_err(io)?;
    let id = ReferenceSetId::digest(&bytes);
    if id != pin {
        return Err(Error::config(
            "policy.reference_sha256",
            format!(
                "the reference set at {} has SHA-256 {id}, not the pinned {pin}; it is not replaced: correct the pin, or remove the file to fetch the pinned set",
                path.display()
            ),
        ));
    }
    ReferenceSet::from_shared(Arc::new(bytes), usize::MAX)
        .map(Some)
        .map_err(|e| bad(format!("{}: {e}", path.display())))
}

/// `file`'s bytes, memory-mapped read-only and private to this process's view: processes that
/// map the same file share its pages.
#[allow(unsafe_code)]
fn map(file: &std::fs::File) -> std::io::Result<memmap2::Mmap> {
    // SAFETY: a mapping is unsound only if the file changes under it while it is mapped. The
    // node's copy lives in its private state folder and is only ever put there whole, by an
    // atomic rename (a new file, `learning::fs::AtomicFile`); it is never written in place or
    // truncated, so the mapped bytes stay those that were hashed and checked. (Every bit pattern
    // is a valid `u8` and `f32`, so even a file changed by hand, against that rule, could not
    // make the values invalid for their type: at worst it would end the process with SIGBUS.)
    unsafe { memmap2::Mmap::map(file) }
}

/// Refuses a reference set whose rows are not as wide as the private data's.
pub(crate) fn check_features(data: usize, rs: &ReferenceSet) -> Result<(), Error> {
    if rs.features != data {
        return Err(Error::FeatureCount { data, reference: rs.features });
    }
    Ok(())
}

/// Fetches the pinned set `pin` from the aggregator, checks that its rows have `features`
/// features (the private data's), and only then saves it at `path`, atomically. The chunks go to
/// a temporary file beside `path` and are hashed as they come: memory holds one chunk, and a
/// size other than `size` (the pinned `policy.reference_bytes`, when set; else at most 4 GiB)
/// is refused at the first chunk. A set that does not fit is not written
/// ([`Error::FeatureCount`]), so nothing is left behind for a later start to trip over. A copy
/// is never overwritten: a file at `path` that matches the pin (written meanwhile, e.g. by an
/// earlier attempt) is used, any other is refused.
pub(crate) async fn fetch(
    client: &Client,
    aggregator: &ParticipantId,
    federation: &FederationId,
    path: &Path,
    pin: ReferenceSetId,
    size: Option<u64>,
    features: usize,
) -> Result<Arc<ReferenceSet>, Error> {
    let mut download = Download::start(path.to_owned(), pin, size).await?;
    while let Some(offset) = download.next_offset() {
        let req = Message::RefSetRequest(RefSetRequest {
            federation: federation.clone(),
            reference_set: pin,
            offset,
            len: CHUNK,
        });
        match client.request(aggregator, &req).await? {
            Message::RefSetChunk(chunk) => download = download.take(chunk).await?,
            other => return Err(Error::Unexpected { request: "RefSetRequest", got: other.kind() }),
        }
    }
    tokio::task::spawn_blocking(move || download.finish(features)).await?
}

/// A reference set being fetched: the chunks so far, in a temporary file beside its path, and
/// their hash.
#[derive(Debug)]
pub(crate) struct Download {
    path: PathBuf,
    pin: ReferenceSetId,
    size: Option<u64>,
    file: learning::fs::AtomicFile,
    hasher: protocol::ReferenceSetHasher,
    /// Bytes taken so far.
    taken: u64,
    /// The size the first chunk announced.
    total: Option<u64>,
}

impl Download {
    /// Creates the temporary file. `size`: the pinned size, if any.
    pub(crate) async fn start(path: PathBuf, pin: ReferenceSetId, size: Option<u64>) -> Result<Self, Error> {
        let at = path.clone();
        let file = tokio::task::spawn_blocking(move || learning::fs::AtomicFile::create(&at)).await??;
        Ok(Self { path, pin, size, file, hasher: ReferenceSetId::hasher(), taken: 0, total: None })
    }

    /// Where the next chunk starts, or `None` once every byte has come.
    pub(crate) fn next_offset(&self) -> Option<u64> {
        match self.total {
            Some(total) if self.taken >= total => None,
            _ => Some(self.taken),
        }
    }

    /// Checks a chunk against the pin, the size and what came before, hashes it and appends it
    /// to the temporary file.
    pub(crate) async fn take(mut self, chunk: RefSetChunk) -> Result<Self, Error> {
        let RefSetChunk { offset, total_len, data, reference_set, .. } = chunk;
        let total = *self.total.get_or_insert(total_len);
        match self.size {
            Some(pinned) if total_len != pinned => {
                return Err(Error::config(
                    "policy.reference_bytes",
                    format!("the aggregator offers a reference set of {total_len} bytes, not the pinned {pinned}"),
                ));
            }
            None if total_len > MAX_REFERENCE_BYTES => {
                return Err(bad(format!(
                    "the aggregator offers a reference set of {total_len} bytes; at most {MAX_REFERENCE_BYTES} are fetched"
                )));
            }
            _ => {}
        }
        if reference_set != self.pin
            || offset != self.taken
            || total_len != total
            || (data.is_empty() && self.taken < total)
            || data.len() as u64 > total - self.taken
        {
            return Err(bad("inconsistent reference-set chunk"));
        }
        self.hasher.update(&data);
        self.taken += data.len() as u64;
        tokio::task::spawn_blocking(move || {
            self.file.write(&data)?;
            Ok::<_, Error>(self)
        })
        .await?
    }

    /// Once every byte has come: checks the hash, then reads the set back and checks its rows
    /// against the private data's `features`, then renames the file into place unless a copy of
    /// the pinned set is there already. Blocking.
    pub(crate) fn finish(self, features: usize) -> Result<Arc<ReferenceSet>, Error> {
        if self.hasher.finish() != self.pin {
            return Err(bad("the fetched reference set does not match the pinned hash"));
        }
        let temporary = self.file.temporary().to_owned();
        let bytes = std::fs::read(&temporary).map_err(|source| Error::Io { path: temporary, source })?;
        let rs = ReferenceSet::from_bytes(&bytes, usize::MAX).map_err(|e| bad(e.to_string()))?;
        check_features(features, &rs)?;
        drop(rs);
        if let Some(rs) = read_pinned(&self.path, self.pin)? {
            return Ok(rs);
        }
        self.file.commit()?;
        tracing::info!(bytes = bytes.len(), path = %self.path.display(), "fetched the reference set");
        // The copy just put in place, mapped (its pages shared with the other nodes' copies of
        // the same file); the bytes read back go.
        drop(bytes);
        read_pinned(&self.path, self.pin)?.ok_or_else(|| bad(format!("{} vanished once written", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_copy_is_used_only_if_it_matches_the_pin_and_is_left_alone_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reference.fdref");
        let rs = ReferenceSet::new(3, 2, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let bytes = rs.to_bytes();
        let pin = ReferenceSetId::digest(&bytes);
        assert!(read_pinned(&path, pin).unwrap().is_none(), "no copy yet: fetch it");
        std::fs::write(&path, &bytes).unwrap();
        let first = read_pinned(&path, pin).unwrap().unwrap();
        assert_eq!(*first, rs);
        assert!(first.values.is_shared(), "the copy is read in place from its memory map");
        // A hard link of the same file, read while the first copy is held: the same copy.
        let link = dir.path().join("link.fdref");
        std::fs::hard_link(&path, &link).unwrap();
        assert!(Arc::ptr_eq(&first, &read_pinned(&link, pin).unwrap().unwrap()), "one decoded copy");
        match read_pinned(&link, ReferenceSetId([9; 32])) {
            Err(Error::Config { field, .. }) => assert_eq!(field, "policy.reference_sha256"),
            other => panic!("a shared copy bypassed another pin: {other:?}"),
        }
        match read_pinned(&path, ReferenceSetId([9; 32])) {
            Err(Error::Config { field, .. }) => assert_eq!(field, "policy.reference_sha256"),
            other => panic!("a copy that does not match the pin was accepted: {other:?}"),
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "the copy is left as it was");
    }

    fn chunk(pin: ReferenceSetId, offset: u64, total_len: u64, data: &[u8]) -> RefSetChunk {
        RefSetChunk {
            federation: FederationId::new("f").unwrap(),
            reference_set: pin,
            offset,
            total_len,
            data: data.to_vec(),
        }
    }

    /// Everything in `dir`, temporary files included.
    fn entries(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    }

    /// Fetches `bytes` in chunks of 7 through a [`Download`].
    async fn download(
        path: &Path,
        bytes: &[u8],
        pin: ReferenceSetId,
        features: usize,
    ) -> Result<Arc<ReferenceSet>, Error> {
        let mut d = Download::start(path.to_owned(), pin, Some(bytes.len() as u64)).await?;
        while let Some(offset) = d.next_offset() {
            let at = offset as usize;
            d = d.take(chunk(pin, offset, bytes.len() as u64, &bytes[at..(at + 7).min(bytes.len())])).await?;
        }
        d.finish(features)
    }

    #[tokio::test]
    async fn a_fetched_set_that_does_not_fit_the_data_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reference.fdref");
        let rs = ReferenceSet::new(3, 2, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        let bytes = rs.to_bytes();
        let pin = ReferenceSetId::digest(&bytes);
        match download(&path, &bytes, pin, 1).await {
            Err(Error::FeatureCount { data: 1, reference: 2 }) => {}
            other => panic!("a set of 2 features was taken for data of 1: {other:?}"),
        }
        assert!(entries(dir.path()).is_empty(), "nothing is left for a later start to trip over");
        assert_eq!(download(&path, &bytes, pin, 2).await.unwrap().as_ref(), &rs);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
        // Fetched again (a retry after the first copy was written): the copy is used.
        assert_eq!(download(&path, &bytes, pin, 2).await.unwrap().as_ref(), &rs);
        assert!(download(&path, &bytes, ReferenceSetId([9; 32]), 2).await.is_err(), "a set off the pin");
        assert_eq!(entries(dir.path()), vec!["reference.fdref".to_owned()]);
    }

    /// A malicious aggregator that offers 4 GiB is refused at the first chunk when the size is
    /// pinned; the chunks go to a temporary file as they come, not to memory.
    #[tokio::test]
    async fn the_pinned_size_is_enforced_and_chunks_go_to_disk_as_they_come() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reference.fdref");
        let pin = ReferenceSetId([3; 32]);
        let d = Download::start(path.clone(), pin, Some(1000)).await.unwrap();
        match d.take(chunk(pin, 0, 4 << 30, &[0; 100])).await {
            Err(Error::Config { field, .. }) => assert_eq!(field, "policy.reference_bytes"),
            other => panic!("a 4-GiB set was taken for a pinned 1000 bytes: {other:?}"),
        }
        assert!(entries(dir.path()).is_empty(), "the temporary file is removed");
        let d = Download::start(path.clone(), pin, None).await.unwrap();
        assert!(d.take(chunk(pin, 0, (4 << 30) + 1, &[0; 100])).await.is_err(), "beyond 4 GiB unpinned");
        let mut d = Download::start(path.clone(), pin, Some(1000)).await.unwrap();
        for i in 0..3u8 {
            d = d.take(chunk(pin, u64::from(i) * 100, 1000, &[i; 100])).await.unwrap();
        }
        assert_eq!(std::fs::metadata(d.file.temporary()).unwrap().len(), 300, "on disk as they came");
        assert!(d.take(chunk(pin, 300, 1000, &[0; 701])).await.is_err(), "more than announced");
        let mut d = Download::start(path.clone(), pin, Some(200)).await.unwrap();
        d = d.take(chunk(pin, 0, 200, &[1; 200])).await.unwrap();
        assert_eq!(d.next_offset(), None);
        assert!(d.finish(2).is_err(), "the hash does not match");
        assert!(entries(dir.path()).is_empty());
    }
}
