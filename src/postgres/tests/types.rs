//! Types tests: rows with every supported type, captured through pgoutput (`types_utc`: session
//! `TimeZone=UTC`, `IntervalStyle=iso_8601`; `types_local`: the same rows decoded with
//! `TimeZone=Asia/Kolkata`, `IntervalStyle=postgres`), converted with [`tuple_to_object`] and compared
//! with their documented JSON form; then unit and property tests of the conversions.

use super::super::pgoutput::{decode, Column, Message, Relation, Tuple, TupleValue};
use super::*;
use proptest::prelude::*;
use serde_json::json;

const GOLDEN: &str = include_str!("../testdata/pgoutput_v1.txt");

fn scenario(name: &str) -> Vec<Message> {
    let prefix = format!("{name}.");
    GOLDEN
        .lines()
        .filter(|l| l.starts_with(&prefix))
        .map(|l| {
            let hex = l.split_once(' ').expect("`name hex` line").1.trim();
            let bytes: Vec<u8> =
                (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
            decode(&bytes).unwrap_or_else(|e| panic!("{l}: {e}"))
        })
        .collect()
}

/// The alltypes rows of a capture as JSON objects. Domains are resolved to their base type through the
/// Type messages, the way the source does it.
fn alltypes_rows(name: &str) -> Vec<Value> {
    let msgs = scenario(name);
    let mut base_types = std::collections::HashMap::new();
    let mut relation = None;
    let mut rows = Vec::new();
    for m in msgs {
        match m {
            Message::Type { oid, namespace, name } => {
                if let Some(base) = builtin_type_oid(&namespace, &name) {
                    base_types.insert(oid, base);
                }
            }
            Message::Relation(mut r) => {
                for c in &mut r.columns {
                    c.type_oid = base_types.get(&c.type_oid).copied().unwrap_or(c.type_oid);
                }
                relation = Some(r);
            }
            Message::Insert { new, .. } => {
                let (object, unchanged) = tuple_to_object(relation.as_ref().unwrap(), &new).unwrap();
                assert!(unchanged.is_empty());
                rows.push(Value::Object(object));
            }
            _ => {}
        }
    }
    assert_eq!(base_types.len(), 1, "only the domain's base type is built in: {base_types:?}");
    rows
}

/// The documented JSON form of the first captured row (IntervalStyle iso_8601).
const ROW1: &str = r#"{
  "id": 1, "c_bool": true, "c_int2": 32767, "c_int4": -2147483648,
  "c_int8": 9223372036854775807, "c_oid": 4294967295,
  "c_float4": 3.14, "c_float8": 0.1,
  "c_numeric": "12345678901234567890.123456789012345678901234567890", "c_numeric_scaled": "12.50",
  "c_text": "h\u00e9llo \"w\\orld\"\n\u2713", "c_varchar": "abc", "c_bpchar": "ab   ",
  "c_name": "pg_name", "c_char": "x",
  "c_uuid": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", "c_date": "2026-11-24",
  "c_time": "10:00:00.123456", "c_timetz": "10:00:00+02",
  "c_timestamp": "2026-11-24T10:00:00.123456Z", "c_timestamptz": "2026-11-24T08:00:00.500000Z",
  "c_interval": "P1DT2H",
  "c_json": {"b": [1, 2.5, null], "a": "x"}, "c_jsonb": {"a": "x", "b": [1, 2.5, null]},
  "c_bytea": "AAEC//4=",
  "a_bool": [true, false, null], "a_int2": [1, -2], "a_int4": [1, 2, 3],
  "a_int8": [9223372036854775807, -1], "a_text": ["a b", "c\"d", "plain"], "a_varchar": ["x", "y"],
  "a_float4": [1.5, -0.25], "a_float8": [0.1, 1e300],
  "a_numeric": ["1.10", "-99999999999999999999.99"],
  "a_uuid": ["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"], "a_date": ["2026-11-24", "2000-02-29"],
  "a_timestamp": ["2026-11-24T10:00:00Z"],
  "a_timestamptz": ["2026-11-24T10:00:00Z", "1900-01-01T00:00:00Z"],
  "a_json": [{"k": 1}, [1, "two"]], "a_jsonb": [{"k": 1}], "a_bytea": ["AQI=", ""],
  "c_enum": "ok", "c_domain": 42
}"#;

/// The second row: special values, NULLs, empty and multi-dimensional arrays.
const ROW2: &str = r#"{
  "id": 2, "c_bool": false, "c_int2": -32768, "c_int4": 0, "c_int8": -9223372036854775808, "c_oid": 0,
  "c_float4": "NaN", "c_float8": "-Infinity", "c_numeric": "NaN", "c_numeric_scaled": "-0.01",
  "c_text": "", "c_varchar": null, "c_bpchar": null, "c_name": "", "c_char": null,
  "c_uuid": null, "c_date": "infinity", "c_time": "24:00:00", "c_timetz": null,
  "c_timestamp": "-infinity", "c_timestamptz": "infinity",
  "c_interval": "P-1Y-2M3DT-4H-5M-6.789S",
  "c_json": [], "c_jsonb": "str", "c_bytea": "",
  "a_bool": [], "a_int2": [[1, 2], [3, 4]], "a_int4": [1, null, 3], "a_int8": null,
  "a_text": ["", null, "NULL", "a,b", "{x}", "back\\slash", " sp "], "a_varchar": [],
  "a_float4": ["NaN", "Infinity", "-Infinity"], "a_float8": [-0.0, 5e-324],
  "a_numeric": ["NaN", "-1.000"], "a_uuid": [], "a_date": ["infinity", "-infinity"],
  "a_timestamp": ["-infinity", "0044-03-15 12:00:00 BC"],
  "a_timestamptz": ["1999-12-31T23:59:59.999999Z"],
  "a_json": [], "a_jsonb": [{"k": [true, false]}], "a_bytea": [null],
  "c_enum": null, "c_domain": null
}"#;

fn row1() -> Value {
    serde_json::from_str(ROW1).unwrap()
}

fn row2() -> Value {
    serde_json::from_str(ROW2).unwrap()
}

#[test]
fn rows_with_every_supported_type_convert_to_the_documented_json() {
    let rows = alltypes_rows("types_utc");
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0], row1());
    assert_eq!(rows[1], row2());
    // The text form as sent, for the record.
    let row = &rows[0];
    assert_eq!(serde_json::to_string(&row["a_float8"]).unwrap(), "[0.1,1e+300]");
    assert_eq!(serde_json::to_string(&row["c_int8"]).unwrap(), "9223372036854775807");
}

#[test]
fn timestamptz_converts_to_utc_whatever_the_session_time_zone() {
    // Same rows decoded in a session with TimeZone=Asia/Kolkata (+05:30, and +05:21:10 in 1900) and
    // IntervalStyle=postgres: only the interval text differs.
    let rows = alltypes_rows("types_local");
    let (mut r1, mut r2) = (row1(), row2());
    r1["c_interval"] = json!("1 day 02:00:00");
    r2["c_interval"] = json!("-1 years -2 mons +3 days -04:05:06.789");
    assert_eq!(rows, vec![r1, r2]);
}

#[test]
fn relation_of_the_types_capture_has_the_expected_oids_and_modifiers() {
    let msgs = scenario("types_utc");
    let r = msgs.iter().find_map(|m| if let Message::Relation(r) = m { Some(r) } else { None }).unwrap();
    let find = |n: &str| r.columns.iter().find(|c| c.name == n).unwrap();
    for (name, oid) in [
        ("c_bool", BOOL),
        ("c_int8", INT8),
        ("c_numeric", NUMERIC),
        ("c_timestamptz", TIMESTAMPTZ),
        ("c_jsonb", JSONB),
        ("a_bytea", 1001),
        ("a_timestamptz", 1185),
    ] {
        assert_eq!(find(name).type_oid, oid, "{name}");
    }
    assert_eq!(find("c_varchar").type_modifier, 24, "varchar(20)");
    assert_eq!(find("c_numeric_scaled").type_modifier, (10 << 16) + 2 + 4, "numeric(10,2)");
    assert_eq!(find("c_timestamp").type_modifier, 6);
}

/// A relation of `columns` (name, type OID), for tests.
pub(in crate::postgres) fn relation(columns: &[(&str, u32)]) -> Relation {
    Relation {
        id: 1,
        namespace: "public".into(),
        name: "t".into(),
        replica_identity: b'd',
        columns: columns
            .iter()
            .map(|(n, t)| Column { flags: 0, name: (*n).into(), type_oid: *t, type_modifier: -1 })
            .collect(),
    }
}

#[test]
fn tuple_to_object_omits_and_lists_unchanged_values() {
    let r = relation(&[("id", INT4), ("body", TEXT), ("note", TEXT), ("big", JSONB)]);
    let t = Tuple(vec![
        TupleValue::Text(b"7".to_vec()),
        TupleValue::Unchanged,
        TupleValue::Null,
        TupleValue::Unchanged,
    ]);
    let (object, unchanged) = tuple_to_object(&r, &t).unwrap();
    assert_eq!(Value::Object(object), json!({"id": 7, "note": null}));
    assert_eq!(unchanged, vec!["body".to_string(), "big".to_string()]);
}

#[test]
fn tuple_to_object_errors() {
    let r = relation(&[("id", INT4)]);
    let err = |values| tuple_to_object(&r, &Tuple(values)).unwrap_err().0;
    assert_eq!(err(vec![TupleValue::Binary(vec![0])]), "column \"id\": binary tuple data not requested");
    assert_eq!(err(vec![]), "tuple has 0 values but relation public.t has 1 columns");
    assert_eq!(err(vec![TupleValue::Text(b"x".to_vec())]), "column \"id\": invalid integer text \"x\"");
    let r = relation(&[("s", TEXT)]);
    assert_eq!(
        tuple_to_object(&r, &Tuple(vec![TupleValue::Text(vec![0xff])])).unwrap_err().0,
        "column \"s\": text value is not valid UTF-8"
    );
}

fn conv(oid: u32, text: &str) -> Value {
    text_to_json(oid, text).unwrap_or_else(|e| panic!("{oid} {text:?}: {e}"))
}

#[test]
fn scalars() {
    assert_eq!(conv(BOOL, "t"), json!(true));
    assert!(text_to_json(BOOL, "true").is_err());
    assert_eq!(conv(OID, "4294967295"), json!(4294967295_u32));
    assert!(text_to_json(INT8, "9223372036854775808").is_err());
    assert_eq!(conv(FLOAT8, "-1.5e-7"), json!(-1.5e-7));
    assert!(text_to_json(FLOAT8, "inf").is_err(), "PostgreSQL spells it Infinity");
    assert!(text_to_json(FLOAT4, "x").is_err());
    assert_eq!(
        conv(NUMERIC, "-0.000000000000000000000000000001"),
        json!("-0.000000000000000000000000000001")
    );
    assert_eq!(conv(NUMERIC, "Infinity"), json!("Infinity"));
    assert_eq!(conv(INTERVAL, "P1DT2H"), json!("P1DT2H"));
    assert_eq!(conv(JSON, r#"{"a":[1,{"b":null}]}"#), json!({"a": [1, {"b": null}]}));
    assert!(text_to_json(JSONB, "{").unwrap_err().0.starts_with("invalid json text"));
    assert_eq!(conv(123_456, "some enum label"), json!("some enum label"), "unknown OID → text");
    assert_eq!(conv(DATE, "0044-03-15 BC"), json!("0044-03-15 BC"));
    assert_eq!(conv(DATE, "12345-01-02"), json!("12345-01-02"));
    for bad in ["11/24/2026", "2026-13-01", "2026-1-01", "26-01-01", "2026-01-01x"] {
        assert!(text_to_json(DATE, bad).is_err(), "{bad}");
    }
}

#[test]
fn timestamps() {
    let ts = |t| conv(TIMESTAMP, t);
    let tz = |t| conv(TIMESTAMPTZ, t);
    assert_eq!(ts("2026-11-24 10:00:00"), json!("2026-11-24T10:00:00Z"));
    assert_eq!(ts("2026-11-24 10:00:00.1"), json!("2026-11-24T10:00:00.100000Z"));
    assert_eq!(ts("0001-01-01 00:00:00"), json!("0001-01-01T00:00:00Z"));
    assert_eq!(ts("10000-01-01 00:00:00"), json!("10000-01-01T00:00:00Z"));
    assert_eq!(tz("2026-11-24 10:00:00+00"), json!("2026-11-24T10:00:00Z"));
    assert_eq!(tz("2026-11-24 10:00:00-08"), json!("2026-11-24T18:00:00Z"));
    assert_eq!(tz("2026-12-31 23:30:00-01"), json!("2027-01-01T00:30:00Z"));
    assert_eq!(tz("2024-03-01 02:00:00.25+05:30"), json!("2024-02-29T20:30:00.250000Z"));
    assert_eq!(tz("1900-01-01 05:21:10+05:21:10"), json!("1900-01-01T00:00:00Z"));
    assert_eq!(tz("0001-01-01 00:30:00+01"), json!("0000-12-31T23:30:00Z"));
    assert_eq!(tz("2000-01-01 00:00:00+00 BC"), json!("2000-01-01 00:00:00+00 BC"));
    assert_eq!(tz("-infinity"), json!("-infinity"));
    for bad in [
        "2026-11-24T10:00:00",
        "2026-11-24 10:00",
        "2026-11-24 25:00:00",
        "2026-11-24 10:00:00.",
        "2026-11-24 10:00:00.1234567",
        "Tue Nov 24 10:00:00 2026",
    ] {
        assert!(text_to_json(TIMESTAMP, bad).is_err(), "{bad}");
    }
    for bad in [
        "2026-11-24 10:00:00",
        "2026-11-24 10:00:00+",
        "2026-11-24 10:00:00+05:60",
        "2026-11-24 10:00:00+1:2:3:4",
    ] {
        assert!(text_to_json(TIMESTAMPTZ, bad).is_err(), "{bad}");
    }
    assert!(text_to_json(TIMESTAMP, "2026-11-24 10:00:00+00").is_err(), "no offset on timestamp");
}

#[test]
fn bytea_and_base64() {
    for (input, b64) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(input.as_bytes()), b64, "RFC 4648 vector {input:?}");
    }
    assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    assert_eq!(conv(BYTEA, "\\xDEADbeef"), json!("3q2+7w=="));
    assert_eq!(conv(BYTEA, "\\x"), json!(""));
    // bytea_output=escape
    assert_eq!(conv(BYTEA, "a\\\\b\\000\\377"), json!(base64(b"a\\b\x00\xff")));
    for bad in ["\\x0", "\\xzz", "\\9", "\\400", "\\12"] {
        assert!(text_to_json(BYTEA, bad).is_err(), "{bad}");
    }
}

#[test]
fn array_literals() {
    let int4s = |t| conv(1007, t);
    assert_eq!(int4s("{}"), json!([]));
    assert_eq!(int4s(" { 1 , 2 ,NULL, null } "), json!([1, 2, null, null]));
    assert_eq!(int4s("[1:2][0:1]={{1,2},{3,4}}"), json!([[1, 2], [3, 4]]));
    assert_eq!(int4s("{{{1}},{{2}}}"), json!([[[1]], [[2]]]));
    assert_eq!(int4s("{{},{}}"), json!([[], []]));
    let texts = |t| conv(1009, t);
    assert_eq!(
        texts(r#"{"a \"q\" \\ b",NULL,"NULL",\NULL,a\,b, x y ,é}"#),
        json!(["a \"q\" \\ b", null, "NULL", "NULL", "a,b", "x y", "é"])
    );
    assert_eq!(conv(1016, "{-9223372036854775808}"), json!([i64::MIN]));
    assert_eq!(conv(1185, r#"{"2026-11-24 10:00:00+05:30",NULL}"#), json!(["2026-11-24T04:30:00Z", null]));
    assert_eq!(conv(1001, r#"{"\\x00ff","\\x"}"#), json!(["AP8=", ""]));
    assert_eq!(conv(3807, r#"{"[1, {\"a\": \"}\"}]",null}"#), json!([[1, {"a": "}"}], null]));
    assert_eq!(conv(1187, r#"{"1 day",P1D}"#), json!(["1 day", "P1D"]));
    for (oid, bad) in [
        (1007, ""),
        (1007, "1,2"),
        (1007, "{1,2"),
        (1007, "{1,,2}"),
        (1007, "{1}x"),
        (1007, "{1,x}"),
        (1007, "[0:1]{1,2}"),
        (1007, "[a]={1}"),
        (1007, "{{{{{{{1}}}}}}}"),
        (1009, r#"{"abc}"#),
        (1009, r#"{ab"c}"#),
        (1009, "{a\\"),
        (1000, "{t,x}"),
    ] {
        assert!(text_to_json(oid, bad).is_err(), "{oid} {bad:?}");
    }
    assert_eq!(text_to_json(1000, "{t,x}").unwrap_err().0, "array element 2: invalid bool text \"x\"");
    assert_eq!(conv(1007, "{{{{{{1}}}}}}"), json!([[[[[[1]]]]]]), "six dimensions is PostgreSQL's limit");
}

#[test]
fn every_supported_array_type_maps_to_a_supported_element() {
    for oid in [
        1000, 1001, 1002, 1003, 1005, 1007, 1009, 1014, 1015, 1016, 1021, 1022, 1028, 199, 1115, 1182, 1183,
        1185, 1187, 1231, 1270, 2951, 3807,
    ] {
        let element = array_element_type(oid).unwrap();
        assert!(array_element_type(element).is_none());
        assert_eq!(text_to_json(oid, "{}"), Ok(json!([])));
    }
    assert_eq!(builtin_type_oid("", "int4"), Some(INT4));
    assert_eq!(builtin_type_oid("pg_catalog", "timestamptz"), Some(TIMESTAMPTZ));
    assert_eq!(builtin_type_oid("public", "int4"), None);
    assert_eq!(builtin_type_oid("", "mood"), None);
}

fn supported_oid() -> impl Strategy<Value = u32> {
    prop::sample::select(vec![
        BOOL,
        BYTEA,
        CHAR,
        NAME,
        INT8,
        INT2,
        INT4,
        TEXT,
        OID,
        JSON,
        FLOAT4,
        FLOAT8,
        BPCHAR,
        VARCHAR,
        DATE,
        TIME,
        TIMESTAMP,
        TIMESTAMPTZ,
        INTERVAL,
        TIMETZ,
        NUMERIC,
        UUID,
        JSONB,
        1000,
        1001,
        1007,
        1009,
        1022,
        1115,
        1185,
        1231,
        3807,
    ])
}

proptest! {
    #[test]
    fn conversion_never_panics(oid in supported_oid(), text in "\\PC{0,40}") {
        let _ = text_to_json(oid, &text);
    }

    #[test]
    fn array_parsing_never_panics(text in "[{}\",\\\\ NULa1x\\[\\]:=-]{0,40}") {
        let _ = text_to_json(1009, &text);
        let _ = text_to_json(1007, &text);
    }

    #[test]
    fn civil_day_conversion_round_trips(days in -1_000_000_000i64..1_000_000_000) {
        let (y, m, d) = civil_from_days(days);
        prop_assert_eq!(days_from_civil(y, m, d), days);
    }

    #[test]
    fn timestamptz_matches_timestamp_shifted_by_the_offset(
        secs in 0i64..253_402_300_799, // 0001-01-01 .. 9999-12-31 relative to year 0001
        micros in 0i64..1_000_000,
        offset_min in -15 * 60i64..=15 * 60,
    ) {
        // A local time `secs` after 0001-01-01 printed with an offset must convert to the same instant as
        // the UTC wall time `secs - offset`.
        let base = days_from_civil(1, 1, 1) * 86_400;
        let fmt = |s: i64| {
            let (y, m, d) = civil_from_days(s.div_euclid(86_400));
            let t = s.rem_euclid(86_400);
            format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}.{micros:06}", t / 3600, t / 60 % 60, t % 60)
        };
        let local = base + secs;
        let sign = if offset_min < 0 { '-' } else { '+' };
        let text = format!("{}{sign}{:02}:{:02}", fmt(local), offset_min.abs() / 60, offset_min.abs() % 60);
        let utc = local - offset_min * 60;
        prop_assume!(utc >= base);
        let expected = text_to_json(TIMESTAMP, &fmt(utc)).unwrap();
        prop_assert_eq!(text_to_json(TIMESTAMPTZ, &text).unwrap(), expected);
    }
}
