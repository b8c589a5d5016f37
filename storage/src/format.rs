//! The on-disk format of the Remix log, format version 1. This module doc is the specification; the
//! code below is its only encoder and decoder.
//!
//! # Files
//!
//! ```text
//! <data_dir>/LOCK                               advisory lock: one writer per data directory
//! <data_dir>/log/<base offset, 20 digits>.log   segment: header + frames
//! <data_dir>/log/<base offset, 20 digits>.idx   sparse index of a sealed segment (rebuilt if missing)
//! <data_dir>/log/start                          slot file: the first offset the log still holds
//! <data_dir>/cursors/<target>.cursor            slot file: the last offset a target has applied
//! <data_dir>/quarantine/                        bytes cut off by recovery or repair, never read back
//! ```
//!
//! Every integer is little-endian with a fixed width. Every checksum is CRC-32/ISO-HDLC (the "IEEE"
//! CRC of zlib, Ethernet and PNG: polynomial `0x04C11DB7`, reflected `0xEDB88320`, initial value and
//! final XOR `0xFFFFFFFF`; `crc32(b"123456789") == 0xCBF43926`), computed by `crc32fast`.
//!
//! Offsets are dense and start at 1: the first record ever appended has offset 1, and offset 0 means
//! "nothing" (an empty log's last offset, a cursor that has applied nothing).
//!
//! # Segment header (64 bytes, at position 0 of every `.log` file)
//!
//! ```text
//!  0  8  magic            b"REMIXLOG"
//!  8  2  format version   1
//! 10  2  header length    64
//! 12  4  reserved         0
//! 16  8  base offset      offset of the segment's first record (equal to the number in the file name)
//! 24  8  salt             random per file; mixed into every frame's header checksum, so a frame copied
//!                         from another segment (or left by an earlier file at the same name) never
//!                         validates
//! 32  8  created          milliseconds since the Unix epoch
//! 40 20  reserved         0
//! 60  4  header checksum  CRC of bytes 0..60
//! ```
//!
//! A segment is created complete: header written to `<name>.tmp`, `fdatasync`, renamed into place, the
//! directory fsynced. A segment whose header does not validate is therefore corruption, never a tear.
//!
//! # Frame (32-byte header + payload, immediately after the segment header or the previous frame)
//!
//! ```text
//!  0  4  payload length   at most RECORD_PAYLOAD_BYTES_MAX
//!  4  4  header checksum  CRC of (salt as 8 bytes, bytes 0..4, bytes 8..32): covers the length
//!  8  4  payload checksum CRC of the payload
//! 12  1  kind             1..=127 records of the log's user; 255 seal
//! 13  1  flags            bit 0: GROUP_END, the last frame of one write (one group commit)
//! 14  2  reserved         0
//! 16  8  offset           the record's offset; a seal repeats the segment's last offset
//! 24  8  timestamp        milliseconds since the Unix epoch, non-decreasing along the log
//! 32  n  payload          opaque bytes
//! ```
//!
//! Frames are not aligned or padded. A seal frame (kind 255, empty payload, GROUP_END) ends a segment
//! that will never be written again; only the newest segment may lack one.
//!
//! # Index (`.idx`, written once when a segment is sealed, via temp file + rename)
//!
//! ```text
//!  0  8  magic            b"REMIXIDX"
//!  8  2  format version   1
//! 10  2  header length    96
//! 12  4  entry count      n
//! 16  8  base offset      of the segment
//! 24  8  salt             of the segment (an index of another file never matches)
//! 32  8  last offset      of the segment's last record
//! 40  8  segment bytes    length of the segment file, seal frame included
//! 48  8  records          number of records (seal excluded)
//! 56  8  first timestamp  of the first record (0 if none)
//! 64  8  last timestamp   of the last record (0 if none)
//! 72 20  reserved         0
//! 92  4  header checksum  CRC of bytes 0..92
//! 96 16n entries          (offset u64, position u64): a record's offset and its frame's position, one
//!                         every INDEX_INTERVAL_BYTES or so, the first record always included
//!  ..  4  entries checksum CRC of the entries
//! ```
//!
//! An index that is missing, fails a checksum, or disagrees with its segment (salt, base, length) is
//! rebuilt from the segment, which stays the source of truth.
//!
//! # Slot file (`start`, `*.cursor`: two 64-byte slots, slot 0 at 0 and slot 1 at 64)
//!
//! ```text
//!  0  8  magic            b"REMIXCUR" (cursor) or b"REMIXSTA" (log start)
//!  8  2  format version   1
//! 10  6  reserved         0
//! 16  8  sequence         incremented on every write, starting at 1
//! 24  8  value            the cursor's offset, or the log's first offset
//! 32  8  time             milliseconds since the Unix epoch of the write
//! 40 20  reserved         0
//! 60  4  checksum         CRC of bytes 0..60
//! ```
//!
//! A write goes to the slot holding the older (or an invalid) value and is followed by `fdatasync`,
//! so a torn write leaves the other slot intact. A read takes the valid slot with the higher sequence;
//! a file with no valid slot is an error, never read as zero.
//!
//! # Limits and invariants
//!
//! - A record's payload is at most [`RECORD_PAYLOAD_BYTES_MAX`]; one append call is at most
//!   [`BATCH_BYTES_MAX`] encoded; one write (one group) is at most [`WRITE_BYTES_MAX`]. Hence everything
//!   after the last fsync of a segment lies within `WRITE_BYTES_MAX` bytes of its end: that is the only
//!   place a crash can tear.
//! - The writer writes one group with one write, fsyncs it, and only then writes the next; a seal frame
//!   is a write of its own, and nothing follows it in its segment. All frames of one group carry the
//!   same timestamp. So at most one write is ever unsynced: the last one of the newest segment, which
//!   starts right after that segment's last complete group.
//! - Torn tail versus corruption (recovery, `verify` and `repair` judge alike: `recovery::judge_tail`).
//!   A power loss may keep any of the 512-byte sectors of the unsynced write and lose the others (lost
//!   ones read as zeros, or are missing at the end of the file), so a torn write can show valid frames
//!   after a damaged one, even its GROUP_END frame ending exactly at the end of the file. Let P be the
//!   end of the newest segment's last complete group and L its last offset. The bytes from P to the end
//!   of the file are a torn tail (cut off, copied to `quarantine/` first) only if they can all belong
//!   to one write starting at P: frames at increasing positions with offsets L+1, L+2, ..., one
//!   timestamp, only the last flagged GROUP_END, and nothing after that one. Each frame whose place is
//!   known is checked against this: the chain of frame headers from P (a header's length gives the next
//!   frame's position whether or not its payload is intact; a header with one flipped bit is read as
//!   corrected, its CRC having a Hamming distance of 5 at this length), and every whole valid frame
//!   (both checksums) at any byte position after that chain breaks, followed by its own chain. The
//!   bytes are corruption (the node refuses to start, naming the segment, the bad frame's byte position
//!   and the offset due there; `verify` reports it; only `repair` cuts it) if such a frame is flagged
//!   GROUP_END and bytes follow it (a later write followed, so the damaged bytes were synced; this
//!   holds when the later group ends exactly at the end of the file too), is a seal, carries an offset
//!   that no frame of that one write can have at its position, or a timestamp that another does not;
//!   and whenever the bad bytes lie in a segment that is not the newest, follow a seal, are a valid
//!   frame with the wrong offset, or span more than `WRITE_BYTES_MAX`.
//! - What that cannot tell apart: damage confined to the newest segment's last group (nothing placeable
//!   after it) looks exactly like a torn write of that group and is cut, although the group may have
//!   been acknowledged; and so does damage that destroys (beyond one bit) the GROUP_END header of the
//!   group before it when nothing else separates the two groups (no other readable frame of the
//!   damaged group, or the same timestamp).
//! - Offsets are dense across segments: a segment's base offset is its predecessor's last offset + 1.

use crc32fast::Hasher;
use std::fmt;

/// Current and only format version.
pub const FORMAT_VERSION: u16 = 1;
pub const SEGMENT_MAGIC: [u8; 8] = *b"REMIXLOG";
pub const INDEX_MAGIC: [u8; 8] = *b"REMIXIDX";
pub const CURSOR_MAGIC: [u8; 8] = *b"REMIXCUR";
pub const START_MAGIC: [u8; 8] = *b"REMIXSTA";

pub const SEGMENT_HEADER_BYTES: usize = 64;
pub const FRAME_HEADER_BYTES: usize = 32;
pub const INDEX_HEADER_BYTES: usize = 96;
pub const INDEX_ENTRY_BYTES: usize = 16;
pub const SLOT_BYTES: usize = 64;
pub const SLOT_FILE_BYTES: usize = 2 * SLOT_BYTES;

/// Largest payload of one record.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest encoded size of one append call (its records are written together, in one segment).
pub const BATCH_BYTES_MAX: usize = 32 * 1024 * 1024;
/// The writer stops adding append calls to a group once it holds this many bytes.
pub const GROUP_BYTES_MAX: usize = 1024 * 1024;
/// Largest single write: a group holds at least one append call, and at most GROUP_BYTES_MAX otherwise.
pub const WRITE_BYTES_MAX: usize = BATCH_BYTES_MAX + GROUP_BYTES_MAX;
/// Smallest configurable segment size.
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;
/// Largest configurable segment size.
pub const SEGMENT_BYTES_MAX: u64 = 64 * 1024 * 1024 * 1024;
/// Distance between sparse index entries.
pub const INDEX_INTERVAL_BYTES: u64 = 32 * 1024;

/// Kinds 1..=KIND_USER_MAX belong to the log's user; the rest are the log's own.
pub const KIND_USER_MAX: u8 = 127;
/// The frame that ends a sealed segment.
pub const KIND_SEAL: u8 = 255;
/// Flag bit: this frame ends one write.
pub const FLAG_GROUP_END: u8 = 1;
const FLAGS_KNOWN: u8 = FLAG_GROUP_END;

pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Why bytes did not decode. Every variant is a reason to distrust the bytes, never to guess.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("bad magic")]
    BadMagic,
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u16),
    #[error("header checksum mismatch")]
    HeaderChecksum,
    #[error("payload checksum mismatch")]
    PayloadChecksum,
    #[error("invalid field: {0}")]
    Invalid(&'static str),
    #[error("truncated: {needed} bytes needed, {available} available")]
    Truncated { needed: usize, available: usize },
}

// ---------------------------------------------------------------------------------------------------
// Segment header

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub base_offset: u64,
    pub salt: u64,
    pub created_ms: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        assert!(self.base_offset >= 1, "offsets start at 1");
        let mut b = [0u8; SEGMENT_HEADER_BYTES];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        put_u16(&mut b, 8, FORMAT_VERSION);
        put_u16(&mut b, 10, SEGMENT_HEADER_BYTES as u16);
        put_u64(&mut b, 16, self.base_offset);
        put_u64(&mut b, 24, self.salt);
        put_u64(&mut b, 32, self.created_ms);
        let crc = crc32(&b[0..60]);
        put_u32(&mut b, 60, crc);
        b
    }

    pub fn decode(b: &[u8]) -> Result<SegmentHeader, DecodeError> {
        check_len(b, SEGMENT_HEADER_BYTES)?;
        check_magic_version(b, &SEGMENT_MAGIC)?;
        if u32_at(b, 60) != crc32(&b[0..60]) {
            return Err(DecodeError::HeaderChecksum);
        }
        if usize::from(u16_at(b, 10)) != SEGMENT_HEADER_BYTES {
            return Err(DecodeError::Invalid("segment header length"));
        }
        let header =
            SegmentHeader { base_offset: u64_at(b, 16), salt: u64_at(b, 24), created_ms: u64_at(b, 32) };
        if header.base_offset == 0 {
            return Err(DecodeError::Invalid("base offset 0"));
        }
        Ok(header)
    }
}

fn check_len(b: &[u8], needed: usize) -> Result<(), DecodeError> {
    if b.len() < needed {
        return Err(DecodeError::Truncated { needed, available: b.len() });
    }
    Ok(())
}

fn check_magic_version(b: &[u8], magic: &[u8; 8]) -> Result<(), DecodeError> {
    if &b[0..8] != magic {
        return Err(DecodeError::BadMagic);
    }
    match u16_at(b, 8) {
        FORMAT_VERSION => Ok(()),
        other => Err(DecodeError::UnsupportedVersion(other)),
    }
}

// ---------------------------------------------------------------------------------------------------
// Frames

/// The decoded header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub payload_len: u32,
    pub payload_crc: u32,
    pub kind: u8,
    pub flags: u8,
    pub offset: u64,
    pub timestamp_ms: u64,
}

impl FrameHeader {
    /// Bytes of the whole frame, header included.
    pub fn frame_bytes(&self) -> usize {
        FRAME_HEADER_BYTES + self.payload_len as usize
    }
    pub fn is_seal(&self) -> bool {
        self.kind == KIND_SEAL
    }
    pub fn is_group_end(&self) -> bool {
        self.flags & FLAG_GROUP_END != 0
    }
}

fn frame_header_crc(salt: u64, b: &[u8]) -> u32 {
    let mut hasher = Hasher::new();
    hasher.update(&salt.to_le_bytes());
    hasher.update(&b[0..4]);
    hasher.update(&b[8..FRAME_HEADER_BYTES]);
    hasher.finalize()
}

/// Appends one encoded frame to `out`.
pub fn encode_frame(
    out: &mut Vec<u8>,
    salt: u64,
    kind: u8,
    flags: u8,
    offset: u64,
    timestamp_ms: u64,
    payload: &[u8],
) {
    assert!(payload.len() <= RECORD_PAYLOAD_BYTES_MAX, "payload over RECORD_PAYLOAD_BYTES_MAX");
    assert!(kind != 0 && (kind <= KIND_USER_MAX || kind == KIND_SEAL), "invalid kind {kind}");
    assert!(flags & !FLAGS_KNOWN == 0, "unknown flags {flags:#x}");
    assert!(offset >= 1, "offsets start at 1");
    let start = out.len();
    out.resize(start + FRAME_HEADER_BYTES, 0);
    let b = &mut out[start..];
    put_u32(b, 0, payload.len() as u32);
    put_u32(b, 8, crc32(payload));
    b[12] = kind;
    b[13] = flags;
    put_u64(b, 16, offset);
    put_u64(b, 24, timestamp_ms);
    let crc = frame_header_crc(salt, b);
    put_u32(b, 4, crc);
    out.extend_from_slice(payload);
}

/// Sets or clears GROUP_END on an already encoded frame at `b[0..]`, fixing its header checksum.
pub fn set_group_end(b: &mut [u8], salt: u64) {
    b[13] |= FLAG_GROUP_END;
    let crc = frame_header_crc(salt, b);
    put_u32(b, 4, crc);
}

/// Decodes a frame header from the first FRAME_HEADER_BYTES of `b`, validating its checksum and
/// fields (not the payload).
pub fn decode_frame_header(b: &[u8], salt: u64) -> Result<FrameHeader, DecodeError> {
    check_len(b, FRAME_HEADER_BYTES)?;
    if u32_at(b, 4) != frame_header_crc(salt, b) {
        return Err(DecodeError::HeaderChecksum);
    }
    let header = FrameHeader {
        payload_len: u32_at(b, 0),
        payload_crc: u32_at(b, 8),
        kind: b[12],
        flags: b[13],
        offset: u64_at(b, 16),
        timestamp_ms: u64_at(b, 24),
    };
    if header.payload_len as usize > RECORD_PAYLOAD_BYTES_MAX {
        return Err(DecodeError::Invalid("payload length over the maximum"));
    }
    if header.kind == 0 || (header.kind > KIND_USER_MAX && header.kind != KIND_SEAL) {
        return Err(DecodeError::Invalid("kind"));
    }
    if header.flags & !FLAGS_KNOWN != 0 || u16_at(b, 14) != 0 {
        return Err(DecodeError::Invalid("flags or reserved bits"));
    }
    if header.offset == 0 {
        return Err(DecodeError::Invalid("offset 0"));
    }
    if header.is_seal() && header.payload_len != 0 {
        return Err(DecodeError::Invalid("seal with a payload"));
    }
    Ok(header)
}

/// Decodes one whole frame at the start of `b`: its header and its payload (borrowed).
pub fn decode_frame(b: &[u8], salt: u64) -> Result<(FrameHeader, &[u8]), DecodeError> {
    let header = decode_frame_header(b, salt)?;
    check_len(b, header.frame_bytes())?;
    let payload = &b[FRAME_HEADER_BYTES..header.frame_bytes()];
    if crc32(payload) != header.payload_crc {
        return Err(DecodeError::PayloadChecksum);
    }
    Ok((header, payload))
}

// ---------------------------------------------------------------------------------------------------
// Index

/// One sparse index entry: a record's offset and its frame's byte position in the segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: u64,
    pub position: u64,
}

/// Summary of a sealed segment, as stored in its index file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentIndex {
    pub base_offset: u64,
    pub salt: u64,
    pub last_offset: u64,
    pub segment_bytes: u64,
    pub records: u64,
    pub first_timestamp_ms: u64,
    pub last_timestamp_ms: u64,
    pub entries: Vec<IndexEntry>,
}

impl SegmentIndex {
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.entries.windows(2).all(|w| w[0].offset < w[1].offset), "index entries ascend");
        let entries_len = self.entries.len() * INDEX_ENTRY_BYTES;
        let mut b = vec![0u8; INDEX_HEADER_BYTES + entries_len + 4];
        b[0..8].copy_from_slice(&INDEX_MAGIC);
        put_u16(&mut b, 8, FORMAT_VERSION);
        put_u16(&mut b, 10, INDEX_HEADER_BYTES as u16);
        put_u32(&mut b, 12, u32::try_from(self.entries.len()).expect("index entries fit u32"));
        put_u64(&mut b, 16, self.base_offset);
        put_u64(&mut b, 24, self.salt);
        put_u64(&mut b, 32, self.last_offset);
        put_u64(&mut b, 40, self.segment_bytes);
        put_u64(&mut b, 48, self.records);
        put_u64(&mut b, 56, self.first_timestamp_ms);
        put_u64(&mut b, 64, self.last_timestamp_ms);
        let crc = crc32(&b[0..92]);
        put_u32(&mut b, 92, crc);
        for (i, e) in self.entries.iter().enumerate() {
            let at = INDEX_HEADER_BYTES + i * INDEX_ENTRY_BYTES;
            put_u64(&mut b, at, e.offset);
            put_u64(&mut b, at + 8, e.position);
        }
        let end = INDEX_HEADER_BYTES + entries_len;
        let crc = crc32(&b[INDEX_HEADER_BYTES..end]);
        put_u32(&mut b, end, crc);
        b
    }

    pub fn decode(b: &[u8]) -> Result<SegmentIndex, DecodeError> {
        check_len(b, INDEX_HEADER_BYTES)?;
        check_magic_version(b, &INDEX_MAGIC)?;
        if u32_at(b, 92) != crc32(&b[0..92]) {
            return Err(DecodeError::HeaderChecksum);
        }
        if usize::from(u16_at(b, 10)) != INDEX_HEADER_BYTES {
            return Err(DecodeError::Invalid("index header length"));
        }
        let count = u32_at(b, 12) as usize;
        let end = count
            .checked_mul(INDEX_ENTRY_BYTES)
            .and_then(|n| n.checked_add(INDEX_HEADER_BYTES))
            .ok_or(DecodeError::Invalid("entry count"))?;
        check_len(b, end + 4)?;
        if b.len() != end + 4 {
            return Err(DecodeError::Invalid("index length"));
        }
        if u32_at(b, end) != crc32(&b[INDEX_HEADER_BYTES..end]) {
            return Err(DecodeError::PayloadChecksum);
        }
        let entries = (0..count)
            .map(|i| {
                let at = INDEX_HEADER_BYTES + i * INDEX_ENTRY_BYTES;
                IndexEntry { offset: u64_at(b, at), position: u64_at(b, at + 8) }
            })
            .collect::<Vec<_>>();
        if !entries.windows(2).all(|w| w[0].offset < w[1].offset && w[0].position < w[1].position) {
            return Err(DecodeError::Invalid("index entries not ascending"));
        }
        Ok(SegmentIndex {
            base_offset: u64_at(b, 16),
            salt: u64_at(b, 24),
            last_offset: u64_at(b, 32),
            segment_bytes: u64_at(b, 40),
            records: u64_at(b, 48),
            first_timestamp_ms: u64_at(b, 56),
            last_timestamp_ms: u64_at(b, 64),
            entries,
        })
    }
}

// ---------------------------------------------------------------------------------------------------
// Slots

/// One decoded slot of a slot file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub sequence: u64,
    pub value: u64,
    pub time_ms: u64,
}

impl Slot {
    pub fn encode(&self, magic: &[u8; 8]) -> [u8; SLOT_BYTES] {
        assert!(self.sequence >= 1, "slot sequences start at 1");
        let mut b = [0u8; SLOT_BYTES];
        b[0..8].copy_from_slice(magic);
        put_u16(&mut b, 8, FORMAT_VERSION);
        put_u64(&mut b, 16, self.sequence);
        put_u64(&mut b, 24, self.value);
        put_u64(&mut b, 32, self.time_ms);
        let crc = crc32(&b[0..60]);
        put_u32(&mut b, 60, crc);
        b
    }

    pub fn decode(b: &[u8], magic: &[u8; 8]) -> Result<Slot, DecodeError> {
        check_len(b, SLOT_BYTES)?;
        check_magic_version(b, magic)?;
        if u32_at(b, 60) != crc32(&b[0..60]) {
            return Err(DecodeError::HeaderChecksum);
        }
        let slot = Slot { sequence: u64_at(b, 16), value: u64_at(b, 24), time_ms: u64_at(b, 32) };
        if slot.sequence == 0 {
            return Err(DecodeError::Invalid("sequence 0"));
        }
        Ok(slot)
    }

    /// The valid slot with the higher sequence of a whole slot file, or why neither is valid.
    pub fn decode_file(b: &[u8], magic: &[u8; 8]) -> Result<Slot, DecodeError> {
        let first = Slot::decode(b, magic);
        let second = b
            .get(SLOT_BYTES..)
            .map_or(Err(DecodeError::Invalid("short file")), |rest| Slot::decode(rest, magic));
        match (first, second) {
            (Ok(a), Ok(b)) => Ok(if a.sequence >= b.sequence { a } else { b }),
            (Ok(a), Err(_)) => Ok(a),
            (Err(_), Ok(b)) => Ok(b),
            (Err(e), Err(_)) => Err(e),
        }
    }

    /// Which slot a write of `sequence` goes to: alternating, so it never overwrites the newest.
    pub fn position_for(sequence: u64) -> u64 {
        (sequence % 2) * SLOT_BYTES as u64
    }
}

/// The file name of a segment: its base offset as 20 digits.
pub fn segment_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.log")
}

/// The file name of a segment's index.
pub fn index_file_name(base_offset: u64) -> String {
    format!("{base_offset:020}.idx")
}

/// The base offset of a segment or index file name, if it is one.
pub fn parse_file_name(name: &str) -> Option<(u64, FileKind)> {
    let (stem, ext) = name.split_once('.')?;
    let kind = match ext {
        "log" => FileKind::Segment,
        "idx" => FileKind::Index,
        _ => return None,
    };
    if stem.len() != 20 || !stem.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    Some((stem.parse().ok()?, kind))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Segment,
    Index,
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileKind::Segment => "segment",
            FileKind::Index => "index",
        })
    }
}
