//! The fault-injecting file system itself: power loss, process death, full disk, failed fsync.

use remix_storage::fs::{read_file, write_file_atomic, Fs, OpenMode};
use remix_storage::sim::SimFs;
use std::collections::BTreeSet;
use std::io;
use std::path::Path;

const STOPPED: &str = "simulated crash: process stopped";
const STALE: &str = "simulated crash: stale handle";

/// splitmix64, to generate test data deterministically.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn p(s: &str) -> &Path {
    Path::new(s)
}

fn strs(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn msg<T>(result: io::Result<T>) -> String {
    result.err().map(|e| e.to_string()).unwrap_or_default()
}

/// Crashes a copy of `fs` with `seed` and returns the contents of `path` afterwards.
fn crashed(fs: &SimFs, seed: u64, path: &str) -> Option<Vec<u8>> {
    let copy = fs.fork();
    copy.crash(seed);
    copy.file_bytes(p(path))
}

#[test]
fn synced_data_survives_and_unsynced_is_lost_or_torn() {
    let fs = SimFs::new();
    fs.create_dir_all(p("/d")).unwrap();
    let f = fs.open(p("/d/a"), OpenMode::CreateNew).unwrap();
    f.write_all_at(&[1; 1000], 0).unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(p("/d")).unwrap();
    f.write_all_at(&[2; 2000], 1000).unwrap();
    let mut lengths = BTreeSet::new();
    for seed in 0..200 {
        let bytes = crashed(&fs, seed, "/d/a").unwrap();
        assert!(bytes[..1000] == [1; 1000] && bytes[1000..].iter().all(|&b| b == 2));
        assert!([1000, 3000].contains(&bytes.len()) || bytes.len().is_multiple_of(512));
        lengths.insert(bytes.len());
    }
    assert!(lengths.contains(&1000) && lengths.contains(&3000) && lengths.len() > 3, "{lengths:?}");
}

#[test]
fn crash_keeps_a_prefix_of_unsynced_writes() {
    let mut rng = Rng(42);
    for round in 0..20 {
        let fs = SimFs::new();
        let f = fs.open(p("/log"), OpenMode::CreateNew).unwrap();
        fs.sync_dir(p("/")).unwrap();
        let stream: Vec<u8> = (0..8000).map(|_| rng.next() as u8).collect();
        let (mut written, mut synced, mut boundaries) = (0, 0, vec![0]);
        while written < stream.len() {
            let n = (rng.below(1500) as usize + 1).min(stream.len() - written);
            f.write_all_at(&stream[written..written + n], written as u64).unwrap();
            written += n;
            boundaries.push(written);
            if rng.below(4) == 0 {
                f.sync_data().unwrap();
                synced = written;
            }
        }
        for seed in 0..50 {
            let bytes = crashed(&fs, round * 1000 + seed, "/log").unwrap();
            assert!(bytes.len() >= synced && bytes[..] == stream[..bytes.len()]);
            assert!(boundaries.contains(&bytes.len()) || bytes.len().is_multiple_of(512));
        }
    }
}

#[test]
fn unsynced_truncation_may_be_undone() {
    let fs = SimFs::new();
    fs.write_raw(p("/a"), &[1; 1000]);
    let f = fs.open(p("/a"), OpenMode::ReadWrite).unwrap();
    f.set_len(100).unwrap();
    f.write_all_at(&[2; 100], 100).unwrap();
    let outcomes: BTreeSet<Vec<u8>> = (0..100).map(|seed| crashed(&fs, seed, "/a").unwrap()).collect();
    let truncated = [vec![1; 100], [[1; 100], [2; 100]].concat()];
    assert_eq!(outcomes, BTreeSet::from([vec![1; 1000], truncated[0].clone(), truncated[1].clone()]));
}

#[test]
fn directory_operations_need_sync_dir() {
    let fs = SimFs::new();
    fs.write_raw(p("/d/a"), b"old");
    fs.write_raw(p("/d/b"), b"new");
    let f = fs.open(p("/d/c"), OpenMode::CreateNew).unwrap();
    f.sync_data().unwrap();
    fs.rename(p("/d/b"), p("/d/a")).unwrap();
    fs.write_raw(p("/gone"), b"x");
    fs.remove_file(p("/gone")).unwrap();
    assert_eq!((fs.file_bytes(p("/d/a")).unwrap(), fs.list(p("d"))), (b"new".to_vec(), strs(&["a", "c"])));
    fs.crash(7);
    assert_eq!((fs.file_bytes(p("/d/a")).unwrap(), fs.list(p("d"))), (b"old".to_vec(), strs(&["a", "b"])));
    assert!(fs.exists(p("/gone")));
}

#[test]
fn directory_operations_with_sync_dir_are_kept() {
    let fs = SimFs::new();
    fs.create_dir_all(p("d")).unwrap();
    write_file_atomic(&fs, p("d/meta"), b"v1").unwrap();
    write_file_atomic(&fs, p("./d/meta"), b"v2").unwrap();
    fs.write_raw(p("/gone"), b"x");
    fs.remove_file(p("/gone")).unwrap();
    fs.sync_dir(p("")).unwrap();
    for seed in 0..20 {
        assert_eq!(crashed(&fs, seed, "/d/meta").unwrap(), b"v2");
    }
    fs.crash(0);
    assert_eq!((fs.list(p("/")), fs.list(p("/d"))), (strs(&["d"]), strs(&["meta"])));
    assert_eq!(fs.used_bytes(), 2);
}

#[test]
fn unlinked_open_handle_stays_readable() {
    let fs = SimFs::new();
    fs.write_raw(p("/a"), b"hello");
    let f = fs.open(p("/a"), OpenMode::ReadWrite).unwrap();
    fs.remove_file(p("/a")).unwrap();
    assert!(!fs.exists(p("/a")));
    f.write_all_at(b"!", 5).unwrap();
    let mut buf = [0; 10];
    assert_eq!((f.read_at(&mut buf, 0).unwrap(), &buf[..6]), (6, &b"hello!"[..]));
    assert_eq!(fs.used_bytes(), 6);
    drop(f);
    assert_eq!(fs.used_bytes(), 0);
    fs.crash(0);
    assert!(fs.file_bytes(p("/a")).unwrap().starts_with(b"hello"), "the unlink was never synced");
}

#[test]
fn full_disk_writes_an_aligned_prefix() {
    let fs = SimFs::new();
    fs.write_raw(p("/other"), &[0; 100]);
    fs.set_space_bytes(Some(1400));
    let f = fs.open(p("/a"), OpenMode::CreateNew).unwrap();
    assert_eq!(f.write_all_at(&[7; 2000], 0).unwrap_err().raw_os_error(), Some(28));
    assert_eq!(fs.file_bytes(p("/a")).unwrap(), [7; 1024]);
    f.write_all_at(&[8; 10], 0).unwrap();
    assert_eq!(f.set_len(2000).unwrap_err().raw_os_error(), Some(28));
    assert_eq!(f.len().unwrap(), 1024);
    f.set_len(10).unwrap();
    fs.remove_file(p("/other")).unwrap();
    f.write_all_at(&[9; 1390], 10).unwrap();
    assert_eq!(fs.used_bytes(), 1400);
}

#[test]
fn ops_budget_stops_everything() {
    let fs = SimFs::new();
    fs.write_raw(p("/a"), b"keep");
    let f = fs.open(p("/a"), OpenMode::ReadWrite).unwrap();
    fs.set_ops_left(Some(2));
    f.write_all_at(b"1", 4).unwrap();
    fs.create_dir_all(p("/d")).unwrap();
    assert!(!fs.is_stopped());
    assert_eq!(msg(fs.open(p("/d/x"), OpenMode::CreateNew)), STOPPED);
    assert!(fs.is_stopped() && !fs.exists(p("/d")) && !fs.exists(p("/d/x")));
    let (read, open) = (msg(f.read_at(&mut [0; 4], 0)), msg(fs.open(p("/a"), OpenMode::Read)));
    let (list, lock) = (msg(fs.read_dir(p("/"))), msg(fs.try_lock(p("/lock"))));
    assert!([read, open, list, lock].iter().all(|m| m == STOPPED));
    fs.set_ops_left(None);
    assert!(fs.is_stopped(), "only a crash restarts");
    assert_eq!(fs.mutating_ops(), 2);
    fs.crash(5);
    assert!(!fs.is_stopped() && fs.exists(p("/d")));
    assert!([&b"keep"[..], b"keep1"].contains(&&read_file(&fs, p("/a")).unwrap()[..]));
    fs.open(p("/d/x"), OpenMode::CreateNew).unwrap();
}

#[test]
fn stopped_write_lands_an_aligned_prefix() {
    let mut partial = false;
    for seed in 0..40 {
        let fs = SimFs::with_seed(seed);
        let f = fs.open(p("/a"), OpenMode::CreateNew).unwrap();
        fs.set_ops_left(Some(0));
        assert_eq!(msg(f.write_all_at(&[3; 3000], 100)), STOPPED);
        let len = fs.file_bytes(p("/a")).unwrap().len();
        assert!(len == 0 || len == 3100 || len.is_multiple_of(512), "{len}");
        partial |= len != 0 && len < 3100;
    }
    assert!(partial);
}

#[test]
fn handles_are_stale_after_crash() {
    let fs = SimFs::new();
    fs.write_raw(p("/a"), b"data");
    let f = fs.open(p("/a"), OpenMode::ReadWrite).unwrap();
    fs.crash(9);
    let (read, write, len) = (msg(f.read_at(&mut [0; 4], 0)), msg(f.write_all_at(b"x", 0)), msg(f.len()));
    assert!([read, write, len, msg(f.sync_data()), msg(f.set_len(0))].iter().all(|m| m == STALE));
    let g = fs.open(p("/a"), OpenMode::Read).unwrap();
    assert_eq!(read_file(&fs, p("/a")).unwrap(), b"data");
    assert_eq!(g.write_all_at(b"x", 0).unwrap_err().kind(), io::ErrorKind::PermissionDenied);
}

#[test]
fn locks_are_exclusive_and_released_by_crash() {
    let fs = SimFs::new();
    fs.create_dir_all(p("/d")).unwrap();
    let guard = fs.try_lock(p("/d/LOCK")).unwrap();
    assert!(fs.exists(p("/d/LOCK")));
    assert_eq!(fs.try_lock(p("d/./LOCK")).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    drop(guard);
    let old = fs.try_lock(p("/d/LOCK")).unwrap();
    fs.crash(2);
    let new = fs.try_lock(p("/d/LOCK")).unwrap();
    drop(old);
    assert_eq!(fs.try_lock(p("/d/LOCK")).unwrap_err().kind(), io::ErrorKind::WouldBlock);
    drop(new);
    fs.try_lock(p("/d/LOCK")).unwrap();
}

#[test]
fn failed_sync_makes_nothing_durable() {
    let fs = SimFs::new();
    fs.write_raw(p("/a"), b"");
    let f = fs.open(p("/a"), OpenMode::ReadWrite).unwrap();
    f.write_all_at(&[5; 600], 0).unwrap();
    fs.fail_next_sync();
    assert_eq!(msg(f.sync_data()), "simulated fsync failure");
    assert!((0..50).any(|seed| crashed(&fs, seed, "/a").unwrap().is_empty()));
    fs.write_raw(p("/b"), b"");
    fs.rename(p("/b"), p("/c")).unwrap();
    fs.fail_next_sync();
    assert!(fs.sync_dir(p("/")).is_err());
    f.sync_data().unwrap();
    fs.crash(4);
    assert_eq!((fs.file_bytes(p("/a")).unwrap(), fs.list(p("/"))), (vec![5; 600], strs(&["a", "b"])));
}

#[test]
fn raw_edits_are_durable() {
    let fs = SimFs::new();
    fs.write_raw(p("/x/y/seg"), &[0; 4]);
    fs.flip_bit(p("/x/y/seg"), 9);
    fs.truncate_raw(p("/x/y/seg"), 3);
    fs.crash(0);
    assert_eq!((fs.file_bytes(p("/x/y/seg")).unwrap(), fs.list(p("/x"))), (vec![0, 2, 0], strs(&["y"])));
    assert_eq!(fs.mutating_ops(), 0);
}

#[test]
fn kill_keeps_the_page_cache_for_a_later_crash_to_lose() {
    let fs = SimFs::new();
    fs.create_dir_all(p("/d")).unwrap();
    let f = fs.open(p("/d/a"), OpenMode::CreateNew).unwrap();
    f.write_all_at(b"synced", 0).unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(p("/d")).unwrap();
    f.write_all_at(b"+cached", 6).unwrap();
    fs.write_raw(p("/d/b"), b"x");
    fs.rename(p("/d/b"), p("/d/c")).unwrap();
    let guard = fs.try_lock(p("/d/LOCK")).unwrap();
    fs.set_ops_left(Some(0));
    assert_eq!(msg(f.sync_data()), STOPPED);
    fs.kill();
    // The new process sees everything the old one wrote, synced or not, and can take the lock.
    assert!(!fs.is_stopped());
    assert_eq!(msg(f.read_at(&mut [0; 4], 0)), STALE);
    assert_eq!(read_file(&fs, p("/d/a")).unwrap(), b"synced+cached");
    assert_eq!(fs.list(p("/d")), strs(&["LOCK", "a", "c"]));
    let _new = fs.try_lock(p("/d/LOCK")).unwrap();
    drop(guard);
    // Power loss later: what was never synced may still go.
    let outcomes: BTreeSet<(Vec<u8>, Vec<String>)> = (0..40)
        .map(|seed| {
            let copy = fs.fork();
            copy.crash(seed);
            (copy.file_bytes(p("/d/a")).unwrap(), copy.list(p("/d")))
        })
        .collect();
    assert!(outcomes
        .iter()
        .all(|(bytes, names)| bytes.starts_with(b"synced") && names == &strs(&["a", "b"])));
    assert!(outcomes.iter().any(|(bytes, _)| bytes == b"synced"), "the unsynced write can be lost");
}
