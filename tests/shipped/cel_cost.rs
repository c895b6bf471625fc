//! Every CEL rule of every generated CRD compiles, uses only what a CRD rule may
//! (`self`, `oldSelf`), and stays within the API server's cost budget, estimated
//! against the schema it sits on (kube-cel's static analysis): an API server
//! 1.25+ would otherwise refuse the whole CRD at install.

use kube::core::cel::{ScopeContext, WarningKind, analyze_rule, compile_schema};
use serde_json::Value;

/// Every schema node that carries `x-kubernetes-validations`, with its path.
fn nodes_with_rules<'a>(node: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    let Some(obj) = node.as_object() else {
        return;
    };
    if obj.contains_key("x-kubernetes-validations") {
        out.push((path.clone(), node));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            nodes_with_rules(child, format!("{path}.{name}"), out);
        }
    }
    for key in ["items", "additionalProperties"] {
        if let Some(child) = obj.get(key) {
            nodes_with_rules(child, format!("{path}.{key}"), out);
        }
    }
}

/// Whether the variable a scope warning names is one the rule binds itself
/// (`all`, `exists`, `exists_one`, `map`, `filter`: `(name,`).
fn bound_by_a_macro(rule: &str, message: &str) -> bool {
    let name = message.split('\'').nth(1).unwrap_or_default();
    !name.is_empty() && rule.contains(&format!("({name},"))
}

#[test]
fn the_analysis_finds_a_rule_over_budget_and_a_variable_out_of_scope() {
    // Unbounded: every pair of items of a list with no maxItems.
    let schema = serde_json::json!({"type": "array", "items": {"type": "string"}});
    let compiled = compile_schema(&schema);
    let warnings = analyze_rule(
        "self.all(x, self.all(y, x == y))",
        &compiled,
        ScopeContext::CrdValidation,
    );
    assert!(
        warnings.iter().any(|w| w.kind == WarningKind::CostExceeded),
        "{warnings:?}"
    );
    let warnings = analyze_rule(
        "object.spec == self",
        &compiled,
        ScopeContext::CrdValidation,
    );
    assert!(
        warnings.iter().any(|w| w.kind == WarningKind::WrongScope
            && !bound_by_a_macro("object.spec == self", &w.message)),
        "{warnings:?}"
    );
}

#[test]
fn every_cel_rule_compiles_and_is_within_the_cost_budget() {
    let mut rules = 0;
    let mut problems = Vec::new();
    for (file, text) in amperity_operator::crds() {
        let crd: Value = serde_norway::from_str(&text).expect("a generated CRD is YAML");
        for version in crd["spec"]["versions"].as_array().expect("versions") {
            let schema = &version["schema"]["openAPIV3Schema"];
            let mut nodes = Vec::new();
            nodes_with_rules(schema, "openAPIV3Schema".into(), &mut nodes);
            for (path, node) in nodes {
                let compiled = compile_schema(node);
                for result in &compiled.validations {
                    if let Err(e) = result {
                        problems.push(format!("{file} {path}: does not compile: {e:?}"));
                    }
                }
                for rule in node["x-kubernetes-validations"].as_array().expect("a list") {
                    let text = rule["rule"].as_str().expect("a rule");
                    rules += 1;
                    for warning in analyze_rule(text, &compiled, ScopeContext::CrdValidation) {
                        let counts = match warning.kind {
                            WarningKind::CostExceeded => true,
                            // kube-cel takes a macro's own variable (`k` in
                            // `self.all(k, ...)`) for an outside one.
                            WarningKind::WrongScope => !bound_by_a_macro(text, &warning.message),
                            _ => false,
                        };
                        if counts {
                            problems.push(format!("{file} {path}: {text}: {}", warning.message));
                        }
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    // The rules are really there to be checked (runs, schedules, connections).
    assert!(rules >= 10, "only {rules} rules found");
}
