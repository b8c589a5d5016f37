use super::*;
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn env(name: &str) -> Option<String> {
    match name {
        "REMIX_HTTP_URL" => Some("http://127.0.0.1:8080/ingest".into()),
        "REMIX_PG_SOURCE" => Some("postgres://remix@127.0.0.1/shop".into()),
        "REMIX_PG_TARGET" => Some("host=127.0.0.1 dbname=warehouse".into()),
        "STRIPE_WEBHOOK_SECRET" => Some("whsec_test".into()),
        _ => None,
    }
}

fn load_text(text: &str) -> Result<Config, ConfigErrors> {
    load_str(text, &root(), &env)
}

/// `path: message` of every error.
fn errors(text: &str) -> Vec<String> {
    match load_text(text) {
        Ok(_) => panic!("config should be refused:\n{text}"),
        Err(e) => e.iter().map(|e| format!("{}: {}", e.path, e.message)).collect(),
    }
}

/// The sketch of SPEC section 4, every source and target kind.
const FULL: &str = r#"
data_dir: ${REMIX_DATA_DIR:-./remix-data}
admin: { listen: "${REMIX_ADMIN_ADDR:-127.0.0.1:9700}", token: s3cret }
log:   { segment_bytes: 128MiB, retention: { min_age: 7d, max_bytes: 50GiB } }
models:
  customer: { schema: schemas/customer.json, key: [id] }
  order:    { schema: schemas/order.json,    key: [id] }
sources:
  - name: shop_db
    kind: postgres
    dsn: ${REMIX_PG_SOURCE}
    slot: remix_shop
    publication: remix_shop
    snapshot: initial
    tables:
      public.customers: { model: customer, fields: { id: id, email: email, name: full_name, created_at: created_at } }
      orders:    { model: order,    fields: { id: id, customer_id: customer_id, amount: amount_cents, status: status } }
  - name: hooks
    kind: webhook
    listen: "${REMIX_WEBHOOK_ADDR:-127.0.0.1:9701}"
    auth: { bearer_token: "${REMIX_WEBHOOK_TOKEN:-}" }
    routes:
      /customers: { model: customer, fields: { id: id, email: contact.email, name: name } }
  - name: billing
    kind: stripe
    listen: "${REMIX_WEBHOOK_ADDR:-127.0.0.1:9701}"
    path: /stripe
    signing_secret: ${STRIPE_WEBHOOK_SECRET}
    objects:
      customer: { model: customer, fields: { id: metadata.customer_id, email: email, name: name } }
targets:
  - name: warehouse
    kind: postgres
    dsn: ${REMIX_PG_TARGET}
    create_tables: true
    rate_limit: { records_per_second: 50000 }
    on_error: pause
    models:
      order: { table: analytics.orders, fields: { order_id: id, total_cents: amount, state: status } }
  - name: dataset
    kind: jsonl
    dir: ${REMIX_DATASET_DIR:-./datasets}
    models: { customer: {}, order: {} }
  - name: crm
    kind: http
    url: ${REMIX_HTTP_URL}
    headers: { X-Api-Key: abc }
    timeout: 30s
    batch: { records_max: 100, linger_ms: 10 }
    on_error: dead_letter
    truncate: ignore
    models: { customer: { fields: { email: email } } }
  - name: stripe-out
    kind: stripe
    api_key: sk_test
    models: { customer: { object: customer, key_field: metadata.remix_id, fields: { metadata.remix_id: id, email: email } } }
"#;

#[test]
fn full_config_is_typed() {
    let c = load_text(FULL).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.data_dir, PathBuf::from("./remix-data"));
    assert_eq!(c.admin, AdminConfig { listen: "127.0.0.1:9700".into(), token: Some("s3cret".into()) });
    assert_eq!(c.log.segment_bytes, 128 << 20);
    assert_eq!(c.log.retention.min_age, Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(c.log.retention.max_bytes, Some(50 << 30));
    assert_eq!(c.models["order"].key_fields(), ["id"]);
    assert_eq!(c.sources.iter().map(|s| s.kind()).collect::<Vec<_>>(), ["postgres", "webhook", "stripe"]);
    let Some(pg) = &c.sources[0].downcast::<crate::postgres::config::PostgresSource>() else { panic!() };
    assert_eq!(
        (pg.slot.as_str(), pg.snapshot),
        ("remix_shop", crate::postgres::config::SnapshotMode::Initial)
    );
    let tables: Vec<(&str, &str)> = pg.tables.iter().map(|t| (t.schema.as_str(), t.table.as_str())).collect();
    assert_eq!(tables, [("public", "customers"), ("public", "orders")]);
    let Some(w) = &c.sources[1].downcast::<crate::webhook::config::WebhookSource>() else { panic!() };
    assert_eq!((w.auth.clone(), w.body_bytes_max), (crate::webhook::config::WebhookAuth::None, 10 << 20));
    assert_eq!(w.routes["/customers"].model, "customer");
    let Some(s) = &c.sources[2].downcast::<crate::stripe::config::StripeSource>() else { panic!() };
    assert_eq!((s.api_base.as_str(), s.tolerance), ("https://api.stripe.com", Duration::from_secs(300)));
    let names: Vec<&str> = c.targets.iter().map(|t| t.name()).collect();
    assert_eq!(names, ["warehouse", "dataset", "crm", "stripe-out"]);
    let Some(wh) = &c.targets[0].downcast::<crate::postgres::config::PostgresTarget>() else { panic!() };
    assert_eq!(wh.common.rate_limit, Some(RateLimit { records_per_second: 50_000, burst: 50_000 }));
    assert_eq!(
        (wh.models["order"].schema.as_str(), wh.models["order"].table.as_str()),
        ("analytics", "orders")
    );
    assert!(wh.create_tables);
    let Some(ds) = &c.targets[1].downcast::<crate::jsonl::config::JsonlTarget>() else { panic!() };
    assert!(ds.models["customer"].mapping.is_identity());
    assert_eq!(ds.common.batch, BatchConfig { records_max: None, linger: Duration::from_millis(50) });
    assert_eq!((ds.common.on_error, ds.common.truncate), (OnError::Pause, TruncatePolicy::Apply));
    let Some(crm) = &c.targets[2].downcast::<crate::http::config::HttpTarget>() else { panic!() };
    assert_eq!((crm.timeout, crm.common.on_error), (Duration::from_secs(30), OnError::DeadLetter));
    assert_eq!(crm.common.truncate, TruncatePolicy::Ignore);
    assert_eq!(c.target("stripe-out").map(|t| t.outputs().len()), Some(1));
}

#[test]
fn defaults() {
    let text = "models:\n  order: { schema: schemas/order.json, key: [id] }\nsources:\n  - name: pg\n    kind: postgres\n    dsn: postgres://x\n    tables: { orders: { model: order } }\n  - { name: w, kind: webhook, listen: \"127.0.0.1:1\", auth: { hmac_secret: k }, routes: { /o: { model: order } } }\n";
    let c = load_text(text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    assert_eq!(c.admin.listen, DEFAULT_ADMIN_LISTEN);
    assert_eq!(c.log, LogConfig { segment_bytes: 128 << 20, retention: RetentionConfig::default() });
    assert_eq!(c.ingest, IngestConfig { memory_bytes_max: 64 << 20, wait: Duration::from_secs(5) });
    let set = text.replacen("models:", "ingest: { memory_bytes_max: 32MiB, wait_ms: 250 }\nmodels:", 1);
    let c = load_text(&set).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.ingest, IngestConfig { memory_bytes_max: 32 << 20, wait: Duration::from_millis(250) });
    let Some(pg) = &c.sources[0].downcast::<crate::postgres::config::PostgresSource>() else { panic!() };
    assert_eq!(
        (pg.slot.as_str(), pg.publication.as_str(), pg.snapshot),
        ("remix_pg", "remix_pg", crate::postgres::config::SnapshotMode::Initial)
    );
    let Some(w) = &c.sources[1].downcast::<crate::webhook::config::WebhookSource>() else { panic!() };
    assert_eq!(
        w.auth,
        crate::webhook::config::WebhookAuth::Hmac { secret: "k".into(), header: "X-Remix-Signature".into() }
    );
    assert!(load_text("").is_ok());
}

#[test]
fn shipped_configs_parse() {
    let dir = root().join("config");
    for file in ["remix.yaml", "examples/webhook-to-jsonl.yaml", "examples/webhook-to-http.yaml"] {
        let path = dir.join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let base = path.parent().unwrap();
        let c = load_str(&text, base, &env).unwrap_or_else(|e| panic!("{file}:\n{e}"));
        assert!(!c.sources.is_empty() && !c.targets.is_empty(), "{file}");
    }
    let c = load_str(DEFAULT_CONFIG, &dir, &|_| None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.admin.listen, "127.0.0.1:9700");
    assert_eq!(c.sources[0].listen().as_deref(), Some("127.0.0.1:9701"));
    let Some(t) = &c.targets[0].downcast::<crate::jsonl::config::JsonlTarget>() else { panic!() };
    assert_eq!(t.dir, PathBuf::from("./datasets"));
    let http = std::fs::read_to_string(dir.join("examples/webhook-to-http.yaml")).unwrap();
    let errs = load_str(&http, &dir.join("examples"), &|_| None).unwrap_err();
    assert!(errs.to_string().contains("REMIX_HTTP_URL is not set"), "{errs}");
}

/// A small valid config; each case below breaks one thing.
const BASE: &str = r#"
models:
  customer: { schema: schemas/customer.json, key: [id] }
  order: { schema: schemas/order.json, key: [id] }
sources:
  - name: hooks
    kind: webhook
    listen: "127.0.0.1:9701"
    routes:
      /customers: { model: customer, fields: { id: id, email: contact.email } }
targets:
  - name: dataset
    kind: jsonl
    dir: ./d
    models: { customer: {} }
  - name: api
    kind: http
    url: http://127.0.0.1:1/x
    models:
      order: { fields: { amount: amount } }
"#;

#[test]
fn each_mistake_is_reported_with_its_path() {
    assert!(load_text(BASE).is_ok(), "{:?}", load_text(BASE).err());
    let cases: &[(&str, &str, &str, &str)] = &[
        ("models:", "modles:", "modles", "unknown key 'modles'"),
        (
            "key: [id] }\n  order",
            "key: [idd] }\n  order",
            "models.customer.key[0]",
            "key field 'idd' is not a property",
        ),
        (
            "key: [id] }\n  order",
            "key: [] }\n  order",
            "models.customer.key",
            "key must name at least one field",
        ),
        ("schemas/order.json", "schemas/nope.json", "models.order.schema", "cannot read schema file"),
        ("schemas/order.json", "config/remix.yaml", "models.order.schema", "is not valid JSON"),
        (
            "kind: jsonl",
            "kind: jsnol",
            "targets[0].kind",
            "unknown target kind 'jsnol' (expected jsonl, http",
        ),
        (
            "kind: webhook",
            "kind: hook",
            "sources[0].kind",
            "unknown source kind 'hook' (expected postgres, mysql, webhook or stripe)",
        ),
        ("- name: hooks\n    kind: webhook", "- kind: webhook", "sources[0].name", "required key is missing"),
        ("name: hooks", "name: Hooks", "sources[0].name", "invalid name 'Hooks'"),
        (
            "name: api",
            "name: dataset",
            "targets[1].name",
            "duplicate name 'dataset' (also used at targets[0].name)",
        ),
        ("\"127.0.0.1:9701\"", "\"127.0.0.1\"", "sources[0].listen", "invalid address '127.0.0.1'"),
        ("\"127.0.0.1:9701\"", "\"127.0.0.1:9700\"", "sources[0].listen", "also the admin API's"),
        ("listen: \"127.0.0.1:9701\"", "listen: 9701", "sources[0].listen", "invalid type: integer `9701`"),
        ("/customers:", "customers:", "sources[0].routes.customers", "invalid route 'customers'"),
        (
            "model: customer,",
            "model: client,",
            "sources[0].routes[\"/customers\"].model",
            "unknown model 'client' (models: customer, order)",
        ),
        (
            "{ id: id, email",
            "{ ident: id, email",
            "sources[0].routes[\"/customers\"].fields.ident",
            "unknown model field 'ident'",
        ),
        (
            "{ id: id, email",
            "{ email",
            "sources[0].routes[\"/customers\"].fields",
            "model key field 'id' is not mapped",
        ),
        (
            "{ id: id,",
            "{ id: { from: id, type: int },",
            "sources[0].routes[\"/customers\"].fields.id",
            "unknown type 'int'",
        ),
        (
            "fields: { amount: amount }",
            "fields: { amount: amount_cents }",
            "targets[1].models.order.fields.amount",
            "unknown model field 'amount_cents'",
        ),
        ("{ customer: {} }", "{ client: {} }", "targets[0].models.client", "unknown model 'client'"),
        ("{ customer: {} }", "{}", "targets[0].models", "a target needs at least one model"),
        (
            "{ customer: {} }",
            "{ customer: { feilds: {} } }",
            "targets[0].models.customer.feilds",
            "unknown key 'feilds'",
        ),
        ("dir: ./d", "dir: \"\"", "targets[0].dir", "must not be empty"),
        ("dir: ./d", "directory: ./d", "targets[0].directory", "unknown key 'directory'"),
        ("url: http://127.0.0.1:1/x", "url: ftp://x", "targets[1].url", "invalid URL 'ftp://x'"),
        ("kind: http", "kind: http\n    timeout: soon", "targets[1].timeout", "invalid duration 'soon'"),
        (
            "kind: http",
            "kind: http\n    on_error: retry",
            "targets[1].on_error",
            "unknown value 'retry' (expected pause or dead_letter)",
        ),
        (
            "kind: http",
            "kind: http\n    truncate: yes",
            "targets[1].truncate",
            "unknown value 'yes' (expected apply or ignore)",
        ),
        (
            "kind: http",
            "kind: http\n    rate_limit: { burst: 5 }",
            "targets[1].rate_limit.records_per_second",
            "required key is missing",
        ),
        (
            "kind: http",
            "kind: http\n    rate_limit: { records_per_second: 0 }",
            "targets[1].rate_limit.records_per_second",
            "must be greater than 0",
        ),
        (
            "kind: http",
            "kind: http\n    batch: { records_max: 0 }",
            "targets[1].batch.records_max",
            "must be between 1 and 100000",
        ),
        (
            "kind: http",
            "kind: http\n    batch: { records_max: many }",
            "targets[1].batch.records_max",
            "invalid type: string \"many\"",
        ),
        (
            "kind: http",
            "kind: http\n    headers: { \"a b\": x }",
            "targets[1].headers[\"a b\"]",
            "invalid header name",
        ),
        (
            "kind: webhook",
            "kind: webhook\n    auth: { bearer_token: a, hmac_secret: b }",
            "sources[0].auth",
            "not both",
        ),
        (
            "kind: webhook",
            "kind: webhook\n    auth: { token: a }",
            "sources[0].auth.token",
            "unknown key 'token'",
        ),
        (
            "kind: webhook",
            "kind: webhook\n    body_bytes_max: lots",
            "sources[0].body_bytes_max",
            "invalid size 'lots'",
        ),
        ("models:", "log: { segment_bytes: 1KiB }\nmodels:", "log.segment_bytes", "must be at least 64KiB"),
        (
            "models:",
            "ingest: { memory_bytes_max: 1KiB }\nmodels:",
            "ingest.memory_bytes_max",
            "must be at least 64KiB",
        ),
        ("models:", "ingest: { memory_max: 1GiB }\nmodels:", "ingest.memory_max", "unknown key 'memory_max'"),
        ("models:", "ingest: { wait_ms: 600000 }\nmodels:", "ingest.wait_ms", "must be at most 60000"),
        ("models:", "ingest: { wait_ms: soon }\nmodels:", "ingest.wait_ms", "invalid type"),
        (
            "models:",
            "log: { retention: { min_age: 7 days } }\nmodels:",
            "log.retention.min_age",
            "invalid duration",
        ),
        ("models:", "admin: { listen: nowhere }\nmodels:", "admin.listen", "invalid address 'nowhere'"),
        ("models:", "admin: [1]\nmodels:", "admin", "expected a mapping, got a sequence"),
        ("models:", "data_dir: [1]\nmodels:", "data_dir", "invalid type: sequence, expected a string"),
    ];
    for (from, to, path, message) in cases {
        assert!(BASE.contains(from), "{from}");
        let text = BASE.replacen(from, to, 1);
        let errs = errors(&text);
        let hit = errs.iter().any(|e| e.starts_with(&format!("{path}: ")) && e.contains(message));
        assert!(hit, "{from} -> {to}: want {path}: {message}, got {errs:#?}");
    }
}

#[test]
fn several_mistakes_are_reported_at_once() {
    let text = r#"
data_dir: ./data
log: { segment_bytes: 10KiB }
models:
  thing: { schema: schemas/order.json, key: [idd] }
sources:
  - name: hooks
    kind: webhook
    listen: "127.0.0.1:9701"
    routes:
      /things: { model: thing, fields: { id: id, nmae: name } }
  - name: pg
    kind: postgres
    tables: { things: { model: ghost } }
targets:
  - { name: dataset, kind: jsnol, dir: ./d, models: { thing: {} } }
  - name: api
    kind: http
    url: http://127.0.0.1:1/x
    retries: 3
    models:
      thing: { fields: { amount: amount_cents } }
"#;
    let errs = load_text(text).unwrap_err();
    let got: Vec<(String, Option<usize>)> = errs.iter().map(|e| (e.path.clone(), e.line)).collect();
    let want = [
        ("log.segment_bytes", 3),
        ("models.thing.key[0]", 5),
        ("sources[0].routes[\"/things\"].fields.nmae", 11),
        ("sources[0].routes[\"/things\"].fields", 11),
        ("sources[1].dsn", 12),
        ("sources[1].tables.things.model", 14),
        ("targets[0].kind", 16),
        ("targets[1].retries", 20),
        ("targets[1].models.thing.fields.amount", 22),
    ];
    let want: Vec<(String, Option<usize>)> = want.iter().map(|(p, l)| (p.to_string(), Some(*l))).collect();
    assert_eq!(got, want, "{errs}");
    let shown = errs.to_string();
    assert_eq!(shown.lines().count(), 9);
    assert!(shown.contains("line 16: targets[0].kind: unknown target kind 'jsnol'"), "{shown}");
    assert!(
        shown.contains(
            "model 'thing' requires 'customer_id', 'amount', 'status', which this mapping never sets"
        ),
        "{shown}"
    );
}

#[test]
fn interpolation_errors_name_variable_and_line() {
    let text = BASE.replacen("url: http://127.0.0.1:1/x", "url: ${REMIX_NOPE}", 1).replacen(
        "./d",
        "${REMIX_DIR:-./d}",
        1,
    );
    let errs = load_text(&text).unwrap_err();
    assert_eq!(errs.len(), 1, "{errs}");
    let e = &errs.errors[0];
    assert_eq!(
        errors(&BASE.replacen("- name: hooks\n    kind", "- kind", 1)),
        ["sources[0].name: required key is missing"]
    );
    assert_eq!(e.line, Some(18));
    assert!(e.message.contains("REMIX_NOPE is not set"), "{e}");
}

#[test]
fn yaml_syntax_errors_have_a_line() {
    let errs = load_text("models:\n  a: [1\nsources: x: y\n").unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(errs.errors[0].line.is_some(), "{errs}");
    assert!(errs.errors[0].message.starts_with("invalid YAML"), "{errs}");
    let dup = load_text("data_dir: a\ndata_dir: b\n").unwrap_err();
    assert!(dup.to_string().contains("duplicate"), "{dup}");
}

#[test]
fn invalid_schema_file_is_reported() {
    let dir = std::env::temp_dir().join(format!("remix-cfg-test-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("schemas")).unwrap();
    let bad = r#"{"type": "object", "properties": {"id": {"type": "intgr"}}}"#;
    std::fs::write(dir.join("schemas/bad.json"), bad).unwrap();
    let cfg = "models:\n  bad: { schema: schemas/bad.json, key: [id] }\ntargets:\n  - { name: t, kind: jsonl, dir: d, models: { bad: {} } }\n";
    std::fs::write(dir.join("remix.yaml"), cfg).unwrap();
    let errs = load(&dir.join("remix.yaml")).unwrap_err();
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(errs.len(), 1, "{errs}");
    assert_eq!(errs.errors[0].path, "models.bad.schema");
    let shown = errs.to_string();
    assert!(
        shown.contains("remix.yaml:2: models.bad.schema: schemas/bad.json: invalid JSON Schema"),
        "{shown}"
    );
}

#[test]
fn load_reports_unreadable_file() {
    let errs = load(Path::new("/nonexistent/remix.yaml")).unwrap_err();
    assert!(errs.to_string().contains("cannot read config file /nonexistent/remix.yaml"), "{errs}");
}

#[test]
fn routes_on_a_shared_address_must_differ() {
    let text = BASE.replacen(
        "targets:",
        "  - { name: b, kind: stripe, listen: \"127.0.0.1:9701\", path: /customers, signing_secret: s, objects: { customer: { model: customer } } }\ntargets:",
        1,
    );
    let errs = errors(&text);
    assert_eq!(errs, ["sources[1].path: path /customers on 127.0.0.1:9701 is also served by source 'hooks'"]);
    let ok = text.replacen("path: /customers", "path: /stripe", 1);
    assert!(load_text(&ok).is_ok());
}

#[test]
fn no_auth_is_refused_beyond_loopback() {
    for listen in ["127.0.0.1:9701", "127.1.2.3:9701", "localhost:9701", "[::1]:9701"] {
        let text = BASE.replacen("127.0.0.1:9701", listen, 1);
        assert!(load_text(&text).is_ok(), "{listen}: {:?}", load_text(&text).err());
    }
    let open = BASE.replacen("127.0.0.1:9701", "0.0.0.0:9701", 1);
    let errs = errors(&open);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("sources[0].auth: no auth") && errs[0].contains("0.0.0.0:9701"), "{errs:?}");
    let with_token = open.replacen("    routes:", "    auth: { bearer_token: t }\n    routes:", 1);
    assert!(load_text(&with_token).is_ok());
    let empty_token = open.replacen("    routes:", "    auth: { bearer_token: \"\" }\n    routes:", 1);
    assert_eq!(errors(&empty_token), errs);

    let admin = format!("admin: {{ listen: \"10.1.2.3:9700\" }}\n{BASE}");
    let errs = errors(&admin);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("admin.token: the admin API on 10.1.2.3:9700 is reachable"), "{errs:?}");
    let admin = admin.replacen("\" }", "\", token: t }", 1);
    assert!(load_text(&admin).is_ok());
}

#[test]
fn config_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Config>();
    assert_send_sync::<crate::models::Model>();
    assert_send_sync::<crate::mapping::Mapping>();
    assert_send_sync::<ConfigErrors>();
}
