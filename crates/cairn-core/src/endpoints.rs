//! Online endpoints: the API bodies and the rules an endpoint must follow (its name, its
//! authentication mode, its traffic split). An endpoint is a stable, authenticated scoring URI;
//! deployments (the replicas that answer) hang under it.
//!
//! Pure logic only: whether a named deployment exists is for the caller to say.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Error;

/// The endpoint name rule, quoted in every error.
pub const ENDPOINT_NAME_RULE: &str = "3 to 32 characters: lower-case letters, digits and '-', \
     starting with a letter and ending with a letter or digit (it becomes part of the scoring URI)";

/// Checks an endpoint name: `[a-z][a-z0-9-]*[a-z0-9]`, 3 to 32 characters (DNS-label safe).
pub fn validate_endpoint_name(name: &str) -> Result<(), Error> {
    let b = name.as_bytes();
    let ok = (3..=32).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        let shown: String = name.chars().take(40).collect();
        Err(Error::invalid(format!("invalid endpoint name {shown:?}: {ENDPOINT_NAME_RULE}")))
    }
}

/// How scoring requests authenticate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum AuthMode {
    /// A primary and a secondary key that never expire (Azure's default).
    #[serde(rename = "key")]
    Key,
    /// Short-lived signed tokens from `get-token` (`token` is accepted as a synonym).
    #[serde(rename = "aml_token", alias = "token")]
    AmlToken,
}

impl AuthMode {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthMode::Key => "key",
            AuthMode::AmlToken => "aml_token",
        }
    }

    pub fn parse(s: &str) -> Result<AuthMode, Error> {
        match s {
            "key" => Ok(AuthMode::Key),
            "aml_token" | "token" => Ok(AuthMode::AmlToken),
            "aad_token" => Err(Error::invalid(
                "auth_mode aad_token (Microsoft Entra ID) is not supported: use key or aml_token",
            )),
            other => Err(Error::invalid(format!("unknown auth_mode {other:?}: use key or aml_token"))),
        }
    }
}

/// Azure's `provisioning_state`. Creating and deleting an endpoint without deployments are
/// immediate, so such an endpoint is `Succeeded`; the other states belong to operations on
/// deployments, which run in the background.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum ProvisioningState {
    Creating,
    Updating,
    Deleting,
    Succeeded,
    Failed,
    Canceled,
}

impl ProvisioningState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProvisioningState::Creating => "Creating",
            ProvisioningState::Updating => "Updating",
            ProvisioningState::Deleting => "Deleting",
            ProvisioningState::Succeeded => "Succeeded",
            ProvisioningState::Failed => "Failed",
            ProvisioningState::Canceled => "Canceled",
        }
    }

    pub fn parse(s: &str) -> Option<ProvisioningState> {
        [
            ProvisioningState::Creating,
            ProvisioningState::Updating,
            ProvisioningState::Deleting,
            ProvisioningState::Succeeded,
            ProvisioningState::Failed,
            ProvisioningState::Canceled,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// An online endpoint as the API shows it. Keys are never part of it (see [`EndpointKeys`]).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Endpoint {
    pub id: String,
    pub name: String,
    pub workspace: String,
    pub description: String,
    pub tags: BTreeMap<String, String>,
    pub auth_mode: AuthMode,
    /// Percent of live traffic per deployment.
    pub traffic: BTreeMap<String, i64>,
    /// Percent of traffic copied to one deployment (responses discarded).
    pub mirror_traffic: BTreeMap<String, i64>,
    pub provisioning_state: ProvisioningState,
    /// `{public_url}/endpoints/{name}/score`: no workspace in it, so names are unique per server.
    pub scoring_uri: String,
    pub swagger_uri: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// `POST …/endpoints`: Azure ML v2's online-endpoint YAML, as JSON (`$schema` is dropped by the
/// CLI; unknown keys are refused with their name).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEndpoint {
    pub name: String,
    #[serde(default = "default_auth_mode")]
    pub auth_mode: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub traffic: BTreeMap<String, i64>,
    #[serde(default)]
    pub mirror_traffic: BTreeMap<String, i64>,
}

fn default_auth_mode() -> String {
    "key".into()
}

/// `PATCH …/endpoints/{name}`: only the fields given change.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateEndpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<BTreeMap<String, i64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirror_traffic: Option<BTreeMap<String, i64>>,
}

/// The two keys of a key-mode endpoint (writer or admin only).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct EndpointKeys {
    pub primary_key: String,
    pub secondary_key: String,
}

/// Which key `regen-key` replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    Primary,
    Secondary,
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegenerateKey {
    pub key_type: KeyType,
}

/// `POST …/endpoints/{name}/token`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Lifetime in seconds, 1 to [`MAX_TOKEN_SECONDS`]; default [`DEFAULT_TOKEN_SECONDS`].
    #[serde(default)]
    pub expires_in_seconds: Option<i64>,
}

pub const DEFAULT_TOKEN_SECONDS: i64 = 3600;
pub const MAX_TOKEN_SECONDS: i64 = 24 * 3600;

/// A scoring token, named like Azure's `EndpointAuthToken` (times in Unix seconds).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointToken {
    pub access_token: String,
    pub token_type: String,
    pub expiry_time_utc: i64,
    /// Get a new token after this time; the old one stays valid until its expiry.
    pub refresh_after_time_utc: i64,
}

/// Checks the lifetime a caller asks for.
pub fn token_lifetime(req: &TokenRequest) -> Result<i64, Error> {
    match req.expires_in_seconds {
        None => Ok(DEFAULT_TOKEN_SECONDS),
        Some(s) if (1..=MAX_TOKEN_SECONDS).contains(&s) => Ok(s),
        Some(s) => Err(Error::invalid(format!(
            "expires_in_seconds must be between 1 and {MAX_TOKEN_SECONDS}, not {s}"
        ))),
    }
}

/// Azure's limits on tags of a resource.
pub const MAX_TAGS: usize = 50;
const MAX_TAG_KEY: usize = 512;
const MAX_TAG_VALUE: usize = 256;

pub fn validate_tags(tags: &BTreeMap<String, String>) -> Result<(), Error> {
    if tags.len() > MAX_TAGS {
        return Err(Error::invalid(format!("at most {MAX_TAGS} tags, not {}", tags.len())));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > MAX_TAG_KEY {
            return Err(Error::invalid(format!("tag key {k:?} must be 1 to {MAX_TAG_KEY} characters")));
        }
        if v.chars().count() > MAX_TAG_VALUE {
            return Err(Error::invalid(format!(
                "tag {k:?}: the value is longer than {MAX_TAG_VALUE} characters"
            )));
        }
    }
    Ok(())
}

/// Checks the shape of `traffic` and `mirror_traffic`, then that every deployment they name is
/// one of `deployments` (the endpoint's existing deployments).
///
/// Live traffic: each percentage 0–100, summing to 100, or to 0 (no live traffic: Azure shows a
/// new deployment as `{name: 0}`), or empty. Mirror traffic, as Azure: at most one deployment, at
/// most 50 %, and not a deployment that also takes live traffic.
pub fn validate_traffic(
    endpoint: &str,
    traffic: &BTreeMap<String, i64>,
    mirror: &BTreeMap<String, i64>,
    deployments: &[String],
) -> Result<(), Error> {
    for (d, p) in traffic {
        if !(0..=100).contains(p) {
            return Err(Error::invalid(format!(
                "traffic for {d:?} is {p}%: each percentage must be 0 to 100"
            )));
        }
    }
    let sum: i64 = traffic.values().sum();
    if sum != 100 && sum != 0 {
        let parts: Vec<String> = traffic.iter().map(|(d, p)| format!("{d}={p}")).collect();
        return Err(Error::invalid(format!(
            "traffic percentages must sum to 100, but {} sum to {sum}",
            parts.join(" + ")
        )));
    }
    if mirror.len() > 1 {
        return Err(Error::invalid("mirror_traffic may name one deployment only"));
    }
    for (d, p) in mirror {
        if !(0..=50).contains(p) {
            return Err(Error::invalid(format!("mirror_traffic for {d:?} is {p}%: it must be 0 to 50")));
        }
        if *p > 0 && traffic.get(d).is_some_and(|live| *live > 0) {
            return Err(Error::invalid(format!(
                "deployment {d:?} cannot take live and mirrored traffic at once"
            )));
        }
    }
    for d in traffic.keys().chain(mirror.keys()) {
        if !deployments.iter().any(|x| x == d) {
            return Err(Error::invalid(format!("no deployment \"{d}\" on endpoint \"{endpoint}\"")));
        }
    }
    Ok(())
}

/// Picks the deployment for a roll in `0..100` by cumulative traffic percentages (in name order,
/// so the choice is reproducible for a given roll). `None` when no deployment has live traffic.
pub fn pick_by_traffic(traffic: &BTreeMap<String, i64>, roll: u32) -> Option<&str> {
    let mut upper = 0i64;
    for (d, p) in traffic {
        upper += p;
        if *p > 0 && i64::from(roll) < upper {
            return Some(d);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn endpoint_names_follow_the_dns_rule() {
        for ok in ["abc", "wine-ep", "a12", "e-2", "a--b", &format!("a{}", "b".repeat(31))] {
            validate_endpoint_name(ok).unwrap();
        }
        for bad in ["ab", "1abc", "-abc", "abc-", "Abc", "a_b_c", "a.bc", "ab c", &"a".repeat(33), ""] {
            let e = validate_endpoint_name(bad).unwrap_err().to_string();
            assert!(e.contains("invalid endpoint name") && e.contains("3 to 32"), "{e}");
        }
    }

    #[test]
    fn auth_modes_accept_token_as_a_synonym_and_refuse_the_rest() {
        assert_eq!(AuthMode::parse("token").unwrap(), AuthMode::AmlToken);
        assert_eq!(AuthMode::parse("aml_token").unwrap(), AuthMode::AmlToken);
        assert_eq!(AuthMode::parse("key").unwrap(), AuthMode::Key);
        assert!(AuthMode::parse("aad_token").unwrap_err().to_string().contains("not supported"));
        assert!(AuthMode::parse("none").unwrap_err().to_string().contains("unknown auth_mode"));
    }

    #[test]
    fn traffic_must_sum_to_100_and_name_existing_deployments() {
        let deps = vec!["blue".to_string(), "green".to_string()];
        validate_traffic("ep", &map(&[]), &map(&[]), &[]).unwrap();
        validate_traffic("ep", &map(&[("blue", 90), ("green", 10)]), &map(&[]), &deps).unwrap();
        validate_traffic("ep", &map(&[("blue", 0)]), &map(&[]), &deps).unwrap();
        let e = validate_traffic("ep", &map(&[("blue", 90), ("green", 5)]), &map(&[]), &deps).unwrap_err();
        assert!(e.to_string().contains("sum to 95"), "{e}");
        let e = validate_traffic("ep", &map(&[("blue", 101)]), &map(&[]), &deps).unwrap_err();
        assert!(e.to_string().contains("0 to 100"), "{e}");
        let e = validate_traffic("ep", &map(&[("blue", -10), ("green", 110)]), &map(&[]), &deps).unwrap_err();
        assert!(e.to_string().contains("0 to 100"), "{e}");
        let e = validate_traffic("ep", &map(&[("red", 100)]), &map(&[]), &deps).unwrap_err();
        assert_eq!(e.to_string(), "no deployment \"red\" on endpoint \"ep\"");
    }

    #[test]
    fn mirror_traffic_follows_azures_rules() {
        let deps = vec!["blue".to_string(), "green".to_string()];
        let live = map(&[("blue", 100)]);
        validate_traffic("ep", &live, &map(&[("green", 10)]), &deps).unwrap();
        assert!(validate_traffic("ep", &live, &map(&[("green", 60)]), &deps).is_err());
        assert!(validate_traffic("ep", &live, &map(&[("blue", 10)]), &deps).is_err());
        assert!(validate_traffic("ep", &live, &map(&[("blue", 5), ("green", 5)]), &deps).is_err());
        let e = validate_traffic("ep", &live, &map(&[("red", 5)]), &deps).unwrap_err();
        assert!(e.to_string().contains("no deployment \"red\""), "{e}");
    }

    #[test]
    fn picking_by_traffic_follows_cumulative_percentages() {
        let t = map(&[("blue", 90), ("green", 10), ("idle", 0)]);
        assert_eq!(pick_by_traffic(&t, 0), Some("blue"));
        assert_eq!(pick_by_traffic(&t, 89), Some("blue"));
        assert_eq!(pick_by_traffic(&t, 90), Some("green"));
        assert_eq!(pick_by_traffic(&t, 99), Some("green"));
        assert_eq!(pick_by_traffic(&map(&[("a", 0)]), 0), None);
        assert_eq!(pick_by_traffic(&map(&[]), 5), None);
    }

    #[test]
    fn token_lifetimes_are_bounded() {
        assert_eq!(token_lifetime(&TokenRequest::default()).unwrap(), 3600);
        assert_eq!(token_lifetime(&TokenRequest { expires_in_seconds: Some(1) }).unwrap(), 1);
        assert!(token_lifetime(&TokenRequest { expires_in_seconds: Some(0) }).is_err());
        assert!(token_lifetime(&TokenRequest { expires_in_seconds: Some(MAX_TOKEN_SECONDS + 1) }).is_err());
    }

    #[test]
    fn tags_are_limited() {
        let many: BTreeMap<String, String> = (0..51).map(|i| (format!("k{i}"), "v".into())).collect();
        assert!(validate_tags(&many).is_err());
        let long: BTreeMap<String, String> = [("k".to_string(), "v".repeat(257))].into();
        assert!(validate_tags(&long).is_err());
        validate_tags(&[("team".to_string(), "wine".to_string())].into()).unwrap();
    }
}
