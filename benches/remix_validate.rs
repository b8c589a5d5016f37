//! Remix in + validation throughput on one core: the CPU cost of turning a webhook object into a
//! validated change record (mapping with casts, JSON Schema 2020-12 validation with formats, key
//! extraction, serialization to the log payload).
//!
//! `cargo bench --bench remix_validate`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use remix::config::InputBinding;
use remix::mapping::Mapping;
use remix::models::Model;
use remix::record::Op;
use remix::runtime::ingest::remix_in::{remix_in, Origin};
use remix::runtime::ingest::RemixOutcome;
use serde_json::json;

fn customer_model() -> Model {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/customer.json");
    Model::load("customer", &path, &["id".to_owned()]).expect("schema loads")
}

fn bench(c: &mut Criterion) {
    let model = customer_model();
    let mapping = Mapping::compile(&json!({
        "id": {"from": "id", "type": "integer"},
        "email": "contact.email",
        "name": "name",
        "created_at": {"from": "signed_up", "type": "timestamp"}
    }))
    .expect("mapping compiles");
    let binding = InputBinding { model: "customer".into(), mapping };
    let inputs: Vec<_> = (0..1000)
        .map(|i| {
            json!({"id": format!("{i}"), "contact": {"email": format!("user{i}@example.com"), "phone": "+1 555"},
                   "name": format!("User {i}"), "signed_up": 1_795_514_400 + i, "ignored": [1, 2, 3]})
        })
        .collect();
    let mut group = c.benchmark_group("remix_in");
    group.throughput(Throughput::Elements(inputs.len() as u64));
    group.bench_function("map+validate+serialize 1000 customers", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for (i, input) in inputs.iter().enumerate() {
                let origin = Origin { source: "hooks", position: format!("req:{i}"), idempotency_key: None };
                match remix_in(&binding, &model, input, Op::Upsert, origin) {
                    RemixOutcome::Valid(change) => {
                        bytes += serde_json::to_vec(&change).expect("serializes").len()
                    }
                    RemixOutcome::Invalid(errors) => panic!("invalid: {errors:?}"),
                }
            }
            bytes
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(5));
    targets = bench
}
criterion_main!(benches);
