//! `vigil validate` on enrichment: reference files and derive rules, every mistake at once.

fn compile(
    text: &str,
    dir: &std::path::Path,
) -> Result<vigil_actors::spec::JobSpec, vigil_topology::Diagnostics> {
    let dir = dir.display().to_string();
    let env = move |name: &str| (name == "DIR").then(|| dir.clone());
    vigil_topology::compile_str(text, "t.toml", &env)
}

const TOPOLOGY: &str = r#"[job]
name = "t"

[sources.input]
kind = "stdin"

[reference.brands]
path = "${DIR}/brands.csv"
key = "brand"

[reference.zips]
path = "${DIR}/zips.json"
key = "zip"

[reference.gone]
path = "${DIR}/missing.csv"
key = "id"

[events.ORDER_CREATED]
key = "order_number"
time = "occurred_at"

[events.ORDER_CREATED.derive]
segment = "brands[event.brand].segment"
region = "zips[event.zip].region"
bad = "event.amount >"
typo = "brandz[event.brand].margin"
count = 3

[processes.revenue]
template = "window"
name = "REVENUE"
events = ["ORDER_CREATED"]
group_by = ["segment", "region"]
size = "1h"

[sinks.out]
kind = "stdout"
inputs = ["revenue"]
"#;

#[test]
fn every_mistake_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("brands.csv"),
        "brand,segment\nacme,premium\nzeta,mass\nacme,mass\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("zips.json"),
        "[\n  {\"zip\": \"10115\", \"region\": \"east\"},\n  {\"zip\": \"80331\" \"region\": \"south\"}\n]\n",
    )
    .unwrap();
    let errors = compile(TOPOLOGY, dir.path()).unwrap_err();
    let found: Vec<(usize, usize, String)> = errors
        .errors
        .iter()
        .map(|e| {
            // CEL's list of expected tokens is the crate's business, not ours.
            let message = e.message.split(" expecting").next().unwrap_or_default();
            (e.line, e.column, message.to_owned())
        })
        .collect();
    let file = |name: &str| dir.path().join(name).display().to_string();
    assert_eq!(
        found,
        [
            (
                8,
                8,
                format!(
                    "reference `brands`: {}:4: duplicate key `acme` (first on line 2)",
                    file("brands.csv")
                )
            ),
            (
                12,
                8,
                format!(
                    "reference `zips`: {}:3: invalid JSON: expected `,` or `}}` at line 3 column 19",
                    file("zips.json")
                )
            ),
            (
                16,
                8,
                format!(
                    "reference `gone`: {}: cannot read it: No such file or directory (os error 2)",
                    file("missing.csv")
                )
            ),
            (
                26,
                22,
                "derived field `bad`: syntax error: mismatched input '<EOF>'".to_owned()
            ),
            (
                27,
                8,
                "derived field `typo` uses `brandz`, which is neither `event` nor a reference table".to_owned()
            ),
            (
                28,
                9,
                "expected a CEL expression (a string) for derived field `count`, found an integer"
                    .to_owned()
            ),
        ],
        "{errors}"
    );
    assert_eq!(
        errors.errors[4].hint.as_deref(),
        Some("did you mean `brands`?")
    );
}

#[test]
fn derived_fields_can_be_grouped_by_and_are_kept_in_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("brands.csv"),
        "brand,segment\nacme,premium\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("zips.json"),
        "[{\"zip\": 10115, \"region\": \"east\"}]",
    )
    .unwrap();
    let text = TOPOLOGY
        .replace(
            "[reference.gone]\npath = \"${DIR}/missing.csv\"\nkey = \"id\"\n",
            "",
        )
        .replace("bad = \"event.amount >\"\n", "")
        .replace("typo = \"brandz[event.brand].margin\"\n", "")
        .replace("count = 3\n", "");
    let job = compile(&text, dir.path()).unwrap_or_else(|d| panic!("{d}"));
    let derive: Vec<&str> = job.event_types[0]
        .derive
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    assert_eq!(derive, ["segment", "region"]);
    assert_eq!(job.reference.len(), 2);
}
