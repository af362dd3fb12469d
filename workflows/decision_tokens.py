"""Decision tokens: the proof an approve, reject or cancel carries, checked by the workflow.

A decision token is a JWT signed with an asymmetric key (Ed25519 ``EdDSA`` or P-256 ``ES256``) by the
product's own signing key (``wfa token mint``) or a company's identity provider. Its claims: ``iss``,
``sub`` (the actor), ``tenant``, ``run`` (the workflow id), ``step`` (the approval step id or path;
absent for a cancel), ``decisions`` (a subset of approve, reject, cancel, complete), ``groups``
(optional: groups the actor decides as a member of), ``since`` (optional: the wait it was minted
for, :func:`wait_mark` of the step's ``since``; the links the run mails and the inbox's tokens carry
it, so a token minted while a step waited once does not decide it when a loop brings it back),
``chain`` (optional: the first run id of the run's continue-as-new chain, which ``FlowClient`` and
``wfa token mint`` write), ``exp``, ``iat``, ``jti``; its header names the key (``kid``).

A token decides in one execution of its workflow id only: a new run started under the same id
(after a failure or a cancel, by ``start_run``'s default id reuse policy) refuses a token whose
``chain`` names another chain, and one without ``chain`` or ``since`` issued before its chain
started (``iat``, give or take :data:`LEEWAY_S`). Before, the run kept only the ``jti`` of the
tokens it accepted, and a new run under the id took a token its predecessor had spent (found by
an attacker's probe).

A key of the set may carry ``"tenants": [...]``: it then verifies only tokens of those tenants, so
the key of one tenant cannot decide in another (the production setup: one signing key per tenant).
A key without ``tenants`` verifies tokens of any tenant (the demo's single key).

The worker holds the verification keys (a JWKS): it builds a :class:`DecisionVerifier` at start and
:func:`configure` places it here; the workflow only calls :func:`verifier`. Keys never enter history.
The workflow verifies only in its update validators, which run when an update is first handled and
never on replay, so verification (and the keys a worker holds at that moment) cannot make a run
nondeterministic. Time comes in as an argument (``workflow.now()``): PyJWT's own clock checks are off.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

ALGORITHMS = ("EdDSA", "ES256")
"""The only algorithms a token may be signed with: asymmetric ones (never ``none``, never HMAC)."""
DECISIONS = ("approve", "reject", "cancel", "complete")
"""``complete`` completes a human task."""
MAX_TOKEN_CHARS = 8192
"""Longest token read; a longer one is refused before it is parsed."""
LEEWAY_S = 30
"""Clock skew allowed between the minter and the run for ``iat``/``nbf`` (not for ``exp``)."""
DEFAULT_ISSUER = "wfa"
"""The issuer of tokens the product mints itself."""
_REQUIRED_CLAIMS = ("iss", "sub", "tenant", "run", "decisions", "exp", "iat", "jti")


class TokenRefusedError(Exception):
    """A token that does not prove the decision; the message names why (never the token)."""


class TokenExpiredError(TokenRefusedError):
    """A token whose signature is good but whose time is over (``expired_at``: when; None when
    the claim names no time a clock can show)."""

    def __init__(self, expired_at: datetime | None) -> None:
        super().__init__(
            f"token expired at {expired_at.isoformat() if expired_at else 'a time out of range'}"
        )
        self.expired_at = expired_at


class KeySetError(ValueError):
    """A key set that cannot serve for verification (malformed, symmetric, no kid, ...)."""


@dataclass(frozen=True)
class DecisionClaims:
    """What a verified token proves."""

    actor: str
    tenant: str
    run: str
    step: str | None
    decisions: tuple[str, ...]
    jti: str
    kid: str
    groups: tuple[str, ...] = ()
    since: int | None = None
    """The wait the token was minted for (:func:`wait_mark`); None: any wait at its step."""
    chain: str | None = None
    """The first run id of the chain the token was minted for; None: not named."""
    issued_at: float = 0.0
    """The token's ``iat`` (Unix time)."""


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def wait_mark(since: datetime) -> int:
    """The ``since`` claim for a step that waits since ``since``: whole microseconds since the epoch
    (exact, so a minter and the run compare equal values)."""
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return (since - _EPOCH) // timedelta(microseconds=1)


class DecisionVerifier:
    """Verifies decision tokens against the public keys the worker holds.

    Args:
        keys: Verification keys by ``kid``.
        issuer: The ``iss`` every token must carry.
        required: The worker's own setting: every decision and cancel update must carry a token,
            whatever the run's options say.
    """

    def __init__(
        self,
        keys: Mapping[str, jwt.PyJWK],
        issuer: str = DEFAULT_ISSUER,
        *,
        required: bool = False,
        tenants: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        if not keys:
            raise KeySetError("the key set holds no key")
        self.keys = dict(keys)
        self.issuer = issuer
        self.required = required
        self.tenants = {kid: tuple(names) for kid, names in (tenants or {}).items()}
        """The tenants a key signs for, by kid (a kid not listed: any tenant)."""

    @classmethod
    def from_jwks(
        cls, jwks: Any, issuer: str = DEFAULT_ISSUER, *, required: bool = False
    ) -> DecisionVerifier:
        """A verifier for a JWKS document (``{"keys": [...]}``); every key needs a ``kid``.

        Raises:
            KeySetError: Naming the first key that cannot serve (symmetric, unknown type, private
                parts are accepted but only the public key is used).
        """
        if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
            raise KeySetError('a key set is a JSON object {"keys": [...]}')
        keys: dict[str, jwt.PyJWK] = {}
        tenants: dict[str, list[str]] = {}
        for index, data in enumerate(jwks["keys"]):
            if not isinstance(data, dict):
                raise KeySetError(f"key {index} is not a JSON object")
            kid = data.get("kid")
            if not isinstance(kid, str) or not kid:
                raise KeySetError(f"key {index} has no kid")
            if data.get("kty") not in ("OKP", "EC"):
                raise KeySetError(f"key {kid!r}: only OKP (Ed25519) and EC (P-256) keys verify decisions")
            try:
                key = jwt.PyJWK.from_dict(data)
            except jwt.PyJWTError as err:
                raise KeySetError(f"key {kid!r}: {err}") from None
            if key.algorithm_name not in ALGORITHMS:
                raise KeySetError(
                    f"key {kid!r}: algorithm {key.algorithm_name} is not one of {', '.join(ALGORITHMS)}"
                )
            if kid in keys:
                raise KeySetError(f"two keys have the kid {kid!r}")
            keys[kid] = key
            if "tenants" in data:
                names = data["tenants"]
                if (
                    not isinstance(names, list)
                    or not names
                    or not all(isinstance(n, str) and n for n in names)
                ):
                    raise KeySetError(f"key {kid!r}: tenants must be a non-empty list of tenant names")
                tenants[kid] = names
        return cls(keys, issuer, required=required, tenants=tenants)

    def verify(self, token: str, *, now: datetime, tenant: str, run: str, decision: str) -> DecisionClaims:
        """The claims of ``token`` if it proves ``decision`` on run ``run`` of ``tenant`` at ``now``.

        The step and the actor are the caller's to check against what is pending (:func:`check_step`).

        Raises:
            TokenRefusedError: Naming why the token proves nothing.
        """
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenRefusedError(f"token is {len(token)} characters long (at most {MAX_TOKEN_CHARS})")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRefusedError("token is not a JWT") from None
        alg = header.get("alg")
        if alg not in ALGORITHMS:
            raise TokenRefusedError(
                f"token algorithm {str(alg)[:20]!r} is not accepted ({', '.join(ALGORITHMS)})"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or kid not in self.keys:
            raise TokenRefusedError(f"token key {str(kid)[:40]!r} is not known to this worker")
        key = self.keys[kid]
        if alg != key.algorithm_name:
            raise TokenRefusedError(
                f"token algorithm {alg} does not match key {kid!r} ({key.algorithm_name})"
            )
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[key.algorithm_name],
                options={
                    "verify_exp": False,  # checked below against the run's clock
                    "verify_nbf": False,
                    "verify_iat": False,
                    "verify_iss": False,
                    "verify_aud": False,
                    "require": list(_REQUIRED_CLAIMS),
                },
            )
        except jwt.InvalidSignatureError:
            raise TokenRefusedError("token signature is not valid") from None
        except jwt.MissingRequiredClaimError as err:
            raise TokenRefusedError(f"token lacks the {err.claim!r} claim") from None
        except jwt.PyJWTError:
            raise TokenRefusedError("token cannot be read") from None
        if claims["iss"] != self.issuer:
            raise TokenRefusedError(f"token issuer {str(claims['iss'])[:80]!r} is not {self.issuer!r}")
        at = now.timestamp()
        for name in ("exp", "iat", "nbf"):
            if name in claims and not isinstance(claims[name], int | float):
                raise TokenRefusedError(f"token claim {name!r} is not a number")
        if claims["exp"] <= at:
            try:
                expired_at: datetime | None = datetime.fromtimestamp(claims["exp"], UTC)
            except (OverflowError, OSError, ValueError):  # -1e20: no date (it failed the update)
                expired_at = None
            raise TokenExpiredError(expired_at)
        if claims["iat"] > at + LEEWAY_S or claims.get("nbf", 0) > at + LEEWAY_S:
            raise TokenRefusedError("token is not valid yet")
        actor, step, jti = claims["sub"], claims.get("step"), claims["jti"]
        decisions = claims["decisions"]
        if (
            not isinstance(actor, str)
            or not isinstance(jti, str)
            or (step is not None and not isinstance(step, str))
        ):
            raise TokenRefusedError("token claims sub, jti and step must be strings")
        if not isinstance(decisions, list) or not all(isinstance(d, str) for d in decisions):
            raise TokenRefusedError("token claim 'decisions' must be a list of strings")
        groups = claims.get("groups", [])
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise TokenRefusedError("token claim 'groups' must be a list of strings")
        since = claims.get("since")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool)):
            raise TokenRefusedError("token claim 'since' must be an integer")
        chain = claims.get("chain")
        if chain is not None and not isinstance(chain, str):
            raise TokenRefusedError("token claim 'chain' must be a string")
        if claims["tenant"] != tenant:
            raise TokenRefusedError("token is for another tenant")
        if kid in self.tenants and tenant not in self.tenants[kid]:
            raise TokenRefusedError(f"token key {kid[:40]!r} does not sign for tenant {tenant[:60]!r}")
        if claims["run"] != run:
            raise TokenRefusedError("token is for another run")
        if decision not in decisions:
            allowed = ", ".join(d for d in decisions if d in DECISIONS) or "nothing"
            raise TokenRefusedError(f"token does not allow {decision} (it allows {allowed})")
        return DecisionClaims(
            actor=actor,
            tenant=tenant,
            run=run,
            step=step,
            decisions=tuple(decisions),
            jti=jti,
            kid=kid,
            groups=tuple(groups),
            since=since,
            chain=chain,
            issued_at=float(claims["iat"]),
        )


def check_target(
    claims: DecisionClaims,
    actor: str,
    step_names: Sequence[str] | None,
    used: Iterable[str],
    groups: Sequence[str] = (),
    *,
    since: datetime | None = None,
    chain: str | None = None,
    started: datetime | None = None,
) -> None:
    """Checks that verified claims name this actor and pending step (this wait at it, if the token
    names one) in this execution of the run, and were not used before.

    Args:
        claims: What the token proves.
        actor: The actor the request names.
        step_names: The pending approval's step id and path (None for a cancel).
        used: The ``jti`` of tokens this run has accepted already.
        groups: The groups the request says the actor decides as a member of: each must be in
            the token's ``groups`` claim.
        since: When the pending step began waiting (None for a cancel).
        chain: The first run id of the run's chain (``workflow.info().first_execution_run_id``).
        started: When the run's chain started.

    Raises:
        TokenRefusedError: Naming the mismatch.
    """
    if claims.actor != actor:
        raise TokenRefusedError(f"token is for the actor {claims.actor[:200]!r}, not {actor[:200]!r}")
    if step_names is not None and claims.step not in step_names:
        step = "no step" if claims.step is None else f"step {claims.step[:200]!r}"
        raise TokenRefusedError(f"token is for {step}, not the pending {step_names[-1]!r}")
    unproven = [g for g in groups if g not in claims.groups]
    if unproven:
        raise TokenRefusedError(f"token does not prove membership of {clip_names(unproven)}")
    if claims.jti in used:
        raise TokenRefusedError("token was used already in this run")
    problem = wait_problem(claims.since, since)
    if problem is not None:
        raise TokenRefusedError(problem)
    problem = execution_problem(claims, chain, started)
    if problem is not None:
        raise TokenRefusedError(problem)


def execution_problem(claims: DecisionClaims, chain: str | None, started: datetime | None) -> str | None:
    """Why a token was not minted for this execution of its workflow id: its ``chain`` names another
    chain, or, naming neither a chain nor a wait, it was issued before this chain started."""
    if claims.chain is not None:
        if chain is None or claims.chain == chain:
            return None
        return (
            f"token is for an earlier run under this id (chain {claims.chain[:60]!r}), not this one"
            f" (chain {chain[:60]!r})"
        )
    if claims.since is not None or started is None:
        return None  # a wait's token: the wait is this execution's (wait_problem)
    if claims.issued_at >= started.timestamp() - LEEWAY_S:
        return None
    return (
        "token was issued before this run started"
        f" ({started.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}): it was minted for an"
        " earlier run under this id"
    )


def wait_problem(claimed: int | None, since: datetime | None) -> str | None:
    """Why a token minted for the wait ``claimed`` does not serve the one since ``since``."""
    if claimed is None or since is None or claimed == wait_mark(since):
        return None
    return (
        "token was issued for an earlier wait at this step, which was decided; it waits again"
        f" since {since.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}"
    )


def reuse_problem(token: str, used: Iterable[str], since: datetime | None) -> str | None:
    """Why a token the run does not verify (it requires no proof) may not decide all the same: it
    was used already, or was minted for an earlier wait. A link's token decides once, and only the
    wait it was sent for, whether or not the run asks for proof."""
    claims = _unverified_claims(token)
    jti, claimed = claims.get("jti"), claims.get("since")
    if isinstance(jti, str) and jti in used:
        return "token was used already in this run"
    if isinstance(claimed, int) and not isinstance(claimed, bool):
        return wait_problem(claimed, since)
    return None


def clip_names(names: Sequence[str]) -> str:
    """A few names for a message, each clipped."""
    shown = ", ".join(repr(n[:60]) for n in names[:5])
    return shown + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def _unverified_claims(token: str) -> dict[str, Any]:
    """A token's claims, its signature not checked (empty when it cannot be read, a payload that
    is no JSON object too)."""
    try:
        return jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}


def unverified_jti(token: str) -> str | None:
    """The ``jti`` of a token already verified by the validator (the update handler, which runs
    again on replay, records it without verifying again)."""
    jti = _unverified_claims(token).get("jti")
    return jti if isinstance(jti, str) else None


_verifier: DecisionVerifier | None = None


def configure(verifier: DecisionVerifier | None) -> None:
    """Sets the verifier of this worker process (``None``: no keys; proof cannot be checked)."""
    global _verifier
    _verifier = verifier


def verifier() -> DecisionVerifier | None:
    """The verifier the worker configured, if any."""
    return _verifier
