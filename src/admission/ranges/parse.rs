//! The range files cloud providers publish, turned into prefixes: plain
//! CIDR lists and the AWS, Google (GCP and `goog.json`), Azure Service Tags
//! and Oracle JSON formats, each with the source's filters applied.

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::{RangeFormat, RangeSourceConfig};
use crate::net::ipset::parse_net;

/// Why a range document was refused (it is then not used at all).
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not UTF-8 text")]
    NotText,
    #[error("line {line}: invalid prefix {prefix:?}")]
    Line { line: usize, prefix: String },
    #[error("invalid prefix {0:?}")]
    Prefix(String),
    #[error("not {what}: {source}")]
    Format { what: &'static str, source: serde_json::Error },
    #[error("a prefix entry has neither ipv4Prefix nor ipv6Prefix")]
    NoAddress,
    #[error("no prefixes matched the source's filters")]
    NothingMatched,
}

/// Parses `data` in `format`, applies the source's filters, and returns the
/// distinct prefixes. A filter that matches nothing is an error: it is
/// almost certainly a typo, and an empty allowlist would deny everyone.
pub fn parse(src: &RangeSourceConfig, data: &[u8]) -> Result<Vec<IpNet>, ParseError> {
    let any =
        |filter: &[String], value: &str| filter.is_empty() || filter.iter().any(|f| f.eq_ignore_ascii_case(value));
    let mut out: Vec<IpNet> = Vec::new();
    let mut push = |s: &str| -> Result<(), ParseError> {
        out.push(parse_net(s).ok_or_else(|| ParseError::Prefix(s.to_string()))?);
        Ok(())
    };
    match src.format {
        RangeFormat::Cidrs => {
            let text = std::str::from_utf8(data).map_err(|_| ParseError::NotText)?;
            for (i, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if !line.is_empty() {
                    push(line).map_err(|_| ParseError::Line { line: i + 1, prefix: line.to_string() })?;
                }
            }
        }
        RangeFormat::Aws => {
            let doc: Aws = json(data, "an AWS ip-ranges.json")?;
            for p in &doc.prefixes {
                if any(&src.services, &p.service) && any(&src.regions, &p.region) {
                    push(&p.ip_prefix)?;
                }
            }
            for p in &doc.ipv6_prefixes {
                if any(&src.services, &p.service) && any(&src.regions, &p.region) {
                    push(&p.ipv6_prefix)?;
                }
            }
        }
        RangeFormat::Gcp | RangeFormat::Goog => {
            let doc: Google = json(data, "a Google ranges file")?;
            for p in &doc.prefixes {
                if src.format == RangeFormat::Gcp && !any(&src.scopes, p.scope.as_deref().unwrap_or("")) {
                    continue;
                }
                match (&p.ipv4_prefix, &p.ipv6_prefix) {
                    (Some(a), _) | (None, Some(a)) => push(a)?,
                    (None, None) => return Err(ParseError::NoAddress),
                }
            }
        }
        RangeFormat::Azure => {
            let doc: Azure = json(data, "an Azure Service Tags file")?;
            for v in &doc.values {
                if any(&src.tags, &v.name) {
                    for p in &v.properties.address_prefixes {
                        push(p)?;
                    }
                }
            }
        }
        RangeFormat::Oracle => {
            let doc: Oracle = json(data, "an Oracle public_ip_ranges.json")?;
            for r in &doc.regions {
                if !any(&src.regions, &r.region) {
                    continue;
                }
                for c in &r.cidrs {
                    if src.tags.is_empty() || c.tags.iter().any(|t| any(&src.tags, t)) {
                        push(&c.cidr)?;
                    }
                }
            }
        }
    }
    let mut out: Vec<IpNet> = out.into_iter().map(|n| n.trunc()).collect();
    out.sort_unstable();
    out.dedup();
    if out.is_empty() {
        return Err(ParseError::NothingMatched);
    }
    Ok(out)
}

/// `data` as the JSON document `what` describes.
fn json<'a, T: Deserialize<'a>>(data: &'a [u8], what: &'static str) -> Result<T, ParseError> {
    serde_json::from_slice(data).map_err(|source| ParseError::Format { what, source })
}

#[derive(Deserialize)]
struct Aws {
    prefixes: Vec<AwsV4>,
    #[serde(default)]
    ipv6_prefixes: Vec<AwsV6>,
}

#[derive(Deserialize)]
struct AwsV4 {
    ip_prefix: String,
    region: String,
    service: String,
}

#[derive(Deserialize)]
struct AwsV6 {
    ipv6_prefix: String,
    region: String,
    service: String,
}

#[derive(Deserialize)]
struct Google {
    prefixes: Vec<GooglePrefix>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GooglePrefix {
    ipv4_prefix: Option<String>,
    ipv6_prefix: Option<String>,
    scope: Option<String>,
}

#[derive(Deserialize)]
struct Azure {
    values: Vec<AzureTag>,
}

#[derive(Deserialize)]
struct AzureTag {
    name: String,
    properties: AzureProperties,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AzureProperties {
    address_prefixes: Vec<String>,
}

#[derive(Deserialize)]
struct Oracle {
    regions: Vec<OracleRegion>,
}

#[derive(Deserialize)]
struct OracleRegion {
    region: String,
    cidrs: Vec<OracleCidr>,
}

#[derive(Deserialize)]
struct OracleCidr {
    cidr: String,
    #[serde(default)]
    tags: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let aws = br#"{"prefixes":[{"ip_prefix":"3.5.140.0/22","region":"ap-northeast-2","service":"S3","network_border_group":"x"},{"ip_prefix":"15.230.56.104/31","region":"us-east-1","service":"EC2","network_border_group":"x"}],"ipv6_prefixes":[{"ipv6_prefix":"2600:1f14::/35","region":"us-west-2","service":"EC2","network_border_group":"x"}]}"#;
        let mut s = RangeSourceConfig::unfiltered("t", RangeFormat::Aws);
        assert_eq!(parse(&s, aws).unwrap().len(), 3);
        s.services = vec!["ec2".into()];
        assert_eq!(parse(&s, aws).unwrap().len(), 2);
        s.regions = vec!["us-west-2".into()];
        assert_eq!(parse(&s, aws).unwrap(), vec!["2600:1f14::/35".parse::<IpNet>().unwrap()]);
        s.regions = vec!["mars-1".into()];
        assert!(parse(&s, aws).unwrap_err().to_string().contains("no prefixes matched"));

        let text = b"# Cloudflare\n173.245.48.0/20\n\n103.21.244.0/22 # comment\n2400:cb00::/32\n";
        assert_eq!(parse(&RangeSourceConfig::unfiltered("t", RangeFormat::Cidrs), text).unwrap().len(), 3);
        assert!(parse(&RangeSourceConfig::unfiltered("t", RangeFormat::Cidrs), b"10.0.0.0/8\nnonsense\n")
            .unwrap_err()
            .to_string()
            .contains("line 2"));
        assert!(parse(&RangeSourceConfig::unfiltered("t", RangeFormat::Azure), b"{\"values\":").is_err());
    }
}
