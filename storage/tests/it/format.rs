//! The format: known answers, golden bytes of format v1, round trips, and decoding arbitrary bytes.

use proptest::prelude::*;
use remix_storage::format::*;

#[test]
fn crc_is_crc32_iso_hdlc() {
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(crc32(b""), 0);
}

/// Golden bytes of format v1 (computed independently with Python's zlib.crc32 and struct). If this test fails, the format changed: bump FORMAT_VERSION, keep a
/// decoder for version 1, and add new golden bytes beside these.
#[test]
fn golden_v1_frame() {
    let mut out = Vec::new();
    encode_frame(&mut out, 0x0102_0304_0506_0708, 1, FLAG_GROUP_END, 42, 1_700_000_000_000, b"hello");
    let golden: [u8; 37] = [
        0x05, 0x00, 0x00, 0x00, // payload length
        0x3f, 0x2b, 0xb3, 0x34, // header checksum
        0x86, 0xa6, 0x10, 0x36, // payload checksum = crc32("hello")
        0x01, 0x01, 0x00, 0x00, // kind, flags, reserved
        0x2a, 0, 0, 0, 0, 0, 0, 0, // offset 42
        0x00, 0x68, 0xe5, 0xcf, 0x8b, 0x01, 0x00, 0x00, // timestamp
        b'h', b'e', b'l', b'l', b'o',
    ];
    assert_eq!(out, golden, "got {out:02x?}");
    let (header, payload) = decode_frame(&golden, 0x0102_0304_0506_0708).unwrap();
    assert_eq!(
        (header.offset, header.kind, header.timestamp_ms, payload),
        (42, 1, 1_700_000_000_000, &b"hello"[..])
    );
    assert_eq!(decode_frame(&golden, 0x0102_0304_0506_0709), Err(DecodeError::HeaderChecksum), "salted");
}

#[test]
fn golden_v1_segment_header_index_and_slot() {
    let header = SegmentHeader { base_offset: 1, salt: 7, created_ms: 1_700_000_000_000 };
    let bytes = header.encode();
    assert_eq!(&bytes[0..8], b"REMIXLOG");
    assert_eq!(&bytes[8..12], &[1, 0, 64, 0]);
    assert_eq!(u32::from_le_bytes(bytes[60..64].try_into().unwrap()), crc32(&bytes[0..60]));
    assert_eq!(golden_hex(&bytes), GOLDEN_SEGMENT_HEADER);
    assert_eq!(SegmentHeader::decode(&bytes).unwrap(), header);

    let index = SegmentIndex {
        base_offset: 1,
        salt: 7,
        last_offset: 9,
        segment_bytes: 500,
        records: 9,
        first_timestamp_ms: 10,
        last_timestamp_ms: 20,
        entries: vec![IndexEntry { offset: 1, position: 64 }, IndexEntry { offset: 5, position: 300 }],
    };
    let bytes = index.encode();
    assert_eq!(bytes.len(), 96 + 32 + 4);
    assert_eq!(golden_hex(&bytes), GOLDEN_INDEX);
    assert_eq!(SegmentIndex::decode(&bytes).unwrap(), index);

    let slot = Slot { sequence: 3, value: 99, time_ms: 5 };
    let bytes = slot.encode(&CURSOR_MAGIC);
    assert_eq!(golden_hex(&bytes), GOLDEN_CURSOR_SLOT);
    assert_eq!(Slot::decode(&bytes, &CURSOR_MAGIC).unwrap(), slot);
    assert!(Slot::decode(&bytes, &START_MAGIC).is_err(), "a cursor is not a start file");
}

fn golden_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const GOLDEN_SEGMENT_HEADER: &str = "52454d49584c4f470100400000000000010000000000000007000000000000000068e5cf8b0100000000000000000000000000000000000000000000bda7df85";
const GOLDEN_INDEX: &str = "52454d49584944580100600002000000010000000000000007000000000000000900000000000000f40100000000000009000000000000000a00000000000000140000000000000000000000000000000000000000000000000000004ceab3b00100000000000000400000000000000005000000000000002c01000000000000090bfbbc";
const GOLDEN_CURSOR_SLOT: &str = "52454d495843555201000000000000000300000000000000630000000000000005000000000000000000000000000000000000000000000000000000712bcb33";

#[test]
fn slot_file_takes_the_newest_valid_slot() {
    let a = Slot { sequence: 4, value: 40, time_ms: 0 }.encode(&CURSOR_MAGIC);
    let b = Slot { sequence: 5, value: 50, time_ms: 0 }.encode(&CURSOR_MAGIC);
    let mut file = [a, b].concat();
    assert_eq!(Slot::decode_file(&file, &CURSOR_MAGIC).unwrap().value, 50);
    file[64 + 30] ^= 1;
    assert_eq!(Slot::decode_file(&file, &CURSOR_MAGIC).unwrap().value, 40, "torn newer slot: older one wins");
    file[30] ^= 1;
    assert!(Slot::decode_file(&file, &CURSOR_MAGIC).is_err(), "both torn: an error, never zero");
}

proptest! {
    #[test]
    fn frame_round_trip(salt: u64, kind in 1u8..=127, offset in 1u64.., ts: u64, payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let mut out = Vec::new();
        encode_frame(&mut out, salt, kind, 0, offset, ts, &payload);
        prop_assert_eq!(out.len(), FRAME_HEADER_BYTES + payload.len());
        let (header, decoded) = decode_frame(&out, salt).unwrap();
        prop_assert_eq!((header.kind, header.offset, header.timestamp_ms), (kind, offset, ts));
        prop_assert_eq!(decoded, &payload[..]);
        // Every strict prefix is reported as truncated or bad, never as a frame.
        for cut in 0..out.len() {
            prop_assert!(decode_frame(&out[..cut], salt).is_err());
        }
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512), salt: u64) {
        let _ = decode_frame(&bytes, salt);
        let _ = decode_frame_header(&bytes, salt);
        let _ = SegmentHeader::decode(&bytes);
        let _ = SegmentIndex::decode(&bytes);
        let _ = Slot::decode_file(&bytes, &CURSOR_MAGIC);
    }

    #[test]
    fn single_bit_flips_never_decode_to_other_content(payload in proptest::collection::vec(any::<u8>(), 0..300), bit in 0usize..2700) {
        let mut out = Vec::new();
        encode_frame(&mut out, 9, 1, 0, 5, 6, &payload);
        let bit = bit % (out.len() * 8);
        out[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(decode_frame(&out, 9).is_err());
    }
}
