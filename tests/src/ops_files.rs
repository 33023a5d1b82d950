//! The operations files of the repository as the tests read them: the
//! Grafana dashboards (panels, their queries, template variables,
//! datasource references), the Prometheus alert rules and their
//! `promtool test rules` cases, and the external tools that validate them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use yaml_rust2::{Yaml, YamlLoader};

/// The repository's root (the tests crate is one of its members).
pub fn repo_root() -> PathBuf {
    // invariant: the tests crate lives one level below the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The provisioned Prometheus datasource's uid
/// (deploy/grafana/provisioning/datasources/yizhan.yaml).
pub fn provisioned_datasource_uid() -> Result<String> {
    let path = repo_root().join("deploy/grafana/provisioning/datasources/yizhan.yaml");
    let doc = load_yaml(&path)?;
    let uids: Vec<&str> = doc["datasources"]
        .as_vec()
        .context("datasources list")?
        .iter()
        .filter(|d| d["type"].as_str() == Some("prometheus"))
        .filter_map(|d| d["uid"].as_str())
        .collect();
    match uids.as_slice() {
        [uid] => Ok((*uid).to_string()),
        other => bail!(
            "{}: one Prometheus datasource with a uid, got {other:?}",
            path.display()
        ),
    }
}

/// One dashboard JSON file.
pub struct Dashboard {
    pub file: String,
    pub json: Value,
}

/// One query of a panel.
pub struct PanelQuery {
    pub dashboard: String,
    pub panel: String,
    pub expr: String,
    pub instant: bool,
    /// The panel's minimum interval (Grafana's `$__interval` at least this).
    pub interval: Option<String>,
}

/// Every `dashboards/*.json`, sorted by name.
pub fn dashboards() -> Result<Vec<Dashboard>> {
    let dir = repo_root().join("dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)?;
            let json = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", path.display()))?;
            let file = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into();
            Ok(Dashboard { file, json })
        })
        .collect()
}

impl Dashboard {
    pub fn uid(&self) -> &str {
        self.json["uid"].as_str().unwrap_or_default()
    }

    /// Panels, rows' nested panels included.
    pub fn panels(&self) -> Vec<&Value> {
        let mut out = Vec::new();
        for panel in self.json["panels"].as_array().into_iter().flatten() {
            out.push(panel);
            out.extend(panel["panels"].as_array().into_iter().flatten());
        }
        out
    }

    /// Every query of every panel.
    pub fn queries(&self) -> Vec<PanelQuery> {
        let mut out = Vec::new();
        for panel in self.panels() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                out.push(PanelQuery {
                    dashboard: self.file.clone(),
                    panel: panel["title"].as_str().unwrap_or_default().into(),
                    expr: expr.into(),
                    instant: target["instant"].as_bool().unwrap_or(false),
                    interval: panel["interval"].as_str().map(Into::into),
                });
            }
        }
        out
    }

    /// Template variables.
    pub fn variables(&self) -> Vec<&Value> {
        self.json["templating"]["list"]
            .as_array()
            .map(|l| l.iter().collect())
            .unwrap_or_default()
    }

    /// The selector of each `label_values(<selector>, <label>)` query
    /// variable, with the label: (variable name, selector, label).
    pub fn label_values_variables(&self) -> Result<Vec<(String, String, String)>> {
        let mut out = Vec::new();
        for variable in self.variables() {
            if variable["type"] != "query" {
                continue;
            }
            let name = variable["name"].as_str().unwrap_or_default().to_string();
            let query = variable["query"]["query"]
                .as_str()
                .or_else(|| variable["query"].as_str())
                .with_context(|| format!("{}: variable {name} has no query", self.file))?;
            let (selector, label) = parse_label_values(query)
                .with_context(|| format!("{}: variable {name}: {query}", self.file))?;
            out.push((name, selector, label));
        }
        Ok(out)
    }

    /// Every `datasource` object anywhere in the dashboard (panels,
    /// targets, variables), with where it was found.
    pub fn datasource_refs(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        collect_datasources(&self.json, "$", &mut out);
        out
    }
}

fn collect_datasources(value: &Value, at: &str, out: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                let path = format!("{at}.{key}");
                if key == "datasource" {
                    out.push((path.clone(), child.clone()));
                }
                collect_datasources(child, &path, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                collect_datasources(child, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// `label_values(up{job="x"}, instance)` → (`up{job="x"}`, `instance`).
pub fn parse_label_values(query: &str) -> Option<(String, String)> {
    let inner = query
        .trim()
        .strip_prefix("label_values(")?
        .strip_suffix(')')?;
    let (selector, label) = inner.rsplit_once(',')?;
    Some((selector.trim().to_string(), label.trim().to_string()))
}

/// One alerting rule of the committed rule files.
pub struct AlertRule {
    pub name: String,
    pub expr: String,
}

/// The committed alert rules file.
pub fn alert_rules_path() -> PathBuf {
    repo_root().join("deploy/prometheus/rules/yizhan-alerts.yml")
}

/// The committed `promtool test rules` file.
pub fn alert_tests_path() -> PathBuf {
    repo_root().join("deploy/prometheus/tests/yizhan-alerts.test.yml")
}

/// Every alerting rule (recording rules are skipped).
pub fn alert_rules() -> Result<Vec<AlertRule>> {
    let doc = load_yaml(&alert_rules_path())?;
    let mut rules = Vec::new();
    for group in doc["groups"].as_vec().context("groups")? {
        for rule in group["rules"].as_vec().context("rules")? {
            let Some(name) = rule["alert"].as_str() else {
                continue;
            };
            let expr = rule["expr"].as_str().context("alert without expr")?;
            rules.push(AlertRule {
                name: name.into(),
                expr: expr.into(),
            });
        }
    }
    Ok(rules)
}

/// What the promtool tests assert about each alert: the alert names with a
/// case expecting it to fire (non-empty `exp_alerts`) and those with a
/// case expecting it quiet (empty `exp_alerts`).
pub struct AlertTests {
    pub firing: BTreeSet<String>,
    pub quiet: BTreeSet<String>,
}

pub fn alert_tests() -> Result<AlertTests> {
    let doc = load_yaml(&alert_tests_path())?;
    let mut tests = AlertTests {
        firing: BTreeSet::new(),
        quiet: BTreeSet::new(),
    };
    for case in doc["tests"].as_vec().context("tests")? {
        for check in case["alert_rule_test"].as_vec().into_iter().flatten() {
            let name = check["alertname"]
                .as_str()
                .context("alertname")?
                .to_string();
            let fires = check["exp_alerts"].as_vec().is_some_and(|v| !v.is_empty());
            if fires {
                tests.firing.insert(name);
            } else {
                tests.quiet.insert(name);
            }
        }
    }
    Ok(tests)
}

/// The single YAML document of `path`.
pub fn load_yaml(path: &Path) -> Result<Yaml> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut docs = YamlLoader::load_from_str(&text)
        .with_context(|| format!("{} is not YAML", path.display()))?;
    anyhow::ensure!(docs.len() == 1, "{}: one YAML document", path.display());
    Ok(docs.remove(0))
}

/// Every YAML document of `path` (Kubernetes manifests hold several).
pub fn load_yaml_documents(path: &Path) -> Result<Vec<Yaml>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    YamlLoader::load_from_str(&text).with_context(|| format!("{} is not YAML", path.display()))
}

/// Runs an installed validation tool; fails naming the package that brings
/// it when it is missing (`./scripts/test.sh` installs them all).
pub fn run_tool(program: &str, package: &str, args: &[&str], dir: &Path) -> Result<Output> {
    match Command::new(program).args(args).current_dir(dir).output() {
        Ok(output) => Ok(output),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            bail!("{program} is not installed: ./scripts/test.sh installs it ({package})")
        }
        Err(error) => Err(error).with_context(|| format!("running {program}")),
    }
}

/// Like `run_tool`, failing unless the tool exits 0; its stdout and stderr.
pub fn run_tool_ok(program: &str, package: &str, args: &[&str], dir: &Path) -> Result<String> {
    let output = run_tool(program, package, args, dir)?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    anyhow::ensure!(
        output.status.success(),
        "{program} {} failed ({}):\n{text}",
        args.join(" "),
        output.status
    );
    Ok(text)
}
