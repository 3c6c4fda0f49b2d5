//! Authorization as users meet it through the real kubectl: default roles, bindings that
//! grant exactly their roles, `kubectl auth can-i` / `whoami`, the escalation guard, and the
//! Node authorizer keeping a kubelet to its own objects.

use std::time::{Duration, Instant};

use basalt_tests::control_plane::ControlPlane;

/// `kubectl auth can-i` as `context`: whether it answered yes.
fn can_i(plane: &ControlPlane, context: &str, args: &[&str]) -> bool {
    let mut full = vec!["auth", "can-i"];
    full.extend_from_slice(args);
    let output = plane.kubectl_as(context, &full);
    let answer = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    assert!(
        answer == "yes" || answer == "no",
        "can-i {args:?} as {context}: {answer:?} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    answer == "yes" && output.status.success()
}

/// Runs kubectl as `context`, expecting it to fail; returns stderr.
fn refused(plane: &ControlPlane, context: &str, args: &[&str]) -> String {
    let output = plane.kubectl_as(context, args);
    assert!(
        !output.status.success(),
        "kubectl {args:?} as {context} should fail: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs kubectl as `context`, expecting success; returns stdout.
fn allowed(plane: &ControlPlane, context: &str, args: &[&str]) -> String {
    let output = plane.kubectl_as(context, args);
    assert!(
        output.status.success(),
        "kubectl {args:?} as {context} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn bindings_grant_their_roles_and_can_i_tells_the_truth() {
    let plane = ControlPlane::start();
    let defaults = plane.ok(&["get", "clusterroles", "-o", "name"]);
    for role in ["cluster-admin", "admin", "edit", "view", "system:node"] {
        assert!(
            defaults.contains(&format!("clusterrole.rbac.authorization.k8s.io/{role}\n")),
            "{role} in {defaults}"
        );
    }
    // Aggregated roles have their gathered rules stored, as the aggregation controller does.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rules = plane.ok(&[
            "get",
            "clusterrole",
            "view",
            "-o",
            "jsonpath={.rules[*].resources}",
        ]);
        if rules.contains("pods") && rules.contains("deployments") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "view's aggregated rules were not stored: {rules}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(can_i(&plane, "admin", &["create", "pods", "-n", "default"]));
    assert!(!can_i(&plane, "bob", &["list", "pods", "-n", "default"]));
    assert!(!can_i(&plane, "alice", &["list", "pods", "-n", "default"]));

    plane.ok(&["create", "namespace", "team"]);
    plane.ok(&[
        "create",
        "rolebinding",
        "dev-edit",
        "--clusterrole=edit",
        "--group=dev-team",
        "-n",
        "team",
    ]);
    plane.ok(&[
        "create",
        "clusterrolebinding",
        "bob-view",
        "--clusterrole=view",
        "--user=bob",
    ]);

    // alice edits in `team` only, through her group; edit does not include RBAC.
    assert!(can_i(
        &plane,
        "alice",
        &["create", "deployments", "-n", "team"]
    ));
    assert!(can_i(&plane, "alice", &["get", "secrets", "-n", "team"]));
    assert!(!can_i(
        &plane,
        "alice",
        &["create", "deployments", "-n", "default"]
    ));
    assert!(!can_i(
        &plane,
        "alice",
        &["create", "rolebindings", "-n", "team"]
    ));
    // bob views everywhere, but view does not show secrets or allow changes.
    assert!(can_i(&plane, "bob", &["list", "pods", "--all-namespaces"]));
    assert!(can_i(
        &plane,
        "bob",
        &["get", "deployments.apps", "-n", "team"]
    ));
    assert!(!can_i(&plane, "bob", &["get", "secrets", "-n", "team"]));
    assert!(!can_i(&plane, "bob", &["delete", "pods", "-n", "team"]));

    allowed(
        &plane,
        "alice",
        &["create", "deployment", "web", "--image=nginx", "-n", "team"],
    );
    let listed = allowed(&plane, "bob", &["get", "deployments", "-n", "team"]);
    assert!(listed.contains("web"), "{listed}");
    let stderr = refused(
        &plane,
        "bob",
        &["delete", "deployment", "web", "-n", "team"],
    );
    assert!(
        stderr.contains(
            "deployments.apps \"web\" is forbidden: User \"bob\" cannot delete resource \"deployments\" in API group \"apps\" in the namespace \"team\""
        ),
        "{stderr}"
    );

    let rules = allowed(&plane, "alice", &["auth", "can-i", "--list", "-n", "team"]);
    assert!(rules.contains("deployments.apps"), "{rules}");
    assert!(rules.contains("selfsubjectaccessreviews"), "{rules}");
    let whoami = allowed(&plane, "alice", &["auth", "whoami"]);
    assert!(
        whoami.contains("alice") && whoami.contains("dev-team"),
        "{whoami}"
    );

    // An administrator may act as another user and sees what they would; others may not.
    assert!(can_i(
        &plane,
        "admin",
        &["get", "pods", "-n", "team", "--as=bob"]
    ));
    assert!(!can_i(
        &plane,
        "admin",
        &["get", "secrets", "-n", "team", "--as=bob"]
    ));
    assert!(can_i(
        &plane,
        "admin",
        &[
            "create",
            "pods",
            "-n",
            "team",
            "--as=someone",
            "--as-group=dev-team"
        ]
    ));
    let stderr = refused(&plane, "bob", &["get", "pods", "-n", "team", "--as=admin"]);
    assert!(
        stderr.contains("users \"admin\" is forbidden: User \"bob\" cannot impersonate"),
        "{stderr}"
    );

    // Taking the binding away takes the access away at once.
    plane.ok(&["delete", "rolebinding", "dev-edit", "-n", "team"]);
    assert!(!can_i(
        &plane,
        "alice",
        &["create", "deployments", "-n", "team"]
    ));
}

#[test]
fn nobody_grants_more_than_they_hold() {
    let plane = ControlPlane::start();
    plane.ok(&["create", "namespace", "team"]);
    plane.ok(&[
        "create",
        "rolebinding",
        "alice-admin",
        "--clusterrole=admin",
        "--user=alice",
        "-n",
        "team",
    ]);
    allowed(
        &plane,
        "alice",
        &[
            "create",
            "role",
            "pod-reader",
            "--verb=get,list",
            "--resource=pods",
            "-n",
            "team",
        ],
    );
    allowed(
        &plane,
        "alice",
        &[
            "create",
            "rolebinding",
            "bob-reads",
            "--role=pod-reader",
            "--user=bob",
            "-n",
            "team",
        ],
    );
    assert!(can_i(&plane, "bob", &["list", "pods", "-n", "team"]));

    let stderr = refused(
        &plane,
        "alice",
        &[
            "create",
            "role",
            "node-reader",
            "--verb=list",
            "--resource=nodes",
            "-n",
            "team",
        ],
    );
    assert!(
        stderr.contains("is attempting to grant RBAC permissions not currently held")
            && stderr.contains("nodes"),
        "{stderr}"
    );
    let stderr = refused(
        &plane,
        "alice",
        &[
            "create",
            "rolebinding",
            "root",
            "--clusterrole=cluster-admin",
            "--user=bob",
            "-n",
            "team",
        ],
    );
    assert!(stderr.contains("forbidden"), "{stderr}");
    assert!(!can_i(&plane, "bob", &["delete", "pods", "-n", "team"]));

    // A role's rules must be well formed, and a binding's role may not change.
    let no_verbs = plane.write_script(
        "no-verbs.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: empty, namespace: team}\nrules:\n- apiGroups: [\"\"]\n  resources: [pods]\n",
    );
    let stderr = refused(
        &plane,
        "admin",
        &["apply", "-f", &no_verbs.display().to_string()],
    );
    assert!(
        stderr.contains("rules[0].verbs: Required value"),
        "{stderr}"
    );
    let stderr = refused(
        &plane,
        "admin",
        &[
            "patch",
            "rolebinding",
            "bob-reads",
            "-n",
            "team",
            "--type=merge",
            "-p",
            r#"{"roleRef":{"name":"other"}}"#,
        ],
    );
    assert!(stderr.contains("roleRef"), "{stderr}");
}

#[test]
fn a_kubelet_touches_only_its_own_node_and_what_its_pods_use() {
    let plane = ControlPlane::start();
    let node = |name: &str| format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n");
    let apply = |context: &str, manifest: &str| {
        let path = plane.write_script(&format!("{context}-manifest.yaml"), manifest);
        plane.kubectl_as(context, &["apply", "-f", &path.display().to_string()])
    };
    let own = apply("kubelet", &node("n1"));
    assert!(
        own.status.success(),
        "{}",
        String::from_utf8_lossy(&own.stderr)
    );
    let other = apply("kubelet", &node("n2"));
    let stderr = String::from_utf8_lossy(&other.stderr);
    assert!(
        stderr.contains("node \"n1\" is not allowed to modify node \"n2\""),
        "{stderr}"
    );
    allowed(&plane, "kubelet", &["get", "nodes"]);
    allowed(
        &plane,
        "kubelet",
        &["label", "node", "n1", "basalt.dev/checked=yes"],
    );
    plane.ok(&["create", "secret", "generic", "used", "--from-literal=k=v"]);
    plane.ok(&[
        "create",
        "secret",
        "generic",
        "unused",
        "--from-literal=k=v",
    ]);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  namespace: default\nspec:\n  nodeName: n1\n  containers:\n  - name: c\n    image: nginx\n    env:\n    - name: K\n      valueFrom:\n        secretKeyRef: {name: used, key: k}\n";
    let created = apply("admin", pod);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    allowed(
        &plane,
        "kubelet",
        &["get", "secret", "used", "-n", "default"],
    );
    let stderr = refused(
        &plane,
        "kubelet",
        &["get", "secret", "unused", "-n", "default"],
    );
    assert!(stderr.contains("forbidden"), "{stderr}");
    refused(&plane, "kubelet", &["get", "secrets", "-n", "default"]);
    // Its pods' status is its to report; nobody else's pods are.
    allowed(
        &plane,
        "kubelet",
        &[
            "patch",
            "pod",
            "web",
            "-n",
            "default",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"phase":"Running"}}"#,
        ],
    );
    let stderr = refused(
        &plane,
        "kubelet",
        &["run", "rogue", "--image=nginx", "-n", "default"],
    );
    assert!(stderr.contains("mirror pods"), "{stderr}");
}
