//! The one-pass encoding of a body writes exactly the records that parsing the whole body into values,
//! remixing every object and serializing its change wrote before.

use super::config::WebhookSource;
use super::encode::{encode, field_key, op_of, Encoded, KeyOf, Pass, Stop};
use crate::record::{FieldError, Op};
use crate::runtime::ingest::remix_in::Origin;
use crate::runtime::ingest::{remix_in, RemixOutcome};
use serde_json::{json, Value};
use std::path::PathBuf;

/// The records' payloads, or every error by index.
type Outcome = Result<Vec<Vec<u8>>, Vec<(usize, Vec<FieldError>)>>;

fn source() -> (WebhookSource, std::sync::Arc<crate::config::Config>) {
    let text = r#"
models:
  customer: { schema: schemas/customer.json, key: [id] }
sources:
  - name: hooks
    kind: webhook
    listen: 127.0.0.1:9701
    delete_field: deleted
    routes:
      /customers:
        model: customer
        fields: { id: { from: id, type: integer }, email: contact.email, name: name, created_at: { from: at, type: timestamp } }
targets: []
"#;
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = crate::config::load_str(text, &root, &|_| None).expect("config");
    let source = config.source("hooks").and_then(|s| s.downcast::<WebhookSource>()).expect("webhook").clone();
    (source, std::sync::Arc::new(config))
}

/// What the source did before: every object remixed from the whole parsed body, each valid change
/// serialized; or every error by index.
fn before(
    source: &WebhookSource,
    config: &crate::config::Config,
    objects: &[Value],
    header_op: Op,
    request: &str,
    key_of: &dyn Fn(usize) -> Option<String>,
) -> Outcome {
    let binding = &source.routes["/customers"];
    let model = config.model("customer").unwrap();
    let (mut records, mut invalid) = (Vec::new(), Vec::new());
    for (index, object) in objects.iter().enumerate() {
        let key = key_of(index);
        let origin = Origin {
            source: &source.name,
            position: format!("{request}:{index}"),
            idempotency_key: key.as_deref(),
        };
        let op = op_of(object, source.delete_field.as_deref(), header_op);
        match remix_in(binding, model, object, op, origin) {
            RemixOutcome::Valid(change) => records.push(serde_json::to_vec(&change).unwrap()),
            RemixOutcome::Invalid(errors) => invalid.push((index, errors)),
        }
    }
    if invalid.is_empty() {
        Ok(records)
    } else {
        Err(invalid)
    }
}

fn now(
    source: &WebhookSource,
    config: &crate::config::Config,
    body: &[u8],
    header_op: Op,
    request: &str,
    keys: KeyOf,
    select: Option<Vec<Option<usize>>>,
) -> Encoded {
    let pass = Pass {
        source: source.name.clone(),
        binding: source.routes["/customers"].clone(),
        op: header_op,
        delete_field: source.delete_field.clone(),
        request: request.to_owned(),
        keys,
        select,
    };
    let mut grow = |bytes: u64| -> Result<u64, Stop> { Ok(bytes) };
    encode(&pass, config.model("customer").unwrap(), body, 0, &mut grow)
        .map_err(|e| format!("{e:?}"))
        .unwrap()
}

fn records(encoded: &Encoded) -> Outcome {
    if encoded.invalid.is_empty() {
        Ok(encoded.batch.records().iter().map(|r| r.payload.clone()).collect())
    } else {
        Err(encoded.invalid.iter().map(|i| (i.index, i.errors.clone())).collect())
    }
}

fn objects() -> Vec<Value> {
    (0..300u64)
        .map(|i| match i % 6 {
            0 => json!({"id": i, "contact": {"email": format!("{i}@example.com")}, "name": format!("C{i}")}),
            1 => json!({"id": i.to_string(), "contact": {"email": "a@b.example"}, "at": 1_764_000_000_000u64}),
            2 => json!({"id": i, "contact": {"email": "x@y.example"}, "name": null, "extra": [1, 2, {"z": "é\u{1F600}"}]}),
            3 => json!({"id": i, "deleted": true}),
            4 => json!({"id": i, "contact": {"email": "q@r.example"}, "name": "Ünïcode \"quoted\" \\ / \n", "rid": format!("k{}", i / 12)}),
            _ => json!({"contact": {"email": "k@l.example"}, "id": -(i as i64), "at": "2026-11-24T10:00:00+02:00", "rid": i}),
        })
        .collect()
}

#[test]
fn records_are_byte_identical_to_remixing_the_parsed_body() {
    let (source, config) = source();
    let objects = objects();
    let body = serde_json::to_vec_pretty(&objects).unwrap();
    for header_op in [Op::Upsert, Op::Delete] {
        let none = now(&source, &config, &body, header_op, "req-1-0", KeyOf::None, None);
        let want = before(&source, &config, &objects, header_op, "req-1-0", &|_| None);
        assert!(want.is_ok());
        assert_eq!(records(&none), want);
        assert_eq!(none.batch.last_position(), Some("req-1-0:299"));

        let batch = now(&source, &config, &body, header_op, "key-7", KeyOf::Batch("key-7".into()), None);
        let want = before(&source, &config, &objects, header_op, "key-7", &|_| Some("key-7".into()));
        assert_eq!(records(&batch), want);

        let field = now(&source, &config, &body, header_op, "req-1-1", KeyOf::Field("rid".into()), None);
        let want =
            before(&source, &config, &objects, header_op, "req-1-1", &|i| field_key(&objects[i], "rid"));
        assert_eq!(records(&field), want);
        let keys: Vec<Option<String>> = objects.iter().map(|o| field_key(o, "rid")).collect();
        assert_eq!(field.keys, keys);
        assert_eq!(field.objects, objects.len());

        // Some objects selected (those not logged before), at their new indexes.
        let select: Vec<Option<usize>> =
            (0..objects.len()).scan(0, |next, i| Some((i % 4 != 1).then(|| (*next, *next += 1).0))).collect();
        let chosen: Vec<Value> =
            objects.iter().zip(&select).filter(|(_, s)| s.is_some()).map(|(o, _)| o.clone()).collect();
        let some =
            now(&source, &config, &body, header_op, "req-1-2", KeyOf::Field("rid".into()), Some(select));
        let want = before(&source, &config, &chosen, header_op, "req-1-2", &|i| field_key(&chosen[i], "rid"));
        assert_eq!(records(&some), want);
    }
}

#[test]
fn an_invalid_object_refuses_the_batch_with_every_error_by_index() {
    let (source, config) = source();
    let mut objects = objects();
    objects[7] = json!({"id": "x7", "contact": {"email": 5}});
    objects[250] = json!({"id": 250});
    objects.push(json!({"id": 1.5, "contact": {"email": "a@b.example"}, "at": "yesterday"}));
    let body = serde_json::to_vec(&objects).unwrap();
    let encoded = now(&source, &config, &body, Op::Upsert, "req-2-0", KeyOf::None, None);
    let want = before(&source, &config, &objects, Op::Upsert, "req-2-0", &|_| None);
    assert!(want.as_ref().is_err_and(|invalid| invalid.len() == 3));
    assert_eq!(records(&encoded), want);
    assert!(encoded.batch.is_empty(), "nothing of a refused batch is kept to log");
    let inputs: Vec<&Value> = encoded.invalid.iter().map(|i| &i.input).collect();
    assert_eq!(inputs, [&objects[7], &objects[250], &objects[300]]);
}

#[test]
fn a_pass_without_room_stops() {
    let (source, config) = source();
    let body = serde_json::to_vec(&objects()).unwrap();
    let pass = Pass {
        source: source.name.clone(),
        binding: source.routes["/customers"].clone(),
        op: Op::Upsert,
        delete_field: None,
        request: "r".into(),
        keys: KeyOf::None,
        select: None,
    };
    let mut asked = Vec::new();
    let mut grow = |bytes: u64| {
        asked.push(bytes);
        if asked.len() < 3 {
            Ok(bytes)
        } else {
            Err(Stop::NeedRoom(bytes))
        }
    };
    let model = config.model("customer").unwrap();
    let stopped = encode(&pass, model, &body, body.len() as u64, &mut grow);
    assert!(matches!(stopped, Err(Stop::NeedRoom(_))), "{stopped:?}");
    assert_eq!(asked.len(), 3);
    assert!(asked.windows(2).all(|w| w[1] > w[0]));
}
