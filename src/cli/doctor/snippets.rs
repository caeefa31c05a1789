//! What `doctor` prints after its checks: the commands that make AWS, GCP
//! and Azure trust the issuer, filled in with what the run found.

use serde_json::{json, Value};

use super::{Options, Provider};

/// The commands (and AWS trust policy) that register the issuer with each
/// selected provider, filled in with what the run found.
pub(super) fn snippets(issuer: &str, thumbprint: Option<&str>, jwks: &Value, opts: &Options) -> Value {
    let bare = issuer.trim_start_matches("https://");
    let (subject, subject_note) = subject_of(issuer);
    let mut out = serde_json::Map::new();
    if opts.provider.includes(Provider::Aws) {
        let aud = opts.audience.clone().unwrap_or_else(|| "sts.amazonaws.com".to_string());
        let policy = json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Federated": format!("arn:aws:iam::<ACCOUNT_ID>:oidc-provider/{bare}")},
                "Action": "sts:AssumeRoleWithWebIdentity",
                "Condition": {"StringEquals": {
                    format!("{bare}:aud"): aud,
                    format!("{bare}:sub"): subject,
                }}
            }]
        });
        out.insert(
            "aws".into(),
            json!({
                "command": format!(
                    "aws iam create-open-id-connect-provider --url {issuer} --client-id-list {aud} --thumbprint-list {}",
                    thumbprint.unwrap_or("<THUMBPRINT>")
                ),
                "trust_policy": policy,
                "note": subject_note,
            }),
        );
    }
    if opts.provider.includes(Provider::Gcp) {
        let aud = opts.audience.clone().unwrap_or_else(|| {
            "//iam.googleapis.com/projects/<PROJECT_NUMBER>/locations/global/workloadIdentityPools/<POOL_ID>/providers/<PROVIDER_ID>".into()
        });
        out.insert(
            "gcp".into(),
            json!({
                "command": format!(
                    "gcloud iam workload-identity-pools providers create-oidc <PROVIDER_ID> --location=global --workload-identity-pool=<POOL_ID> --issuer-uri={issuer} --allowed-audiences={aud} --attribute-mapping=google.subject=assertion.sub"
                ),
                "jwk_json": jwks,
                "note": "To upload the keys instead of exposing the endpoint, save jwk_json to a file and add --jwk-json-path=<file>.",
            }),
        );
    }
    if opts.provider.includes(Provider::Azure) {
        let aud = opts.audience.clone().unwrap_or_else(|| "api://AzureADTokenExchange".to_string());
        out.insert(
            "azure".into(),
            json!({
                "command": format!(
                    "az identity federated-credential create --name <CREDENTIAL_NAME> --identity-name <IDENTITY_NAME> --resource-group <RESOURCE_GROUP> --issuer {issuer} --subject {subject} --audiences {aud}"
                ),
            }),
        );
    }
    Value::Object(out)
}

/// The subject a trust policy should pin, by the shape of the issuer URL:
/// Vault's plugin identity below `/identity/oidc/plugins`, else a SPIFFE ID
/// or a Kubernetes service account (an issuer that is a bare origin is
/// SPIRE's or an API server's), and what to fill in.
fn subject_of(issuer: &str) -> (&'static str, &'static str) {
    if issuer.contains("/identity/oidc/plugins") {
        (
            "plugin-identity:<NAMESPACE_ID>:secret:<MOUNT_ACCESSOR>",
            "Restrict :sub to one Vault mount: plugin-identity:<namespace id>:<secret|auth>:<mount accessor> (vault read sys/mounts/<path> shows the accessor).",
        )
    } else {
        (
            "<SUBJECT>",
            "Restrict :sub to one workload: a SPIFFE ID (spiffe://<trust domain>/ns/<namespace>/sa/<service account>) for SPIRE, system:serviceaccount:<namespace>:<service account> for a Kubernetes API server, the entity or role for other Vault issuers.",
        )
    }
}
