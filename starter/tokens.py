"""Decision tokens for people without an identity provider: keys and minting.

A holder of the signing key (``WFA_DECISION_SIGNING_KEY``: the path of a private JWK) mints a token
that lets one actor take the named decisions on one run (and step) until it expires; the workers
verify it with the public key set (``WFA_DECISION_KEYS``). See ``workflows/decision_tokens.py``.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import uuid4

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from starter.errors import InvalidInputError
from starter.inputs import brief, read_text_file
from workflows.decision_tokens import (
    ALGORITHMS,
    DECISIONS,
    DEFAULT_ISSUER,
    DecisionVerifier,
    KeySetError,
    wait_mark,
)

SIGNING_KEY_ENV = "WFA_DECISION_SIGNING_KEY"
SIGNING_KEYS_ENV = "WFA_DECISION_SIGNING_KEYS"
ISSUER_ENV = "WFA_DECISION_ISSUER"
REQUIRE_PROOF_ENV = "WFA_REQUIRE_DECISION_PROOF"
DEFAULT_TTL_S = 3600
MAX_TTL_S = 90 * 24 * 3600


class TokenError(InvalidInputError):
    """A key or minting request that cannot be honoured; the message names why."""


def proof_required_by_default() -> bool:
    """Whether ``WFA_REQUIRE_DECISION_PROOF`` asks runs started here to require proof."""
    return os.environ.get(REQUIRE_PROOF_ENV, "").strip().lower() in ("1", "true", "yes")


def generate_keys(
    kid: str | None = None, tenants: Sequence[str] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new Ed25519 key pair: the private JWK (for minting) and the public JWKS (for workers).

    With ``tenants`` the public key says so (``"tenants": [...]``): workers verify with it only
    tokens of those tenants, so one tenant's key cannot decide for another (production: one key
    per tenant). Without, it verifies tokens of any tenant (the demo's single key).

    To rotate, generate a new pair and list both public keys in the workers' JWKS until the tokens
    of the old key have expired (:func:`merge_jwks`).
    """
    kid = kid or f"wfa-{uuid4().hex[:12]}"
    private = Ed25519PrivateKey.generate()
    private_jwk: dict[str, Any] = json.loads(OKPAlgorithm.to_jwk(private))
    public_jwk: dict[str, Any] = json.loads(OKPAlgorithm.to_jwk(private.public_key()))
    for jwk in (private_jwk, public_jwk):
        jwk.update(kid=kid, alg="EdDSA", use="sig")
    if tenants:
        public_jwk["tenants"] = list(dict.fromkeys(tenants))
    return private_jwk, {"keys": [public_jwk]}


def merge_jwks(*sets: dict[str, Any]) -> dict[str, Any]:
    """One key set holding every key of ``sets`` (the first of a kid wins)."""
    keys: dict[str, Any] = {}
    for jwks in sets:
        for key in jwks.get("keys", []):
            keys.setdefault(key.get("kid"), key)
    return {"keys": list(keys.values())}


KID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,100}")
"""What ``--kid`` may be: it travels in every token's header and in log lines naming the key."""


def write_keys(
    private_path: str | Path, jwks_path: str | Path, kid: str | None = None, *, tenants: Sequence[str] = ()
) -> str:
    """Generates a key pair: writes the private JWK (owner-only, never over an existing file) and
    adds the public key to the JWKS at ``jwks_path`` (created, or kept with its keys: rotation).

    The key set written is one the workers load (:meth:`DecisionVerifier.from_jwks`): a tenant
    name that is not one, an odd kid or a key set the workers already refuse is refused before
    anything is written (found by a probe: ``--tenant ''`` wrote a set no worker would start with),
    and the private file is removed again when the key set cannot be written.

    Returns:
        The new key's kid.

    Raises:
        TokenError: A bad kid or tenant, the private file exists, or the JWKS cannot be read,
            used or written.
    """
    from activities.store.errors import InvalidTenantError
    from activities.store.repository import check_tenant

    if kid is not None and not KID_PATTERN.fullmatch(kid):
        raise TokenError(f"a kid is 1 to 100 of A-Z a-z 0-9 . _ : -, not {brief(kid)}")
    for tenant in tenants:
        try:
            check_tenant(tenant)
        except InvalidTenantError as err:
            raise TokenError(str(err)) from None
    private_path, jwks_path = Path(private_path), Path(jwks_path)
    if os.path.abspath(private_path) == os.path.abspath(jwks_path) or (
        private_path.exists() and jwks_path.exists() and os.path.samefile(private_path, jwks_path)
    ):  # (the key set was written over the private key just made: a probe)
        raise TokenError("--private and --jwks name the same file: the key set would replace the private key")
    existing: dict[str, Any] = {"keys": []}
    if jwks_path.exists():
        try:
            existing = json.loads(read_text_file(jwks_path))
        except (OSError, ValueError, RecursionError) as err:
            raise TokenError(
                f"cannot read the key set {jwks_path}: {getattr(err, 'strerror', None) or err}"
            ) from None
        if not isinstance(existing, dict) or not isinstance(existing.get("keys"), list):
            raise TokenError(f'{jwks_path} is not a key set ({{"keys": [...]}})')
    private, public = generate_keys(kid, tenants)
    if any(k.get("kid") == private["kid"] for k in existing["keys"] if isinstance(k, dict)):
        raise TokenError(f"{jwks_path} already holds a key {private['kid']!r}")
    merged = merge_jwks(existing, public)
    try:
        DecisionVerifier.from_jwks(merged)
    except KeySetError as err:
        raise TokenError(f"{jwks_path} would not be a key set workers load: {err}") from None
    try:
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise TokenError(f"{private_path} exists: a signing key is never overwritten") from None
    except OSError as err:
        raise TokenError(f"cannot write {private_path}: {err.strerror or err}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(private, file, indent=2)
    try:
        jwks_path.write_text(json.dumps(merged, indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        private_path.unlink(missing_ok=True)  # a key no worker knows: written again with the set
        raise TokenError(f"cannot write {jwks_path}: {err.strerror or err}") from None
    return str(private["kid"])


def load_signing_key(path: str | Path | None = None) -> dict[str, Any]:
    """The private JWK at ``path`` (default ``$WFA_DECISION_SIGNING_KEY``).

    Raises:
        TokenError: No path, unreadable, or not a private Ed25519/P-256 JWK with a kid.
    """
    path = path or os.environ.get(SIGNING_KEY_ENV)
    if not path:
        raise TokenError(f"no signing key: set {SIGNING_KEY_ENV} to the path of a private JWK")
    try:
        jwk = json.loads(read_text_file(Path(path)))  # a FIFO no one writes reads as empty
    except (OSError, ValueError, RecursionError) as err:
        raise TokenError(
            f"cannot read the signing key {path}: {getattr(err, 'strerror', None) or err}"
        ) from None
    if not isinstance(jwk, dict) or "d" not in jwk or not jwk.get("kid"):
        raise TokenError(f"the signing key {path} is not a private JWK with a kid")
    return jwk


def load_signing_keys(environ: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """The private JWKs minting decision tokens, by tenant (``"*"``: every tenant).

    ``WFA_DECISION_SIGNING_KEYS=acme=/keys/acme.jwk,globex=/keys/globex.jwk``: one key per tenant
    (production; the workers' key set tags each public key with its tenant). ``WFA_DECISION_SIGNING_KEY``:
    one key for every tenant not listed (the demo's convenience).

    Raises:
        TokenError: An entry that is not ``tenant=path``, or a key that cannot be read.
    """
    env = os.environ if environ is None else environ
    keys: dict[str, dict[str, Any]] = {}
    for entry in (e.strip() for e in env.get(SIGNING_KEYS_ENV, "").split(",")):
        if not entry:
            continue
        tenant, sep, path = entry.partition("=")
        if not sep or not tenant.strip() or not path.strip():
            raise TokenError(f"{SIGNING_KEYS_ENV}: {entry[:80]!r} is not tenant=path")
        keys[tenant.strip()] = load_signing_key(path.strip())
    if env.get(SIGNING_KEY_ENV):
        keys["*"] = load_signing_key(env[SIGNING_KEY_ENV])
    return keys


def configured_issuer(env: Mapping[str, str] | None = None) -> str:
    """The issuer this installation's tokens carry and its verifiers expect: ``$WFA_DECISION_ISSUER``,
    else ``wfa`` (the worker reads the same variable)."""
    return (os.environ if env is None else env).get(ISSUER_ENV) or DEFAULT_ISSUER


def check_request(decisions: Iterable[str], step: str | None, ttl_s: float) -> list[str]:
    """The decisions a token is asked for, checked with its step and lifetime.

    Raises:
        TokenError: Naming what cannot be minted.
    """
    allowed = list(dict.fromkeys(decisions))
    unknown = [d for d in allowed if d not in DECISIONS]
    if not allowed or unknown:
        got = ", ".join(d[:40] for d in allowed[:5]) or "none"
        raise TokenError(f"decisions must be some of {', '.join(DECISIONS)} (got {got})")
    if step is None and any(d != "cancel" for d in allowed):
        raise TokenError("a token to approve, reject or complete names the approval step or task (--step)")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise TokenError(f"ttl must be between 1 second and {MAX_TTL_S // 86400} days")
    return allowed


def mint(
    signing_key: dict[str, Any],
    *,
    tenant: str,
    run: str,
    actor: str,
    decisions: Iterable[str],
    step: str | None = None,
    ttl_s: float = DEFAULT_TTL_S,
    issuer: str | None = None,
    now: float | None = None,
    groups: Iterable[str] = (),
    since: datetime | None = None,
    chain: str | None = None,
) -> str:
    """A signed decision token.

    Args:
        signing_key: A private JWK (:func:`load_signing_key`).
        tenant: The run's tenant.
        run: The run's workflow id.
        actor: Who decides (the token's ``sub``); must be one of the step's approvers.
        decisions: What the token allows: approve, reject, cancel.
        step: The approval step id or path (required for approve and reject).
        ttl_s: How long the token is valid.
        issuer: Default ``$WFA_DECISION_ISSUER`` or ``wfa``.
        now: Unix time of issue (tests); default the clock.
        groups: The groups the actor is a member of (claim ``groups``), for steps that name a
            ``group:<name>`` approver or candidate group; left out when empty.
        since: When the step began the wait the token is for (claim ``since``): the token then
            decides that wait only, not a later one at the same step. None: any wait at the step.
        chain: The first run id of the run's continue-as-new chain (claim ``chain``): the token
            then decides in that execution of ``run`` only, not in a run started later under the
            same id. None: any run under the id that started before the token was issued.

    Raises:
        TokenError: Naming the bad argument.
    """
    allowed = check_request(decisions, step, ttl_s)
    for name, value in (("run", run), ("actor", actor), ("tenant", tenant)):
        if not value:
            raise TokenError(f"{name} must not be empty")
    try:
        key = jwt.PyJWK.from_dict(signing_key)
    except jwt.PyJWTError as err:
        raise TokenError(f"the signing key cannot be used: {err}") from None
    if key.algorithm_name not in ALGORITHMS:
        raise TokenError(
            f"the signing key's algorithm {key.algorithm_name} is not one of {', '.join(ALGORITHMS)}"
        )
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "iss": issuer or configured_issuer(),
        "sub": actor,
        "tenant": tenant,
        "run": run,
        "decisions": allowed,
        "iat": issued,
        "exp": issued + int(ttl_s),
        "jti": uuid4().hex,
    }
    if step is not None:
        claims["step"] = step
    member_of = list(dict.fromkeys(groups))
    if member_of:
        claims["groups"] = member_of
    if since is not None:
        claims["since"] = wait_mark(since)
    if chain:
        claims["chain"] = chain
    return jwt.encode(claims, key.key, algorithm=key.algorithm_name, headers={"kid": signing_key["kid"]})
