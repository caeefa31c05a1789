//! Everything in `deploy/`: Kubernetes overlays rendered and validated
//! offline with their security settings asserted, the systemd unit verified,
//! the Dockerfile's essentials, and every shipped proxy.toml checked.

use serde_yaml::Value;

use crate::acme::require;
use crate::common::*;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

pub(crate) fn docs(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml).map(|d| Value::deserialize(d).unwrap()).filter(|v| !v.is_null()).collect()
}

use serde::Deserialize;

pub(crate) fn kustomize(dir: &str) -> String {
    let out = std::process::Command::new("kubectl").args(["kustomize", dir]).output().expect("kubectl");
    assert!(out.status.success(), "kubectl kustomize {dir}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `kubernetes-validate --strict`; CRDs (cert-manager, Prometheus Operator)
/// have no schema there and are checked for their essentials here instead.
pub(crate) fn validate(yaml: &str, name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    let out = std::process::Command::new("kubernetes-validate")
        .args(["--strict", path.to_str().unwrap()])
        .output()
        .expect("kubernetes-validate");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name}: {text}");
    for line in text.lines().filter(|l| l.starts_with("WARN")) {
        assert!(
            line.contains("kind Certificate with api version cert-manager.io/v1")
                || line.contains("kind ServiceMonitor with api version monitoring.coreos.com/v1"),
            "{name}: {line}"
        );
    }
    assert!(!text.contains("ERROR") && !text.contains("FAIL"), "{name}: {text}");
}

pub(crate) fn kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

/// The security settings every wif-proxy container must have.
fn assert_hardened_container(c: &Value, pod_seccomp: bool, what: &str) {
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{what}");
    assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true), "{what}");
    assert_eq!(sc["runAsNonRoot"], Value::Bool(true), "{what}");
    assert_eq!(sc["capabilities"]["drop"], serde_yaml::from_str::<Value>("[ALL]").unwrap(), "{what}");
    if !pod_seccomp {
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
    }
    for r in ["requests", "limits"] {
        assert!(
            c["resources"][r]["cpu"].is_string() && c["resources"][r]["memory"].is_string(),
            "{what}: resources.{r}"
        );
    }
    let admin_port = c["ports"].as_sequence().unwrap().iter().find(|p| p["containerPort"] == 9901).expect("admin port");
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{what}: {probe}");
        assert_eq!(c[probe]["httpGet"]["port"], admin_port["name"], "{what}: {probe} on the admin port");
    }
}

pub(crate) fn assert_hardened_pod(spec: &Value, what: &str) {
    assert_eq!(spec["securityContext"]["runAsNonRoot"], Value::Bool(true), "{what}");
    assert_eq!(spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault", "{what}");
    assert_eq!(spec["automountServiceAccountToken"], Value::Bool(false), "{what}");
    let c = spec["containers"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "wif-proxy")
        .expect("wif-proxy container");
    assert_hardened_container(c, true, what);
}

pub(crate) fn assert_services(objects: &[Value], what: &str) {
    for s in kind(objects, "Service") {
        let ports = s["spec"]["ports"].as_sequence().unwrap();
        let admin =
            ports.iter().any(|p| p["port"] == 9901 || p["targetPort"] == "admin" || p["targetPort"] == "wif-admin");
        if s["metadata"]["name"] == "wif-proxy" {
            assert!(!admin, "{what}: the public Service must not expose the admin port");
        } else {
            assert!(admin, "{what}: {:?}", s["metadata"]["name"]);
            assert!(
                s["spec"]["type"].is_null() || s["spec"]["type"] == "ClusterIP",
                "{what}: the admin Service stays internal"
            );
        }
    }
    let sm = kind(objects, "ServiceMonitor");
    assert_eq!(sm.len(), 1, "{what}: a ServiceMonitor");
    assert_eq!(sm[0]["spec"]["endpoints"][0]["path"], "/metrics");
}

pub(crate) fn configmap_toml(objects: &[Value]) -> String {
    let cm = kind(objects, "ConfigMap").into_iter().find(|c| c["data"]["proxy.toml"].is_string());
    cm.expect("a ConfigMap with proxy.toml")["data"]["proxy.toml"].as_str().unwrap().to_string()
}

#[test]
fn standalone_overlays_render_validate_and_are_hardened() {
    if !require("kubectl") || !require("kubernetes-validate") {
        return;
    }
    for overlay in ["edge", "ingress"] {
        let yaml = kustomize(&format!("{DEPLOY}/kubernetes/overlays/{overlay}"));
        validate(&yaml, overlay);
        let objects = docs(&yaml);
        let deployments = kind(&objects, "Deployment");
        assert_eq!(deployments.len(), 1, "{overlay}");
        let d = deployments[0];
        assert!(d["spec"]["replicas"].as_u64().unwrap() >= 2, "{overlay}: at least 2 replicas");
        assert_hardened_pod(&d["spec"]["template"]["spec"], overlay);
        assert_eq!(kind(&objects, "PodDisruptionBudget").len(), 1, "{overlay}");
        let np = kind(&objects, "NetworkPolicy");
        assert_eq!(np.len(), 1, "{overlay}");
        let egress_ports: Vec<u64> = np[0]["spec"]["egress"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|e| e["ports"].as_sequence().unwrap().iter().map(|p| p["port"].as_u64().unwrap()))
            .collect();
        assert_eq!(egress_ports, vec![8200, 53, 53], "{overlay}: egress only to Vault and DNS");
        assert_services(&objects, overlay);
        let toml = configmap_toml(&objects);
        match overlay {
            "edge" => {
                assert!(toml.contains("source = \"proxy_protocol\""));
                let svc = kind(&objects, "Service").into_iter().find(|s| s["metadata"]["name"] == "wif-proxy").unwrap();
                assert_eq!(svc["spec"]["type"], "LoadBalancer");
                assert_eq!(
                    svc["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"],
                    "*"
                );
                assert_eq!(kind(&objects, "Certificate").len(), 1, "cert-manager + files mode for several replicas");
            }
            _ => {
                assert!(toml.contains("source = \"x_forwarded_for\""));
                assert_eq!(kind(&objects, "Ingress").len(), 1);
            }
        }
    }
}

#[test]
fn the_sidecar_patch_and_helm_values_add_the_same_hardened_container() {
    if !require("kubectl") || !require("kubernetes-validate") {
        return;
    }
    let overlay = format!("{DEPLOY}/kubernetes/overlays/sidecar");
    let yaml = kustomize(&overlay);
    validate(&yaml, "sidecar");
    let objects = docs(&yaml);
    assert!(kind(&objects, "Deployment").is_empty(), "the proxy runs inside Vault's pods");
    assert_services(&objects, "sidecar");
    assert!(configmap_toml(&objects).contains("upstream = \"https://127.0.0.1:8200\""));
    assert_eq!(
        kind(&objects, "ConfigMap")[0]["metadata"]["name"],
        "wif-proxy-config",
        "unhashed, as the patch names it"
    );

    // Apply the patch to a Vault StatefulSet as vault-helm renders it.
    let fixture = tempfile::tempdir().unwrap();
    std::fs::copy(format!("{overlay}/vault-statefulset-patch.yaml"), fixture.path().join("patch.yaml")).unwrap();
    std::fs::write(
        fixture.path().join("vault.yaml"),
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: vault\nspec:\n  serviceName: vault-internal\n  selector:\n    matchLabels: {app.kubernetes.io/name: vault, component: server}\n  template:\n    metadata:\n      labels: {app.kubernetes.io/name: vault, component: server}\n    spec:\n      securityContext: {runAsNonRoot: true, runAsUser: 100, fsGroup: 1000}\n      containers:\n        - name: vault\n          image: hashicorp/vault:1.17\n          ports: [{name: https, containerPort: 8200}]\n      volumes:\n        - name: data\n          emptyDir: {}\n",
    )
    .unwrap();
    std::fs::write(
        fixture.path().join("kustomization.yaml"),
        "resources: [vault.yaml]\npatches:\n  - path: patch.yaml\n",
    )
    .unwrap();
    let patched = kustomize(fixture.path().to_str().unwrap());
    validate(&patched, "vault-with-sidecar");
    let sts = docs(&patched).into_iter().find(|o| o["kind"] == "StatefulSet").unwrap();
    let containers = sts["spec"]["template"]["spec"]["containers"].as_sequence().unwrap().clone();
    assert_eq!(containers.len(), 2, "Vault and the proxy");
    let proxy = containers.iter().find(|c| c["name"] == "wif-proxy").unwrap();
    assert_hardened_container(proxy, false, "sidecar");
    assert_eq!(
        sts["spec"]["template"]["spec"]["volumes"].as_sequence().unwrap().len(),
        5,
        "Vault's volume kept, ours added"
    );

    let values: Value =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{overlay}/vault-helm-values.yaml")).unwrap()).unwrap();
    let patch: Value =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{overlay}/vault-statefulset-patch.yaml")).unwrap())
            .unwrap();
    assert_eq!(values["server"]["extraContainers"][0], patch["spec"]["template"]["spec"]["containers"][0]);
    assert_eq!(values["server"]["volumes"], patch["spec"]["template"]["spec"]["volumes"]);
}

/// An overlay rendered and validated: its folder and its objects.
fn rendered(overlay: &str) -> (String, Vec<Value>) {
    let dir = format!("{DEPLOY}/kubernetes/overlays/{overlay}");
    let yaml = kustomize(&dir);
    validate(&yaml, &overlay.replace('-', "_"));
    (dir, docs(&yaml))
}

/// The container named `name` in a pod spec.
fn container<'a>(spec: &'a Value, name: &str) -> &'a Value {
    spec["containers"].as_sequence().unwrap().iter().find(|c| c["name"] == name).unwrap_or_else(|| panic!("{name}"))
}

/// The `[[issuer]]` of a configuration with one.
fn only_issuer(text: &str) -> toml::Table {
    let t: toml::Table = text.parse().unwrap();
    t["issuer"].as_array().unwrap()[0].as_table().unwrap().clone()
}

fn public_url(text: &str) -> String {
    let t: toml::Table = text.parse().unwrap();
    t["server"]["public_url"].as_str().unwrap().to_string()
}

/// The mount of the directory holding `path` in container `c`, and its volume.
fn mounted<'a>(spec: &'a Value, c: &'a Value, path: &str) -> (&'a Value, &'a Value) {
    let dir = std::path::Path::new(path).parent().unwrap().to_str().unwrap();
    let m = c["volumeMounts"].as_sequence().unwrap().iter().find(|m| m["mountPath"] == dir);
    let m = m.unwrap_or_else(|| panic!("{dir} is not mounted in {:?}", c["name"]));
    let v = spec["volumes"].as_sequence().unwrap().iter().find(|v| v["name"] == m["name"]).unwrap();
    (m, v)
}

fn egress_ports(objects: &[Value]) -> Vec<u64> {
    let np = kind(objects, "NetworkPolicy");
    assert_eq!(np.len(), 1);
    np[0]["spec"]["egress"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|e| e["ports"].as_sequence().unwrap().iter().map(|p| p["port"].as_u64().unwrap()))
        .collect()
}

#[test]
fn the_in_cluster_kubernetes_issuer_reads_the_api_server_with_a_projected_token() {
    if !require("kubectl") || !require("kubernetes-validate") {
        return;
    }
    let (overlay, objects) = rendered("kubernetes-issuer");
    let d = kind(&objects, "Deployment")[0];
    let spec = &d["spec"]["template"]["spec"];
    assert_hardened_pod(spec, "kubernetes-issuer");
    assert_services(&objects, "kubernetes-issuer");
    let text = configmap_toml(&objects);
    let issuer = only_issuer(&text);
    assert_eq!(issuer["kind"].as_str(), Some("kubernetes"));
    assert_eq!(issuer["upstream"].as_str(), Some("https://kubernetes.default.svc"));

    // The token and the CA come from one projected volume: a service-account
    // token for the API server (the default audience) that the kubelet
    // rotates, and the cluster's CA. No other token is mounted.
    let proxy = container(spec, "wif-proxy");
    let token = issuer["upstream_bearer_token_file"].as_str().unwrap();
    let ca = issuer["upstream_ca"].as_str().unwrap();
    let (mount, volume) = mounted(spec, proxy, token);
    assert_eq!(mount["readOnly"], Value::Bool(true));
    assert_eq!(mounted(spec, proxy, ca).1, volume, "token and CA on one volume");
    let sources = volume["projected"]["sources"].as_sequence().unwrap();
    let sa = sources.iter().find(|s| !s["serviceAccountToken"].is_null()).unwrap();
    assert_eq!(sa["serviceAccountToken"]["path"].as_str(), token.rsplit('/').next());
    assert!(sa["serviceAccountToken"]["audience"].is_null(), "the API server's own audience");
    assert!(sa["serviceAccountToken"]["expirationSeconds"].as_u64().unwrap() <= 3600);
    let root_ca = sources.iter().find(|s| s["configMap"]["name"] == "kube-root-ca.crt").unwrap();
    assert_eq!(root_ca["configMap"]["items"][0]["path"].as_str(), ca.rsplit('/').next());
    assert_eq!(spec["automountServiceAccountToken"], Value::Bool(false));

    // RBAC: the discovery role, for this ServiceAccount only.
    let crb = kind(&objects, "ClusterRoleBinding");
    assert_eq!(crb.len(), 1);
    assert_eq!(crb[0]["roleRef"]["name"], "system:service-account-issuer-discovery");
    let sa_name = spec["serviceAccountName"].as_str().unwrap();
    let sa_obj = kind(&objects, "ServiceAccount")[0];
    assert_eq!(
        crb[0]["subjects"],
        serde_yaml::from_str::<Value>(&format!(
            "[{{kind: ServiceAccount, name: {sa_name}, namespace: {}}}]",
            sa_obj["metadata"]["namespace"].as_str().unwrap()
        ))
        .unwrap()
    );
    assert_eq!(egress_ports(&objects), vec![6443, 53, 53], "egress only to the API server and DNS");

    // The API server's flags name this proxy's public URL, as the issuer
    // guard will compare.
    let flags: Value =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{overlay}/apiserver-flags.yaml")).unwrap()).unwrap();
    let args: std::collections::BTreeMap<&str, &str> = flags["apiServer"]["extraArgs"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| (a["name"].as_str().unwrap(), a["value"].as_str().unwrap()))
        .collect();
    let public = public_url(&text);
    assert_eq!(args["service-account-issuer"], public);
    assert_eq!(args["service-account-jwks-uri"], format!("{public}/openid/v1/jwks"));
    let cert = kind(&objects, "Certificate")[0];
    assert_eq!(cert["spec"]["dnsNames"][0].as_str(), public.strip_prefix("https://"));
}

/// SPIRE's provider beside wif-proxy in one pod, over the unix socket: the
/// socket directory is one emptyDir, written by the provider only; the
/// provider's configuration agrees with proxy.toml; both containers are
/// hardened; the registration selects these pods.
pub(crate) fn assert_spire_sidecar(objects: &[Value], provider_conf: &str, spiffeid: &str, what: &str) {
    let text = configmap_toml(objects);
    let issuer = only_issuer(&text);
    let socket = issuer["upstream"].as_str().unwrap().strip_prefix("unix:").expect("a unix: upstream");
    assert_eq!(issuer["kind"].as_str(), Some("spire"), "{what}");
    assert!(issuer.get("upstream_host").is_none(), "{what}: spire sends the public host by default");
    let conf: serde_json::Value = serde_json::from_str(provider_conf).unwrap();
    assert_eq!(conf["listen_socket_path"], socket, "{what}");
    let host = public_url(&text).strip_prefix("https://").unwrap().to_string();
    assert_eq!(conf["domains"], serde_json::json!([host]), "{what}: the provider answers the public host only");
    assert_eq!(conf["set_key_use"], true, "{what}: Azure wants \"use\": \"sig\"");
    assert!(conf.get("jwt_issuer").is_none(), "{what}: nothing pinned: the issuer comes from the Host");

    let d = kind(objects, "Deployment")[0];
    let spec = &d["spec"]["template"]["spec"];
    let proxy = container(spec, "wif-proxy");
    let provider = container(spec, "spire-oidc-discovery-provider");
    let (proxy_mount, volume) = mounted(spec, proxy, socket);
    let (provider_mount, same) = mounted(spec, provider, socket);
    assert_eq!(volume, same, "{what}: one socket directory");
    assert!(!volume["emptyDir"].is_null(), "{what}: {volume:?}");
    assert_eq!(proxy_mount["readOnly"], Value::Bool(true), "{what}: wif-proxy only connects");
    assert!(provider_mount["readOnly"].is_null() || provider_mount["readOnly"] == Value::Bool(false), "{what}");
    let config_path = provider["args"][1].as_str().unwrap();
    let (_, config_volume) = mounted(spec, provider, config_path);
    let cm = config_volume["configMap"]["name"].as_str().unwrap();
    assert!(
        kind(objects, "ConfigMap").iter().any(|c| c["metadata"]["name"] == cm
            && c["data"][config_path.rsplit('/').next().unwrap()].as_str() == Some(provider_conf)),
        "{what}: the provider reads its shipped configuration"
    );
    let workload_api = conf["workload_api"]["socket_path"].as_str().unwrap();
    let (_, csi) = mounted(spec, provider, workload_api);
    assert_eq!(csi["csi"]["driver"], "csi.spiffe.io", "{what}");
    assert_eq!(csi["csi"]["readOnly"], Value::Bool(true), "{what}");
    let sc = &provider["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{what}");
    assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true), "{what}");
    assert_eq!(sc["runAsNonRoot"], Value::Bool(true), "{what}");
    assert_eq!(sc["capabilities"]["drop"], serde_yaml::from_str::<Value>("[ALL]").unwrap(), "{what}");
    assert!(provider["readinessProbe"]["httpGet"]["path"].is_string(), "{what}");
    assert!(!proxy["volumeMounts"].as_sequence().unwrap().iter().any(|m| m["name"] == "spiffe-workload-api"));

    let id: Value = serde_yaml::from_str(spiffeid).unwrap();
    assert_eq!(id["kind"], "ClusterSPIFFEID", "{what}");
    let labels = d["spec"]["template"]["metadata"]["labels"].as_mapping().unwrap();
    for (k, v) in id["spec"]["podSelector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(labels.get(k), Some(v), "{what}: the registration selects these pods");
    }
    assert_eq!(
        id["spec"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], d["metadata"]["namespace"],
        "{what}"
    );
}

#[test]
fn the_spire_sidecar_serves_the_provider_over_its_unix_socket() {
    if !require("kubectl") || !require("kubernetes-validate") {
        return;
    }
    let (overlay, objects) = rendered("spire-sidecar");
    assert_hardened_pod(&kind(&objects, "Deployment")[0]["spec"]["template"]["spec"], "spire-sidecar");
    assert_services(&objects, "spire-sidecar");
    assert_eq!(egress_ports(&objects), vec![53, 53], "the issuer is in the pod");
    let read = |f: &str| std::fs::read_to_string(format!("{overlay}/{f}")).unwrap();
    assert_spire_sidecar(
        &objects,
        &read("oidc-discovery-provider.conf"),
        &read("clusterspiffeid.yaml"),
        "spire-sidecar",
    );
}

#[test]
fn every_shipped_configuration_passes_check() {
    // The overlays' and the systemd sample's proxy.toml, from the sources.
    let pki = pki::Pki::new();
    let mut files: Vec<std::path::PathBuf> =
        vec![format!("{DEPLOY}/systemd/proxy.toml").into(), format!("{DEPLOY}/kubernetes/base/proxy.toml").into()];
    for o in ["edge", "ingress", "sidecar", "kubernetes-issuer", "spire-sidecar"] {
        files.push(format!("{DEPLOY}/kubernetes/overlays/{o}/proxy.toml").into());
    }
    let re = regex::Regex::new(r#""([^"]*(?:\.pem|\.crt|/token))""#).unwrap();
    for f in files {
        let mut text = std::fs::read_to_string(&f).unwrap();
        let work = tempfile::tempdir().unwrap();
        // CA files named by absolute or relative path exist on the target
        // host; here they are generated beside the copy.
        let paths: Vec<String> = re.captures_iter(&text).map(|c| c[1].to_string()).collect();
        for p in paths {
            let name = std::path::Path::new(&p).file_name().unwrap().to_string_lossy().to_string();
            let content = if name == "token" { "eyJhbGciOiJSUzI1NiJ9.e30.sig\n" } else { pki.ca_pem.as_str() };
            std::fs::write(work.path().join(&name), content).unwrap();
            text = text.replace(&format!("\"{p}\""), &format!("\"{name}\""));
        }
        let copy = work.path().join("proxy.toml");
        std::fs::write(&copy, text).unwrap();
        let out = run_binary(&["check", "--config", copy.to_str().unwrap()]);
        assert!(out.status.success(), "{}: {}", f.display(), String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn the_systemd_units_verify_and_are_hardened() {
    if !require("systemd-analyze") {
        return;
    }
    let read = |name: &str| std::fs::read_to_string(format!("{DEPLOY}/systemd/{name}")).unwrap();
    let unit = read("wif-proxy.service");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wif-proxy.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/wif-proxy", binary())).unwrap();
    let mut args = vec!["verify".to_string(), path.to_str().unwrap().to_string()];
    for socket in ["wif-proxy.socket", "wif-proxy-http.socket"] {
        let p = dir.path().join(socket);
        std::fs::write(&p, read(socket)).unwrap();
        args.push(p.to_str().unwrap().to_string());
    }
    let out = std::process::Command::new("systemd-analyze").args(&args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !text.contains("wif-proxy"), "systemd-analyze verify:\n{text}");
    let directives = |text: &str| -> Vec<String> {
        text.lines().map(str::trim).filter(|l| !l.starts_with('#') && l.contains('=')).map(str::to_string).collect()
    };
    let service = directives(&unit);
    for d in [
        "DynamicUser=yes",
        "StateDirectory=wif-proxy",
        "Requires=wif-proxy.socket wif-proxy-http.socket",
        "Sockets=wif-proxy.socket wif-proxy-http.socket",
        "CapabilityBoundingSet=",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "SystemCallFilter=@system-service",
        "MemoryDenyWriteExecute=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillSignal=SIGTERM",
    ] {
        assert!(service.iter().any(|s| s == d), "missing {d}");
    }
    assert!(!service.iter().any(|d| d.starts_with("AmbientCapabilities=")), "systemd binds the ports: no capability");
    // The sockets are named as the sample proxy.toml takes them.
    let toml = read("proxy.toml");
    for (socket, port, name, key) in
        [("wif-proxy.socket", 443, "https", "listen"), ("wif-proxy-http.socket", 80, "http", "http_listen")]
    {
        let d = directives(&read(socket));
        for want in
            [format!("ListenStream={port}"), format!("FileDescriptorName={name}"), "Service=wif-proxy.service".into()]
        {
            assert!(d.contains(&want), "{socket}: missing {want}");
        }
        assert!(toml.lines().any(|l| l == format!("{key} = \"systemd:{name}\"")), "proxy.toml: {key}");
    }
}

#[test]
fn the_dockerfile_builds_a_minimal_non_root_image() {
    let df = std::fs::read_to_string(format!("{DEPLOY}/docker/Dockerfile")).unwrap();
    let lines: Vec<&str> = df.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    assert_eq!(lines.iter().filter(|l| l.starts_with("FROM ")).count(), 2, "multi-stage");
    assert!(lines.iter().any(|l| l.starts_with("FROM gcr.io/distroless/")), "distroless runtime");
    assert!(lines.contains(&"USER nonroot:nonroot"));
    assert!(lines.contains(&"STOPSIGNAL SIGTERM"));
    assert!(lines.iter().any(|l| l.starts_with("VOLUME") && l.contains("/var/lib/wif-proxy")));
    assert!(!lines.iter().any(|l| l.starts_with("HEALTHCHECK")), "probes do that");
    assert!(lines.iter().any(|l| l.contains("--locked")));
}

/// The worst-case memory of one connection docs/security.md states (an h2
/// connection holding `h2_max_concurrent_streams` zero-window streams, over
/// TLS; h2attack.rs measures the plain part) and the process beside its
/// connections. Every shipped deployment's memory limit must hold
/// `max_connections` of them.
const WORST_PER_CONNECTION: u64 = 128 * 1024;
const BASELINE: u64 = 32 * 1024 * 1024;

fn max_connections(toml_text: &str, what: &str) -> u64 {
    let v: toml::Value = toml::from_str(toml_text).unwrap_or_else(|e| panic!("{what}: {e}"));
    v.get("server").and_then(|s| s.get("max_connections")).and_then(|m| m.as_integer()).map_or(10_000, |m| m as u64)
}

fn quantity(q: &str) -> u64 {
    let (n, unit) = q.split_at(q.find(|c: char| !c.is_ascii_digit()).unwrap_or(q.len()));
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("quantity {q}"));
    n * match unit {
        "Ki" | "K" => 1 << 10,
        "Mi" | "M" => 1 << 20,
        "Gi" | "G" => 1 << 30,
        "" => 1,
        _ => panic!("unit of {q}"),
    }
}

#[test]
fn every_deployment_memory_limit_holds_max_connections_at_their_worst() {
    let unit = std::fs::read_to_string(format!("{DEPLOY}/systemd/wif-proxy.service")).unwrap();
    let limit = unit.lines().find_map(|l| l.strip_prefix("MemoryMax=")).map(quantity).expect("MemoryMax in the unit");
    let conns = max_connections(&std::fs::read_to_string(format!("{DEPLOY}/systemd/proxy.toml")).unwrap(), "systemd");
    assert!(conns * WORST_PER_CONNECTION + BASELINE <= limit, "systemd: {conns} connections do not fit {limit} bytes");
    if !require("kubectl") {
        return;
    }
    let overlays = [
        "edge",
        "ingress",
        "sidecar",
        "openshift/vault",
        "openshift/vault-reencrypt",
        "openshift/spire",
        "openshift/spire-reencrypt",
        "openshift/spire-sidecar",
        "kubernetes-issuer",
        "spire-sidecar",
    ];
    for overlay in overlays {
        let dir = format!("{DEPLOY}/kubernetes/overlays/{overlay}");
        let mut objects = docs(&kustomize(&dir));
        let conns = max_connections(&configmap_toml(&objects), overlay);
        // The sidecar's container is in the patch and the Helm values.
        if overlay == "sidecar" {
            for f in ["vault-statefulset-patch.yaml", "vault-helm-values.yaml"] {
                objects.extend(docs(&std::fs::read_to_string(format!("{dir}/{f}")).unwrap()));
            }
        }
        let mut limits = Vec::new();
        for o in &objects {
            proxy_memory_limits(o, &mut limits);
        }
        assert!(!limits.is_empty(), "{overlay}: a wif-proxy container with a memory limit");
        for limit in limits {
            assert!(
                conns * WORST_PER_CONNECTION + BASELINE <= limit,
                "{overlay}: max_connections {conns} x {WORST_PER_CONNECTION} + {BASELINE} is over the limit {limit}"
            );
        }
    }
}

/// The memory limits of every container named wif-proxy anywhere in `v`.
fn proxy_memory_limits(v: &Value, out: &mut Vec<u64>) {
    match v {
        Value::Mapping(m) => {
            if v["name"] == "wif-proxy" {
                if let Some(q) = v["resources"]["limits"]["memory"].as_str() {
                    out.push(quantity(q));
                }
            }
            m.values().for_each(|x| proxy_memory_limits(x, out));
        }
        Value::Sequence(s) => s.iter().for_each(|x| proxy_memory_limits(x, out)),
        _ => {}
    }
}
