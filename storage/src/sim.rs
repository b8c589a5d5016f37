//! A deterministic, in-memory, fault-injecting [`Fs`] for crash tests.
//!
//! [`SimFs`] models a disk closely enough to test the log's durability logic against power loss,
//! process death, a full disk and failing `fsync`s. Every random choice derives from an explicit seed,
//! so a failing case replays exactly.
//!
//! # The model
//!
//! Paths are keys, not OS paths: `/`, `.` and the empty path all name the root directory, `/a/b` and
//! `a/b` name the same file, and `..` pops a component. A directory maps names to inode ids twice: its
//! `current` entries, which every operation sees, and its `durable` entries, the mapping as of its last
//! [`Fs::sync_dir`]. Creating, renaming and unlinking a file change only `current` entries. For
//! simplicity, directories made by [`Fs::create_dir_all`] are durable at once (entered in both maps of
//! their parent), and directories can be neither removed nor renamed.
//!
//! A file inode keeps its `durable` contents (as of its last [`FsFile::sync_data`]), its `current`
//! contents, and the ordered operations (`write_all_at` with offset and bytes, `set_len`) made since.
//! An open handle refers to its inode, not its path, so it keeps working after the file is renamed or
//! unlinked, as on Unix. [`Fs::try_lock`] creates a missing lock file, like the real one (unsynced).
//!
//! # Power loss: [`SimFs::crash`]
//!
//! * Every file's contents become its durable contents plus the replay of a seed-chosen prefix of its
//!   pending operations, chosen independently per file. The last replayed write may be torn: only its
//!   part before some 512-byte boundary of the file (in file offsets) is applied, possibly none of it.
//!   Unsynced writes are thus lost from some point on but never reordered, and never leave garbage.
//! * Every directory's entries become its durable entries: unsynced creates, renames and unlinks are
//!   forgotten, and inodes no longer named by any entry are gone.
//! * Handles and lock guards from before the crash are stale: every operation on an old handle fails
//!   with `"simulated crash: stale handle"`, all locks are released, and dropping an old guard does not
//!   touch the lock of a new holder.
//! * The process runs again: the operation budget and a pending fsync failure are cleared (the space
//!   limit stays: it belongs to the disk).
//!
//! [`SimFs::kill`] is the process dying alone (kill -9): the same restart, but the page cache survives
//! (current contents, pending writes and unsynced directory entries stay, for a later crash to lose).
//!
//! # Injected faults
//!
//! * **Process death** ([`SimFs::set_ops_left`]): every mutating operation (`write_all_at`, `set_len`,
//!   `sync_data`, `sync_dir`, `rename`, `remove_file`, `open` with [`OpenMode::CreateNew`],
//!   `create_dir_all`) uses one unit of the budget. The first one that finds it empty fails with
//!   `"simulated crash: process stopped"` without effect, and so does every later operation of any
//!   kind, reads included ([`Fs::exists`] answers `false`), until [`SimFs::crash`] or [`SimFs::kill`].
//!   Only a write may have partly happened when it was stopped: a seed-derived prefix ending on a
//!   512-byte boundary.
//! * **Full disk** ([`SimFs::set_space_bytes`]): the current contents of all live files (named by a
//!   current entry or held open) may not exceed the limit. A write that does not fit writes what fits,
//!   cut down to a 512-byte boundary of the file, and fails with ENOSPC (`raw_os_error() == Some(28)`);
//!   a growing `set_len` fails the same way without effect. Shrinking always works.
//! * **Failed fsync** ([`SimFs::fail_next_sync`]): the next `sync_data` or `sync_dir` fails with
//!   `"simulated fsync failure"`, makes nothing durable, and leaves the pending writes pending.
//!
//! The test helpers ([`SimFs::file_bytes`], [`SimFs::write_raw`], [`SimFs::fork`], ...) bypass all
//! fault injection.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use crate::fs::{Fs, FsFile, LockGuard, OpenMode};

/// The sector size: torn and partial writes are cut at multiples of it, in file offsets.
const BLOCK: u64 = 512;
const ENOSPC: i32 = 28;
const ROOT: Ino = 0;
const DEFAULT_SEED: u64 = 0x5EED_F11E_5EED_F11E;
const STOPPED: &str = "simulated crash: process stopped";
const STALE: &str = "simulated crash: stale handle";

type Ino = u64;

/// A deterministic, in-memory, fault-injecting file system; see the [module docs](self).
///
/// Cloning is cheap and yields another handle to the same disk.
#[derive(Debug, Clone)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

/// splitmix64: tiny, seedable and good enough to pick crash outcomes.
#[derive(Clone, Default)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 if `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// An operation on a file's contents not yet made durable.
#[derive(Clone)]
enum Op {
    Write { offset: u64, bytes: Vec<u8> },
    SetLen(u64),
}

/// A file inode. Directories are never removed, so only files keep reference counts.
#[derive(Clone, Default)]
struct FileNode {
    durable: Vec<u8>,
    current: Vec<u8>,
    pending: Vec<Op>,
    /// How many current entries, durable entries and open handles refer to this file.
    links: u32,
    durable_links: u32,
    handles: u32,
}

#[derive(Clone, Default)]
struct DirNode {
    current: BTreeMap<String, Ino>,
    durable: BTreeMap<String, Ino>,
}

#[derive(Clone, Default)]
struct State {
    files: BTreeMap<Ino, FileNode>,
    dirs: BTreeMap<Ino, DirNode>,
    next_ino: Ino,
    /// Bumped by every crash; handles and guards from an older generation are stale.
    generation: u64,
    ops_left: Option<u64>,
    ops_done: u64,
    stopped: bool,
    space_limit: Option<u64>,
    fail_next_sync: bool,
    locks: BTreeSet<PathBuf>,
    rng: Rng,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (files, dirs, generation) = (self.files.len(), self.dirs.len(), self.generation);
        write!(f, "State {{ files: {files}, dirs: {dirs}, generation: {generation}, .. }}")
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn stale() -> io::Error {
    io::Error::other(STALE)
}

fn err(kind: io::ErrorKind, path: &Path, what: &str) -> io::Error {
    io::Error::new(kind, format!("{}: {what}", path.display()))
}

/// The names a path walks through from the root.
fn names(path: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => out.push(name.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// Writes `bytes` at `offset`, zero-filling any gap; an empty write changes nothing.
fn write_into(data: &mut Vec<u8>, offset: u64, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let (start, end) = (offset as usize, offset as usize + bytes.len());
    if data.len() < end {
        data.resize(end, 0);
    }
    data[start..end].copy_from_slice(bytes);
}

/// How many bytes of a `len`-byte write at `offset` land when it is torn: all of them half of the time,
/// otherwise those before a random 512-byte boundary of the file strictly inside the write, or none.
fn torn_len(rng: &mut Rng, offset: u64, len: usize) -> usize {
    if len == 0 || rng.below(2) == 0 {
        return len;
    }
    let first = offset / BLOCK + 1;
    let inside = ((offset + len as u64 - 1) / BLOCK + 1).saturating_sub(first);
    match rng.below(inside + 1) {
        0 => 0,
        i => ((first + i - 1) * BLOCK - offset) as usize,
    }
}

impl FileNode {
    fn unused(&self) -> bool {
        self.links == 0 && self.durable_links == 0 && self.handles == 0
    }

    fn links_mut(&mut self, durable: bool) -> &mut u32 {
        if durable {
            &mut self.durable_links
        } else {
            &mut self.links
        }
    }

    fn apply(&mut self, offset: u64, bytes: &[u8]) {
        if !bytes.is_empty() {
            write_into(&mut self.current, offset, bytes);
            self.pending.push(Op::Write { offset, bytes: bytes.to_vec() });
        }
    }

    /// Power loss: durable contents plus a torn prefix of the pending operations.
    fn crash(&mut self, rng: &mut Rng) {
        let keep = rng.below(self.pending.len() as u64 + 1) as usize;
        let mut data = std::mem::take(&mut self.durable);
        for (i, op) in self.pending.drain(..).take(keep).enumerate() {
            match op {
                Op::SetLen(len) => data.resize(len as usize, 0),
                Op::Write { offset, bytes } => {
                    let n = if i + 1 == keep { torn_len(rng, offset, bytes.len()) } else { bytes.len() };
                    write_into(&mut data, offset, &bytes[..n]);
                }
            }
        }
        self.current.clone_from(&data);
        self.durable = data;
    }
}

impl State {
    fn new(seed: u64) -> Self {
        let dirs = BTreeMap::from([(ROOT, DirNode::default())]);
        State { dirs, next_ino: ROOT + 1, rng: Rng(seed), ..State::default() }
    }

    fn check_running(&self) -> io::Result<()> {
        (!self.stopped).then_some(()).ok_or_else(|| io::Error::other(STOPPED))
    }

    /// Charges one mutating operation to the budget; the first one that finds it empty stops the process.
    fn charge(&mut self) -> io::Result<()> {
        self.check_running()?;
        if self.ops_left == Some(0) {
            self.stopped = true;
            return Err(io::Error::other(STOPPED));
        }
        self.ops_left = self.ops_left.map(|left| left - 1);
        self.ops_done += 1;
        Ok(())
    }

    fn take_sync_failure(&mut self) -> io::Result<()> {
        let fail = std::mem::take(&mut self.fail_next_sync);
        (!fail).then_some(()).ok_or_else(|| io::Error::other("simulated fsync failure"))
    }

    fn file(&mut self, ino: Ino) -> io::Result<&mut FileNode> {
        self.files.get_mut(&ino).ok_or_else(stale)
    }

    fn entry(&self, dir: Ino, name: &str) -> Option<Ino> {
        self.dirs.get(&dir).and_then(|d| d.current.get(name).copied())
    }

    fn lookup(&self, path: &Path) -> io::Result<Ino> {
        let mut ino = ROOT;
        for name in names(path) {
            let dir =
                self.dirs.get(&ino).ok_or_else(|| err(io::ErrorKind::NotADirectory, path, "not a dir"))?;
            ino = *dir.current.get(&name).ok_or_else(|| err(io::ErrorKind::NotFound, path, "not found"))?;
        }
        Ok(ino)
    }

    fn lookup_file(&self, path: &Path) -> io::Result<Ino> {
        let ino = self.lookup(path)?;
        let is_file = self.files.contains_key(&ino);
        is_file.then_some(ino).ok_or_else(|| err(io::ErrorKind::IsADirectory, path, "is a directory"))
    }

    fn lookup_dir(&self, path: &Path) -> io::Result<Ino> {
        let ino = self.lookup(path)?;
        let is_dir = self.dirs.contains_key(&ino);
        is_dir.then_some(ino).ok_or_else(|| err(io::ErrorKind::NotADirectory, path, "not a directory"))
    }

    /// The directory holding `path` and the name of `path` in it.
    fn parent_of(&self, path: &Path) -> io::Result<(Ino, String)> {
        let mut names = names(path);
        let name = names.pop().ok_or_else(|| err(io::ErrorKind::InvalidInput, path, "is the root"))?;
        Ok((self.lookup_dir(&names.iter().collect::<PathBuf>())?, name))
    }

    fn next_ino(&mut self) -> Ino {
        self.next_ino += 1;
        self.next_ino - 1
    }

    /// Points entry `name` of directory `dir` (its current or its durable map) at `target`, or removes
    /// it, keeping the files' link counts and freeing a file that lost its last reference.
    fn set_entry(&mut self, dir: Ino, name: &str, target: Option<Ino>, durable: bool) {
        let d = self.dirs.get_mut(&dir).expect("SimFs: entry of a missing directory");
        let map = if durable { &mut d.durable } else { &mut d.current };
        let old = match target {
            Some(ino) => map.insert(name.to_owned(), ino),
            None => map.remove(name),
        };
        if let Some(file) = target.and_then(|ino| self.files.get_mut(&ino)) {
            *file.links_mut(durable) += 1;
        }
        if let Some(old) = old {
            if let Some(file) = self.files.get_mut(&old) {
                *file.links_mut(durable) -= 1;
            }
            self.collect(old);
        }
    }

    fn collect(&mut self, ino: Ino) {
        if self.files.get(&ino).is_some_and(FileNode::unused) {
            self.files.remove(&ino);
        }
    }

    fn create_file(&mut self, path: &Path) -> io::Result<Ino> {
        let (dir, name) = self.parent_of(path)?;
        if self.entry(dir, &name).is_some() {
            return Err(err(io::ErrorKind::AlreadyExists, path, "already exists"));
        }
        let ino = self.next_ino();
        self.files.insert(ino, FileNode::default());
        self.set_entry(dir, &name, Some(ino), false);
        Ok(ino)
    }

    /// `create_dir_all` without the budget; new directories are durable at once.
    fn mkdirs(&mut self, path: &Path) -> io::Result<()> {
        let mut dir = ROOT;
        for name in names(path) {
            dir = match self.entry(dir, &name) {
                Some(child) if self.dirs.contains_key(&child) => child,
                Some(_) => return Err(err(io::ErrorKind::AlreadyExists, path, "not a directory")),
                None => {
                    let child = self.next_ino();
                    self.dirs.insert(child, DirNode::default());
                    self.set_entry(dir, &name, Some(child), false);
                    self.set_entry(dir, &name, Some(child), true);
                    child
                }
            };
        }
        Ok(())
    }

    /// Bytes of current contents of the live files: those named by a current entry or held open.
    fn used(&self) -> u64 {
        let live = self.files.values().filter(|f| f.links > 0 || f.handles > 0);
        live.map(|f| f.current.len() as u64).sum()
    }

    fn free_space(&self) -> u64 {
        self.space_limit.map_or(u64::MAX, |limit| limit.saturating_sub(self.used()))
    }

    /// Writes what fits in the free space (cut at a 512-byte boundary) and fails with ENOSPC if not all.
    fn write(&mut self, ino: Ino, offset: u64, buf: &[u8]) -> io::Result<()> {
        let free = self.free_space();
        let file = self.file(ino)?;
        let (len, end) = (file.current.len() as u64, offset + buf.len() as u64);
        if end <= len || end - len <= free {
            file.apply(offset, buf);
            return Ok(());
        }
        let fits = ((len + free) / BLOCK * BLOCK).saturating_sub(offset);
        file.apply(offset, &buf[..fits.min(buf.len() as u64) as usize]);
        Err(io::Error::from_raw_os_error(ENOSPC))
    }

    /// A new process generation: old handles and guards go stale, locks are released, and the
    /// operation budget and a pending fsync failure are cleared.
    fn restart_process(&mut self) {
        self.generation += 1;
        (self.stopped, self.ops_left, self.fail_next_sync) = (false, None, false);
        self.locks.clear();
    }

    fn kill(&mut self) {
        self.restart_process();
        self.files.values_mut().for_each(|file| file.handles = 0);
        self.files.retain(|_, file| !file.unused());
    }

    fn crash(&mut self, seed: u64) {
        let mut rng = Rng(seed);
        self.restart_process();
        for file in self.files.values_mut() {
            file.crash(&mut rng);
        }
        let mut counts: BTreeMap<Ino, u32> = BTreeMap::new();
        for dir in self.dirs.values_mut() {
            dir.current.clone_from(&dir.durable);
            for &ino in dir.durable.values() {
                *counts.entry(ino).or_default() += 1;
            }
        }
        self.files.retain(|ino, _| counts.contains_key(ino));
        for (ino, file) in &mut self.files {
            (file.links, file.durable_links, file.handles) = (counts[ino], counts[ino], 0);
        }
    }
}

impl Default for SimFs {
    fn default() -> Self {
        Self::new()
    }
}

impl SimFs {
    /// An empty disk holding only the root directory.
    pub fn new() -> Self {
        Self::with_seed(DEFAULT_SEED)
    }

    /// An empty disk whose internal random choices (how much of a write stopped by
    /// [`SimFs::set_ops_left`] lands) derive from `seed`.
    pub fn with_seed(seed: u64) -> Self {
        SimFs { state: Arc::new(Mutex::new(State::new(seed))) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// An independent deep copy of the disk as a new process would see it: no handles open, no locks
    /// held (files only held open are freed), same fault settings. Handy to crash one state many ways.
    pub fn fork(&self) -> SimFs {
        let mut state = self.lock().clone();
        state.locks.clear();
        state.files.values_mut().for_each(|file| file.handles = 0);
        state.files.retain(|_, file| !file.unused());
        SimFs { state: Arc::new(Mutex::new(state)) }
    }

    /// Simulates power loss in place (see the [module docs](self)); `rng_seed` picks which unsynced
    /// writes survive and where the last one tears. Also restarts a process stopped by the op budget.
    pub fn crash(&self, rng_seed: u64) {
        self.lock().crash(rng_seed);
    }

    /// Simulates the death of the process (kill -9) while the machine keeps running: the page cache
    /// survives, so every file keeps its current contents *and* its pending (unsynced) operations, and
    /// every directory its current (unsynced) entries; a later [`SimFs::crash`] can still lose them.
    /// Like a crash, it makes old handles stale, releases the locks (files only held open are freed)
    /// and clears the operation budget and a pending fsync failure.
    pub fn kill(&self) {
        self.lock().kill();
    }

    /// Lets the next `n` mutating operations succeed and stops the process at the one after (`Some(0)`:
    /// the very next one); `None` removes the limit. Does not restart a stopped process: only
    /// [`SimFs::crash`] or [`SimFs::kill`] does, and it also clears the budget.
    pub fn set_ops_left(&self, ops: Option<u64>) {
        self.lock().ops_left = ops;
    }

    /// Whether the operation budget ran out and the process counts as dead until the next crash.
    pub fn is_stopped(&self) -> bool {
        self.lock().stopped
    }

    /// How many mutating operations have been charged so far (across crashes). Run a workload once to
    /// learn its count `n`, then rerun it with `set_ops_left(Some(k))` for every `k < n`.
    pub fn mutating_ops(&self) -> u64 {
        self.lock().ops_done
    }

    /// Limits the total current size of the live files; `None` means unlimited.
    pub fn set_space_bytes(&self, limit: Option<u64>) {
        self.lock().space_limit = limit;
    }

    /// The total current size of the live files (what [`SimFs::set_space_bytes`] limits).
    pub fn used_bytes(&self) -> u64 {
        self.lock().used()
    }

    /// Makes the next `sync_data` or `sync_dir` fail without making anything durable.
    pub fn fail_next_sync(&self) {
        self.lock().fail_next_sync = true;
    }

    /// The current contents of the file at `path`, or `None` if there is no such file.
    pub fn file_bytes(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.lock();
        st.files.get(&st.lookup(path).ok()?).map(|file| file.current.clone())
    }

    /// The sorted names of the current entries of directory `dir` (empty if there is none).
    pub fn list(&self, dir: &Path) -> Vec<String> {
        let st = self.lock();
        let dir = st.lookup(dir).ok().and_then(|ino| st.dirs.get(&ino));
        dir.map(|d| d.current.keys().cloned().collect()).unwrap_or_default()
    }

    /// Creates or replaces the file at `path` (and its missing parent directories) with `bytes`, durably
    /// (contents and directory entry). An existing file keeps its inode, so open handles see the change.
    ///
    /// # Panics
    ///
    /// If `path` is the root or a directory, or a parent is a file.
    pub fn write_raw(&self, path: &Path, bytes: &[u8]) {
        let mut st = self.lock();
        st.mkdirs(path.parent().unwrap_or(Path::new(""))).expect("SimFs::write_raw: parent");
        let (dir, name) = st.parent_of(path).expect("SimFs::write_raw: path");
        let ino = st.entry(dir, &name).unwrap_or_else(|| st.next_ino());
        assert!(!st.dirs.contains_key(&ino), "SimFs::write_raw: {} is a directory", path.display());
        let file = st.files.entry(ino).or_default();
        (file.current, file.durable) = (bytes.to_vec(), bytes.to_vec());
        file.pending.clear();
        st.set_entry(dir, &name, Some(ino), false);
        st.set_entry(dir, &name, Some(ino), true);
    }

    fn edit_raw(&self, path: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
        let mut bytes = self.file_bytes(path).unwrap_or_else(|| panic!("SimFs: no file {}", path.display()));
        edit(&mut bytes);
        self.write_raw(path, &bytes);
    }

    /// Flips bit `bit` (bit 0 is the low bit of byte 0) of the file's current contents, durably.
    ///
    /// # Panics
    ///
    /// If there is no such file or the bit is past its end.
    pub fn flip_bit(&self, path: &Path, bit: u64) {
        self.edit_raw(path, |bytes| bytes[(bit / 8) as usize] ^= 1 << (bit % 8));
    }

    /// Truncates or zero-extends the file's current contents to `len` bytes, durably.
    ///
    /// # Panics
    ///
    /// If there is no such file.
    pub fn truncate_raw(&self, path: &Path, len: u64) {
        self.edit_raw(path, |bytes| bytes.resize(len as usize, 0));
    }
}

impl Fs for SimFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FsFile>> {
        let mut st = self.lock();
        let ino = match mode {
            OpenMode::CreateNew => st.charge().and_then(|()| st.create_file(path))?,
            OpenMode::Read | OpenMode::ReadWrite => st.check_running().and_then(|()| st.lookup_file(path))?,
        };
        st.file(ino)?.handles += 1;
        let writable = mode != OpenMode::Read;
        Ok(Arc::new(SimFile { state: Arc::clone(&self.state), ino, generation: st.generation, writable }))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.charge()?;
        st.mkdirs(path)
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = self.lock();
        st.check_running()?;
        Ok(st.dirs[&st.lookup_dir(path)?].current.keys().cloned().collect())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.charge()?;
        let (from_dir, from_name) = st.parent_of(from)?;
        let ino = st.lookup(from)?;
        if st.dirs.contains_key(&ino) {
            return Err(err(io::ErrorKind::Unsupported, from, "SimFs cannot rename directories"));
        }
        let (to_dir, to_name) = st.parent_of(to)?;
        match st.entry(to_dir, &to_name) {
            Some(same) if same == ino => return Ok(()),
            Some(other) if st.dirs.contains_key(&other) => {
                return Err(err(io::ErrorKind::IsADirectory, to, "is a directory"));
            }
            _ => {}
        }
        st.set_entry(to_dir, &to_name, Some(ino), false);
        st.set_entry(from_dir, &from_name, None, false);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.charge()?;
        let (dir, name) = st.parent_of(path)?;
        st.lookup_file(path)?;
        st.set_entry(dir, &name, None, false);
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.lock();
        st.charge()?;
        let ino = st.lookup_dir(path)?;
        st.take_sync_failure()?;
        let dir = &st.dirs[&ino];
        let names: BTreeSet<String> = dir.current.keys().chain(dir.durable.keys()).cloned().collect();
        for name in names {
            let target = st.entry(ino, &name);
            st.set_entry(ino, &name, target, true);
        }
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let st = self.lock();
        !st.stopped && st.lookup(path).is_ok()
    }

    /// Like a real lock file, creates `path` (an unsynced entry) if it is missing.
    fn try_lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let mut st = self.lock();
        st.check_running()?;
        match st.lookup_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => st.create_file(path).map(|_| ())?,
            other => other.map(|_| ())?,
        }
        let key: PathBuf = names(path).iter().collect();
        if !st.locks.insert(key.clone()) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let generation = st.generation;
        Ok(Box::new(SimLock { state: Arc::downgrade(&self.state), key, generation }))
    }
}

/// An open file of a [`SimFs`]: refers to its inode, and goes stale at the next crash.
#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    ino: Ino,
    generation: u64,
    writable: bool,
}

impl SimFile {
    fn enter(&self, write: bool) -> io::Result<MutexGuard<'_, State>> {
        let st = lock(&self.state);
        st.check_running()?;
        if st.generation != self.generation {
            return Err(stale());
        }
        if write && !self.writable {
            return Err(io::Error::new(io::ErrorKind::PermissionDenied, "SimFs: file opened read-only"));
        }
        Ok(st)
    }
}

impl FsFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut st = self.enter(false)?;
        let data = &st.file(self.ino)?.current;
        let start = usize::try_from(offset).unwrap_or(usize::MAX).min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut st = self.enter(true)?;
        if offset.checked_add(buf.len() as u64).is_none() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "SimFs: write past u64::MAX"));
        }
        if let Err(e) = st.charge() {
            // The process died during this write: some aligned prefix may have reached the page cache.
            let keep = torn_len(&mut st.rng, offset, buf.len());
            let _ = st.write(self.ino, offset, &buf[..keep]);
            return Err(e);
        }
        st.write(self.ino, offset, buf)
    }

    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.enter(false)?;
        st.charge()?;
        st.take_sync_failure()?;
        let file = st.file(self.ino)?;
        file.durable.clone_from(&file.current);
        file.pending.clear();
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.enter(false)?.file(self.ino)?.current.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.enter(true)?;
        st.charge()?;
        let free = st.free_space();
        let file = st.file(self.ino)?;
        if len.saturating_sub(file.current.len() as u64) > free {
            return Err(io::Error::from_raw_os_error(ENOSPC));
        }
        file.current.resize(len as usize, 0);
        file.pending.push(Op::SetLen(len));
        Ok(())
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut st = lock(&self.state);
        if st.generation == self.generation {
            if let Some(file) = st.files.get_mut(&self.ino) {
                file.handles -= 1;
            }
            st.collect(self.ino);
        }
    }
}

/// A held [`SimFs`] lock; released on drop unless a crash released it first.
#[derive(Debug)]
struct SimLock {
    state: Weak<Mutex<State>>,
    key: PathBuf,
    generation: u64,
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        if let Some(state) = self.state.upgrade() {
            let mut st = lock(&state);
            if st.generation == self.generation {
                st.locks.remove(&self.key);
            }
        }
    }
}
