//! Deployment files: every Kubernetes manifest under `deploy/kubernetes/` validated offline
//! against the Kubernetes schemas with `kubernetes-validate` (PyPI, in a venv under the
//! target directory), strictly (unknown fields refused); every kustomization names files
//! that exist; the configs embedded in ConfigMaps are the keys fedsilo accepts; the
//! Dockerfile and compose file run the one binary as a non-root user.
//!
//! Without python3, venv or PyPI the schema check says so loudly and skips — unless
//! `FEDSILO_REQUIRE_PYPI=1` (set by `.ci/run` where a venv can be made), which makes that a
//! failure.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml") {
            out.push(p);
        }
    }
}

fn manifests() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let mut all = Vec::new();
    yaml_files(&repo().join("deploy/kubernetes"), &mut all);
    all.sort();
    all.into_iter()
        .partition(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
}

/// `kubernetes-validate --strict` on `files`: success, and its output.
fn validate(python: &Path, files: &[PathBuf]) -> (bool, String) {
    output_text(
        Command::new(python)
            .args(["-m", "kubernetes_validate", "--strict", "-k", "1.30.0"])
            .args(files),
    )
}

/// The venv's python with kubernetes-validate; `None` (said loudly, or a failure when
/// `FEDSILO_REQUIRE_PYPI` is set) without python3, venv or PyPI.
fn validator(what: &str) -> Option<PathBuf> {
    match python_venv(
        "k8s-validate-venv",
        &["kubernetes-validate"],
        "import kubernetes_validate",
    ) {
        Ok(p) => Some(p),
        Err(why) => {
            assert!(
                std::env::var_os("FEDSILO_REQUIRE_PYPI").is_none(),
                "FEDSILO_REQUIRE_PYPI is set but kubernetes-validate is unavailable: {why}"
            );
            eprintln!(
                "\n*** NOTE: {what} were NOT validated: no kubernetes-validate ({why}).\n*** \
                 Install python3 with venv and pip and reach PyPI.\n"
            );
            None
        }
    }
}

#[test]
fn kubernetes_manifests_validate_against_the_kubernetes_schemas() {
    let (resources, _) = manifests();
    assert!(resources.len() >= 7, "{resources:?}");
    let Some(python) = validator("the Kubernetes manifests") else {
        return;
    };
    let (ok, text) = validate(&python, &resources);
    eprintln!("{text}");
    assert!(ok, "a manifest does not validate:\n{text}");
    for r in &resources {
        let name = r.strip_prefix(repo()).unwrap().display().to_string();
        assert!(
            text.contains(&format!("{} passed", r.display())) || text.contains(&name),
            "{name} was not checked:\n{text}"
        );
    }
    // The validator can fail: the StatefulSet with a misspelt field is refused.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("statefulset.yaml");
    let text =
        std::fs::read_to_string(repo().join("deploy/kubernetes/coordinator/statefulset.yaml"))
            .unwrap()
            .replace("readinessProbe:", "readynessProbe:");
    std::fs::write(&bad, text).unwrap();
    let (ok, out) = validate(&python, &[bad]);
    assert!(!ok, "a misspelt field passed strict validation:\n{out}");
}

#[test]
fn kustomizations_name_files_that_exist() {
    let (_, kustomizations) = manifests();
    assert!(kustomizations.len() >= 3);
    for k in &kustomizations {
        let text = std::fs::read_to_string(k).unwrap();
        let mut in_resources = false;
        let mut named = 0;
        for line in text.lines() {
            if line.starts_with("resources:") {
                in_resources = true;
                continue;
            }
            if in_resources {
                match line.trim().strip_prefix("- ") {
                    Some(entry) => {
                        let target = k.parent().unwrap().join(entry.trim());
                        assert!(
                            target.exists(),
                            "{} names {}, which does not exist",
                            k.display(),
                            entry
                        );
                        named += 1;
                    }
                    None if line.starts_with(' ') || line.is_empty() => {}
                    None => in_resources = false,
                }
            }
        }
        assert!(named > 0, "{} lists no resources", k.display());
    }
}

/// The text of a ConfigMap's `key: |` block.
fn embedded(manifest: &str, key: &str) -> String {
    let text = std::fs::read_to_string(repo().join(manifest)).unwrap();
    let mut out = String::new();
    let mut inside = false;
    for line in text.lines() {
        if line.trim() == format!("{key}: |") {
            inside = true;
            continue;
        }
        if inside {
            if line.starts_with("    ") || line.trim().is_empty() {
                out.push_str(line.strip_prefix("    ").unwrap_or(""));
                out.push('\n');
            } else {
                break;
            }
        }
    }
    assert!(!out.is_empty(), "{manifest} has no {key}");
    out
}

#[test]
fn configs_in_the_configmaps_are_ones_fedsilo_accepts() {
    let dir = tempfile::tempdir().unwrap();
    // The coordinator's: `coordinator init` reads it with the strict loader (an unknown
    // key would be refused with its line) and creates the state where it says; paths are
    // moved under the temporary directory.
    let d = dir.path().display().to_string();
    let coord = embedded(
        "deploy/kubernetes/coordinator/configmap.yaml",
        "coordinator.toml",
    )
    .replace("/var/lib/fedsilo", &d)
    .replace("/etc/fedsilo", &d);
    let cfg = dir.path().join("coordinator.toml");
    std::fs::write(&cfg, &coord).unwrap();
    std::fs::create_dir_all(dir.path().join("token")).unwrap();
    std::fs::write(dir.path().join("token/dashboard.token"), "ab".repeat(32)).unwrap();
    run_ok(&["coordinator", "init", "--config", cfg.to_str().unwrap()]);
    assert!(dir.path().join("state/FEDSILO-STATE").is_file());
    // A typo in it would have been refused: the loader is strict.
    std::fs::write(&cfg, coord.replace("token_file", "token_fle")).unwrap();
    let e = run_err(&["coordinator", "init", "--config", cfg.to_str().unwrap()]);
    assert!(e.contains("token_file"), "{e}");
    // The participant's: the loader `participant join` uses (strict, every key checked).
    let part = embedded(
        "deploy/kubernetes/participant/configmap.yaml",
        "participant.toml",
    );
    let p = dir.path().join("participant.toml");
    std::fs::write(&p, &part).unwrap();
    let loaded = fedsilo_participant::node::NodeConfig::load(&p);
    assert!(loaded.is_ok(), "{:?}", loaded.err());
    std::fs::write(&p, part.replace("holdout_fraction", "holdout_fractoin")).unwrap();
    assert!(fedsilo_participant::node::NodeConfig::load(&p).is_err());
}

#[test]
fn the_image_runs_the_one_binary_as_a_non_root_user() {
    let docker = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    assert!(docker.contains("cargo build --release --locked --bin fedsilo"));
    assert!(docker.contains("USER 10001:10001"));
    assert!(docker.contains("ENTRYPOINT [\"/usr/local/bin/fedsilo\"]"));
    let compose = std::fs::read_to_string(repo().join("deploy/docker-compose.yml")).unwrap();
    for service in ["coordinator:", "bank-a:", "bank-b:", "bank-c:"] {
        assert!(compose.contains(service), "compose lacks {service}");
    }
    for k in ["statefulset.yaml", "../participant/deployment.yaml"] {
        let m =
            std::fs::read_to_string(repo().join("deploy/kubernetes/coordinator").join(k)).unwrap();
        assert!(m.contains("runAsNonRoot: true"), "{k}");
        assert!(m.contains("readOnlyRootFilesystem: true"), "{k}");
    }
}

/// `kubectl kustomize DIR`: the rendered manifests, or why it could not run.
fn kustomize(dir: &Path) -> Result<String, String> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|e| format!("kubectl: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "kubectl kustomize {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The base and the per-site overlay (`overlays/site`, the values a Helm chart would take)
/// render with kustomize, the rendered objects validate strictly, and the overlay's values
/// are what the rendered objects carry.
#[test]
fn the_base_and_the_site_overlay_render_and_validate() {
    let have_kubectl = Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_kubectl {
        assert!(
            std::env::var_os("FEDSILO_REQUIRE_KUBECTL").is_none(),
            "FEDSILO_REQUIRE_KUBECTL is set but kubectl is not installed"
        );
        eprintln!(
            "\n*** NOTE: the kustomizations were NOT rendered: no kubectl on PATH.\n*** \
             Install kubectl (it carries kustomize) to check the overlay.\n"
        );
        return;
    }
    let base = kustomize(&repo().join("deploy/kubernetes")).unwrap();
    let site = kustomize(&repo().join("deploy/kubernetes/overlays/site")).unwrap();
    // Every object of the base is in the overlay, in the overlay's namespace.
    let kinds = |s: &str| s.lines().filter(|l| l.starts_with("kind: ")).count();
    assert_eq!(kinds(&base), kinds(&site), "{site}");
    assert!(kinds(&base) >= 7, "{base}");
    assert!(base.contains("namespace: fedsilo\n"), "{base}");
    assert!(!site.contains("namespace: fedsilo\n"), "{site}");
    assert!(site.contains("namespace: fedsilo-prod\n"), "{site}");
    // The values took: image, volume sizes, memory limits.
    assert!(!site.contains("image: fedsilo:latest"), "{site}");
    assert_eq!(
        site.matches("image: registry.bank.example/fedsilo:0.1.0")
            .count(),
        3,
        "{site}"
    );
    for value in [
        "storage: 50Gi",
        "storage: 200Gi",
        "memory: 4Gi",
        "memory: 8Gi",
    ] {
        assert!(
            site.contains(value),
            "overlay value {value} missing:\n{site}"
        );
    }
    // A patch aimed at a path the base does not have fails the render: values cannot be
    // silently ignored.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("site");
    std::fs::create_dir_all(&copy).unwrap();
    let k =
        std::fs::read_to_string(repo().join("deploy/kubernetes/overlays/site/kustomization.yaml"))
            .unwrap()
            .replace(
                "../../",
                &format!("{}/deploy/kubernetes/", repo().display()),
            )
            .replace("/volumeClaimTemplates/0/", "/volumeClaimTemplate/0/");
    std::fs::write(copy.join("kustomization.yaml"), k).unwrap();
    std::fs::copy(
        repo().join("deploy/kubernetes/overlays/site/namespace.yaml"),
        copy.join("namespace.yaml"),
    )
    .unwrap();
    assert!(
        kustomize(&copy).is_err(),
        "a patch at a missing path rendered"
    );

    let Some(python) = validator("the rendered manifests") else {
        return;
    };
    for (name, text) in [("base.yaml", &base), ("site.yaml", &site)] {
        let f = dir.path().join(name);
        std::fs::write(&f, text).unwrap();
        let (ok, out) = validate(&python, &[f]);
        eprintln!("{out}");
        assert!(ok, "rendered {name} does not validate:\n{out}");
    }
}
