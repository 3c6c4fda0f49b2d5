//! Bearer tokens through the real kubectl: service-account tokens from TokenRequest (`kubectl
//! create token`), bound to a pod and dying with it or with their account, audiences,
//! TokenReview, and bootstrap tokens for joining nodes.

use std::process::Output;

use basalt_tests::control_plane::ControlPlane;

/// kubectl with a bearer token and no client certificate.
fn with_token(plane: &ControlPlane, token: &str, args: &[&str]) -> Output {
    let mut full = vec!["--token", token];
    full.extend_from_slice(args);
    plane.kubectl_as("anonymous", &full)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn unauthorized(output: &Output) -> bool {
    !output.status.success() && stderr(output).contains("Unauthorized")
}

#[test]
fn service_account_tokens_authenticate_until_their_account_or_pod_is_gone() {
    let plane = ControlPlane::start();
    plane.ok(&["create", "serviceaccount", "robot"]);
    let token = plane.ok(&["create", "token", "robot"]).trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    let whoami = with_token(&plane, &token, &["auth", "whoami"]);
    assert!(
        stdout(&whoami).contains("system:serviceaccount:default:robot")
            && stdout(&whoami).contains("system:serviceaccounts:default"),
        "{}{}",
        stdout(&whoami),
        stderr(&whoami)
    );
    let denied = with_token(&plane, &token, &["get", "pods"]);
    assert!(
        stderr(&denied).contains("User \"system:serviceaccount:default:robot\" cannot list"),
        "{}",
        stderr(&denied)
    );
    plane.ok(&[
        "create",
        "rolebinding",
        "robot-view",
        "--clusterrole=view",
        "--serviceaccount=default:robot",
    ]);
    let listed = with_token(&plane, &token, &["get", "pods"]);
    assert!(listed.status.success(), "{}", stderr(&listed));

    // A token bound to a pod stops working when the pod is deleted.
    plane.ok(&["run", "holder", "--image=nginx"]);
    let bound = plane
        .ok(&[
            "create",
            "token",
            "robot",
            "--bound-object-kind=Pod",
            "--bound-object-name=holder",
        ])
        .trim()
        .to_owned();
    assert!(
        with_token(&plane, &bound, &["get", "pods"])
            .status
            .success()
    );
    plane.ok(&["delete", "pod", "holder"]);
    assert!(unauthorized(&with_token(&plane, &bound, &["get", "pods"])));
    let missing = plane.kubectl(&[
        "create",
        "token",
        "robot",
        "--bound-object-kind=Pod",
        "--bound-object-name=holder",
    ]);
    assert!(
        stderr(&missing).contains("not found"),
        "{}",
        stderr(&missing)
    );

    // Lifetimes below ten minutes are refused; tokens for other audiences are not for the API.
    let short = plane.kubectl(&["create", "token", "robot", "--duration=1m"]);
    assert!(
        stderr(&short).contains("may not specify a duration less than 10 minutes"),
        "{}",
        stderr(&short)
    );
    let vault = plane
        .ok(&["create", "token", "robot", "--audience=vault"])
        .trim()
        .to_owned();
    assert!(unauthorized(&with_token(&plane, &vault, &["get", "pods"])));
    let review = |token: &str, audience: &str| {
        let body = format!(
            r#"{{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{{"token":"{token}","audiences":["{audience}"]}}}}"#
        );
        let output = plane.kubectl_stdin(
            // kubectl validates create-only kinds against OpenAPI v2 in protobuf, which the
            // server does not serve yet.
            &[
                "create",
                "-f",
                "-",
                "--validate=false",
                "-o",
                "jsonpath={.status.authenticated} {.status.user.username}",
            ],
            &body,
        );
        assert!(output.status.success(), "{}", stderr(&output));
        stdout(&output)
    };
    assert_eq!(
        review(&vault, "vault"),
        "true system:serviceaccount:default:robot"
    );
    assert!(review(&vault, "other").starts_with("false"));

    // Deleting the account ends every token it was given.
    plane.ok(&["delete", "serviceaccount", "robot"]);
    assert!(unauthorized(&with_token(&plane, &token, &["get", "pods"])));
}

#[test]
fn bootstrap_tokens_let_a_joining_node_ask_for_a_certificate() {
    let plane = ControlPlane::start();
    plane.ok(&[
        "create",
        "secret",
        "generic",
        "bootstrap-token-abcdef",
        "-n",
        "kube-system",
        "--type=bootstrap.kubernetes.io/token",
        "--from-literal=token-id=abcdef",
        "--from-literal=token-secret=0123456789abcdef",
        "--from-literal=usage-bootstrap-authentication=true",
        "--from-literal=auth-extra-groups=system:bootstrappers:basalt:nodes",
    ]);
    let token = "abcdef.0123456789abcdef";
    let whoami = with_token(&plane, token, &["auth", "whoami"]);
    assert!(
        stdout(&whoami).contains("system:bootstrap:abcdef")
            && stdout(&whoami).contains("system:bootstrappers:basalt:nodes"),
        "{}{}",
        stdout(&whoami),
        stderr(&whoami)
    );
    let can = with_token(
        &plane,
        token,
        &["auth", "can-i", "create", "certificatesigningrequests"],
    );
    assert_eq!(stdout(&can).trim(), "yes", "{}", stderr(&can));
    let cannot = with_token(&plane, token, &["auth", "can-i", "list", "secrets", "-A"]);
    assert_eq!(stdout(&cannot).trim(), "no");
    assert!(unauthorized(&with_token(
        &plane,
        "abcdef.0123456789abcdee",
        &["auth", "whoami"]
    )));
    assert!(unauthorized(&with_token(
        &plane,
        "zzzzzz.0123456789abcdef",
        &["auth", "whoami"]
    )));
    plane.ok(&[
        "delete",
        "secret",
        "bootstrap-token-abcdef",
        "-n",
        "kube-system",
    ]);
    assert!(unauthorized(&with_token(
        &plane,
        token,
        &["auth", "whoami"]
    )));
}
