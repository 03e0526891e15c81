//! `vigil validate` on the CEP templates: structure, CEL conditions and references, each at
//! its place in the file.

const HEAD: &str = r#"
[job]
name = "p"

[sources.input]
kind = "stdin"

[events.ORDER_CREATED]
key = "order_number"
time = "occurred_at"
fields = { parcels = "integer", customer_id = "string" }

[events.PARCEL_SHIPPED]
key = "order_number"
time = "occurred_at"
fields = { parcel_id = "string" }

[sinks.out]
kind = "stdout"
inputs = ["shipping"]
"#;

fn errors(body: &str) -> Vec<(String, usize, usize, Option<String>)> {
    let text = format!("{HEAD}{body}");
    let no_env = |_: &str| None;
    match vigil_topology::compile_str(&text, "t.toml", &no_env) {
        Ok(_) => Vec::new(),
        Err(d) => d
            .errors
            .into_iter()
            .map(|e| (e.message, e.line, e.column, e.hint))
            .collect(),
    }
}

#[test]
fn a_valid_pattern_compiles() {
    let body = r#"
[processes.shipping]
template = "pattern"
within = "24h"
timeout = "SHIPPING_TIMEOUT"

[[processes.shipping.steps]]
name = "created"
on = "ORDER_CREATED"

[[processes.shipping.steps]]
name = "shipped"
on = "PARCEL_SHIPPED"
times_from = "created.parcels"
where = "event.parcel_id != ''"
contiguity = "followed_by"
"#;
    assert_eq!(errors(body), vec![]);
}

#[test]
fn every_mistake_is_reported_at_its_place() {
    let body = r#"
[processes.shipping]
template = "pattern"
within = "24h"
skip = "skip_past"

[[processes.shipping.steps]]
name = "created"
on = "ORDER_CREATED"
occurs = "optional"

[[processes.shipping.steps]]
name = "shipped"
on = "PARCEL_SHIPPED"
where = "event.parcel_id == shiped.parcel_id"
times_from = "created.parcel"

[[processes.shipping.steps]]
name = "late"
on = "PARCEL_SHIPPED"
where = "event.x >"
"#;
    let errors = errors(body);
    let found: Vec<(&str, usize, usize)> = errors
        .iter()
        .map(|e| (&e.0[..e.0.len().min(60)], e.1, e.2))
        .collect();
    assert_eq!(
        found,
        [
            ("unknown skip strategy `skip_past`", 25, 8),
            ("the first step must take an event", 30, 10),
            (
                "the condition refers to `shiped`, which is not `event` or an",
                35,
                9
            ),
            (
                "`times_from` names field `parcel`, which the start event `OR",
                36,
                14
            ),
            // At the end of `event.x >`, where an operand is missing.
            (
                "invalid condition: syntax error: mismatched input '<EOF>' ex",
                41,
                19
            ),
        ],
        "{errors:#?}"
    );
    let hint = errors[0].3.as_deref().unwrap();
    assert!(hint.contains("skip_past_last_event"), "{hint}");
}

#[test]
fn fraud_and_contact_check_their_rules() {
    let body = r#"
[processes.shipping]
template = "fraud"

[processes.contact]
template = "customer_contact"

[processes.contact.delivery_late]
within = "2d"
parcel = "parcel_idd"
treshold = 3
"#;
    let errors = errors(body);
    let messages: Vec<&str> = errors.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(
        messages,
        [
            "process `shipping` (template `fraud`) has no rule",
            "unknown event type `PARCEL_DELIVERED`",
            "`parcel` names field `parcel_idd`, which the event `PARCEL_SHIPPED` does not declare",
            "unknown field `treshold` in [processes.contact.delivery_late]",
        ][..],
        "{errors:#?}"
    );
}
