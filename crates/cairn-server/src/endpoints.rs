//! Online endpoints' logic between the HTTP layers and the store: creating and updating
//! endpoints, their keys and tokens, and deciding whether a scoring request's credential is good.
//! The control plane (`routes/endpoints.rs`) and the scoring gateway (`gateway.rs`) both call here.

use cairn_core::api::Workspace;
use cairn_core::endpoints::*;
use cairn_core::{now_ms, Error};
use cairn_store::{EndpointRecord, StoredKey};
use subtle::ConstantTimeEq;

use crate::secret::{generate_key, ServerSecret, TokenCheck};
use crate::state::AppState;

/// The names of an endpoint's deployments (those not being deleted).
pub async fn deployment_names(state: &AppState, endpoint: &EndpointRecord) -> Result<Vec<String>, Error> {
    crate::deployments::names(state, endpoint).await
}

/// The associated data a key is sealed with: its endpoint and slot.
fn key_context(endpoint_id: &str, slot: KeyType) -> String {
    format!("endpoint-key/{endpoint_id}/{}", if slot == KeyType::Primary { "primary" } else { "secondary" })
}

fn new_stored_key(secret: &ServerSecret, endpoint_id: &str, slot: KeyType) -> StoredKey {
    let key = generate_key();
    StoredKey {
        sealed: secret.seal(&key, &key_context(endpoint_id, slot)),
        hash: crate::auth::hash_token(&key).1,
    }
}

/// The API view of a stored endpoint.
pub fn view(state: &AppState, e: &EndpointRecord) -> Endpoint {
    let base = format!("{}/endpoints/{}", state.public_url().trim_end_matches('/'), e.name);
    Endpoint {
        id: e.id.clone(),
        name: e.name.clone(),
        workspace: e.workspace.clone(),
        description: e.description.clone(),
        tags: e.tags.clone(),
        auth_mode: e.auth_mode,
        traffic: e.traffic.clone(),
        mirror_traffic: e.mirror_traffic.clone(),
        provisioning_state: e.provisioning_state,
        scoring_uri: format!("{base}/score"),
        swagger_uri: format!("{base}/swagger.json"),
        created_at: e.created_at,
        updated_at: e.updated_at,
    }
}

/// Validates and stores a new endpoint with two fresh keys.
pub async fn create(state: &AppState, ws: &Workspace, req: CreateEndpoint) -> Result<EndpointRecord, Error> {
    validate_endpoint_name(&req.name)?;
    let auth_mode = AuthMode::parse(&req.auth_mode)?;
    validate_tags(&req.tags)?;
    // A new endpoint has no deployment yet, so any deployment named in its traffic is unknown.
    validate_traffic(&req.name, &req.traffic, &req.mirror_traffic, &[])?;
    let id = EndpointRecord::new_id();
    let now = now_ms();
    let record = EndpointRecord {
        primary: new_stored_key(&state.secret, &id, KeyType::Primary),
        secondary: new_stored_key(&state.secret, &id, KeyType::Secondary),
        id,
        workspace_id: ws.id.clone(),
        workspace: ws.name.clone(),
        name: req.name,
        description: req.description,
        tags: req.tags,
        auth_mode,
        traffic: req.traffic,
        mirror_traffic: req.mirror_traffic,
        provisioning_state: ProvisioningState::Succeeded,
        created_at: now,
        updated_at: now,
    };
    state.store.create_endpoint(ws, &record).await?;
    Ok(record)
}

/// Applies the given fields, validating the result as a whole before anything is written.
pub async fn update(
    state: &AppState,
    ws: &Workspace,
    name: &str,
    req: UpdateEndpoint,
) -> Result<EndpointRecord, Error> {
    let mut e = state.store.endpoint(ws, name).await?;
    if let Some(d) = req.description {
        e.description = d;
    }
    if let Some(t) = req.tags {
        validate_tags(&t)?;
        e.tags = t;
    }
    if let Some(m) = req.auth_mode {
        e.auth_mode = AuthMode::parse(&m)?;
    }
    if let Some(t) = req.traffic {
        e.traffic = t;
    }
    if let Some(m) = req.mirror_traffic {
        e.mirror_traffic = m;
    }
    let deployments = deployment_names(state, &e).await?;
    validate_traffic(&e.name, &e.traffic, &e.mirror_traffic, &deployments)?;
    e.updated_at = now_ms();
    state.store.update_endpoint(&e).await?;
    Ok(e)
}

/// Opens both keys of a key-mode endpoint.
pub fn keys(state: &AppState, e: &EndpointRecord) -> Result<EndpointKeys, Error> {
    if e.auth_mode != AuthMode::Key {
        return Err(Error::invalid(format!(
            "endpoint \"{}\" uses auth_mode aml_token: get a token with `cairn endpoint get-token {}` \
             (keys are refused in token mode)",
            e.name, e.name
        )));
    }
    let open = |slot: KeyType, k: &StoredKey| {
        state.secret.open(&k.sealed, &key_context(&e.id, slot)).ok_or_else(|| {
            Error::Unavailable(format!(
                "cannot open the keys of endpoint \"{}\": they were sealed with another server secret \
                 (DATA_DIR/secret-key or CAIRN_SECRET_KEY changed); restore that secret, or regenerate both \
                 keys with `cairn endpoint regen-key`",
                e.name
            ))
        })
    };
    Ok(EndpointKeys {
        primary_key: open(KeyType::Primary, &e.primary)?,
        secondary_key: open(KeyType::Secondary, &e.secondary)?,
    })
}

/// Replaces one key; the other keeps working.
pub async fn regenerate_key(state: &AppState, e: &mut EndpointRecord, slot: KeyType) -> Result<(), Error> {
    let key = new_stored_key(&state.secret, &e.id, slot);
    let now = now_ms();
    state.store.set_endpoint_key(&e.id, slot, &key, now).await?;
    match slot {
        KeyType::Primary => e.primary = key,
        KeyType::Secondary => e.secondary = key,
    }
    e.updated_at = now;
    Ok(())
}

/// A signed token for a token-mode endpoint, valid for `lifetime` seconds.
pub fn token(state: &AppState, e: &EndpointRecord, lifetime: i64) -> Result<EndpointToken, Error> {
    if e.auth_mode != AuthMode::AmlToken {
        return Err(Error::invalid(format!(
            "endpoint \"{}\" uses auth_mode key: use its keys (`cairn endpoint get-keys {}`); tokens are \
             refused in key mode",
            e.name, e.name
        )));
    }
    let now = now_ms() / 1000;
    let expiry = now + lifetime;
    Ok(EndpointToken {
        access_token: state.secret.sign_token(&e.id, expiry),
        token_type: "Bearer".into(),
        expiry_time_utc: expiry,
        refresh_after_time_utc: now + lifetime / 2,
    })
}

/// Why a scoring request was refused (all are 401).
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    Missing,
    /// Wrong, unknown, or for an endpoint that does not exist: one answer for all of these.
    Invalid,
    /// A genuine credential of the other kind (only a holder of one learns the endpoint's mode).
    WrongMode(AuthMode),
    Expired(i64),
}

impl Denied {
    pub fn message(&self) -> String {
        match self {
            Denied::Missing => "missing credentials: send 'Authorization: Bearer <key or token>'".into(),
            Denied::Invalid => "invalid key or token".into(),
            Denied::WrongMode(AuthMode::Key) => {
                "this endpoint uses key authentication: send one of its keys, not a token".into()
            }
            Denied::WrongMode(AuthMode::AmlToken) => {
                "this endpoint uses aml_token authentication: send a token from get-token, not a key".into()
            }
            Denied::Expired(at) => format!(
                "the token expired at {}; get a new one with get-token",
                chrono::DateTime::from_timestamp(*at, 0).map(|t| t.to_rfc3339()).unwrap_or_default()
            ),
        }
    }
}

/// Checks `presented` against endpoint `e` (`None` when no endpoint has the requested name). The
/// key is hashed and compared with both stored hashes in constant time, whether or not the
/// endpoint exists, so the answer to a stranger is the same either way.
pub fn authenticate(
    secret: &ServerSecret,
    e: Option<&EndpointRecord>,
    presented: Option<&str>,
    now_ms: i64,
) -> Result<(), Denied> {
    let presented = presented.map(str::trim).filter(|p| !p.is_empty()).ok_or(Denied::Missing)?;
    let hash = crate::auth::hash_token(presented).1;
    let Some(e) = e else {
        return Err(Denied::Invalid);
    };
    let is_key = bool::from(
        hash.as_bytes().ct_eq(e.primary.hash.as_bytes()) | hash.as_bytes().ct_eq(e.secondary.hash.as_bytes()),
    );
    let token = secret.verify_token(presented, &e.id, now_ms);
    match (e.auth_mode, is_key, token) {
        (AuthMode::Key, true, _) => Ok(()),
        (AuthMode::Key, false, TokenCheck::Valid | TokenCheck::Expired(_)) => {
            Err(Denied::WrongMode(AuthMode::Key))
        }
        (AuthMode::AmlToken, _, TokenCheck::Valid) => Ok(()),
        (AuthMode::AmlToken, _, TokenCheck::Expired(at)) => Err(Denied::Expired(at)),
        (AuthMode::AmlToken, true, TokenCheck::Invalid) => Err(Denied::WrongMode(AuthMode::AmlToken)),
        _ => Err(Denied::Invalid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(secret: &ServerSecret, mode: AuthMode) -> (EndpointRecord, String, String) {
        let (p, s) = (generate_key(), generate_key());
        let stored = |k: &str| StoredKey { sealed: secret.seal(k, "c"), hash: crate::auth::hash_token(k).1 };
        let e = EndpointRecord {
            id: "ep-id".into(),
            workspace_id: "w".into(),
            workspace: "w".into(),
            name: "ep".into(),
            description: String::new(),
            tags: Default::default(),
            auth_mode: mode,
            traffic: Default::default(),
            mirror_traffic: Default::default(),
            provisioning_state: ProvisioningState::Succeeded,
            primary: stored(&p),
            secondary: stored(&s),
            created_at: 0,
            updated_at: 0,
        };
        (e, p, s)
    }

    #[test]
    fn key_mode_takes_either_key_and_refuses_tokens() {
        let secret = ServerSecret::from_material(b"0123456789abcdef0123456789abcdef");
        let (e, p, s) = record(&secret, AuthMode::Key);
        assert_eq!(authenticate(&secret, Some(&e), Some(&p), 0), Ok(()));
        assert_eq!(authenticate(&secret, Some(&e), Some(&s), 0), Ok(()));
        assert_eq!(authenticate(&secret, Some(&e), Some("nope"), 0), Err(Denied::Invalid));
        assert_eq!(authenticate(&secret, Some(&e), None, 0), Err(Denied::Missing));
        let t = secret.sign_token("ep-id", 10);
        assert_eq!(authenticate(&secret, Some(&e), Some(&t), 0), Err(Denied::WrongMode(AuthMode::Key)));
    }

    #[test]
    fn token_mode_takes_live_tokens_and_refuses_keys_and_expired_ones() {
        let secret = ServerSecret::from_material(b"0123456789abcdef0123456789abcdef");
        let (e, p, _) = record(&secret, AuthMode::AmlToken);
        let t = secret.sign_token("ep-id", 10);
        assert_eq!(authenticate(&secret, Some(&e), Some(&t), 9_999), Ok(()));
        assert_eq!(authenticate(&secret, Some(&e), Some(&t), 10_000), Err(Denied::Expired(10)));
        assert_eq!(authenticate(&secret, Some(&e), Some(&p), 0), Err(Denied::WrongMode(AuthMode::AmlToken)));
        let other = secret.sign_token("other-id", 10);
        assert_eq!(authenticate(&secret, Some(&e), Some(&other), 0), Err(Denied::Invalid));
    }

    #[test]
    fn a_missing_endpoint_looks_like_a_wrong_key() {
        let secret = ServerSecret::from_material(b"0123456789abcdef0123456789abcdef");
        let (e, _, _) = record(&secret, AuthMode::Key);
        let none = authenticate(&secret, None, Some("guess"), 0).unwrap_err();
        let wrong = authenticate(&secret, Some(&e), Some("guess"), 0).unwrap_err();
        assert_eq!(none, wrong);
        assert_eq!(none.message(), wrong.message());
    }
}
