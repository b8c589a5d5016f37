use super::*;
use serde_json::json;

fn compile(fields: Value) -> Mapping {
    Mapping::compile(&fields).unwrap_or_else(|e| panic!("compile {fields}: {e:?}"))
}

fn apply(fields: Value, input: Value) -> Result<Value, Vec<String>> {
    compile(fields)
        .apply(&input)
        .map(Value::Object)
        .map_err(|errs| errs.iter().map(ToString::to_string).collect())
}

#[test]
fn structural_rules() {
    let cases: Vec<(&str, Value, Value, Value)> = vec![
        ("rename", json!({"full_name": "name"}), json!({"name": "Ada"}), json!({"full_name": "Ada"})),
        ("unmapped dropped", json!({"id": "id"}), json!({"id": 1, "x": 2}), json!({"id": 1})),
        (
            "nested path",
            json!({"email": "contact.email"}),
            json!({"contact": {"email": "a@b"}}),
            json!({"email": "a@b"}),
        ),
        (
            "array index",
            json!({"sku": "items.1.sku"}),
            json!({"items": [{"sku": "a"}, {"sku": "b"}]}),
            json!({"sku": "b"}),
        ),
        ("numeric key on object", json!({"v": "m.0"}), json!({"m": {"0": "zero"}}), json!({"v": "zero"})),
        ("missing is absent", json!({"a": "nope"}), json!({"x": 1}), json!({})),
        ("through non-container", json!({"a": "x.y"}), json!({"x": "str"}), json!({})),
        ("through null", json!({"a": "x.y"}), json!({"x": null}), json!({})),
        ("index out of range", json!({"a": "x.5"}), json!({"x": [1]}), json!({})),
        ("null kept", json!({"a": "x"}), json!({"x": null}), json!({"a": null})),
        (
            "null not cast",
            json!({"a": {"from": "x", "type": "integer"}}),
            json!({"x": null}),
            json!({"a": null}),
        ),
        (
            "null not defaulted",
            json!({"a": {"from": "x", "default": 5}}),
            json!({"x": null}),
            json!({"a": null}),
        ),
        ("default when missing", json!({"a": {"from": "x", "default": 5}}), json!({}), json!({"a": 5})),
        (
            "default cast",
            json!({"a": {"from": "x", "type": "integer", "default": "5"}}),
            json!({}),
            json!({"a": 5}),
        ),
        ("null default", json!({"a": {"from": "x", "default": null}}), json!({}), json!({"a": null})),
        ("const", json!({"src": {"const": "shop"}}), json!({}), json!({"src": "shop"})),
        ("const object", json!({"m": {"const": {"k": [1]}}}), json!({"m": 1}), json!({"m": {"k": [1]}})),
        ("same source twice", json!({"a": "x", "b": "x"}), json!({"x": 1}), json!({"a": 1, "b": 1})),
        ("object value", json!({"c": "contact"}), json!({"contact": {"e": 1}}), json!({"c": {"e": 1}})),
        ("identity", json!({}), json!({"a": 1, "b": [2]}), json!({"a": 1, "b": [2]})),
        ("identity from null", Value::Null, json!({"a": 1}), json!({"a": 1})),
    ];
    for (name, fields, input, want) in cases {
        assert_eq!(apply(fields, input), Ok(want), "{name}");
    }
}

fn cast(t: &str, v: Value) -> Result<Value, String> {
    Cast::parse(t).unwrap().apply(&v).map_err(|e| e.0)
}

#[test]
fn casts_that_succeed() {
    let cases: Vec<(&str, Value, Value)> = vec![
        ("integer", json!(7), json!(7)),
        ("integer", json!(-7), json!(-7)),
        ("integer", json!(u64::MAX), json!(u64::MAX)),
        ("integer", json!(7.0), json!(7)),
        ("integer", json!("42"), json!(42)),
        ("integer", json!("-42"), json!(-42)),
        ("integer", json!("18446744073709551615"), json!(u64::MAX)),
        ("number", json!(1.5), json!(1.5)),
        ("number", json!(3), json!(3)),
        ("number", json!("1.25"), json!(1.25)),
        ("number", json!("12"), json!(12)),
        ("number", json!("-1e3"), json!(-1000.0)),
        ("string", json!("s"), json!("s")),
        ("string", json!(12), json!("12")),
        ("string", json!(1.5), json!("1.5")),
        ("string", json!(true), json!("true")),
        ("boolean", json!(true), json!(true)),
        ("boolean", json!("true"), json!(true)),
        ("boolean", json!("FALSE"), json!(false)),
        ("boolean", json!("t"), json!(true)),
        ("boolean", json!("f"), json!(false)),
        ("boolean", json!("1"), json!(true)),
        ("boolean", json!("0"), json!(false)),
        ("boolean", json!(1), json!(true)),
        ("boolean", json!(0), json!(false)),
        ("timestamp", json!("2026-11-24T10:00:00Z"), json!("2026-11-24T10:00:00.000Z")),
        ("timestamp", json!("2026-11-24T11:00:00.25+01:00"), json!("2026-11-24T10:00:00.250Z")),
        ("timestamp", json!("2026-11-24 10:00:00.123456+00"), json!("2026-11-24T10:00:00.123Z")),
        ("timestamp", json!(1_795_514_400), json!("2026-11-24T10:00:00.000Z")),
        ("timestamp", json!(1_795_514_400_123_i64), json!("2026-11-24T10:00:00.123Z")),
        ("timestamp", json!(1_795_514_400.5), json!("2026-11-24T10:00:00.500Z")),
        ("timestamp", json!(0), json!("1970-01-01T00:00:00.000Z")),
        ("date", json!("2024-02-29"), json!("2024-02-29")),
        ("date", json!("2026-11-24T23:30:00-02:00"), json!("2026-11-25")),
        ("date", json!(1_795_514_400), json!("2026-11-24")),
        ("json", json!("{\"a\":[1,2]}"), json!({"a": [1, 2]})),
        ("json", json!("\"s\""), json!("s")),
        ("json", json!({"a": 1}), json!({"a": 1})),
        ("json", json!([1]), json!([1])),
    ];
    for (t, input, want) in cases {
        assert_eq!(cast(t, input.clone()), Ok(want), "{t} of {input}");
    }
}

#[test]
fn casts_that_fail() {
    let cases: Vec<(&str, Value, &str)> = vec![
        ("integer", json!("x"), "cannot cast string \"x\" to integer"),
        ("integer", json!("1.5"), "cannot cast string \"1.5\" to integer"),
        ("integer", json!(" 1"), "cannot cast string \" 1\" to integer"),
        ("integer", json!("1e3"), "cannot cast string \"1e3\" to integer"),
        ("integer", json!(1.5), "cannot cast number 1.5 to integer: not an integral value"),
        ("integer", json!(1e300), "cannot cast number 1e+300 to integer: too large to be exact"),
        ("integer", json!(true), "cannot cast boolean true to integer"),
        ("integer", json!([1]), "cannot cast array [1] to integer"),
        ("number", json!("abc"), "cannot cast string \"abc\" to number"),
        ("number", json!("NaN"), "cannot cast string \"NaN\" to number"),
        ("number", json!("inf"), "cannot cast string \"inf\" to number"),
        ("number", json!(false), "cannot cast boolean false to number"),
        ("string", json!({"a": 1}), "cannot cast object {\"a\":1} to string"),
        ("boolean", json!("yes"), "cannot cast string \"yes\" to boolean"),
        ("boolean", json!(2), "cannot cast number 2 to boolean"),
        (
            "timestamp",
            json!("2026-11-24"),
            "cannot cast string \"2026-11-24\" to timestamp: expected an RFC 3339",
        ),
        (
            "timestamp",
            json!("2026-02-30T00:00:00Z"),
            "cannot cast string \"2026-02-30T00:00:00Z\" to timestamp: day 30",
        ),
        ("timestamp", json!(true), "cannot cast boolean true to timestamp"),
        ("timestamp", json!(1e30), "cannot cast number 1e+30 to timestamp: epoch value is out of range"),
        ("date", json!("2023-02-29"), "cannot cast string \"2023-02-29\" to date: day 29 is out of range"),
        ("date", json!("24-11-2026"), "cannot cast string \"24-11-2026\" to date: expected YYYY-MM-DD"),
        ("json", json!("{oops"), "cannot cast string \"{oops\" to json: invalid JSON text"),
    ];
    for (t, input, want) in cases {
        let got = cast(t, input.clone()).expect_err(&format!("{t} of {input} should fail"));
        assert!(got.starts_with(want), "{t} of {input}: got {got:?}, want prefix {want:?}");
    }
}

#[test]
fn apply_reports_every_error_with_field_names() {
    let fields = json!({
        "n": {"from": "count", "type": "integer"},
        "ok": {"from": "flag", "type": "boolean"},
        "at": {"from": "when", "type": "timestamp"},
        "id": "id",
    });
    let input = json!({"count": "x", "flag": "maybe", "when": "2026-11-24T10:00:00Z", "id": 1});
    let errs = apply(fields, input).unwrap_err();
    assert_eq!(
        errs,
        vec![
            "field 'n': cannot cast string \"x\" to integer".to_owned(),
            "field 'ok': cannot cast string \"maybe\" to boolean".to_owned(),
        ]
    );
}

#[test]
fn apply_refuses_non_objects() {
    let errs = apply(json!({"a": "a"}), json!([1])).unwrap_err();
    assert_eq!(errs, vec!["field '': expected a JSON object, got array".to_owned()]);
    assert!(apply(json!({}), json!("s")).is_err());
}

#[test]
fn compile_reports_every_error() {
    let fields = json!({
        "a": "x..y",
        "b": 5,
        "c": {"from": "x", "type": "intger"},
        "d": {"const": 1, "from": "x"},
        "e": {"type": "integer"},
        "f": {"from": "x", "type": "integer", "default": "nope"},
        "g": {"from": "x", "bogus": 1},
        "": "x",
        "ok": "fine",
    });
    let errs = Mapping::compile(&fields).unwrap_err();
    let mut text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    text.sort_unstable();
    let want = [
        "field '': field name must not be empty",
        "field 'a': invalid path 'x..y': empty segment",
        "field 'b': expected a path string, {from, type, default} or {const}, got number",
        "field 'c': unknown type 'intger' (expected integer, number, string, boolean, timestamp, date, json)",
        "field 'd': 'const' cannot be combined with from, type or default",
        "field 'e': missing 'from' (or use {const: value})",
        "field 'f': default: cannot cast string \"nope\" to integer",
        "field 'g': unknown key 'bogus' (expected from, type, default or const)",
    ];
    assert_eq!(text, want);
    assert!(Mapping::compile(&json!(["a"])).is_err());
}

#[test]
fn introspection_and_partials() {
    let m =
        compile(json!({"order_id": "id", "total": {"from": "amount", "default": 0}, "src": {"const": "x"}}));
    let mut outputs: Vec<&str> = m.output_fields().collect();
    outputs.sort_unstable();
    assert_eq!(outputs, ["order_id", "src", "total"]);
    let roots: Vec<&str> = m.source_paths().map(|(_, p)| p.root()).collect();
    assert_eq!(roots, ["id", "amount"]);
    assert_eq!(m.map_field_names(&["amount".into()]), ["total"]);
    assert_eq!(Mapping::identity().map_field_names(&["a".into()]), ["a"]);

    let partial = m.apply_partial(&json!({"id": 7}), &["amount".into()]).unwrap();
    assert_eq!(Value::Object(partial), json!({"order_id": 7, "src": "x"}));
    let full = m.apply(&json!({"id": 7})).unwrap();
    assert_eq!(Value::Object(full), json!({"order_id": 7, "total": 0, "src": "x"}));
    let key = m.apply_key(&json!({"id": 7})).unwrap();
    assert_eq!(Value::Object(key), json!({"order_id": 7}));
}

#[test]
fn error_display() {
    let e = MappingError { field: "n".into(), message: "cannot cast string \"x\" to integer".into() };
    assert_eq!(e.to_string(), "field 'n': cannot cast string \"x\" to integer");
}
