//! Server-side printing: objects as `meta.k8s.io/v1` Tables with the columns kubectl users
//! know. Columns with priority 1 show only with `-o wide`.

use apiserver_registry::catalog::PrinterColumn;
use apiserver_registry::jsonpath::JsonPath;
use apiserver_registry::object::{metadata, str_at, value_at};
use apiserver_registry::{Object, Resource};
use serde_json::{Value, json};

struct Column {
    name: &'static str,
    kind: &'static str,
    priority: u8,
}

const fn col(name: &'static str, priority: u8) -> Column {
    Column {
        name,
        kind: "string",
        priority,
    }
}

fn columns(kind: &str) -> Vec<Column> {
    match kind {
        "Pod" => vec![
            col("Name", 0),
            col("Ready", 0),
            col("Status", 0),
            col("Restarts", 0),
            col("Age", 0),
            col("IP", 1),
            col("Node", 1),
            col("Nominated Node", 1),
            col("Readiness Gates", 1),
        ],
        "Deployment" => vec![
            col("Name", 0),
            col("Ready", 0),
            col("Up-to-date", 0),
            col("Available", 0),
            col("Age", 0),
            col("Containers", 1),
            col("Images", 1),
            col("Selector", 1),
        ],
        "ReplicaSet" => vec![
            col("Name", 0),
            col("Desired", 0),
            col("Current", 0),
            col("Ready", 0),
            col("Age", 0),
            col("Containers", 1),
            col("Images", 1),
            col("Selector", 1),
        ],
        "Service" => vec![
            col("Name", 0),
            col("Type", 0),
            col("Cluster-IP", 0),
            col("External-IP", 0),
            col("Port(s)", 0),
            col("Age", 0),
            col("Selector", 1),
        ],
        "Namespace" => vec![col("Name", 0), col("Status", 0), col("Age", 0)],
        "ConfigMap" => vec![col("Name", 0), col("Data", 0), col("Age", 0)],
        "Secret" => vec![
            col("Name", 0),
            col("Type", 0),
            col("Data", 0),
            col("Age", 0),
        ],
        "Node" => vec![
            col("Name", 0),
            col("Status", 0),
            col("Roles", 0),
            col("Age", 0),
            col("Version", 0),
            col("Internal-IP", 1),
            col("External-IP", 1),
            col("OS-Image", 1),
            col("Kernel-Version", 1),
            col("Container-Runtime", 1),
        ],
        "CertificateSigningRequest" => vec![
            col("Name", 0),
            col("Age", 0),
            col("SignerName", 0),
            col("Requestor", 0),
            col("RequestedDuration", 0),
            col("Condition", 0),
        ],
        "ResourceQuota" => vec![
            col("Name", 0),
            col("Age", 0),
            col("Request", 0),
            col("Limit", 0),
        ],
        _ => vec![col("Name", 0), col("Age", 0)],
    }
}

/// Kubernetes' short human durations: `45s`, `3m12s`, `17m`, `5h3m`, `20h`, `3d4h`, `45d`, `2y`.
pub fn human_duration(seconds: i64) -> String {
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86400);
    match s {
        _ if s < 120 => format!("{s}s"),
        _ if m < 10 => match s % 60 {
            0 => format!("{m}m"),
            r => format!("{m}m{r}s"),
        },
        _ if h < 3 => format!("{m}m"),
        _ if h < 8 => match m % 60 {
            0 => format!("{h}h"),
            r => format!("{h}h{r}m"),
        },
        _ if h < 48 => format!("{h}h"),
        _ if h < 24 * 8 => match h % 24 {
            0 => format!("{d}d"),
            r => format!("{d}d{r}h"),
        },
        _ if d < 365 * 2 => format!("{d}d"),
        _ if d < 365 * 8 => match d % 365 {
            0 => format!("{}y", d / 365),
            r => format!("{}y{r}d", d / 365),
        },
        _ => format!("{}y", d / 365),
    }
}

fn age(object: &Object) -> String {
    let created = metadata(object)
        .and_then(|m| m.get("creationTimestamp"))
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok());
    match created {
        Some(at) => human_duration(jiff::Timestamp::now().as_second() - at.as_second()),
        None => "<unknown>".into(),
    }
}

fn int(object: &Object, path: &str) -> i64 {
    value_at(object, path).and_then(Value::as_i64).unwrap_or(0)
}

fn list<'a>(object: &'a Object, path: &str) -> &'a [Value] {
    value_at(object, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn or_none(s: Option<&str>) -> String {
    s.filter(|s| !s.is_empty()).unwrap_or("<none>").to_owned()
}

fn containers_and_images(object: &Object) -> (String, String) {
    let containers = list(object, "spec.template.spec.containers");
    let names = containers
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect::<Vec<_>>()
        .join(",");
    let images = containers
        .iter()
        .filter_map(|c| c["image"].as_str())
        .collect::<Vec<_>>()
        .join(",");
    (names, images)
}

fn selector(object: &Object) -> String {
    let labels = value_at(object, "spec.selector.matchLabels")
        .or_else(|| value_at(object, "spec.selector"))
        .and_then(Value::as_object);
    match labels {
        Some(map) if !map.is_empty() => map
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

fn pod_status(pod: &Object) -> String {
    if metadata(pod).is_some_and(|m| m.contains_key("deletionTimestamp")) {
        return "Terminating".into();
    }
    for status in list(pod, "status.containerStatuses") {
        if let Some(reason) = status["state"]["waiting"]["reason"].as_str() {
            return reason.to_owned();
        }
        if let Some(reason) = status["state"]["terminated"]["reason"].as_str() {
            return reason.to_owned();
        }
    }
    str_at(pod, "status.reason")
        .or_else(|| str_at(pod, "status.phase"))
        .unwrap_or("Unknown")
        .to_owned()
}

fn cells(kind: &str, o: &Object) -> Vec<Value> {
    let name = json!(apiserver_registry::object::name(o));
    match kind {
        "Pod" => {
            let statuses = list(o, "status.containerStatuses");
            let ready = statuses
                .iter()
                .filter(|s| s["ready"] == json!(true))
                .count();
            let restarts: i64 = statuses
                .iter()
                .filter_map(|s| s["restartCount"].as_i64())
                .sum();
            vec![
                name,
                json!(format!("{ready}/{}", list(o, "spec.containers").len())),
                json!(pod_status(o)),
                json!(restarts.to_string()),
                json!(age(o)),
                json!(or_none(str_at(o, "status.podIP"))),
                json!(or_none(str_at(o, "spec.nodeName"))),
                json!(or_none(str_at(o, "status.nominatedNodeName"))),
                json!("<none>"),
            ]
        }
        "Deployment" => {
            let (containers, images) = containers_and_images(o);
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(o, "status.readyReplicas"),
                    int(o, "spec.replicas")
                )),
                json!(int(o, "status.updatedReplicas").to_string()),
                json!(int(o, "status.availableReplicas").to_string()),
                json!(age(o)),
                json!(containers),
                json!(images),
                json!(selector(o)),
            ]
        }
        "ReplicaSet" => {
            let (containers, images) = containers_and_images(o);
            vec![
                name,
                json!(int(o, "spec.replicas").to_string()),
                json!(int(o, "status.replicas").to_string()),
                json!(int(o, "status.readyReplicas").to_string()),
                json!(age(o)),
                json!(containers),
                json!(images),
                json!(selector(o)),
            ]
        }
        "Service" => {
            let ports = list(o, "spec.ports")
                .iter()
                .map(|p| {
                    let port = p["port"].as_i64().unwrap_or(0);
                    let protocol = p["protocol"].as_str().unwrap_or("TCP");
                    match p["nodePort"].as_i64() {
                        Some(node) => format!("{port}:{node}/{protocol}"),
                        None => format!("{port}/{protocol}"),
                    }
                })
                .collect::<Vec<_>>()
                .join(",");
            let external = list(o, "status.loadBalancer.ingress")
                .iter()
                .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                .collect::<Vec<_>>()
                .join(",");
            let external = match (external.is_empty(), str_at(o, "spec.type")) {
                (false, _) => external,
                (true, Some("LoadBalancer")) => "<pending>".into(),
                (true, Some("ExternalName")) => or_none(str_at(o, "spec.externalName")),
                _ => "<none>".into(),
            };
            vec![
                name,
                json!(or_none(str_at(o, "spec.type"))),
                json!(or_none(str_at(o, "spec.clusterIP"))),
                json!(external),
                json!(if ports.is_empty() {
                    "<none>".into()
                } else {
                    ports
                }),
                json!(age(o)),
                json!(selector(o)),
            ]
        }
        "Namespace" => vec![
            name,
            json!(or_none(str_at(o, "status.phase"))),
            json!(age(o)),
        ],
        "ConfigMap" => {
            let count = ["data", "binaryData"]
                .iter()
                .filter_map(|f| o.get(*f)?.as_object().map(|m| m.len()))
                .sum::<usize>();
            vec![name, json!(count), json!(age(o))]
        }
        "Secret" => {
            let count = o
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len());
            vec![
                name,
                json!(or_none(str_at(o, "type"))),
                json!(count),
                json!(age(o)),
            ]
        }
        "Node" => {
            let ready = list(o, "status.conditions")
                .iter()
                .find(|c| c["type"] == "Ready");
            let mut status = match ready.and_then(|c| c["status"].as_str()) {
                Some("True") => "Ready".to_owned(),
                _ => "NotReady".to_owned(),
            };
            if value_at(o, "spec.unschedulable") == Some(&json!(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let roles = apiserver_registry::object::string_map(o, "labels")
                .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
                .collect::<Vec<_>>()
                .join(",");
            let address = |ty: &str| {
                list(o, "status.addresses")
                    .iter()
                    .find(|a| a["type"] == ty)
                    .and_then(|a| a["address"].as_str())
                    .map(str::to_owned)
            };
            vec![
                name,
                json!(status),
                json!(if roles.is_empty() {
                    "<none>".into()
                } else {
                    roles
                }),
                json!(age(o)),
                json!(or_none(str_at(o, "status.nodeInfo.kubeletVersion"))),
                json!(address("InternalIP").unwrap_or("<none>".into())),
                json!(address("ExternalIP").unwrap_or("<none>".into())),
                json!(or_none(str_at(o, "status.nodeInfo.osImage"))),
                json!(or_none(str_at(o, "status.nodeInfo.kernelVersion"))),
                json!(or_none(str_at(
                    o,
                    "status.nodeInfo.containerRuntimeVersion"
                ))),
            ]
        }
        "CertificateSigningRequest" => {
            let mut condition: Vec<&str> = list(o, "status.conditions")
                .iter()
                .filter(|c| c["status"] == "True")
                .filter_map(|c| c["type"].as_str())
                .collect();
            if str_at(o, "status.certificate").is_some_and(|c| !c.is_empty()) {
                condition.push("Issued");
            }
            let duration = value_at(o, "spec.expirationSeconds")
                .and_then(Value::as_i64)
                .map_or_else(|| "<none>".to_owned(), human_duration);
            vec![
                name,
                json!(age(o)),
                json!(or_none(str_at(o, "spec.signerName"))),
                json!(or_none(str_at(o, "spec.username"))),
                json!(duration),
                json!(if condition.is_empty() {
                    "Pending".to_owned()
                } else {
                    condition.join(",")
                }),
            ]
        }
        "ResourceQuota" => {
            // kubectl's columns: limits.* under Limit, everything else under Request.
            let (mut request, mut limit) = (Vec::new(), Vec::new());
            let hard = value_at(o, "status.hard").and_then(Value::as_object);
            for (resource, amount) in hard.into_iter().flatten() {
                let used = value_at(o, "status.used")
                    .and_then(|u| u.get(resource))
                    .and_then(Value::as_str)
                    .unwrap_or("0");
                let entry = format!("{resource}: {used}/{}", amount.as_str().unwrap_or_default());
                if resource.starts_with("limits.") {
                    limit.push(entry);
                } else {
                    request.push(entry);
                }
            }
            vec![
                name,
                json!(age(o)),
                json!(request.join(", ")),
                json!(limit.join(", ")),
            ]
        }
        _ => vec![name, json!(age(o))],
    }
}

/// The row's embedded object: the whole object for `includeObject=Object`, its metadata
/// otherwise (what kubectl needs for namespaces and names).
fn row_object(object: &Object, include: &str) -> Value {
    match include {
        "Object" => Value::Object(object.clone()),
        "None" => Value::Null,
        _ => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": object.get("metadata").cloned().unwrap_or(json!({})),
        }),
    }
}

/// Objects of `resource` as a Table.
pub fn table(
    resource: &Resource,
    objects: &[Object],
    resource_version: &str,
    continue_token: Option<&str>,
    include: &str,
) -> Value {
    let (definitions, rows) = if resource.custom {
        custom_columns(&resource.printer_columns, objects, include)
    } else {
        builtin_columns(&resource.kind, objects, include)
    };
    let mut metadata = json!({"resourceVersion": resource_version});
    if let Some(token) = continue_token {
        metadata["continue"] = json!(token);
    }
    json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": metadata, "columnDefinitions": definitions, "rows": rows})
}

fn builtin_columns(kind: &str, objects: &[Object], include: &str) -> (Vec<Value>, Vec<Value>) {
    let definitions = columns(kind)
        .iter()
        .map(|c| {
            json!({"name": c.name, "type": c.kind, "format": if c.name == "Name" { "name" } else { "" },
                   "description": "", "priority": c.priority})
        })
        .collect();
    let rows = objects
        .iter()
        .map(|o| json!({"cells": cells(kind, o), "object": row_object(o, include)}))
        .collect();
    (definitions, rows)
}

/// A custom resource's columns: its name, then its definition's printer columns (Age when
/// it names none, as kube-apiserver defaults them).
fn custom_columns(
    columns: &[PrinterColumn],
    objects: &[Object],
    include: &str,
) -> (Vec<Value>, Vec<Value>) {
    let age = PrinterColumn {
        name: "Age".into(),
        kind: "date".into(),
        format: String::new(),
        description: String::new(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".into(),
    };
    let columns = if columns.is_empty() {
        std::slice::from_ref(&age)
    } else {
        columns
    };
    let mut definitions = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0})];
    definitions.extend(columns.iter().map(|c| {
        json!({"name": c.name, "type": c.kind, "format": c.format, "description": c.description,
               "priority": c.priority})
    }));
    // Paths were checked when the definition was stored; one that does not parse shows empty.
    let paths: Vec<Option<JsonPath>> = columns
        .iter()
        .map(|c| JsonPath::parse(&c.json_path).ok())
        .collect();
    let rows = objects
        .iter()
        .map(|o| {
            let value = Value::Object(o.clone());
            let mut cells = vec![json!(apiserver_registry::object::name(o))];
            cells.extend(
                columns
                    .iter()
                    .zip(&paths)
                    .map(|(column, path)| custom_cell(column, path.as_ref(), &value)),
            );
            json!({"cells": cells, "object": row_object(o, include)})
        })
        .collect();
    (definitions, rows)
}

/// One cell: what the path finds, as the column's type shows it (dates as ages).
fn custom_cell(column: &PrinterColumn, path: Option<&JsonPath>, object: &Value) -> Value {
    let found = path.map(|p| p.find(object)).unwrap_or_default();
    let Some(first) = found.first() else {
        return Value::Null;
    };
    if found.len() > 1 {
        let all: Vec<String> = found
            .iter()
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        return json!(all.join(","));
    }
    match column.kind.as_str() {
        "date" => match first
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        {
            Some(at) => json!(human_duration(
                jiff::Timestamp::now().as_second() - at.as_second()
            )),
            None => Value::Null,
        },
        "integer" if first.is_i64() || first.is_u64() => (*first).clone(),
        "number" if first.is_number() => (*first).clone(),
        "boolean" if first.is_boolean() => (*first).clone(),
        "string" => match first {
            Value::String(_) => (*first).clone(),
            other => json!(other.to_string()),
        },
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        assert_eq!(human_duration(5), "5s");
        assert_eq!(human_duration(192), "3m12s");
        assert_eq!(human_duration(17 * 60), "17m");
        assert_eq!(human_duration(5 * 3600 + 180), "5h3m");
        assert_eq!(human_duration(20 * 3600), "20h");
        assert_eq!(human_duration(3 * 86400 + 4 * 3600), "3d4h");
        assert_eq!(human_duration(45 * 86400), "45d");
    }

    #[test]
    fn pod_rows() {
        let pod = json!({"metadata": {"name": "web", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "containerStatuses": [{"ready": true, "restartCount": 2}]}});
        let pods = apiserver_registry::builtin::catalog()
            .get("", "v1", "pods")
            .unwrap();
        let table = table(
            &pods,
            &[pod.as_object().cloned().unwrap_or_default()],
            "7",
            None,
            "Metadata",
        );
        let cells = &table["rows"][0]["cells"];
        assert_eq!(cells[0], "web");
        assert_eq!(cells[1], "1/1");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[3], "2");
        assert_eq!(cells[5], "10.0.0.5");
        assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }

    #[test]
    fn custom_resources_show_their_printer_columns() {
        let column = |name: &str, kind: &str, path: &str| PrinterColumn {
            name: name.into(),
            kind: kind.into(),
            format: String::new(),
            description: String::new(),
            priority: 0,
            json_path: path.into(),
        };
        let mut resource = apiserver_registry::Resource::new(
            "stable.example.com",
            "v1",
            "CronTab",
            "crontabs",
            true,
            std::sync::Arc::new(apiserver_registry::strategy::Typed::<()>::new()),
        );
        resource.custom = true;
        let object = json!({"metadata": {"name": "c1", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"cronSpec": "* * * * */5", "replicas": 2},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let objects = [object.as_object().cloned().unwrap_or_default()];
        let table_of = |resource: &apiserver_registry::Resource| {
            table(resource, &objects, "3", None, "Metadata")
        };
        let plain = table_of(&resource);
        assert_eq!(plain["columnDefinitions"][1]["name"], "Age");
        assert_eq!(plain["rows"][0]["cells"][0], "c1");
        resource.printer_columns = vec![
            column("Spec", "string", ".spec.cronSpec"),
            column("Replicas", "integer", ".spec.replicas"),
            column(
                "Ready",
                "string",
                r#".status.conditions[?(@.type=="Ready")].status"#,
            ),
            column("Missing", "string", ".spec.nothing"),
        ];
        let custom = table_of(&resource);
        assert_eq!(
            custom["rows"][0]["cells"],
            json!(["c1", "* * * * */5", 2, "True", null])
        );
        assert_eq!(custom["columnDefinitions"][2]["type"], "integer");
    }
}
