//! kill -9 of a real process appending to a log on the real file system.
//!
//! The test binary re-executes itself as the child (`child_appender`, which does nothing unless
//! `REMIX_KILL9_CHILD` names a data directory). The child appends batches of random sizes with random
//! pauses, several calls in flight at once, and prints every acknowledged range (and every stored
//! cursor) to stdout; payloads are a function of the offset, so the parent can check every byte. The
//! parent kills it with SIGKILL at a random moment, reopens the log and checks it, and starts the next
//! child on the same directory. Set `REMIX_KILL9_SEED` to replay a run.

use remix_storage::verify::verify;
use remix_storage::{AppendRecord, Appended, Log, LogOptions, OsFs, RetentionPolicy};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc};
use std::time::Duration;

const CHILD_ENV: &str = "REMIX_KILL9_CHILD";
const SEED_ENV: &str = "REMIX_KILL9_SEED";
const ITERATIONS: u64 = 40;
const SEGMENT_BYTES: u64 = 64 * 1024;
const CURSOR: &str = "kill9";
/// How long the parent waits for one line from the child before giving up on it.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// splitmix64: seedable randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The record every writer puts at `offset`: its kind and payload are functions of the offset alone.
fn record_at(offset: u64) -> AppendRecord {
    let h = mix(offset);
    let len = (h % 3000) as usize;
    let payload = (0..len).map(|j| (mix(h ^ j as u64) >> 56) as u8).collect();
    AppendRecord { kind: 1 + (h >> 32) as u8 % 127, payload }
}

fn options() -> LogOptions {
    LogOptions { segment_bytes: SEGMENT_BYTES, ..LogOptions::default() }
}

/// Starts every line of the child (libtest may print on the same line first).
const MARK: &str = "@kill9 ";

/// One whole line per write, so that a kill never leaves half a line in the pipe.
fn say(line: String) {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{MARK}{line}\n").as_bytes()).expect("stdout");
    out.flush().expect("stdout");
}

/// The child: appends until killed. Not a test of its own (returns at once without the env var).
#[test]
fn child_appender() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else { return };
    let seed = std::env::var(SEED_ENV).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut rng = Rng(seed);
    let log = Log::open(Arc::new(OsFs), Path::new(&dir), options()).expect("child opens the log");
    let mut next = log.durable_offset() + 1;
    let mut cursor = log.cursor(CURSOR).unwrap_or(0);
    say(format!("start {}", next - 1));
    let (sender, receiver) = mpsc::channel::<remix_storage::Result<Appended>>();
    loop {
        let calls = 1 + rng.below(4);
        let mut expected = Vec::new();
        for _ in 0..calls {
            let n = 1 + rng.below(10);
            let records = (next..next + n).map(record_at).collect();
            expected.push((next, next + n - 1));
            next += n;
            let sender = sender.clone();
            log.append(records, move |result| {
                let _ = sender.send(result);
            })
            .expect("append queued");
        }
        for (first, last) in expected {
            let appended = receiver.recv().expect("callback").expect("append succeeds");
            assert_eq!((appended.first_offset, appended.last_offset), (first, last), "offsets as planned");
            say(format!("ack {first} {last}"));
        }
        if rng.below(3) == 0 {
            let durable = log.durable_offset();
            cursor += rng.below(durable - cursor + 1);
            log.store_cursor(CURSOR, cursor).expect("store cursor");
            say(format!("cursor {cursor}"));
        }
        if rng.below(6) == 0 {
            log.apply_retention(&RetentionPolicy::default(), u64::MAX).expect("retention");
        }
        std::thread::sleep(Duration::from_micros(rng.below(3000)));
    }
}

/// Kills and reaps the child however the parent's test ends (a failed assertion included).
struct Killer(Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the parent learned from one child before killing it.
#[derive(Debug, Default)]
struct Seen {
    start: Option<u64>,
    acked: u64,
    cursor: Option<u64>,
}

impl Seen {
    fn line(&mut self, line: &str) {
        let Some(at) = line.find(MARK) else { return }; // the test harness's own output
        let line = &line[at + MARK.len()..];
        let words: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| words[i].parse::<u64>().unwrap_or_else(|_| panic!("bad line {line:?}"));
        match words.first().copied() {
            Some("start") => self.start = Some(num(1)),
            Some("ack") => {
                assert_eq!(num(1), self.acked.max(self.start.expect("start first")) + 1, "acks are dense");
                self.acked = num(2);
            }
            Some("cursor") => self.cursor = Some(num(1)),
            _ => panic!("unexpected line {line:?}"),
        }
    }
}

#[test]
fn kill9_loses_no_acknowledged_append() {
    let seed = std::env::var(SEED_ENV).ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("kill9: {SEED_ENV}={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut durable = 0;
    let mut cursor: Option<u64> = None;
    for iteration in 0..ITERATIONS {
        let mut child = Killer(
            Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "kill9::child_appender", "--nocapture", "--test-threads", "1"])
                .env(CHILD_ENV, dir.path())
                .env(SEED_ENV, rng.next().to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn the child"),
        );
        let lines = {
            let stdout = child.0.stdout.take().unwrap();
            let (sender, receiver) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    if sender.send(line.expect("child stdout")).is_err() {
                        break;
                    }
                }
            });
            receiver
        };
        let mut seen = Seen { cursor, ..Seen::default() };
        let kill_after_acks = rng.below(60);
        let mut acks = 0;
        while acks < kill_after_acks || seen.start.is_none() {
            match lines.recv_timeout(LINE_TIMEOUT) {
                Ok(line) => {
                    acks += u64::from(line.contains(&format!("{MARK}ack ")));
                    seen.line(&line);
                }
                Err(_) => {
                    let _ = child.0.kill();
                    let mut stderr = String::new();
                    let _ = std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr);
                    panic!("iteration {iteration}: the child stopped talking: {stderr}");
                }
            }
        }
        std::thread::sleep(Duration::from_micros(rng.below(4000)));
        child.0.kill().expect("SIGKILL");
        let status = child.0.wait().unwrap();
        assert!(!status.success(), "iteration {iteration}: the child was killed, not done");
        // Lines already in the pipe were acknowledged before the kill.
        for line in lines.iter() {
            seen.line(&line);
        }
        assert_eq!(
            seen.start,
            Some(durable),
            "iteration {iteration}: the child continues after the log's end"
        );
        cursor = seen.cursor;
        durable = check_after_kill(dir.path(), iteration, &seen);
    }
}

/// Reopens the log after a kill and checks it; returns its durable offset.
fn check_after_kill(dir: &Path, iteration: u64, seen: &Seen) -> u64 {
    let log = Log::open(Arc::new(OsFs), dir, options()).expect("reopen after kill -9");
    let (first, durable) = (log.first_offset(), log.durable_offset());
    assert!(
        durable >= seen.acked,
        "iteration {iteration}: acknowledged up to {}, durable {durable}",
        seen.acked
    );
    let mut expected = first;
    for record in log.reader(first).unwrap() {
        let record = record.unwrap_or_else(|e| panic!("iteration {iteration}: {e}"));
        assert_eq!(record.offset, expected, "iteration {iteration}: dense offsets");
        let want = record_at(record.offset);
        assert!(
            record.kind == want.kind && record.payload == want.payload,
            "iteration {iteration}: record {} differs",
            record.offset
        );
        expected += 1;
    }
    assert_eq!(expected, durable + 1, "iteration {iteration}: records up to the durable offset");
    let stored = log.cursor(CURSOR);
    if let Some(acked) = seen.cursor {
        let stored = stored.expect("the acknowledged cursor survives");
        assert!(stored >= acked, "iteration {iteration}: cursor {stored} below the acknowledged {acked}");
    }
    if let Some(stored) = stored {
        assert!(stored <= durable, "iteration {iteration}: cursor {stored} beyond the log's end {durable}");
        assert!(first <= stored + 1, "iteration {iteration}: retention removed what the cursor needs");
    }
    eprintln!(
        "kill9: iteration {iteration}: acknowledged {}, durable {durable}, first {first}, {} segments, cursor {stored:?}, notes {:?}",
        seen.acked,
        log.stat().segments.len(),
        log.recovery_notes()
    );
    let report = verify(&OsFs, dir).unwrap();
    assert!(report.problems.is_empty(), "iteration {iteration}: {:?}", report.problems);
    log.close().unwrap();
    durable
}
