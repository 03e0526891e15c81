//! Alert state in TOML: an SLA's `severity`, `resolve` and `escalate` levels, and their errors.

use vigil_actors::spec::{SlaSpec, TemplateSpec};
use vigil_topology::{compile_str, Diagnostics};

const BASE: &str = r#"
[job]
name = "alerts"

[sources.input]
kind = "stdin"

[events.ORDER_CREATED]
key = "order_number"
time = "occurred_at"

[events.PARCEL_SHIPPED]
key = "order_number"
time = "occurred_at"

[processes.order]
start = "ORDER_CREATED"

[[processes.order.steps]]
name = "shipped"
on = "PARCEL_SHIPPED"

[sinks.alerts]
kind = "stdout"
inputs = ["order"]

[[processes.order.slas]]
name = "SLA_BREACHED"
step = "shipped"
within = "24h"
"#;

fn slas(extra: &str) -> Vec<SlaSpec> {
    let text = format!("{BASE}{extra}");
    let job = compile_str(&text, "topology.toml", &|_| None).unwrap_or_else(|d| panic!("{d}"));
    let TemplateSpec::Process(order) = &job.processes[0].template else {
        panic!("a process template")
    };
    order.slas.clone()
}

fn errors(extra: &str) -> Diagnostics {
    let text = format!("{BASE}{extra}");
    compile_str(&text, "topology.toml", &|_| None).expect_err("mistakes")
}

/// The line of `needle` in BASE + extra (1-based).
fn line(extra: &str, needle: &str) -> usize {
    format!("{BASE}{extra}")
        .lines()
        .position(|l| l.starts_with(needle))
        .expect("line")
        + 1
}

#[test]
fn without_alert_options_an_sla_neither_escalates_nor_resolves() {
    let sla = &slas("")[0];
    assert_eq!(sla.severity, None);
    assert!(!sla.resolve && sla.escalate.is_empty());
}

#[test]
fn severity_resolve_and_escalation_levels_inline_or_as_tables() {
    let inline = r#"severity = "warning"
resolve = true
escalate = [{ after = "48h", severity = "critical", name = "SLA_ESCALATED" }, { after = "3d" }]
"#;
    let sla = &slas(inline)[0];
    assert_eq!(sla.severity.as_deref(), Some("warning"));
    assert!(sla.resolve);
    let levels: Vec<_> = sla
        .escalate
        .iter()
        .map(|l| (l.name.as_str(), l.after, l.severity.as_deref()))
        .collect();
    assert_eq!(
        levels,
        [
            ("SLA_ESCALATED", 48 * 3_600_000, Some("critical")),
            ("SLA_BREACHED", 72 * 3_600_000, None), // the SLA's name by default
        ]
    );

    let tables = r#"resolve = true

[[processes.order.slas.escalate]]
after = "48h"
severity = "critical"
"#;
    let sla = &slas(tables)[0];
    assert_eq!(sla.escalate.len(), 1);
    assert_eq!(sla.escalate[0].name, "SLA_BREACHED");
}

#[test]
fn every_alert_option_mistake_is_reported_at_its_place() {
    let extra = r#"resolve = "yes"
severity = ""
escalate = [{ after = "12h" }, { after = "3d", severty = "critical" }, { after = "2d" }, { severity = "x" }, { after = "4d", name = "NOT OK" }]
"#;
    let errors = errors(extra);
    let escalate = line(extra, "escalate");
    let got: Vec<_> = errors
        .errors
        .iter()
        .map(|e| (e.line, e.column, e.message.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (
                line(extra, "resolve"),
                11,
                "expected `true` or `false` for `resolve`, found a string"
            ),
            (line(extra, "severity"), 12, "`severity` must not be empty"),
            (
                escalate,
                13,
                "an escalation must come after `within` (1d), not at 12h"
            ),
            (
                escalate,
                48,
                "unknown field `severty` in [[processes.order.slas.escalate]]"
            ),
            (
                escalate,
                72,
                "an escalation must come after the previous level (3d), not at 2d"
            ),
            (
                escalate,
                90,
                "missing field `after` in [[processes.order.slas.escalate]]"
            ),
            (escalate, 133, "invalid alert name `NOT OK`"),
        ],
        "{errors}"
    );
    assert_eq!(
        errors.errors[0].hint.as_deref(),
        Some("write `resolve = true` or `resolve = false`, without quotes")
    );
    assert_eq!(
        errors.errors[3].hint.as_deref(),
        Some("did you mean `severity`?")
    );
}
