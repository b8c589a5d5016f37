//! Validation of `sources`: postgres, webhook and stripe.

use super::build::{
    self, check_dsn, check_listen, check_url, choice, nonempty, required, required_str, Models,
};
use super::path::KeyPath;
use super::raw::{
    as_mapping, check_keys, deser, entries, section, Cx, RawPgSource, RawSourceBinding, RawSourceCommon,
    RawStripeSource, RawWebhookAuth, RawWebhookSource, Section,
};
use super::types::*;
use serde_norway::{Mapping, Value};
use std::collections::BTreeMap;

pub(crate) fn build_all(
    cx: &mut Cx<'_>,
    models: &Models,
    items: Vec<Value>,
    p: &KeyPath,
) -> Vec<SourceConfig> {
    let built: Vec<(usize, SourceConfig)> = items
        .iter()
        .enumerate()
        .filter_map(|(i, v)| source(cx, models, v, &p.idx(i)).map(|s| (i, s)))
        .collect();
    build::check_names(cx, built.iter().map(|(i, s)| (s.name(), p.idx(*i).key("name"))));
    built.into_iter().map(|(_, s)| s).collect()
}

/// The allowed keys of one kind: the common ones and the kind's own.
pub(crate) fn keys_of<T: Section>() -> Vec<&'static str> {
    RawSourceCommon::KEYS.iter().chain(T::KEYS).copied().collect()
}

fn source(cx: &mut Cx<'_>, models: &Models, v: &Value, p: &KeyPath) -> Option<SourceConfig> {
    let map = as_mapping(cx, v, p)?;
    let common: RawSourceCommon = deser(cx, &map, p);
    let name = required_str(cx, common.name, &p.key("name")).unwrap_or_default();
    let kind = required(cx, common.kind, &p.key("kind"))?;
    match kind.as_str() {
        "postgres" => postgres(cx, models, &map, p, name).map(SourceConfig::Postgres),
        "webhook" => webhook(cx, models, &map, p, name).map(SourceConfig::Webhook),
        "stripe" => stripe(cx, models, &map, p, name).map(SourceConfig::Stripe),
        other => {
            cx.err(
                &p.key("kind"),
                format!("unknown source kind '{other}' (expected postgres, webhook or stripe)"),
            );
            None
        }
    }
}

fn postgres(
    cx: &mut Cx<'_>,
    models: &Models,
    map: &Mapping,
    p: &KeyPath,
    name: String,
) -> Option<PostgresSource> {
    let map = check_keys(cx, map, p, &keys_of::<RawPgSource>());
    let raw: RawPgSource = deser(cx, &map, p);
    let dsn = required_str(cx, raw.dsn, &p.key("dsn"));
    if let Some(dsn) = &dsn {
        check_dsn(cx, dsn, &p.key("dsn"));
    }
    let slot =
        nonempty(cx, raw.slot, &p.key("slot")).unwrap_or_else(|| format!("remix_{}", name.replace('-', "_")));
    check_pg_name(cx, &slot, &p.key("slot"));
    let publication = nonempty(cx, raw.publication, &p.key("publication")).unwrap_or_else(|| slot.clone());
    check_pg_name(cx, &publication, &p.key("publication"));
    let modes = [("initial", SnapshotMode::Initial), ("never", SnapshotMode::Never)];
    let snapshot = choice(cx, raw.snapshot, &p.key("snapshot"), &modes);
    let tp = p.key("tables");
    let tables = required(cx, raw.tables, &tp).map(|t| tables(cx, models, &t, &tp)).unwrap_or_default();
    Some(PostgresSource { name, dsn: dsn?, slot, publication, snapshot: snapshot?, tables })
}

/// Slot and publication names: `[a-z0-9_]`, at most 63 bytes.
fn check_pg_name(cx: &mut Cx<'_>, s: &str, path: &KeyPath) {
    let ok = s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if s.is_empty() || s.len() > 63 || !ok {
        cx.err(path, format!("invalid name '{s}' (use 1-63 of a-z, 0-9 and '_')"));
    }
}

fn tables(cx: &mut Cx<'_>, models: &Models, map: &Mapping, p: &KeyPath) -> Vec<TableBinding> {
    let mut out: Vec<TableBinding> = Vec::new();
    if map.is_empty() {
        cx.err(p, "a postgres source needs at least one table");
    }
    for (key, v) in entries(cx, map, p) {
        let tp = p.key(&key);
        let (Some((schema, table)), Some(binding)) =
            (build::table_name(cx, &key, &tp), binding(cx, models, &v, &tp))
        else {
            continue;
        };
        if out.iter().any(|t| t.schema == schema && t.table == table) {
            cx.err(&tp, format!("table {schema}.{table} is listed twice"));
        }
        out.push(TableBinding { schema, table, binding });
    }
    out
}

/// One `{model, fields}` entry of tables/routes/objects.
fn binding(cx: &mut Cx<'_>, models: &Models, v: &Value, p: &KeyPath) -> Option<InputBinding> {
    let raw: RawSourceBinding = section(cx, v, p)?;
    let model = required_str(cx, raw.model, &p.key("model"))?;
    let found = models.get(cx, &model, &p.key("model"));
    let fp = p.key("fields");
    let mapping = build::mapping(cx, raw.fields.as_ref(), &fp)?;
    if let Some(Some(m)) = found {
        build::check_input(cx, m, &mapping, &fp);
    }
    found.map(|_| InputBinding { model, mapping })
}

fn bindings(
    cx: &mut Cx<'_>,
    models: &Models,
    map: Option<Mapping>,
    p: &KeyPath,
    check_key: &dyn Fn(&str) -> Result<(), String>,
) -> BTreeMap<String, InputBinding> {
    let Some(map) = required(cx, map, p) else { return BTreeMap::new() };
    if map.is_empty() {
        cx.err(p, "needs at least one entry");
    }
    let mut out = BTreeMap::new();
    for (key, v) in entries(cx, &map, p) {
        let kp = p.key(&key);
        if let Err(m) = check_key(&key) {
            cx.err(&kp, m);
        }
        if let Some(b) = binding(cx, models, &v, &kp) {
            out.insert(key, b);
        }
    }
    out
}

fn check_route(path: &str) -> Result<(), String> {
    let ok = path.starts_with('/') && !path.contains(['?', '#']) && !path.contains(char::is_whitespace);
    if ok {
        Ok(())
    } else {
        Err(format!("invalid route '{path}' (expected a path like /customers)"))
    }
}

fn webhook(
    cx: &mut Cx<'_>,
    models: &Models,
    map: &Mapping,
    p: &KeyPath,
    name: String,
) -> Option<WebhookSource> {
    let map = check_keys(cx, map, p, &keys_of::<RawWebhookSource>());
    let raw: RawWebhookSource = deser(cx, &map, p);
    let listen = required_str(cx, raw.listen, &p.key("listen"));
    let listen_ok = listen.as_ref().is_some_and(|l| check_listen(cx, l, &p.key("listen")));
    let auth = auth(cx, raw.auth.as_ref(), &p.key("auth"));
    let bp = p.key("body_bytes_max");
    let body_bytes_max =
        raw.body_bytes_max.and_then(|v| build::size(cx, &v, &bp)).unwrap_or(DEFAULT_BODY_BYTES_MAX);
    if body_bytes_max == 0 {
        cx.err(&bp, "must be greater than 0");
    }
    let idempotency_field = nonempty(cx, raw.idempotency_field, &p.key("idempotency_field"));
    let delete_field = nonempty(cx, raw.delete_field, &p.key("delete_field"));
    let routes = bindings(cx, models, raw.routes, &p.key("routes"), &check_route);
    let listen = listen.filter(|_| listen_ok)?;
    if matches!(auth, Some(WebhookAuth::None)) && !build::is_loopback(&listen) {
        cx.err(
            &p.key("auth"),
            format!(
                "no auth (an empty or missing bearer_token) is allowed only on a loopback address, and \
                 {listen} is reachable from other hosts: set bearer_token or hmac_secret, or listen on \
                 127.0.0.1"
            ),
        );
    }
    Some(WebhookSource { name, listen, auth: auth?, body_bytes_max, idempotency_field, delete_field, routes })
}

fn auth(cx: &mut Cx<'_>, v: Option<&Value>, p: &KeyPath) -> Option<WebhookAuth> {
    let Some(v) = v else { return Some(WebhookAuth::None) };
    let raw: RawWebhookAuth = section(cx, v, p)?;
    let token = raw.bearer_token.filter(|t| !t.is_empty());
    let secret = raw.hmac_secret.filter(|t| !t.is_empty());
    match (token, secret) {
        (Some(_), Some(_)) => {
            cx.err(p, "set either bearer_token or hmac_secret, not both");
            None
        }
        (Some(token), None) => {
            if raw.hmac_header.is_some() {
                cx.err(&p.key("hmac_header"), "hmac_header needs hmac_secret");
            }
            Some(WebhookAuth::Bearer { token })
        }
        (None, Some(secret)) => {
            let header = nonempty(cx, raw.hmac_header, &p.key("hmac_header"));
            Some(WebhookAuth::Hmac { secret, header: header.unwrap_or_else(|| DEFAULT_HMAC_HEADER.into()) })
        }
        (None, None) => Some(WebhookAuth::None),
    }
}

fn stripe(
    cx: &mut Cx<'_>,
    models: &Models,
    map: &Mapping,
    p: &KeyPath,
    name: String,
) -> Option<StripeSource> {
    let map = check_keys(cx, map, p, &keys_of::<RawStripeSource>());
    let raw: RawStripeSource = deser(cx, &map, p);
    let listen = required_str(cx, raw.listen, &p.key("listen"));
    let listen_ok = listen.as_ref().is_some_and(|l| check_listen(cx, l, &p.key("listen")));
    let path = raw.path.unwrap_or_else(|| DEFAULT_STRIPE_PATH.into());
    let path_ok = check_route(&path).map_err(|m| cx.err(&p.key("path"), m)).is_ok();
    let signing_secret = required_str(cx, raw.signing_secret, &p.key("signing_secret"));
    let api_key = nonempty(cx, raw.api_key, &p.key("api_key"));
    let api_base = raw.api_base.unwrap_or_else(|| DEFAULT_STRIPE_API_BASE.into());
    check_url(cx, &api_base, &p.key("api_base"));
    let tolerance = match raw.tolerance {
        Some(t) => build::duration(cx, &t, &p.key("tolerance")),
        None => Some(DEFAULT_STRIPE_TOLERANCE),
    };
    let objects = bindings(cx, models, raw.objects, &p.key("objects"), &build::check_stripe_object);
    let listen = listen.filter(|_| listen_ok && path_ok)?;
    let (signing_secret, tolerance) = (signing_secret?, tolerance?);
    Some(StripeSource { name, listen, path, signing_secret, api_key, api_base, tolerance, objects })
}
