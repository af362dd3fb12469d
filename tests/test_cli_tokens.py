"""``wfa keys generate`` and ``wfa token mint`` as a person runs them (real processes), and the
worker's loading of the decision key set: every bad input named with exit code 2, never a traceback,
and a signing key never overwritten. Minting against a run and its use are in
``tests/workflows/test_decision_tokens.py``."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from starter.tokens import generate_keys, mint
from tests.helpers.wfa_process import run_many, run_wfa, wfa_env
from worker import load_decision_verifier
from workflows.decision_tokens import DecisionVerifier, TokenRefusedError

ADDRESS = "127.0.0.1:1"  # nothing listens: a command that connected would fail with 3, not 2


async def test_keys_generate_writes_a_private_key_once_and_adds_public_keys(tmp_path: Path) -> None:
    env = wfa_env(ADDRESS, "tq")
    first = await run_wfa("keys", "generate", "--private", str(tmp_path / "a.jwk"), "--jwks", str(tmp_path / "k.json"), "--kid", "a", env=env)  # fmt: skip
    assert first.code == 0, first.describe()
    private = json.loads((tmp_path / "a.jwk").read_text())
    assert private["kid"] == "a"
    assert "d" in private
    assert stat.S_IMODE((tmp_path / "a.jwk").stat().st_mode) == 0o600
    # Rotation: a second key joins the set, the first stays.
    second = await run_wfa("keys", "generate", "--private", str(tmp_path / "b.jwk"), "--jwks", str(tmp_path / "k.json"), "--kid", "b", env=env)  # fmt: skip
    assert second.code == 0, second.describe()
    jwks = json.loads((tmp_path / "k.json").read_text())
    assert [k["kid"] for k in jwks["keys"]] == ["a", "b"]
    assert all("d" not in k for k in jwks["keys"])  # public keys only
    # The same private file again: refused, the key kept.
    again = await run_wfa("keys", "generate", "--private", str(tmp_path / "a.jwk"), "--jwks", str(tmp_path / "k.json"), env=env)  # fmt: skip
    assert again.code == 2, again.describe()
    assert "never overwritten" in again.err
    assert json.loads((tmp_path / "a.jwk").read_text()) == private
    # A token minted with either key verifies against the set.
    verifier = DecisionVerifier.from_jwks(jwks)
    now = datetime.now(UTC)
    for name in ("a.jwk", "b.jwk"):
        key = json.loads((tmp_path / name).read_text())
        token = mint(key, tenant="t", run="r", actor="x", decisions=["cancel"])
        assert verifier.verify(token, now=now, tenant="t", run="r", decision="cancel").actor == "x"


async def test_keys_generate_writes_only_key_sets_the_workers_load(tmp_path: Path) -> None:
    """A probe: ``--tenant ''`` wrote a set no worker would start with (exit 0, the set that
    worked before broken), a 10,000-character kid made tokens over the worker's limit, a set the
    workers already refuse got a key added, a key set that could not be written left the private
    key behind (so the next try was refused), and a FIFO as the set hung."""
    env = wfa_env(ADDRESS, "tq")
    jwks = tmp_path / "k.json"
    made = await run_wfa("keys", "generate", "--private", str(tmp_path / "a.jwk"), "--jwks", str(jwks), "--kid", "a", env=env)  # fmt: skip
    assert made.code == 0, made.describe()
    working = jwks.read_text()
    refused_oct = tmp_path / "oct.json"
    refused_oct.write_text(json.dumps({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}))
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)

    def generate(private: str, *extra: str, into: Path = jwks) -> tuple[str, ...]:
        return ("keys", "generate", "--private", str(tmp_path / private), "--jwks", str(into), *extra)

    cases = [
        (generate("b.jwk", "--tenant", ""), "invalid tenant ''"),
        (generate("c.jwk", "--tenant", "bad tenant"), "invalid tenant 'bad tenant'"),
        (generate("d.jwk", "--kid", "k" * 10_000), "a kid is 1 to 100 of"),
        (generate("e.jwk", "--kid", "a\x01b"), "a kid is 1 to 100 of"),
        (generate("f.jwk", into=refused_oct), "would not be a key set workers load: key 'h': only OKP"),
        (generate("g.jwk", into=fifo), "cannot read the key set"),  # read as empty, not waited on
        (generate("h.jwk", into=tmp_path / "missing" / "k.json"), "cannot write"),
    ]
    outcomes = await run_many([args for args, _ in cases], env)
    for (_, expected), outcome in zip(cases, outcomes, strict=True):
        assert outcome.clean, outcome.describe()
        assert outcome.code == 2, outcome.describe()
        assert expected in outcome.err, outcome.describe()
    assert jwks.read_text() == working  # untouched, still one the workers load
    assert load_decision_verifier({"WFA_DECISION_KEYS": str(jwks)}) is not None
    orphans = [name for name in os.listdir(tmp_path) if name.endswith(".jwk") and name != "a.jwk"]
    assert orphans == []  # no private key left without its public key in the set


async def test_token_mint_names_bad_input_before_connecting(tmp_path: Path) -> None:
    private, _ = generate_keys("k")
    key = tmp_path / "k.jwk"
    key.write_text(json.dumps(private))
    public = tmp_path / "public.json"
    public.write_text(json.dumps({k: v for k, v in private.items() if k != "d"}))
    env = wfa_env(ADDRESS, "tq", WFA_DECISION_SIGNING_KEY=str(key))
    no_key = {k: v for k, v in env.items() if k != "WFA_DECISION_SIGNING_KEY"}
    fifo = tmp_path / "fifo.jwk"
    os.mkfifo(fifo)
    base = ("token", "mint", "--run", "r1", "--actor", "alice")
    cases = [
        ((*base, "--decisions", "approve,launch", "--step", "s"), env, "decisions must be some of"),
        ((*base, "--decisions", "", "--step", "s"), env, "decisions must be some of"),
        ((*base, "--decisions", "approve"), env, "names the approval step"),
        ((*base, "--decisions", "cancel", "--ttl", "soon"), env, "--ttl"),
        ((*base, "--decisions", "cancel", "--ttl", "400d"), env, "ttl must be between"),
        ((*base, "--decisions", "cancel"), no_key, "WFA_DECISION_SIGNING_KEY"),
        ((*base, "--decisions", "cancel", "--signing-key", str(tmp_path / "none")), env, "cannot read"),
        ((*base, "--decisions", "cancel", "--signing-key", str(public)), env, "not a private JWK"),
        ((*base, "--decisions", "cancel", "--signing-key", str(fifo)), env, "cannot read"),  # it hung
    ]
    outcomes = await run_many([args for args, _, _ in cases[:5]], env)
    outcomes += [await run_wfa(*args, env=e) for args, e, _ in cases[5:]]
    for (_, _, expected), outcome in zip(cases, outcomes, strict=True):
        assert outcome.clean, outcome.describe()
        assert outcome.code == 2, outcome.describe()
        assert expected in outcome.err, outcome.describe()


def test_the_worker_loads_its_key_set_or_names_the_problem(tmp_path: Path) -> None:
    assert load_decision_verifier({}) is None
    with pytest.raises(ValueError, match="names no key set"):
        load_decision_verifier({"WFA_REQUIRE_DECISION_PROOF": "1"})
    with pytest.raises(ValueError, match="cannot read"):
        load_decision_verifier({"WFA_DECISION_KEYS": str(tmp_path / "missing.json")})
    symmetric = tmp_path / "hs.json"
    symmetric.write_text(json.dumps({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}))
    with pytest.raises(ValueError, match="only OKP"):
        load_decision_verifier({"WFA_DECISION_KEYS": str(symmetric)})
    no_kid = tmp_path / "nokid.json"
    _, public = generate_keys("x")
    del public["keys"][0]["kid"]
    no_kid.write_text(json.dumps(public))
    with pytest.raises(ValueError, match="no kid"):
        load_decision_verifier({"WFA_DECISION_KEYS": str(no_kid)})
    good = tmp_path / "good.json"
    private, public = generate_keys("g")
    good.write_text(json.dumps(public))
    verifier = load_decision_verifier(
        {"WFA_DECISION_KEYS": str(good), "WFA_DECISION_ISSUER": "idp", "WFA_REQUIRE_DECISION_PROOF": "1"}
    )
    assert verifier is not None
    assert (verifier.issuer, verifier.required, list(verifier.keys)) == ("idp", True, ["g"])
    token = mint(private, tenant="t", run="r", actor="x", decisions=["cancel"])  # issuer wfa
    with pytest.raises(TokenRefusedError, match="issuer"):
        verifier.verify(token, now=datetime.now(UTC), tenant="t", run="r", decision="cancel")


async def test_keys_generate_per_tenant_keys_verify_their_tenant_only(tmp_path: Path) -> None:
    env = wfa_env(ADDRESS, "tq")
    jwks_path = tmp_path / "k.json"
    for tenant in ("acme", "globex"):
        made = await run_wfa("keys", "generate", "--private", str(tmp_path / f"{tenant}.jwk"), "--jwks", str(jwks_path), "--kid", tenant, "--tenant", tenant, env=env)  # fmt: skip
        assert made.code == 0, made.describe()
    jwks = json.loads(jwks_path.read_text())
    assert [k["tenants"] for k in jwks["keys"]] == [["acme"], ["globex"]]
    verifier = load_decision_verifier({"WFA_DECISION_KEYS": str(jwks_path)})
    assert verifier is not None
    acme = json.loads((tmp_path / "acme.jwk").read_text())
    now = datetime.now(UTC)
    own = mint(acme, tenant="acme", run="r", actor="x", decisions=["cancel"])
    assert verifier.verify(own, now=now, tenant="acme", run="r", decision="cancel").actor == "x"
    other = mint(acme, tenant="globex", run="r", actor="x", decisions=["cancel"])
    with pytest.raises(TokenRefusedError, match="does not sign for tenant 'globex'"):
        verifier.verify(other, now=now, tenant="globex", run="r", decision="cancel")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"keys": [{**jwks["keys"][0], "tenants": "acme"}]}))
    with pytest.raises(ValueError, match="tenants must be a non-empty list"):
        load_decision_verifier({"WFA_DECISION_KEYS": str(bad)})
