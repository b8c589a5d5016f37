//! Relation (schema) changes while streaming: an added column that is not mapped is ignored; a dropped
//! mapped column sends the affected rows to the DLQ with an error naming the column, and replication
//! goes on for later valid rows (other tables, and the table once the column is back); a column type
//! change is followed; a truncate reaches the dataset as `{"_op":"truncate"}`.

use crate::pg_source::{dataset_state, insert_rows, pg_node, shop_server, wait_converged};
use crate::support::*;
use serde_json::{json, Value};

fn lines(node: &Node, model: &str) -> Vec<Value> {
    dataset_lines(&node.dataset_dir, model).iter().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn has_id(lines: &[Value], id: i64) -> bool {
    lines.iter().any(|l| l["id"] == id)
}

#[test]
fn relation_changes_dlq_for_dropped_mapped_columns_and_truncate_reaches_the_dataset() {
    let server = shop_server();
    insert_rows(&server, 1, 11);
    let dir = tempfile::tempdir().unwrap();
    let mut node = pg_node(dir.path(), &server);
    node.start();
    wait_converged(&node, &server);

    // An added column that no mapping reads: ignored.
    server.psql(
        "shop",
        "ALTER TABLE orders ADD COLUMN note text DEFAULT 'n';
         INSERT INTO orders VALUES (100, 1, 500, 'paid', 'hello');",
    );
    server.psql("shop", "UPDATE orders SET amount_cents = 7 WHERE id = 1");
    // Mapped columns dropped: an optional field (customers.full_name → name) and a required one
    // (orders.status → status). Rows of those tables go to the DLQ until the columns are back.
    server.psql("shop", "ALTER TABLE customers DROP COLUMN full_name; ALTER TABLE orders DROP COLUMN status");
    server.psql("shop", "INSERT INTO customers VALUES (200, 'c200@example.com', '2026-11-24 10:00:00+00')");
    server.psql("shop", "INSERT INTO orders (id, customer_id, amount_cents) VALUES (101, 1, 5)");
    server.psql("shop", "UPDATE orders SET amount_cents = 6 WHERE id = 2");
    server.psql(
        "shop",
        "ALTER TABLE customers ADD COLUMN full_name text;
         ALTER TABLE orders ADD COLUMN status text NOT NULL DEFAULT 'shipped';",
    );
    server.psql(
        "shop",
        "INSERT INTO customers VALUES (201, 'c201@example.com', '2026-11-24 10:00:00+00', 'Back')",
    );
    server.psql(
        "shop",
        "INSERT INTO orders (id, customer_id, amount_cents, status) VALUES (102, 1, 9, 'paid')",
    );
    // A type change.
    server.psql("shop", "ALTER TABLE orders ALTER COLUMN amount_cents TYPE bigint");
    server.psql(
        "shop",
        "INSERT INTO orders (id, customer_id, amount_cents, status) VALUES (103, 1, 10, 'paid')",
    );
    // Truncate both tables in one statement, then new rows.
    server.psql("shop", "TRUNCATE orders, customers");
    server.psql(
        "shop",
        "INSERT INTO customers (id, email, full_name) VALUES (300, 'c300@example.com', 'After');
         INSERT INTO orders (id, customer_id, amount_cents, status) VALUES (300, 300, 1, 'pending');",
    );

    wait_for("the rows after the truncate in the dataset", || {
        (has_id(&lines(&node, "customer"), 300) && has_id(&lines(&node, "order"), 300)).then_some(())
    });
    node.wait_caught_up("dataset");
    let customers = lines(&node, "customer");
    let orders = lines(&node, "order");

    // The unmapped column is not in the dataset; changes around it are.
    let order_100 = orders.iter().find(|l| l["id"] == 100).expect("order 100 in the dataset");
    assert_eq!(order_100, &json!({"id": 100, "customer_id": 1, "amount": 500, "status": "paid"}));
    assert!(orders.iter().any(|l| l["id"] == 1 && l["amount"] == 7), "{orders:?}");
    // The rows that lacked a mapped column are not in the dataset ...
    assert!(!has_id(&customers, 200), "{customers:?}");
    assert!(!has_id(&orders, 101), "{orders:?}");
    assert!(!orders.iter().any(|l| l["id"] == 2 && l["amount"] == 6), "{orders:?}");
    // ... but the later valid ones are, after the type change too.
    let customer_201 = customers.iter().find(|l| l["id"] == 201).expect("customer 201 in the dataset");
    assert_eq!(customer_201["name"], "Back");
    assert!(orders.iter().any(|l| l == &json!({"id": 102, "customer_id": 1, "amount": 9, "status": "paid"})));
    assert!(orders
        .iter()
        .any(|l| l == &json!({"id": 103, "customer_id": 1, "amount": 10, "status": "paid"})));
    // The truncate, as a line of its own in each model, and what follows it.
    for (model, lines) in [("customer", &customers), ("order", &orders)] {
        let at = lines.iter().position(|l| l == &json!({"_op": "truncate"}));
        let at = at.unwrap_or_else(|| panic!("no truncate line for {model}: {lines:?}"));
        assert_eq!(lines[at + 1..].len(), 1, "{model}: only the row inserted after the truncate follows it");
        let state = dataset_state(&node.dataset_dir, model);
        assert_eq!(state.keys().copied().collect::<Vec<_>>(), vec![300], "{model}");
    }
    let truncates: Vec<Value> = stdout(&node.cli(&["log", "dump", "--json"]))
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["op"] == "truncate")
        .collect();
    assert_eq!(truncates.len(), 2, "{truncates:?}");
    assert!(truncates.iter().all(|t| t.get("key").is_none() && t.get("data").is_none()), "{truncates:?}");

    // The DLQ: one entry per affected row, each naming the missing column.
    let dlq = node.cli_json(&["dlq", "list"]);
    let entries = dlq.as_array().expect("an array");
    let summary: Vec<(String, i64)> = entries
        .iter()
        .map(|e| (e["model"].as_str().unwrap().to_owned(), e["input"]["id"].as_i64().unwrap()))
        .collect();
    assert_eq!(
        summary,
        vec![("customer".to_owned(), 200), ("order".to_owned(), 101), ("order".to_owned(), 2)],
        "{dlq:#}"
    );
    for entry in entries {
        let (column, table) = if entry["model"] == "customer" {
            ("full_name", "public.customers")
        } else {
            ("status", "public.orders")
        };
        assert_eq!(entry["source"], "shop_db");
        assert!(!entry["position"].as_str().unwrap().starts_with("snapshot:"), "{entry:#}");
        let errors = entry["errors"].as_array().unwrap();
        assert!(
            errors.iter().any(|e| {
                let message = e["message"].as_str().unwrap();
                message.contains(&format!("\"{column}\"")) && message.contains(table)
            }),
            "the error names the column and the table: {entry:#}"
        );
    }
    node.stop();
    node.verify_log();
}

/// A row sent to the DLQ, then a crash before the server was told: the server sends the row again,
/// and it is dropped by its position instead of reaching the DLQ a second time.
#[test]
fn a_dead_lettered_row_is_not_dead_lettered_again_after_a_crash() {
    let server = shop_server();
    insert_rows(&server, 1, 3);
    let dir = tempfile::tempdir().unwrap();
    let mut node = pg_node(dir.path(), &server);
    node.start();
    wait_converged(&node, &server);
    server.psql("shop", "ALTER TABLE orders DROP COLUMN status");
    server.psql("shop", "INSERT INTO orders (id, customer_id, amount_cents) VALUES (101, 1, 5)");
    let position = wait_for("the row in the DLQ", || {
        let dlq = node.cli_json(&["dlq", "list"]);
        dlq.as_array()?.first().map(|e| e["position"].as_str().unwrap().to_owned())
    });
    node.kill9();
    // The server is told a position only every 10 s: it has not heard of this one yet, so it sends the
    // row again after the restart (checked, or the test would prove nothing).
    let lsn = |text: &str| {
        let (high, low) = text.split_once('/').unwrap();
        (u64::from_str_radix(high, 16).unwrap() << 32) | u64::from_str_radix(low, 16).unwrap()
    };
    let confirmed = server
        .psql("shop", "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'remix_shop'");
    let dead_lettered_at = lsn(position.split_once(':').unwrap().0);
    assert!(lsn(&confirmed) < dead_lettered_at, "confirmed {confirmed}, dead letter at {position}");

    server.psql("shop", "ALTER TABLE orders ADD COLUMN status text NOT NULL DEFAULT 'shipped'");
    server.psql(
        "shop",
        "INSERT INTO orders (id, customer_id, amount_cents, status) VALUES (102, 1, 9, 'paid')",
    );
    node.start();
    wait_for("order 102 in the dataset", || has_id(&lines(&node, "order"), 102).then_some(()));
    let dlq = node.cli_json(&["dlq", "list"]);
    let positions: Vec<&str> =
        dlq.as_array().unwrap().iter().map(|e| e["position"].as_str().unwrap()).collect();
    assert_eq!(positions, vec![position.as_str()], "{dlq:#}");
    node.stop();
    node.verify_log();
}
