//! `compose.yml` is a valid Compose file (checked against the Compose Specification's JSON
//! schema, vendored in `tests/schemas/`), and every file it references exists in the
//! repository: build contexts, Dockerfiles and what they COPY, bind-mounted configs. The
//! Prometheus configuration passes `promtool check config`, and the Grafana provisioning points
//! at the dashboards.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn compose() -> serde_json::Value {
    let text = std::fs::read_to_string(repo().join("compose.yml")).unwrap();
    let mut yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    // Compose resolves YAML merge keys (`<<: *anchor`) before validating; so do we.
    yaml.apply_merge().unwrap();
    serde_json::to_value(yaml).unwrap()
}

#[test]
fn compose_file_matches_the_compose_specification() {
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/schemas/compose-spec.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let doc = compose();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "compose.yml is invalid:\n{}",
        errors.join("\n")
    );

    // And it is the whole stack the README promises.
    let services = doc["services"].as_object().unwrap();
    for s in [
        "kafka",
        "redis",
        "janus",
        "garage",
        "prometheus",
        "grafana",
        "signal",
        "ingest",
        "recorder",
        "camsim",
    ] {
        assert!(services.contains_key(s), "compose.yml has no {s} service");
    }
}

#[test]
fn everything_compose_references_exists() {
    let root = repo();
    let doc = compose();
    let mut checked = 0;
    for (name, svc) in doc["services"].as_object().unwrap() {
        if let Some(build) = svc.get("build") {
            let context = root.join(build["context"].as_str().unwrap_or("."));
            assert!(context.is_dir(), "{name}: no build context {context:?}");
            let dockerfile = context.join(build["dockerfile"].as_str().unwrap_or("Dockerfile"));
            assert!(dockerfile.is_file(), "{name}: no Dockerfile {dockerfile:?}");
            // Every file a Dockerfile copies from its context is in the repository.
            for line in std::fs::read_to_string(&dockerfile).unwrap().lines() {
                let words: Vec<&str> = line.split_whitespace().collect();
                if words.first() == Some(&"COPY") && !line.contains("--from=") {
                    for src in &words[1..words.len() - 1] {
                        assert!(
                            context.join(src).exists(),
                            "{name}: {dockerfile:?} copies {src}, which does not exist"
                        );
                        checked += 1;
                    }
                }
            }
            checked += 1;
        }
        for volume in svc["volumes"].as_array().into_iter().flatten() {
            let source = volume
                .as_str()
                .and_then(|v| v.split(':').next())
                .unwrap_or("");
            if source.starts_with("./") {
                assert!(
                    root.join(source).exists(),
                    "{name}: mounts {source}, which does not exist"
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "only {checked} references found");
}

#[test]
fn prometheus_and_grafana_configuration_is_consistent() {
    let root = repo();
    let out = Command::new("promtool")
        .args(["check", "config", "--syntax-only"])
        .arg(root.join("deploy/prometheus/prometheus.yml"))
        .output()
        .expect("promtool (Debian package prometheus) is installed");
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Grafana reads dashboards from where compose mounts grafana/dashboards.
    let provider =
        std::fs::read_to_string(root.join("grafana/provisioning/dashboards/cloudcam.yml")).unwrap();
    let doc = compose();
    let mounts: Vec<&str> = doc["services"]["grafana"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    let target = mounts
        .iter()
        .find(|m| m.starts_with("./grafana/dashboards:"))
        .and_then(|m| m.split(':').nth(1))
        .expect("grafana/dashboards is mounted");
    assert!(
        provider.contains(target),
        "the provider does not read {target}"
    );
    let dashboards: Vec<_> = std::fs::read_dir(root.join("grafana/dashboards"))
        .unwrap()
        .flatten()
        .collect();
    assert!(
        dashboards.len() >= 3,
        "overview, camera and workers dashboards"
    );
}
