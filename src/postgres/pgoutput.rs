//! A pure decoder for the messages of PostgreSQL's `pgoutput` logical decoding plugin, protocol version 1
//! (the payload of an `XLogData` ('w') CopyData message on a replication connection started with
//! `START_REPLICATION SLOT ... LOGICAL ... (proto_version '1', publication_names '...', messages 'true')`).
//!
//! Supported: Begin 'B', Commit 'C', Origin 'O', Relation 'R', Type 'Y', Insert 'I', Update 'U' (with no
//! old tuple, an old key 'K' or a full old row 'O'), Delete 'D' ('K' or 'O'), Truncate 'T' and logical
//! decoding Message 'M'. Rejected with a clear error: the streaming messages of protocol version 2 (Stream
//! Start 'S', Stream Stop 'E', Stream Commit 'c', Stream Abort 'A') and the two-phase commit messages of
//! version 3 (Begin Prepare 'b', Prepare 'P', Commit Prepared 'K', Rollback Prepared 'r', Stream Prepare
//! 'p'): Remix asks for version 1 without streaming, so seeing one of them means a misconfiguration.
//!
//! [`decode`] never panics and never reads past its input: every read is checked, declared counts are
//! checked against the bytes left before anything is allocated, and trailing bytes are an error. Text
//! values stay bytes here; [`super::types`] turns them into JSON.

use std::fmt;

/// Microseconds from the Unix epoch (1970-01-01) to the PostgreSQL epoch (2000-01-01), both UTC.
pub const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

/// A decoding failure: what was wrong and the byte offset in the message where it was noticed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pgoutput: {message} (at byte {at})")]
pub struct DecodeError {
    pub message: String,
    pub at: usize,
}

/// One pgoutput message, as on the wire: timestamps are microseconds since the **PostgreSQL** epoch
/// (2000-01-01 UTC; [`pg_to_unix_us`] converts), LSNs are the raw 64-bit positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Start of a transaction. `final_lsn` is the LSN of its commit record (equal to the
    /// `commit_lsn` of the matching [`Message::Commit`]).
    Begin {
        final_lsn: u64,
        commit_time_us: i64,
        xid: u32,
    },
    /// End of a transaction. `end_lsn` is the position just past the commit record: the position to
    /// confirm once the transaction is durable.
    Commit {
        flags: u8,
        commit_lsn: u64,
        end_lsn: u64,
        commit_time_us: i64,
    },
    /// The transaction came from a replication origin (sent right after Begin).
    Origin {
        lsn: u64,
        name: String,
    },
    /// The schema of a relation, sent before its first change in a session and again after it changes.
    Relation(Relation),
    /// A non-built-in type used by a relation's column, sent before the Relation. For a domain, `oid` is
    /// the domain's oid and `namespace`/`name` are those of its base type.
    Type {
        oid: u32,
        namespace: String,
        name: String,
    },
    Insert {
        relation: u32,
        new: Tuple,
    },
    /// `old` is `None` when the replica identity columns did not change and the identity is not FULL.
    Update {
        relation: u32,
        old: Option<(OldKind, Tuple)>,
        new: Tuple,
    },
    Delete {
        relation: u32,
        old: (OldKind, Tuple),
    },
    /// `options`: [`TRUNCATE_CASCADE`] | [`TRUNCATE_RESTART_IDENTITY`].
    Truncate {
        options: u8,
        relations: Vec<u32>,
    },
    /// `pg_logical_emit_message`. `flags` is [`MESSAGE_TRANSACTIONAL`] or 0 (a non-transactional message
    /// arrives outside any Begin/Commit).
    Message {
        flags: u8,
        lsn: u64,
        prefix: String,
        content: Vec<u8>,
    },
}

/// [`Message::Truncate`] option bit: `TRUNCATE ... CASCADE`.
pub const TRUNCATE_CASCADE: u8 = 1;
/// [`Message::Truncate`] option bit: `TRUNCATE ... RESTART IDENTITY`.
pub const TRUNCATE_RESTART_IDENTITY: u8 = 2;
/// [`Message::Message`] flag bit: the message is part of a transaction.
pub const MESSAGE_TRANSACTIONAL: u8 = 1;

/// Which old tuple an Update or Delete carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKind {
    /// 'K': only the replica identity (key) columns are set; the others are [`TupleValue::Null`].
    Key,
    /// 'O': the whole old row (REPLICA IDENTITY FULL).
    Full,
}

/// A relation's schema as of the change that follows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    /// Empty for `pg_catalog`.
    pub namespace: String,
    pub name: String,
    /// `pg_class.relreplident`: b'd' default, b'n' nothing, b'f' full, b'i' index.
    pub replica_identity: u8,
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// [`COLUMN_KEY`] when the column is part of the replica identity.
    pub flags: u8,
    pub name: String,
    pub type_oid: u32,
    /// `atttypmod`: -1 when none (e.g. `varchar(20)` is 24, `numeric(10,2)` is 655366).
    pub type_modifier: i32,
}

/// [`Column::flags`] bit: the column is part of the replica identity.
pub const COLUMN_KEY: u8 = 1;

impl Column {
    pub fn is_key(&self) -> bool {
        self.flags & COLUMN_KEY != 0
    }
}

/// A row: one value per column of the relation, in column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tuple(pub Vec<TupleValue>);

#[derive(Clone, PartialEq, Eq)]
pub enum TupleValue {
    /// 'n'
    Null,
    /// 'u': an unchanged TOASTed value that was not sent (its content is whatever the target has).
    Unchanged,
    /// 't': the value in the type's text output form (server encoding).
    Text(Vec<u8>),
    /// 'b': the value in the type's binary form (only with the `binary` option, which Remix does not use).
    Binary(Vec<u8>),
}

impl fmt::Debug for TupleValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TupleValue::Null => f.write_str("Null"),
            TupleValue::Unchanged => f.write_str("Unchanged"),
            TupleValue::Text(b) => write!(f, "Text({:?})", String::from_utf8_lossy(b)),
            TupleValue::Binary(b) => write!(f, "Binary({} bytes)", b.len()),
        }
    }
}

/// Converts a wire timestamp (microseconds since 2000-01-01 UTC) to microseconds since the Unix epoch,
/// saturating at the `i64` limits.
pub fn pg_to_unix_us(pg_us: i64) -> i64 {
    pg_us.saturating_add(PG_EPOCH_OFFSET_US)
}

/// Decodes one pgoutput message (protocol version 1). The whole slice must be the message.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let tag = r.u8("message type")?;
    let msg = match tag {
        b'B' => {
            let final_lsn = r.u64("final LSN")?;
            let commit_time_us = r.i64("commit timestamp")?;
            let xid = r.u32("xid")?;
            Message::Begin { final_lsn, commit_time_us, xid }
        }
        b'C' => {
            let flags = r.u8("commit flags")?;
            let commit_lsn = r.u64("commit LSN")?;
            let end_lsn = r.u64("end LSN")?;
            let commit_time_us = r.i64("commit timestamp")?;
            Message::Commit { flags, commit_lsn, end_lsn, commit_time_us }
        }
        b'O' => {
            let lsn = r.u64("origin LSN")?;
            let name = r.string("origin name")?;
            Message::Origin { lsn, name }
        }
        b'R' => Message::Relation(relation(&mut r)?),
        b'Y' => {
            let oid = r.u32("type oid")?;
            let namespace = r.string("type namespace")?;
            let name = r.string("type name")?;
            Message::Type { oid, namespace, name }
        }
        b'I' => {
            let relation = r.u32("relation oid")?;
            r.expect(b'N', "new tuple marker 'N'")?;
            Message::Insert { relation, new: tuple(&mut r)? }
        }
        b'U' => {
            let relation = r.u32("relation oid")?;
            let at = r.pos;
            let old = match r.u8("tuple marker")? {
                b'N' => None,
                b'K' => Some((OldKind::Key, tuple(&mut r)?)),
                b'O' => Some((OldKind::Full, tuple(&mut r)?)),
                other => {
                    return Err(err(
                        at,
                        format!("expected tuple marker 'K', 'O' or 'N', got {}", show(other)),
                    ))
                }
            };
            if old.is_some() {
                r.expect(b'N', "new tuple marker 'N'")?;
            }
            Message::Update { relation, old, new: tuple(&mut r)? }
        }
        b'D' => {
            let relation = r.u32("relation oid")?;
            let at = r.pos;
            let kind = match r.u8("old tuple marker")? {
                b'K' => OldKind::Key,
                b'O' => OldKind::Full,
                other => {
                    return Err(err(at, format!("expected old tuple marker 'K' or 'O', got {}", show(other))))
                }
            };
            Message::Delete { relation, old: (kind, tuple(&mut r)?) }
        }
        b'T' => {
            let at = r.pos;
            let count = r.u32("relation count")?;
            let options = r.u8("truncate options")?;
            if (count as usize).checked_mul(4).is_none_or(|n| n > r.remaining()) {
                return Err(err(at, format!("truncate of {count} relations does not fit in the message")));
            }
            let mut relations = Vec::with_capacity(count as usize);
            for _ in 0..count {
                relations.push(r.u32("relation oid")?);
            }
            Message::Truncate { options, relations }
        }
        b'M' => {
            let flags = r.u8("message flags")?;
            let lsn = r.u64("message LSN")?;
            let prefix = r.string("message prefix")?;
            let content = r.sized_bytes("message content")?.to_vec();
            Message::Message { flags, lsn, prefix, content }
        }
        b'S' | b'E' | b'c' | b'A' => {
            return Err(err(
                0,
                format!(
                    "streamed-transaction message {} is not supported (Remix uses proto_version 1 without \
                     streaming)",
                    show(tag)
                ),
            ))
        }
        b'b' | b'P' | b'K' | b'r' | b'p' => {
            return Err(err(
                0,
                format!(
                    "two-phase commit message {} is not supported (Remix uses proto_version 1 without \
                     two_phase)",
                    show(tag)
                ),
            ))
        }
        other => return Err(err(0, format!("unknown message type {}", show(other)))),
    };
    if r.remaining() != 0 {
        return Err(err(r.pos, format!("{} trailing bytes after the {} message", r.remaining(), show(tag))));
    }
    Ok(msg)
}

fn relation(r: &mut Reader<'_>) -> Result<Relation, DecodeError> {
    let id = r.u32("relation oid")?;
    let namespace = r.string("relation namespace")?;
    let name = r.string("relation name")?;
    let replica_identity = r.u8("replica identity")?;
    let at = r.pos;
    let count = r.u16("column count")?;
    // A column takes at least 10 bytes (flags, empty name's NUL, type oid, type modifier).
    if usize::from(count) * 10 > r.remaining() {
        return Err(err(at, format!("{count} columns do not fit in the message")));
    }
    let mut columns = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let flags = r.u8("column flags")?;
        let name = r.string("column name")?;
        let type_oid = r.u32("column type oid")?;
        let type_modifier = r.i32("column type modifier")?;
        columns.push(Column { flags, name, type_oid, type_modifier });
    }
    Ok(Relation { id, namespace, name, replica_identity, columns })
}

fn tuple(r: &mut Reader<'_>) -> Result<Tuple, DecodeError> {
    let at = r.pos;
    let count = r.u16("tuple column count")?;
    // A value takes at least one byte (its kind).
    if usize::from(count) > r.remaining() {
        return Err(err(at, format!("{count} tuple values do not fit in the message")));
    }
    let mut values = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let at = r.pos;
        let value = match r.u8("tuple value kind")? {
            b'n' => TupleValue::Null,
            b'u' => TupleValue::Unchanged,
            b't' => TupleValue::Text(r.sized_bytes("text value")?.to_vec()),
            b'b' => TupleValue::Binary(r.sized_bytes("binary value")?.to_vec()),
            other => {
                return Err(err(
                    at,
                    format!("expected tuple value kind 'n', 'u', 't' or 'b', got {}", show(other)),
                ))
            }
        };
        values.push(value);
    }
    Ok(Tuple(values))
}

fn err(at: usize, message: String) -> DecodeError {
    DecodeError { message, at }
}

/// A byte for an error message: `'X'` when printable, else `0xNN`.
fn show(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("0x{b:02x}")
    }
}

/// A cursor with checked big-endian reads.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], DecodeError> {
        if n > self.remaining() {
            return Err(err(
                self.pos,
                format!("truncated {what}: need {n} bytes, {} left", self.remaining()),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn expect(&mut self, want: u8, what: &str) -> Result<(), DecodeError> {
        let at = self.pos;
        let got = self.u8(what)?;
        if got != want {
            return Err(err(at, format!("expected {what}, got {}", show(got))));
        }
        Ok(())
    }

    fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn i32(&mut self, what: &str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn i64(&mut self, what: &str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    /// A NUL-terminated UTF-8 string.
    fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        let at = self.pos;
        let rest = &self.buf[self.pos..];
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(err(at, format!("unterminated {what}")));
        };
        let s = std::str::from_utf8(&rest[..len])
            .map_err(|e| err(at + e.valid_up_to(), format!("{what} is not valid UTF-8")))?;
        self.pos += len + 1;
        Ok(s.to_owned())
    }

    /// An Int32 length followed by that many bytes.
    fn sized_bytes(&mut self, what: &str) -> Result<&'a [u8], DecodeError> {
        let at = self.pos;
        let len = self.i32(what)?;
        let len = usize::try_from(len).map_err(|_| err(at, format!("negative length {len} of {what}")))?;
        self.take(len, what)
    }
}

#[cfg(test)]
#[path = "tests/pgoutput.rs"]
mod tests;
