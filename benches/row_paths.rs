//! CPU per row of the two per-record paths the PostgreSQL → PostgreSQL benchmark spends Remix's time
//! in, each against the general way it replaced, on rows shaped like `pg_to_pg`'s (bigint, integer,
//! 96-character text, integer):
//!
//! - source: a pgoutput tuple to its change record's bytes, through a map, the validator and
//!   serde (general), or written directly (`sources::postgres::fast`);
//! - target: a change record to the fields a target reads, as a full `Change` with a map per row
//!   (general), or as its raw object's fields visited in place (`targets::Fields::Raw`).
//!
//! These figures do not depend on machine load the way the end-to-end harnesses' times do.
//!
//! `cargo bench --bench row_paths`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use remix::config::InputBinding;
use remix::mapping::Mapping;
use remix::models::Model;
use remix::postgres::fast::FastPlan;
use remix::postgres::pgoutput::{Column, Relation, Tuple, TupleValue};
use remix::postgres::types;
use remix::record::{self, ChangeBody, Op, KIND_CHANGE};
use remix::runtime::delivery::{FieldValue, Fields};
use remix::runtime::ingest::remix_in::{remix_in_owned, Origin};
use serde_json::{json, Value};
use std::hint::black_box;

const ROWS: usize = 1000;

fn relation() -> Relation {
    let column = |name: &str, type_oid| Column { flags: 0, name: name.into(), type_oid, type_modifier: -1 };
    Relation {
        id: 1,
        namespace: "public".into(),
        name: "bench".into(),
        replica_identity: b'd',
        columns: vec![
            column("id", types::INT8),
            column("k", types::INT4),
            column("payload", types::TEXT),
            column("v", types::INT4),
        ],
    }
}

fn model() -> Model {
    let schema = json!({"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object",
        "properties": {"id": {"type": "integer"}, "k": {"type": "integer"}, "payload": {"type": "string"},
            "v": {"type": "integer"}},
        "required": ["id", "k", "payload", "v"], "additionalProperties": false});
    Model::new("row", schema, &["id".to_owned()]).expect("a valid model")
}

fn tuples() -> Vec<Tuple> {
    (0..ROWS as u64)
        .map(|i| {
            let payload = format!("{:032x}{:032x}{:032x}", i * 7919, i * 104729, i * 1299709);
            let text = |s: String| TupleValue::Text(s.into_bytes());
            Tuple(vec![text(i.to_string()), text((i % 1000).to_string()), text(payload), text("0".into())])
        })
        .collect()
}

fn source(c: &mut Criterion) {
    let (relation, model, tuples) = (relation(), model(), tuples());
    let binding = InputBinding { model: "row".into(), mapping: Mapping::identity() };
    let plan = FastPlan::new(&relation, &binding, &model).expect("the bench rows have a direct path");
    let mut group = c.benchmark_group("source row to record");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("general (map, validator, serde)", |b| {
        b.iter(|| {
            for (i, tuple) in tuples.iter().enumerate() {
                let (row, unchanged) = types::tuple_to_object(&relation, tuple).expect("a row");
                let origin =
                    Origin { source: "bench_db", position: format!("0/16B3D28:{i}"), idempotency_key: None };
                let change =
                    remix_in_owned(&binding, &model, Value::Object(row), Op::Upsert, &unchanged, origin)
                        .expect("valid");
                black_box(serde_json::to_vec(&change).expect("serializes"));
            }
        })
    });
    group.bench_function("direct", |b| {
        b.iter(|| {
            for (i, tuple) in tuples.iter().enumerate() {
                let mut out = Vec::with_capacity(256);
                assert!(plan.write_upsert(tuple, "bench_db", &format!("0/16B3D28:{i}"), &mut out));
                black_box(out);
            }
        })
    });
    group.finish();
}

fn target(c: &mut Criterion) {
    let (relation, model, tuples) = (relation(), model(), tuples());
    let binding = InputBinding { model: "row".into(), mapping: Mapping::identity() };
    let plan = FastPlan::new(&relation, &binding, &model).expect("a direct path");
    let payloads: Vec<Vec<u8>> = tuples
        .iter()
        .enumerate()
        .map(|(i, tuple)| {
            let mut out = Vec::new();
            assert!(plan.write_upsert(tuple, "bench_db", &format!("0/16B3D28:{i}"), &mut out));
            out
        })
        .collect();
    let mut group = c.benchmark_group("target record to fields");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.bench_function("general (Change with a map)", |b| {
        b.iter(|| {
            for payload in &payloads {
                let record::Decoded::Change(change) = record::decode(KIND_CHANGE, payload) else { panic!() };
                let fields = Fields::Map(change.data.expect("an upsert"));
                let mut bytes = 0;
                fields.for_each(|name, value| bytes += name.len() + field_len(value));
                black_box(bytes);
            }
        })
    });
    group.bench_function("raw", |b| {
        b.iter(|| {
            for payload in &payloads {
                let change = ChangeBody::decode(KIND_CHANGE, payload).expect("a change");
                let fields = Fields::Raw(change.data.expect("an upsert"));
                let mut bytes = 0;
                fields.for_each(|name, value| bytes += name.len() + field_len(value));
                black_box(bytes);
            }
        })
    });
    group.finish();
}

fn field_len(value: FieldValue<'_>) -> usize {
    match value {
        FieldValue::Parsed(value) => value.as_str().map_or(1, str::len),
        FieldValue::Raw(raw) => raw.get().len(),
    }
}

criterion_group!(benches, source, target);
criterion_main!(benches);
