-- Online endpoints. Names are unique across the server, not per workspace: the scoring URI
-- (`/endpoints/{name}/score`) carries no workspace. Keys are stored twice: sealed with the
-- server secret (XChaCha20-Poly1305, so get-keys can show them again) and as SHA-256 (so that
-- scoring compares hashes in constant time without opening the seal on every request).
-- tags, traffic and mirror_traffic are JSON objects.

CREATE TABLE endpoints (
    id                   TEXT PRIMARY KEY,
    workspace_id         TEXT NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    name                 TEXT NOT NULL UNIQUE,
    description          TEXT NOT NULL,
    tags                 TEXT NOT NULL,
    auth_mode            TEXT NOT NULL,
    traffic              TEXT NOT NULL,
    mirror_traffic       TEXT NOT NULL,
    provisioning_state   TEXT NOT NULL,
    primary_key_sealed   TEXT NOT NULL,
    secondary_key_sealed TEXT NOT NULL,
    primary_key_hash     TEXT NOT NULL,
    secondary_key_hash   TEXT NOT NULL,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL
);

CREATE INDEX endpoints_workspace ON endpoints (workspace_id, name);
