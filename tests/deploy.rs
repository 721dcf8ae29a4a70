//! `deploy/`: the container build and the Kubernetes manifests cannot run
//! here (no Docker daemon, no cluster), so they are checked for what can go
//! wrong offline: every manifest parses (Python's yaml) and holds the objects
//! the steps in deploy/README.md use, and every conntest command line in them
//! (and the Dockerfile's ENTRYPOINT + CMD) is accepted by the real binary's
//! own parser, `CONNTEST_CHECK_ARGS=1`, with the environment Kubernetes
//! would give the container.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);
const ACCEPTED: &str = "conntest: arguments accepted\n";
/// A run_group_id, for `$(CONNTEST_GROUP)`.
const GROUP: &str = "0b5c1f0e-2f4e-4c55-9a57-3f1d8e0c2a61";

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `conntest ARGS` in check mode with exactly `env` (as a container has
/// only its own), bounded.
fn check(args: &[&str], env: &BTreeMap<String, String>) -> Finished {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .envs(env)
        .env("CONNTEST_CHECK_ARGS", "1");
    run_bounded(&mut cmd, LIMIT)
}

fn assert_accepted(done: &Finished, what: &str) {
    assert_eq!(
        (done.code, done.stderr.as_str(), done.stdout.as_str()),
        (Some(0), ACCEPTED, ""),
        "{what}: expected exit 0 and only {ACCEPTED:?}"
    );
}

#[test]
fn check_mode_parses_the_command_line_and_does_nothing_else() {
    // A port held here: a server that tried to listen would exit 2.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let none = BTreeMap::new();
    let done = check(
        &[
            "server",
            "-p",
            &port,
            "--bind",
            "127.0.0.1",
            "--threads",
            "2",
        ],
        &none,
    );
    assert_accepted(&done, "server on a busy port");

    // A client or run that connected would show here.
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&connections);
    let remote = TestListener::start(move |_| {
        seen.fetch_add(1, Ordering::SeqCst);
    });
    let url = format!("http://{}", remote.addr);
    let done = check(&["client", "-r", &url, "-g", GROUP, "-q"], &none);
    assert_accepted(&done, "client");
    let done = check(
        &["run", "-r", &url, "--run-count", "5", "--concurrency", "2"],
        &none,
    );
    assert_accepted(&done, "run -r");
    // A remote whose name does not resolve is not looked up either.
    let done = check(
        &["client", "-r", "http://nowhere.invalid:8080", "-g", GROUP],
        &none,
    );
    assert_accepted(&done, "client of a remote that does not exist");
    assert_eq!(connections.load(Ordering::SeqCst), 0, "nothing connects");
    drop(held);
}

#[test]
fn check_mode_refuses_a_bad_argument_with_one_line() {
    let none = BTreeMap::new();
    for (args, needle) in [
        (&["server", "-p", "8080", "--thread", "2"][..], "--thread"),
        (&["server", "--threads", "zero"][..], "--threads"),
        (
            &[
                "client",
                "-r",
                "http://conntest:8080",
                "-g",
                "$(CONNTEST_GROUP)",
            ][..],
            "-g",
        ),
        (&["run", "--run-count", "5", "extra"][..], "extra"),
    ] {
        assert_one_line_usage_error(&check(args, &none), &[needle]);
    }
}

/// Every file in deploy/k8s, parsed by Python's yaml: file name -> documents.
fn manifests() -> BTreeMap<String, Vec<Value>> {
    const TO_JSON: &str = "\
import json, os, sys, yaml
out = {}
for path in sys.argv[1:]:
    with open(path) as f:
        out[os.path.basename(path)] = [d for d in yaml.safe_load_all(f) if d is not None]
json.dump(out, sys.stdout)
";
    let mut files: Vec<String> = std::fs::read_dir(repo("deploy/k8s"))
        .expect("deploy/k8s")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    files.sort();
    let mut args = vec!["-c", TO_JSON];
    args.extend(files.iter().map(String::as_str));
    let done = run_python_ok(&args, LIMIT, "yaml");
    serde_json::from_str(&done.stdout).expect("the converter's JSON")
}

/// The one object of `kind` named `name` in `file`.
fn object<'m>(
    manifests: &'m BTreeMap<String, Vec<Value>>,
    file: &str,
    kind: &str,
    name: &str,
) -> &'m Value {
    let docs = manifests
        .get(file)
        .unwrap_or_else(|| panic!("deploy/k8s/{file} missing"));
    let found: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(found.len(), 1, "{file}: one {kind} {name} expected");
    found[0]
}

/// Every object anywhere in the manifests.
fn all_objects(manifests: &BTreeMap<String, Vec<Value>>) -> impl Iterator<Item = &Value> {
    manifests.values().flatten()
}

fn pod_spec(workload: &Value) -> &Value {
    &workload["spec"]["template"]["spec"]
}

fn containers(workload: &Value) -> impl Iterator<Item = &Value> {
    let spec = pod_spec(workload);
    ["initContainers", "containers"]
        .into_iter()
        .filter_map(|list| spec[list].as_array())
        .flatten()
}

/// A Service's selector picks the workload's pods, and its target port is
/// one of their ports.
fn assert_service_selects(service: &Value, workload: &Value, port: u64) {
    let labels = &workload["spec"]["template"]["metadata"]["labels"];
    let selector = service["spec"]["selector"].as_object().expect("selector");
    assert!(!selector.is_empty());
    for (k, v) in selector {
        assert_eq!(
            &labels[k], v,
            "Service selector {k} does not match the pods"
        );
    }
    let ports = service["spec"]["ports"].as_array().expect("ports");
    let target = &ports[0]["targetPort"];
    assert_eq!(u(&ports[0]["port"]), port);
    assert!(
        containers(workload)
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .any(|p| &p["name"] == target || &p["containerPort"] == target),
        "targetPort {target} is none of the pods' ports"
    );
}

/// The port a probe names, as a number.
fn probe_port(container: &Value, probe: &Value) -> u64 {
    let port = &probe["httpGet"]["port"];
    if let Some(n) = port.as_u64() {
        return n;
    }
    container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| &p["name"] == port)
        .map(|p| u(&p["containerPort"]))
        .unwrap_or_else(|| panic!("probe port {port} is not a container port"))
}

#[test]
fn manifests_parse_and_hold_the_expected_objects() {
    let m = manifests();
    for doc in all_objects(&m) {
        for field in ["apiVersion", "kind"] {
            assert!(doc[field].is_string(), "{field} missing in {doc}");
        }
        assert!(doc["metadata"]["name"].is_string(), "no name: {doc}");
    }

    let server = object(&m, "server.yaml", "Deployment", "conntest");
    assert_eq!(u(&server["spec"]["replicas"]), 3);
    assert_eq!(pod_spec(server)["securityContext"]["runAsNonRoot"], true);
    let container = containers(server).next().expect("a container");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let probe = &container[probe];
        assert_eq!(probe["httpGet"]["path"], path, "{probe}");
        assert_eq!(probe_port(container, probe), 8080);
    }
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert!(container["resources"]["requests"].is_object());
    let service = object(&m, "server.yaml", "Service", "conntest");
    assert_service_selects(service, server, 8080);

    let redis = object(&m, "redis.yaml", "StatefulSet", "conntest-redis");
    assert_eq!(u(&redis["spec"]["replicas"]), 1);
    let redis_service = object(&m, "redis.yaml", "Service", "conntest-redis");
    assert_service_selects(redis_service, redis, 6379);
    let secret = object(&m, "redis.yaml", "Secret", "conntest-store");
    assert_eq!(
        secret["stringData"]["url"], "redis://conntest-redis:6379/0",
        "the store is the Service conntest-redis"
    );

    let client = object(&m, "client-job.yaml", "Job", "conntest-client");
    assert_eq!(client["spec"]["completionMode"], "Indexed");
    let shards = u(&client["spec"]["completions"]);
    assert_eq!(u(&client["spec"]["parallelism"]), shards);
    let env = container_env(&m, containers(client).next().expect("a container"));
    assert_eq!(env["CONNTEST_SHARDS"], shards.to_string());
    assert_eq!(shards, 3);

    let report = object(&m, "report-job.yaml", "Job", "conntest-report");
    let image = dockerfile();
    let report_argv = argv(containers(report).next().expect("a container"), &image);
    assert_eq!(report_argv.get(1).map(String::as_str), Some("report"));

    // The client and the report reach the server's Service.
    for job in [client, report] {
        let line = argv(containers(job).next().unwrap(), &image);
        let r = line.iter().position(|a| a == "-r").expect("-r");
        assert_eq!(line[r + 1], "http://conntest:8080");
    }
}

/// The Dockerfile's ENTRYPOINT and CMD in its final stage, exec form.
fn dockerfile() -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(repo("deploy/Dockerfile")).expect("deploy/Dockerfile");
    let (mut entrypoint, mut cmd) = (None, None);
    for line in text.lines() {
        let (word, rest) = line.trim().split_once(' ').unwrap_or((line.trim(), ""));
        let exec = || -> Vec<String> {
            serde_json::from_str(rest).unwrap_or_else(|e| panic!("{word} not in exec form: {e}"))
        };
        match word.to_ascii_uppercase().as_str() {
            // A new stage starts afresh.
            "FROM" => (entrypoint, cmd) = (None, None),
            "ENTRYPOINT" => entrypoint = Some(exec()),
            "CMD" => cmd = Some(exec()),
            _ => {}
        }
    }
    (entrypoint.expect("an ENTRYPOINT"), cmd.expect("a CMD"))
}

/// What the container runs: `command` (else the image's ENTRYPOINT), then
/// `args` (else, without `command`, the image's CMD), as Kubernetes does.
fn argv(container: &Value, image: &(Vec<String>, Vec<String>)) -> Vec<String> {
    let strings = |v: &Value| -> Option<Vec<String>> {
        v.as_array().map(|list| {
            list.iter()
                .map(|s| {
                    s.as_str()
                        .unwrap_or_else(|| panic!("{s} is not a string (quote it)"))
                        .to_owned()
                })
                .collect()
        })
    };
    let command = strings(&container["command"]);
    let args = strings(&container["args"]);
    match command {
        Some(command) => [command, args.unwrap_or_default()].concat(),
        None => [image.0.clone(), args.unwrap_or_else(|| image.1.clone())].concat(),
    }
}

/// The environment Kubernetes gives a container: its `env`, a Secret's or
/// ConfigMap's value from the manifests when they hold it, else a plausible
/// value for one created at run time; an optional reference to an object
/// that does not exist sets nothing.
fn container_env(m: &BTreeMap<String, Vec<Value>>, container: &Value) -> BTreeMap<String, String> {
    let plausible = |name: &str| match name {
        "CONNTEST_GROUP" => GROUP.to_owned(),
        _ => panic!("{name}: no plausible value known; add one to the test"),
    };
    let mut env = BTreeMap::new();
    for var in container["env"].as_array().into_iter().flatten() {
        let name = var["name"].as_str().expect("env name").to_owned();
        if let Some(value) = var["value"].as_str() {
            env.insert(name, value.to_owned());
            continue;
        }
        let (kind, reference) = match (
            &var["valueFrom"]["secretKeyRef"],
            &var["valueFrom"]["configMapKeyRef"],
        ) {
            (Value::Object(_), _) => ("Secret", &var["valueFrom"]["secretKeyRef"]),
            (_, Value::Object(_)) => ("ConfigMap", &var["valueFrom"]["configMapKeyRef"]),
            _ => panic!("{name}: a value or a Secret or ConfigMap key expected"),
        };
        let key = reference["key"].as_str().expect("key");
        let held = all_objects(m)
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == reference["name"]);
        match held {
            Some(object) => {
                let value = object["stringData"][key]
                    .as_str()
                    .or_else(|| object["data"][key].as_str())
                    .unwrap_or_else(|| panic!("{name}: {kind} has no key {key}"));
                env.insert(name, value.to_owned());
            }
            None if reference["optional"] == true => {}
            None => {
                let value = plausible(&name);
                env.insert(name, value);
            }
        }
    }
    env
}

/// `$(VAR)` replaced with the container's VAR, as Kubernetes expands
/// command and args; a name the container does not define is an error here
/// (Kubernetes would pass `$(VAR)` on as it is).
fn expand(arg: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(start) = rest.find("$(") {
        let end = rest[start..]
            .find(')')
            .unwrap_or_else(|| panic!("unclosed $( in {arg}"))
            + start;
        let name = &rest[start + 2..end];
        let value = env
            .get(name)
            .unwrap_or_else(|| panic!("{arg}: $({name}) is not in the container's env"));
        out.push_str(&rest[..start]);
        out.push_str(value);
        rest = &rest[end + 1..];
    }
    out + rest
}

#[test]
fn every_command_line_in_deploy_is_accepted_by_the_binary() {
    let m = manifests();
    let image = dockerfile();
    let mut lines = vec![(
        "Dockerfile".to_owned(),
        [image.0.clone(), image.1.clone()].concat(),
        BTreeMap::new(),
    )];
    for (file, docs) in &m {
        for doc in docs {
            let indexed = doc["spec"]["completionMode"] == "Indexed";
            for container in containers(doc) {
                let image_name = container["image"].as_str().unwrap_or_default();
                if !image_name.starts_with("conntest:") {
                    continue;
                }
                let what = format!("{file} {}/{}", doc["kind"], container["name"]);
                let env = container_env(&m, container);
                let argv: Vec<String> = argv(container, &image)
                    .iter()
                    .map(|a| expand(a, &env))
                    .collect();
                if !indexed {
                    lines.push((what, argv, env));
                    continue;
                }
                // Kubernetes gives pod I of an Indexed Job JOB_COMPLETION_INDEX=I.
                for index in 0..u(&doc["spec"]["completions"]) {
                    let mut env = env.clone();
                    env.insert("JOB_COMPLETION_INDEX".into(), index.to_string());
                    lines.push((format!("{what} index {index}"), argv.clone(), env));
                }
            }
        }
    }
    // The image, the server, 3 client shards and the report at least.
    assert!(lines.len() >= 6, "{lines:?}");
    let mut refused = Vec::new();
    for (what, argv, env) in &lines {
        assert_eq!(argv[0], "conntest", "{what}: runs {argv:?}");
        let args: Vec<&str> = argv[1..].iter().map(String::as_str).collect();
        let done = check(&args, env);
        println!(
            "{what}: {argv:?} {env:?}: exit {:?} {}",
            done.code, done.stderr
        );
        if (done.code, done.stderr.as_str()) != (Some(0), ACCEPTED) {
            refused.push(format!("{what}: {argv:?}: {}", done.stderr.trim()));
        }
    }
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));
}
