//! OpenShift (`deploy/kubernetes/overlays/openshift`): every overlay rendered
//! and its standard objects validated, its Route and its restricted-v2 pod
//! security asserted, every proxy.toml checked, the binary run as an
//! arbitrary UID on a read-only root, and the ```` ```sh proxy-test <scenario> ````
//! commands of docs/openshift.md run against a real proxy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::Value;

use crate::acme::require;
use crate::common::pki::Pki;
use crate::common::standin::{self, Behavior};
use crate::common::*;
use crate::deploy::{
    assert_hardened_pod, assert_services, assert_spire_sidecar, configmap_toml, docs, kind, kustomize, validate,
};

const OPENSHIFT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/kubernetes/overlays/openshift");
const GUIDE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openshift.md");
const DOCKERFILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/docker/Dockerfile");

/// Every overlay that is applied on its own (a directory with a proxy.toml).
const SCENARIOS: [&str; 5] = ["spire", "spire-reencrypt", "spire-sidecar", "vault", "vault-reencrypt"];

const ZTWIM_NAMESPACE: &str = "zero-trust-workload-identity-manager";
/// The names the Zero Trust Workload Identity Manager (1.0) writes into its
/// discovery provider's `domains`, besides the jwtIssuer host. The shipped
/// upstream is one of them, so that `doctor`-style checks of the Service
/// itself pass; wif-proxy sends the jwtIssuer host as Host.
const ZTWIM_DOMAINS: [&str; 3] = [
    "spire-spiffe-oidc-discovery-provider",
    "spire-spiffe-oidc-discovery-provider.zero-trust-workload-identity-manager",
    "spire-spiffe-oidc-discovery-provider.zero-trust-workload-identity-manager.svc.cluster.local",
];

/// What the issuer says through wif-proxy when the provider's `jwt_issuer`
/// still names another host (a stale pin, or a renamed Route).
const STALE_ISSUER: &str = "https://oidc-discovery.apps.old.example.com";

/// An arbitrary UID from an OpenShift namespace's range.
const ARBITRARY_UID: u32 = 1_000_680_000;
/// The image's own user, owner of its state directory.
const IMAGE_UID: u32 = 65532;

fn shipped(dir: &str) -> String {
    std::fs::read_to_string(format!("{OPENSHIFT}/{dir}/proxy.toml")).unwrap()
}

fn table(text: &str) -> toml::Table {
    text.parse().unwrap_or_else(|e| panic!("proxy.toml: {e}"))
}

fn str_at<'a>(t: &'a toml::Table, section: &str, key: &str) -> Option<&'a str> {
    t.get(section)?.get(key)?.as_str()
}

fn issuer(t: &toml::Table) -> &toml::Table {
    let issuers = t["issuer"].as_array().unwrap();
    assert_eq!(issuers.len(), 1, "one issuer per OpenShift configuration");
    issuers[0].as_table().unwrap()
}

fn public_host(t: &toml::Table) -> String {
    let url = str_at(t, "server", "public_url").unwrap();
    url.strip_prefix("https://").unwrap_or_else(|| panic!("public_url {url} is not https")).to_string()
}

fn port_of(listen: &str) -> u64 {
    listen.rsplit(':').next().unwrap().parse().unwrap()
}

/// `path` is `mount` or below it (whole path components).
fn under(path: &str, mount: &str) -> bool {
    path == mount || path.starts_with(&format!("{}/", mount.trim_end_matches('/')))
}

fn yaml(s: &str) -> Value {
    serde_yaml::from_str(s).unwrap()
}

fn named<'a>(objects: &'a [Value], k: &str, name: &str) -> &'a Value {
    kind(objects, k).into_iter().find(|o| o["metadata"]["name"] == name).unwrap_or_else(|| panic!("no {k} {name}"))
}

// ---------------------------------------------------------------------------
// The rendered overlays.

/// What restricted-v2 admits unchanged: no fixed UID, GID or fsGroup, non-root,
/// no privilege escalation, all capabilities dropped, seccomp RuntimeDefault,
/// only allowed volume types, writes only to emptyDir volumes, and everything
/// the configuration writes on one of them.
fn assert_runs_under_restricted_v2(template: &Value, config: &toml::Table, what: &str) {
    assert_eq!(
        template["metadata"]["annotations"]["openshift.io/required-scc"], "restricted-v2",
        "{what}: pinned to restricted-v2"
    );
    let spec = &template["spec"];
    for field in ["hostNetwork", "hostPID", "hostIPC"] {
        assert!(spec[field].is_null() || spec[field] == Value::Bool(false), "{what}: {field}");
    }
    let pod = &spec["securityContext"];
    for field in ["runAsUser", "runAsGroup", "fsGroup", "supplementalGroups", "seLinuxOptions", "sysctls"] {
        assert!(pod[field].is_null(), "{what}: pod securityContext.{field} is the SCC's to assign");
    }
    assert_eq!(pod["runAsNonRoot"], Value::Bool(true), "{what}");
    assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault", "{what}");

    let volumes: BTreeMap<String, &Value> =
        spec["volumes"].as_sequence().unwrap().iter().map(|v| (v["name"].as_str().unwrap().to_string(), v)).collect();
    for (name, v) in &volumes {
        let types: Vec<&str> =
            v.as_mapping().unwrap().keys().filter_map(|k| k.as_str()).filter(|k| *k != "name").collect();
        assert!(
            types.len() == 1
                && ["configMap", "secret", "emptyDir", "projected", "downwardAPI", "csi"].contains(&types[0]),
            "{what}: volume {name} is {types:?}"
        );
    }

    let mut containers: Vec<&Value> = spec["containers"].as_sequence().unwrap().iter().collect();
    if let Some(init) = spec["initContainers"].as_sequence() {
        containers.extend(init);
    }
    for c in containers {
        let name = c["name"].as_str().unwrap();
        let sc = &c["securityContext"];
        for field in ["runAsUser", "runAsGroup", "seLinuxOptions"] {
            assert!(sc[field].is_null(), "{what}: container {name}: securityContext.{field}");
        }
        assert!(sc["privileged"].is_null() || sc["privileged"] == Value::Bool(false), "{what}: {name} privileged");
        assert_eq!(sc["allowPrivilegeEscalation"], Value::Bool(false), "{what}: {name}");
        assert_eq!(sc["capabilities"]["drop"], yaml("[ALL]"), "{what}: {name}");
        assert!(sc["capabilities"]["add"].is_null(), "{what}: {name} adds capabilities");
        assert_eq!(sc["readOnlyRootFilesystem"], Value::Bool(true), "{what}: {name}");
        assert!(
            sc["seccompProfile"].is_null() || sc["seccompProfile"]["type"] == "RuntimeDefault",
            "{what}: {name} seccomp"
        );
        for p in c["ports"].as_sequence().into_iter().flatten() {
            assert!(p["hostPort"].is_null(), "{what}: {name} hostPort");
        }
        let mounts = c["volumeMounts"].as_sequence().unwrap();
        let writable: Vec<&str> = mounts
            .iter()
            .filter(|m| m["readOnly"] != Value::Bool(true))
            .map(|m| {
                let volume = m["name"].as_str().unwrap();
                assert!(
                    !volumes[volume]["emptyDir"].is_null(),
                    "{what}: {name} writes only to emptyDir volumes, not {volume}"
                );
                m["mountPath"].as_str().unwrap()
            })
            .collect();
        if name != "wif-proxy" {
            continue;
        }
        // Everything the proxy writes is on a writable volume; emptyDir is
        // group-writable for the fsGroup restricted-v2 assigns.
        let writes = [
            str_at(config, "cache", "dir"),
            config.get("tls").and_then(|t| t.get("acme")).and_then(|a| a.get("cache_dir")).and_then(|v| v.as_str()),
            str_at(config, "ip_allow", "state_dir"),
        ];
        for path in writes.into_iter().flatten() {
            assert!(writable.iter().any(|m| under(path, m)), "{what}: {path} is not on a writable volume");
        }
        assert!(str_at(config, "cache", "dir").is_some(), "{what}: a persisted cache");
        // And everything it reads is on a read-only one.
        let mut reads: Vec<String> =
            issuer(config).get("upstream_ca").and_then(|v| v.as_str()).map(str::to_string).into_iter().collect();
        if let Some(certs) = config.get("tls").and_then(|t| t.get("certificate")).and_then(|c| c.as_array()) {
            for pair in certs {
                reads.push(pair["cert"].as_str().unwrap().to_string());
                reads.push(pair["key"].as_str().unwrap().to_string());
            }
        }
        for path in reads {
            assert!(
                mounts
                    .iter()
                    .any(|m| m["readOnly"] == Value::Bool(true) && under(&path, m["mountPath"].as_str().unwrap())),
                "{what}: {path} is not on a read-only volume"
            );
        }
    }
}

/// The volume mounted at the directory holding `path` in the wif-proxy container.
fn volume_for<'a>(template: &'a Value, path: &str) -> &'a Value {
    let spec = &template["spec"];
    let c = spec["containers"].as_sequence().unwrap().iter().find(|c| c["name"] == "wif-proxy").unwrap();
    let m = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| under(path, m["mountPath"].as_str().unwrap()))
        .unwrap_or_else(|| panic!("nothing mounted for {path}"));
    spec["volumes"].as_sequence().unwrap().iter().find(|v| v["name"] == m["name"]).unwrap()
}

/// The Route: the public_url's host, to the public Service's port that leads
/// to the port the proxy listens on, edge or reencrypt, with its certificate
/// from a Secret the router (and nobody else) is allowed to read.
fn assert_route(objects: &[Value], config: &toml::Table, reencrypt: bool, what: &str) {
    let routes = kind(objects, "Route");
    assert_eq!(routes.len(), 1, "{what}: one Route");
    let r = routes[0];
    assert_eq!(r["apiVersion"], "route.openshift.io/v1", "{what}");
    let spec = &r["spec"];
    let host = public_host(config);
    assert_eq!(spec["host"], host.as_str(), "{what}: the Route's host is the issuer's public_url");
    assert_eq!(spec["wildcardPolicy"], "None", "{what}");
    assert!(spec["path"].is_null(), "{what}: the whole host, as issuer URLs need");

    // to -> Service -> port -> container port -> listen.
    assert_eq!(spec["to"]["kind"], "Service", "{what}");
    assert!(spec["alternateBackends"].is_null(), "{what}");
    let svc = named(objects, "Service", spec["to"]["name"].as_str().unwrap());
    assert_eq!(svc["metadata"]["name"], "wif-proxy", "{what}: the public Service");
    let svc_port = svc["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == spec["port"]["targetPort"])
        .unwrap_or_else(|| panic!("{what}: the Service has no port {:?}", spec["port"]["targetPort"]));
    let d = kind(objects, "Deployment")[0];
    let template = &d["spec"]["template"];
    let c = template["spec"]["containers"].as_sequence().unwrap().iter().find(|c| c["name"] == "wif-proxy").unwrap();
    let container_port = c["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == svc_port["targetPort"])
        .unwrap_or_else(|| panic!("{what}: no container port {:?}", svc_port["targetPort"]));
    let listen = str_at(config, "server", "listen").unwrap();
    assert_eq!(container_port["containerPort"].as_u64(), Some(port_of(listen)), "{what}: the Route reaches `listen`");
    assert_ne!(port_of(listen), port_of(str_at(config, "server", "admin_listen").unwrap()), "{what}");

    // TLS.
    let tls = &spec["tls"];
    let mode = str_at(config, "tls", "mode").unwrap();
    assert_eq!(tls["insecureEdgeTerminationPolicy"], "Redirect", "{what}");
    assert!(tls["certificate"].is_null() && tls["key"].is_null(), "{what}: no key material in the Route");
    if reencrypt {
        assert_eq!(tls["termination"], "reencrypt", "{what}");
        assert_eq!(spec["port"]["targetPort"], "https", "{what}");
        assert_eq!(mode, "files", "{what}: wif-proxy's own TLS");
        assert!(tls["destinationCACertificate"].is_null(), "{what}: the router trusts the service CA by default");
        // The proxy's certificate is the service-serving certificate the
        // service-ca operator writes for the Service the Route points at.
        let secret = svc["metadata"]["annotations"]["service.beta.openshift.io/serving-cert-secret-name"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: the Service asks for a serving certificate"));
        let pairs = config["tls"]["certificate"].as_array().unwrap();
        assert_eq!(pairs.len(), 1, "{what}");
        for (field, file) in [("cert", "tls.crt"), ("key", "tls.key")] {
            let path = pairs[0][field].as_str().unwrap();
            assert!(path.ends_with(&format!("/{file}")), "{what}: {path} is the Secret's {file}");
            assert_eq!(volume_for(template, path)["secret"]["secretName"], secret, "{what}: {path}");
        }
        assert_eq!(config["tls"]["hsts"].as_str(), Some(""), "{what}: HSTS comes from the Route, once");
    } else {
        assert_eq!(tls["termination"], "edge", "{what}");
        assert_eq!(mode, "off", "{what}: plain HTTP behind an edge Route");
        assert!(svc["metadata"]["annotations"].is_null(), "{what}: no serving certificate for plain HTTP");
    }
    assert_eq!(r["metadata"]["annotations"]["haproxy.router.openshift.io/hsts_header"], "max-age=31536000", "{what}");

    // The public certificate: a Secret from cert-manager for the host, read by the router.
    let secret = tls["externalCertificate"]["name"].as_str().unwrap_or_else(|| panic!("{what}: externalCertificate"));
    let cert = kind(objects, "Certificate").into_iter().find(|c| c["spec"]["secretName"] == secret).unwrap();
    assert_eq!(cert["spec"]["dnsNames"], yaml(&format!("[{host}]")), "{what}: the certificate names the Route's host");
    let role =
        kind(objects, "Role").into_iter().find(|r| r["rules"][0]["resourceNames"] == yaml(&format!("[{secret}]")));
    let role = role.unwrap_or_else(|| panic!("{what}: a Role that reads {secret}"));
    assert_eq!(role["rules"].as_sequence().unwrap().len(), 1, "{what}");
    assert_eq!(role["rules"][0]["resources"], yaml("[secrets]"), "{what}");
    assert_eq!(role["rules"][0]["verbs"], yaml("[get, list, watch]"), "{what}");
    let binding = kind(objects, "RoleBinding").into_iter().find(|b| b["roleRef"]["name"] == role["metadata"]["name"]);
    let binding = binding.unwrap_or_else(|| panic!("{what}: the Role is bound"));
    assert_eq!(
        binding["subjects"],
        yaml("[{kind: ServiceAccount, name: router, namespace: openshift-ingress}]"),
        "{what}: only the router reads the certificate"
    );
}

/// Who may connect, and where the proxy may connect to.
fn assert_network_policy(objects: &[Value], config: &toml::Table, scenario: &str, what: &str) {
    let np = kind(objects, "NetworkPolicy");
    assert_eq!(np.len(), 1, "{what}");
    let spec = &np[0]["spec"];
    let listen = port_of(str_at(config, "server", "listen").unwrap());
    let ingress = spec["ingress"].as_sequence().unwrap();
    assert_eq!(ingress.len(), 2, "{what}");
    assert_eq!(
        ingress[0]["from"],
        yaml("[{namespaceSelector: {matchLabels: {policy-group.network.openshift.io/ingress: ''}}}]")
    );
    assert_eq!(
        ingress[0]["ports"],
        yaml(&format!("[{{port: {listen}, protocol: TCP}}]")),
        "{what}: the router, to `listen`"
    );
    assert_eq!(
        ingress[1]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "openshift-user-workload-monitoring"
    );
    assert_eq!(ingress[1]["ports"], yaml("[{port: 9901, protocol: TCP}]"), "{what}: monitoring, to the admin port");

    let egress = spec["egress"].as_sequence().unwrap();
    let sidecar = scenario == "spire-sidecar";
    assert_eq!(
        egress.len(),
        if sidecar { 1 } else { 2 },
        "{what}: the issuer (unless in the pod) and DNS, nothing else"
    );
    let dns = egress.last().unwrap();
    assert_eq!(dns["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], "openshift-dns");
    assert_eq!(dns["ports"], yaml("[{port: 5353, protocol: UDP}, {port: 5353, protocol: TCP}]"), "{what}");
    let upstream = issuer(config)["upstream"].as_str().unwrap();
    if sidecar {
        assert_eq!(issuer(config)["kind"].as_str(), Some("spire"), "{what}");
        assert!(upstream.starts_with("unix:/"), "{what}: the provider's socket in the pod");
        return;
    }
    let (namespace, pods, port) = if scenario.starts_with("spire") {
        assert_eq!(issuer(config)["kind"].as_str(), Some("spire"), "{what}");
        let host = upstream.strip_prefix("https://").unwrap();
        assert!(ZTWIM_DOMAINS.contains(&host), "{what}: {host}: a name the provider's serving certificate is for");
        (ZTWIM_NAMESPACE, "spiffe-oidc-discovery-provider", 8443)
    } else {
        assert_eq!(issuer(config)["kind"].as_str(), Some("vault-plugin-wif"), "{what}");
        assert_eq!(upstream, "https://vault.vault.svc:8200", "{what}");
        ("vault", "vault", 8200)
    };
    let to = &egress[0]["to"][0];
    assert_eq!(to["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"], namespace, "{what}");
    assert_eq!(to["podSelector"]["matchLabels"]["app.kubernetes.io/name"], pods, "{what}");
    assert_eq!(egress[0]["ports"], yaml(&format!("[{{port: {port}, protocol: TCP}}]")), "{what}");
}

#[test]
fn openshift_overlays_render_validate_and_run_under_restricted_v2() {
    if !require("kubectl") || !require("kubernetes-validate") {
        return;
    }
    for scenario in SCENARIOS {
        let what = format!("openshift/{scenario}");
        let yaml_text = kustomize(&format!("{OPENSHIFT}/{scenario}"));
        let objects = docs(&yaml_text);

        // Every standard object against the Kubernetes schemas; the Route has
        // none there and is checked by hand below.
        let (openshift, standard): (Vec<&Value>, Vec<&Value>) =
            objects.iter().partition(|o| o["apiVersion"].as_str().unwrap().contains(".openshift.io/"));
        assert_eq!(openshift.iter().map(|o| o["kind"].as_str().unwrap()).collect::<Vec<_>>(), ["Route"], "{what}");
        let standard: Vec<String> = standard.iter().map(|o| serde_yaml::to_string(o).unwrap()).collect();
        validate(&standard.join("---\n"), &scenario.replace('-', "_"));

        for o in &objects {
            assert_eq!(o["metadata"]["namespace"], "wif-proxy", "{what}: {:?}", o["metadata"]["name"]);
        }
        let text = configmap_toml(&objects);
        assert_eq!(text, shipped(scenario), "{what}: the ConfigMap carries {scenario}/proxy.toml");
        let config = table(&text);

        let deployments = kind(&objects, "Deployment");
        assert_eq!(deployments.len(), 1, "{what}");
        let d = deployments[0];
        assert!(d["spec"]["replicas"].as_u64().unwrap() >= 2, "{what}: at least 2 replicas");
        let template = &d["spec"]["template"];
        assert_hardened_pod(&template["spec"], &what);
        assert_runs_under_restricted_v2(template, &config, &what);
        assert_services(&objects, &what);
        assert_route(&objects, &config, scenario.ends_with("-reencrypt"), &what);
        assert_network_policy(&objects, &config, scenario, &what);
        assert_eq!(kind(&objects, "PodDisruptionBudget").len(), 1, "{what}");

        assert_eq!(issuer(&config)["strict_issuer"].as_bool(), Some(true), "{what}: a wrong issuer is never published");
        let trusted = config["client_ip"]["trusted_proxies"].as_array().unwrap();
        assert_eq!(
            config["client_ip"]["source"].as_str(),
            Some("x_forwarded_for"),
            "{what}: the router's X-Forwarded-For"
        );
        assert!(!trusted.is_empty(), "{what}");
        if scenario == "spire-sidecar" {
            let read = |f: &str| std::fs::read_to_string(format!("{OPENSHIFT}/{scenario}/{f}")).unwrap();
            let conf = read("oidc-discovery-provider.conf");
            assert_spire_sidecar(&objects, &conf, &read("clusterspiffeid.yaml"), &what);
            assert!(
                !objects.iter().any(|o| o["metadata"]["name"] == "wif-proxy-upstream-ca"),
                "{what}: no CA to inject"
            );
            let trust_domain = serde_json::from_str::<serde_json::Value>(&conf).unwrap()["workload_api"]
                ["trust_domain"]
                .as_str()
                .unwrap()
                .to_string();
            assert_eq!(trust_domain, "apps.ocp.example.com", "{what}: the trust domain the guide's SPIFFE IDs use");
            continue;
        }
        // The issuer's CA is the service CA bundle, injected and kept current
        // by the service-ca operator under the key upstream_ca names.
        let ca = issuer(&config)["upstream_ca"].as_str().unwrap();
        assert!(ca.ends_with("/service-ca.crt"), "{what}: {ca}");
        let cm = volume_for(template, ca)["configMap"]["name"].as_str().unwrap();
        assert_eq!(
            named(&objects, "ConfigMap", cm)["metadata"]["annotations"]["service.beta.openshift.io/inject-cabundle"],
            "true",
            "{what}"
        );
    }
}

#[test]
fn the_spire_discovery_provider_hands_its_route_over() {
    let text = std::fs::read_to_string(format!("{OPENSHIFT}/spire/spireoidcdiscoveryprovider.yaml")).unwrap();
    let cr = docs(&text);
    assert_eq!(cr.len(), 1);
    let cr = &cr[0];
    assert_eq!(cr["apiVersion"], "operator.openshift.io/v1alpha1");
    assert_eq!(cr["kind"], "SpireOIDCDiscoveryProvider");
    assert_eq!(cr["metadata"]["name"], "cluster", "the operator's singleton");
    assert!(cr["metadata"]["namespace"].is_null(), "cluster-scoped");
    assert_eq!(cr["spec"]["managedRoute"], "false", "a string, as the CRD's enum has it");
    for scenario in ["spire", "spire-reencrypt", "spire-sidecar"] {
        let public_url = str_at(&table(&shipped(scenario)), "server", "public_url").unwrap().to_string();
        assert_eq!(cr["spec"]["jwtIssuer"], public_url.as_str(), "{scenario}: jwtIssuer is the Route's host");
    }
    // Not rendered with the overlay: kustomize would give it a namespace.
    let kustomization: Value =
        serde_yaml::from_str(&std::fs::read_to_string(format!("{OPENSHIFT}/spire/kustomization.yaml")).unwrap())
            .unwrap();
    assert_eq!(kustomization["resources"], yaml("[../base]"));
}

/// A copy of a shipped configuration whose upstream CA exists here.
fn checkable(dir: &str, work: &Path, ca_pem: &str) -> PathBuf {
    let mut t = table(&shipped(dir));
    let ca = work.join("service-ca.crt");
    std::fs::write(&ca, ca_pem).unwrap();
    for i in t["issuer"].as_array_mut().unwrap() {
        if i.get("upstream_ca").is_some() {
            i.as_table_mut().unwrap().insert("upstream_ca".into(), ca.to_str().unwrap().into());
        }
    }
    let path = work.join("proxy.toml");
    std::fs::write(&path, toml::to_string(&t).unwrap()).unwrap();
    path
}

#[test]
fn every_openshift_configuration_passes_check() {
    let mut found: Vec<String> = std::fs::read_dir(OPENSHIFT)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("proxy.toml").exists())
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    found.sort();
    assert_eq!(found, SCENARIOS, "every OpenShift overlay is tested");
    let pki = Pki::new();
    for dir in SCENARIOS {
        let work = tempfile::tempdir().unwrap();
        let path = checkable(dir, work.path(), &pki.ca_pem);
        let out = run_binary(&["check", "--config", path.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{dir}: {}{stdout}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(&format!("public URL https://{}", public_host(&table(&shipped(dir))))), "{stdout}");
    }
}

// ---------------------------------------------------------------------------
// The image's rule: any UID, read-only root.

#[test]
fn the_dockerfile_gives_an_arbitrary_uid_a_group_writable_state_directory() {
    let df = std::fs::read_to_string(DOCKERFILE).unwrap();
    let lines: Vec<&str> = df.lines().map(str::trim).filter(|l| !l.starts_with('#') && !l.is_empty()).collect();
    let runtime_from = lines.iter().rposition(|l| l.starts_with("FROM ")).unwrap();
    let (build, runtime) = lines.split_at(runtime_from);
    assert!(!runtime.iter().any(|l| l.starts_with("RUN ")), "distroless: nothing runs in the runtime stage");
    // The state directory: copied to the runtime image owned by group 0 ...
    let copy = runtime
        .iter()
        .find(|l| l.starts_with("COPY ") && l.ends_with(" /var/lib/wif-proxy"))
        .expect("the state directory is part of the image");
    let chown = copy.split_whitespace().find_map(|w| w.strip_prefix("--chown=")).expect("--chown");
    assert_eq!(chown.split(':').nth(1), Some("0"), "group 0, the group of OpenShift's arbitrary UIDs: {copy}");
    let source = copy.split_whitespace().rev().nth(1).unwrap();
    // ... made in the build stage group-writable, subdirectories included.
    let install = build
        .iter()
        .find(|l| l.starts_with("RUN install -d") && l.contains(source))
        .expect("created in the build stage");
    let words: Vec<&str> = install.split_whitespace().collect();
    let mode = words[words.iter().position(|w| *w == "-m").unwrap() + 1];
    let mode = u32::from_str_radix(mode, 8).unwrap();
    assert_eq!(mode & 0o070, 0o070, "group rwx: {install}");
    assert_eq!(mode & 0o007, 0, "nobody else: {install}");
    for sub in ["cache", "acme", "ranges"] {
        assert!(words.contains(&format!("{source}/{sub}").as_str()), "{sub}: {install}");
    }
    let user = runtime.iter().find_map(|l| l.strip_prefix("USER ")).unwrap();
    assert!(!user.starts_with("root") && !user.starts_with("0"), "{user}");
    assert!(runtime.iter().any(|l| l.starts_with("VOLUME") && l.contains("/var/lib/wif-proxy")));
}

/// Root is needed to make a mount namespace and take another UID; with
/// CI=true its absence is a failure.
fn require_root() -> bool {
    // SAFETY: getuid has no preconditions.
    // The owner of /proc/self is this process's user.
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    if !root {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "the arbitrary-UID test runs as root in CI");
        eprintln!("skipping: not root (the arbitrary-UID test needs a mount namespace and setpriv)");
    }
    root
}

fn owner(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap();
    (m.uid(), m.gid())
}

/// In a private mount namespace every mount is read-only except the state
/// directory; the proxy runs there as an arbitrary UID in group 0, the way
/// restricted-v2 runs the image. A probe first proves the sandbox is real.
const SANDBOX: &str = r#"
set -eu
mount --bind "$STATE" "$STATE"
cut -d' ' -f5 /proc/self/mountinfo | sort -u | while read -r m; do
  [ "$m" = "$STATE" ] || mount -o remount,bind,ro "$m" 2>/dev/null || true
done
for dir in /tmp /var/tmp "$CONF"; do
  if setpriv --reuid="$RUN_UID" --regid=0 --clear-groups -- sh -c ': > "$0/probe"' "$dir" 2>/dev/null; then
    echo "sandbox: $dir is writable" >&2
    exit 97
  fi
done
exec setpriv --reuid="$RUN_UID" --regid=0 --clear-groups -- "$CONF/wif-proxy" --config "$CONF/proxy.toml" --log-format json
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_as_an_arbitrary_uid_on_a_read_only_root() {
    use std::os::unix::fs::{chown, PermissionsExt};
    if !require_root() || !require("unshare") || !require("setpriv") {
        return;
    }
    let pki = Pki::new();
    let si = StandIn::start_tls(pki.server_config(false)).await;
    si.set_public_url("https://oidc-discovery.apps.ocp.example.com");

    // The configuration and the binary: readable by anyone, and the directory
    // writable by anyone, so only the read-only mount keeps the UID out.
    let conf = tempfile::tempdir().unwrap();
    std::fs::set_permissions(conf.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::copy(binary(), conf.path().join("wif-proxy")).unwrap();
    // The image's state directory: 65532:0, 0770, with cache/ inside.
    let state_parent = tempfile::tempdir().unwrap();
    std::fs::set_permissions(state_parent.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = state_parent.path().join("wif-proxy");
    for d in [state.clone(), state.join("cache")] {
        std::fs::create_dir(&d).unwrap();
        chown(&d, Some(IMAGE_UID), Some(0)).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o770)).unwrap();
    }
    let text = local_config(&shipped("spire"), &si.origin(), conf.path(), &pki, None, &state.join("cache"));
    std::fs::write(conf.path().join("proxy.toml"), text).unwrap();
    for f in ["proxy.toml", "service-ca.crt"] {
        std::fs::set_permissions(conf.path().join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }

    let mut child = tokio::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", SANDBOX])
        .env("STATE", &state)
        .env("CONF", conf.path())
        .env("RUN_UID", ARBITRARY_UID.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stderr.take().unwrap()));
    let mut log = Vec::new();
    let started = tokio::time::timeout(Duration::from_secs(20), async {
        while let Ok(Some(line)) = lines.next_line().await {
            log.push(line.clone());
            if line.contains("wif-proxy started") {
                return Some(line);
            }
        }
        None
    })
    .await
    .unwrap_or_else(|_| panic!("no start-up line"));
    let Some(started) = started else {
        panic!("exited before start-up ({:?}): {log:?}", child.wait().await);
    };
    let v: serde_json::Value = serde_json::from_str(&started).unwrap();
    let public = v["public"].as_str().unwrap().parse().unwrap();
    let admin = v["admin"].as_str().unwrap().parse().unwrap();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    // It is the arbitrary UID in group 0 ...
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id().unwrap())).unwrap();
    let field = |name: &str| {
        status.lines().find(|l| l.starts_with(name)).unwrap().split_whitespace().nth(1).unwrap().to_string()
    };
    assert_eq!(field("Uid:"), ARBITRARY_UID.to_string(), "{status}");
    assert_eq!(field("Gid:"), "0", "{status}");
    // ... it serves ...
    let mut ready = get(admin, "/readyz").await;
    for _ in 0..100 {
        if ready.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        ready = get(admin, "/readyz").await;
    }
    assert_eq!(ready.status, 200, "{}", ready.text());
    let keys = get(public, "/keys").await;
    assert_eq!(keys.status, 200, "{}", keys.text());
    assert_eq!(keys.body, standin::jwks("k1").as_bytes());
    // ... and keeps its last good documents in the group-writable directory
    // it does not own.
    let mut files = Vec::new();
    for _ in 0..100 {
        files = std::fs::read_dir(state.join("cache")).unwrap().map(|e| e.unwrap().path()).collect();
        if files.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(files.len() >= 2, "both documents persisted: {files:?}");
    for f in &files {
        assert_eq!(owner(f), (ARBITRARY_UID, 0), "{}", f.display());
    }
    assert_eq!(owner(&state.join("cache")), (IMAGE_UID, 0), "the directory stays the image's");
    child.kill().await.unwrap();
}

// ---------------------------------------------------------------------------
// docs/openshift.md.

/// A shipped configuration made to run here: loopback listeners, the issuer
/// stand-in as upstream with the test CA as its service CA, TLS for the
/// Route's host when `tls` is given (the proxy standing in for the router),
/// and the cache in `cache_dir`. Everything else is as shipped.
fn local_config(
    shipped: &str,
    upstream: &str,
    dir: &Path,
    pki: &Pki,
    tls: Option<(&Path, &Path)>,
    cache_dir: &Path,
) -> String {
    let mut t = table(shipped);
    let server = t["server"].as_table_mut().unwrap();
    server.insert("listen".into(), "127.0.0.1:0".into());
    server.insert("admin_listen".into(), "127.0.0.1:0".into());
    server.insert("shutdown_grace".into(), "2s".into());
    if let Some((cert, key)) = tls {
        let mut pair = toml::Table::new();
        pair.insert("cert".into(), cert.to_str().unwrap().into());
        pair.insert("key".into(), key.to_str().unwrap().into());
        let mut tls = toml::Table::new();
        tls.insert("mode".into(), "files".into());
        tls.insert("certificate".into(), toml::Value::Array(vec![toml::Value::Table(pair)]));
        t.insert("tls".into(), toml::Value::Table(tls));
    }
    t["cache"].as_table_mut().unwrap().insert("dir".into(), cache_dir.to_str().unwrap().into());
    let ca = dir.join("service-ca.crt");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let i = t["issuer"].as_array_mut().unwrap()[0].as_table_mut().unwrap();
    i.insert("upstream".into(), upstream.into());
    if upstream.starts_with("https://") {
        i.insert("upstream_ca".into(), ca.to_str().unwrap().into());
    }
    toml::to_string(&t).unwrap()
}

/// The guide's ```` ```sh proxy-test <scenario> ```` commands, by scenario.
fn guide_commands(markdown: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in markdown.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (&current, fence) {
            (None, Some(info)) => {
                if let Some(s) = info.trim().strip_prefix("sh proxy-test ") {
                    current = Some(s.trim().to_string());
                    out.entry(s.trim().to_string()).or_default();
                }
            }
            (Some(_), Some(_)) => current = None,
            (Some(s), None) => {
                let l = line.trim();
                if !l.is_empty() && !l.starts_with('#') {
                    assert!(!l.ends_with('\\'), "one command per line in proxy-test blocks: {l}");
                    out.get_mut(s).unwrap().push(l.to_string());
                }
            }
            (None, None) => {}
        }
    }
    out
}

struct Walkthrough {
    host: String,
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    ca: PathBuf,
    /// The shipped configuration, as `oc exec ... check` finds it in the pod.
    in_pod_config: PathBuf,
}

/// Runs one guide command with only the test environment changed: where
/// the Route's host and the port-forwarded admin port are, which CA to
/// trust, where the pod's configuration is. A command no rule covers fails
/// the test: nothing in a proxy-test block goes unrun.
async fn run_guide_command(cmd: &str, w: &Walkthrough) -> (String, String) {
    let (cmd, expected) = match cmd.split_once("  # prints ") {
        Some((c, e)) => (c.trim(), Some(e.trim())),
        None => (cmd, None),
    };
    let connect_to = format!("{}:443:{}", w.host, w.addr);
    let in_pod = "oc exec -n wif-proxy deploy/wif-proxy -- /usr/local/bin/wif-proxy ";
    let in_pod_container = "oc exec -n wif-proxy deploy/wif-proxy -c wif-proxy -- /usr/local/bin/wif-proxy ";
    let line = if let Some(rest) = cmd.strip_prefix(in_pod).or_else(|| cmd.strip_prefix(in_pod_container)) {
        format!("{} {}", binary(), rest.replace("/etc/wif-proxy/proxy.toml", w.in_pod_config.to_str().unwrap()))
    } else if let Some(rest) = cmd.strip_prefix("wif-proxy doctor ") {
        format!("{} doctor {rest} --ca {} --connect-to {connect_to}", binary(), w.ca.display())
    } else if cmd.starts_with("curl ") && cmd.contains(&format!("https://{}/", w.host)) {
        cmd.replacen("curl ", &format!("curl --cacert {} --connect-to {connect_to} ", w.ca.display()), 1)
    } else if cmd.starts_with("curl ") && cmd.contains("http://127.0.0.1:9901/") {
        cmd.replace("http://127.0.0.1:9901/", &format!("http://{}/", w.admin))
    } else {
        panic!("no test rule for this guide command: {cmd}");
    };
    let out = tokio::process::Command::new("sh").args(["-c", &line]).output().await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "guide command failed: {cmd}\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    if let Some(e) = expected {
        assert_eq!(stdout.trim(), e, "{cmd}");
    }
    (cmd.to_string(), stdout)
}

/// A proxy on the shipped edge configuration of `dir` in front of an issuer
/// stand-in, with TLS for the Route's host. `claims`: the issuer URL the
/// stand-in writes whatever it is asked; `None` for a SPIRE provider whose
/// `domains` is the Route's host and which builds its URLs from the Host it
/// sees. The sidecar scenario's stand-in listens on a unix socket.
async fn walkthrough(dir: &str, claims: Option<&str>, work: &Path) -> (TestProxy, StandIn, Walkthrough) {
    let pki = Pki::new();
    let host = public_host(&table(&shipped(dir)));
    let (si, upstream) = if dir == "spire-sidecar" {
        let sock = work.join("spire-oidc-server.sock");
        (StandIn::start_unix(&sock).await, format!("unix:{}", sock.display()))
    } else {
        let si = StandIn::start_tls(pki.server_config(false)).await;
        let origin = si.origin();
        (si, origin)
    };
    match claims {
        Some(url) => si.set_public_url(url),
        None => si.spire_domains(&[host.as_str()]),
    }
    if dir.starts_with("spire") {
        // As SPIRE's provider answers /keys (with set_key_use).
        si.set("/keys", Behavior::keys_with_cache_control("no-cache, no-store, must-revalidate"));
    }
    let (cert, key) = pki.leaf(&[host.as_str()], -1, 30);
    std::fs::write(work.join("route.pem"), format!("{cert}{}", pki.ca_pem)).unwrap();
    std::fs::write(work.join("route.key"), key).unwrap();
    std::fs::write(work.join("ca.pem"), &pki.ca_pem).unwrap();
    let text = local_config(
        &shipped(dir),
        &upstream,
        work,
        &pki,
        Some((&work.join("route.pem"), &work.join("route.key"))),
        &work.join("cache"),
    );
    let p = TestProxy::start(&text).await;
    let pod = work.join("pod");
    std::fs::create_dir(&pod).unwrap();
    let in_pod_config = checkable(dir, &pod, &pki.ca_pem);
    let w = Walkthrough { host, addr: p.addr, admin: p.admin, ca: work.join("ca.pem"), in_pod_config };
    (p, si, w)
}

/// The SPIRE scenarios' commands: `check` lists both documents, the
/// documents name the Route's host, `doctor` passes for `provider` and
/// prints `snippet`; the provider saw only the fixed request, with the
/// Route's host as Host.
async fn spire_commands(commands: &[String], w: &Walkthrough, si: &StandIn, snippet: &str) {
    let route = format!("https://{}", w.host);
    assert!(commands.len() >= 4, "{commands:?}");
    for cmd in commands {
        let (cmd, out) = run_guide_command(cmd, w).await;
        if cmd.contains(" check ") {
            assert!(
                out.contains("GET|HEAD /.well-known/openid-configuration") && out.contains("GET|HEAD /keys"),
                "{out}"
            );
            assert!(out.contains(&format!("(Host: {})", w.host)), "check names the Host sent: {out}");
        } else if cmd.ends_with("/.well-known/openid-configuration") {
            let d = json(&cmd, &out);
            assert_eq!(d["issuer"], route.as_str(), "{out}");
            assert_eq!(d["jwks_uri"], format!("{route}/keys"), "{out}");
        } else if cmd.ends_with("/keys") {
            assert_eq!(out, standin::jwks("k1"));
        } else if cmd.starts_with("wif-proxy doctor") {
            assert!(out.contains("result: ok"), "{out}");
            assert!(out.contains(snippet), "{out}");
            assert!(out.contains(&route), "{out}");
        }
    }
    assert!(si.total() >= 2);
    for r in si.requests() {
        assert_fixed_request_to(&r, &w.host);
        assert!(r.target == "/.well-known/openid-configuration" || r.target == "/keys", "{r:?}");
    }
}

fn json(cmd: &str, stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("{cmd}: {e}: {stdout}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openshift_walkthrough_commands_work() {
    if !require("curl") {
        return;
    }
    let guide = std::fs::read_to_string(GUIDE).unwrap();
    let commands = guide_commands(&guide);
    assert_eq!(
        commands.keys().map(String::as_str).collect::<Vec<_>>(),
        ["spire", "spire-mismatch", "spire-sidecar", "vault"],
        "the guide's proxy-test scenarios"
    );

    // SPIRE through the operator's Service: the provider's own configuration
    // publishes the Route's host, because that is the Host it is sent.
    let work = tempfile::tempdir().unwrap();
    let (p, si, w) = walkthrough("spire", None, work.path()).await;
    p.wait_ready().await;
    let route = format!("https://{}", w.host);
    spire_commands(&commands["spire"], &w, &si, "aws iam create-open-id-connect-provider").await;
    drop(p);

    // The sidecar variant: the provider on a unix socket in the pod.
    let work = tempfile::tempdir().unwrap();
    let (p, si, w) = walkthrough("spire-sidecar", None, work.path()).await;
    p.wait_ready().await;
    spire_commands(&commands["spire-sidecar"], &w, &si, &format!("--issuer {route} ")).await;
    assert!(commands["spire-sidecar"].iter().any(|c| c.contains("--provider azure")), "the Entra ID path");
    drop(p);

    // A provider whose configuration pins another issuer.
    let work = tempfile::tempdir().unwrap();
    let (p, _si, w) = walkthrough("spire", Some(STALE_ISSUER), work.path()).await;
    let mut readyz = get(p.admin, "/readyz").await;
    for _ in 0..100 {
        if readyz.json()["issuer_mismatch"].as_array().is_some_and(|m| !m.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        readyz = get(p.admin, "/readyz").await;
    }
    assert_eq!(readyz.status, 503, "strict_issuer: the pod never becomes ready: {}", readyz.text());
    let served =
        format!("curl -s -o /dev/null -w '%{{http_code}}' {route}/.well-known/openid-configuration  # prints 502");
    run_guide_command(&served, &w).await;
    assert!(!commands["spire-mismatch"].is_empty());
    for cmd in &commands["spire-mismatch"] {
        let (cmd, out) = run_guide_command(cmd, &w).await;
        let r = json(&cmd, &out);
        assert_eq!(r["ready"], false, "{out}");
        let message = r["issuer_mismatch"][0]["message"].as_str().unwrap_or_else(|| panic!("{out}"));
        assert!(message.contains(STALE_ISSUER) && message.contains(&route), "{message}");
        assert!(guide.contains(STALE_ISSUER), "the guide names what the provider says");
    }
    drop(p);

    // Vault plugin WIF.
    let work = tempfile::tempdir().unwrap();
    let (p, si, w) = walkthrough("vault", Some("https://vault-wif.apps.ocp.example.com"), work.path()).await;
    p.wait_ready().await;
    let route = format!("https://{}", w.host);
    assert!(commands["vault"].len() >= 5, "{:?}", commands["vault"]);
    let mut denied = 0;
    for raw in &commands["vault"] {
        let (cmd, out) = run_guide_command(raw, &w).await;
        if cmd.contains(" check ") {
            assert!(out.contains(root_keys()) && out.contains(root_discovery()), "{out}");
        } else if cmd.contains("%{http_code}") {
            assert!(raw.ends_with("  # prints 404"), "the guide says what the proxy answers: {raw}");
            denied += 1;
        } else if cmd.ends_with("/.well-known/openid-configuration") {
            let d = json(&cmd, &out);
            assert_eq!(d["issuer"], format!("{route}/v1/identity/oidc/plugins"), "{out}");
        } else if cmd.ends_with("/.well-known/keys") {
            assert!(json(&cmd, &out)["keys"].is_array(), "{out}");
        } else if cmd.starts_with("wif-proxy doctor") {
            assert!(out.contains("result: ok") && out.contains("aws iam create-open-id-connect-provider"), "{out}");
        }
    }
    assert!(denied >= 1, "the guide shows that the rest of the Vault API is gone");
    for r in si.requests() {
        assert_fixed_request(&r, si.addr);
        assert!(r.target == root_keys() || r.target == root_discovery(), "{r:?}");
    }
}
