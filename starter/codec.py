"""Payload encryption: an AES-GCM payload codec with key ids and rotation, and the data converter.

Run inputs, step outputs, decisions and failure messages are encrypted before they leave the
process, so Temporal's history (and its database) holds ciphertext only; search attributes are
never encrypted (they hold no personal data by design). The SDK encodes the memo through the codec
as well, so it is encrypted like the payloads.

Keys come from the environment, as ``key id -> 256-bit key``; one is *current* (encrypts), all
decrypt, so rotation is: add the new key as current, keep the old ones until no run that needs
them remains.

- ``WFA_PAYLOAD_KEYS_FILE``: a JSON file ``{"current": "k2", "keys": {"k1": "<base64>", "k2":
  "<base64>"}}``;
- or ``WFA_PAYLOAD_KEYS``: ``k2=<base64>,k1=<base64>``, the first is current.
- ``WFA_PAYLOAD_KEY_CURRENT`` overrides which key is current.

A key is 32 random bytes, base64 (``python -c "import os,base64;print(base64.b64encode(os.urandom(32)).decode())"``).
Without keys, payloads are not encrypted (and encrypted ones cannot be read). Payloads that are
not encrypted are passed through on decode, so turning encryption on keeps older runs readable.

Each encrypted payload has the metadata ``encoding: binary/encrypted`` and
``encryption-key-id: <id>`` (the shape of Temporal's samples, which the Web UI shows as is without a
codec server); its data is a 12-byte nonce followed by the AES-GCM ciphertext of the serialized
original payload, authenticated with the key id as associated data.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes, PayloadCodec

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "CURRENT_KEY_ENV",
    "ENCODING",
    "KEYS_ENV",
    "KEYS_FILE_ENV",
    "KEY_ID_METADATA",
    "EncryptionCodec",
    "PayloadDecryptError",
    "PayloadKeys",
    "PayloadKeysError",
    "codec_from_env",
    "data_converter",
]

KEYS_ENV = "WFA_PAYLOAD_KEYS"
KEYS_FILE_ENV = "WFA_PAYLOAD_KEYS_FILE"
CURRENT_KEY_ENV = "WFA_PAYLOAD_KEY_CURRENT"
ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
_NONCE = 12


class PayloadKeysError(ValueError):
    """The payload keys are unusable (names the variable or file, never a key)."""


KEYS_FILE_MAX_BYTES = 1024 * 1024
"""The most of ``WFA_PAYLOAD_KEYS_FILE`` read (a key set is a few hundred bytes a key)."""


class _RepeatedKeyError(ValueError):
    """A JSON object of the keys file names a member twice."""


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object's members, refusing a name given twice (JSON readers keep the last one: a key
    id given twice would silently be the later key)."""
    found: dict[str, object] = {}
    for name, value in pairs:
        if name in found:
            raise _RepeatedKeyError(f"{name[:100]!r} is given twice")
        found[name] = value
    return found


class PayloadDecryptError(ValueError):
    """An encrypted payload cannot be decrypted (unknown key id, or tampered/wrong key)."""


@dataclass(frozen=True)
class PayloadKeys:
    """The keys: all decrypt, ``current`` encrypts."""

    current: str
    keys: Mapping[str, bytes]

    @classmethod
    def parse(cls, keys: Mapping[str, str], current: str | None, where: str) -> PayloadKeys:
        """Keys from base64 text.

        Raises:
            PayloadKeysError: No key, a malformed id or key, or an unknown current id.
        """
        if not keys:
            raise PayloadKeysError(f"{where}: no key")
        decoded: dict[str, bytes] = {}
        for kid, text in keys.items():
            if not kid or len(kid) > 100 or not all(c.isalnum() or c in "-_." for c in kid):
                raise PayloadKeysError(f"{where}: {kid[:100]!r} is not a key id (1-100 of A-Z a-z 0-9 - _ .)")
            try:
                raw = base64.b64decode(text.strip(), validate=True)
            except (binascii.Error, ValueError):
                raise PayloadKeysError(f"{where}: key {kid!r} is not base64") from None
            if len(raw) != 32:
                raise PayloadKeysError(f"{where}: key {kid!r} has {len(raw)} bytes, not 32 (AES-256)")
            decoded[kid] = raw
        chosen = current or next(iter(keys))
        if chosen not in decoded:
            raise PayloadKeysError(f"{where}: the current key {chosen[:100]!r} is not one of the keys")
        return cls(current=chosen, keys=decoded)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PayloadKeys | None:
        """The keys the environment configures (see the module docstring), or None.

        Raises:
            PayloadKeysError: Unreadable or malformed.
        """
        source = os.environ if env is None else env
        current = source.get(CURRENT_KEY_ENV) or None
        path = source.get(KEYS_FILE_ENV)
        if path:
            from pathlib import Path

            from starter.inputs import read_text_file

            try:
                # Bounded, and a FIFO no one writes reads as empty (a probe: /dev/zero took 24 GB
                # before the kernel killed wfa; a nested document was exit 70, "a bug").
                text = read_text_file(Path(path), KEYS_FILE_MAX_BYTES)
                document = json.loads(text, object_pairs_hook=_unique_keys)
            except (OSError, ValueError, RecursionError) as err:
                raise PayloadKeysError(
                    f"{KEYS_FILE_ENV}: cannot read {path[:200]}: {type(err).__name__}"
                    + (f" ({err})" if isinstance(err, _RepeatedKeyError) else "")
                ) from None
            keys = document.get("keys") if isinstance(document, dict) else None
            if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
                raise PayloadKeysError(
                    f'{KEYS_FILE_ENV}: {path[:200]} is not {{"current": ID, "keys": {{ID: BASE64}}}}'
                )
            file_current = document.get("current")
            return cls.parse(
                keys, current or (file_current if isinstance(file_current, str) else None), KEYS_FILE_ENV
            )
        inline = source.get(KEYS_ENV, "").strip()
        if not inline:
            return None
        pairs: dict[str, str] = {}
        for item in inline.split(","):
            kid, sep, text = item.strip().partition("=")
            if not sep:
                raise PayloadKeysError(f"{KEYS_ENV}: an item is not id=base64key")
            if kid.strip() in pairs:  # (the later one won, silently: a probe)
                raise PayloadKeysError(f"{KEYS_ENV}: the key id {kid.strip()[:100]!r} is given twice")
            pairs[kid.strip()] = text  # base64 may end in "=": partition keeps them
        return cls.parse(pairs, current, KEYS_ENV)


class EncryptionCodec(PayloadCodec):
    """AES-GCM with key ids: encrypts with the current key, decrypts with any known key."""

    def __init__(self, keys: PayloadKeys) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        super().__init__()
        self.current = keys.current
        self._ciphers: dict[str, AESGCM] = {kid: AESGCM(key) for kid, key in keys.keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Encrypts every payload with the current key."""
        cipher = self._ciphers[self.current]
        kid = self.current.encode()
        out = []
        for payload in payloads:
            nonce = os.urandom(_NONCE)
            data = nonce + cipher.encrypt(nonce, payload.SerializeToString(), kid)
            out.append(Payload(metadata={"encoding": ENCODING, KEY_ID_METADATA: kid}, data=data))
        return out

    def decrypted(self, payload: Payload) -> Payload | None:
        """The payload an encrypted one holds, or None (not encrypted, of a key not configured
        here, altered): a look inside that never raises (the payload store's run input selector)."""
        from google.protobuf.message import DecodeError

        if payload.metadata.get("encoding") != ENCODING:
            return None
        try:
            return self._open(payload)
        except (PayloadDecryptError, DecodeError, ValueError):
            return None

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Decrypts encrypted payloads; passes others through.

        Raises:
            PayloadDecryptError: Unknown key id, or the data does not authenticate.
        """
        return [self._open(p) if p.metadata.get("encoding") == ENCODING else p for p in payloads]

    def _open(self, payload: Payload) -> Payload:
        """The payload an encrypted one holds.

        Raises:
            PayloadDecryptError: Unknown key id, or the data does not authenticate.
        """
        from cryptography.exceptions import InvalidTag

        kid = payload.metadata.get(KEY_ID_METADATA, b"")
        cipher = self._ciphers.get(kid.decode(errors="replace"))
        if cipher is None:
            raise PayloadDecryptError(
                f"payload encrypted with key {kid.decode(errors='replace')[:100]!r}, which is not configured"
                f" ({KEYS_ENV} / {KEYS_FILE_ENV})"
            )
        try:
            plain = cipher.decrypt(payload.data[:_NONCE], payload.data[_NONCE:], kid)
        except InvalidTag:
            raise PayloadDecryptError(
                f"payload encrypted with key {kid.decode(errors='replace')[:100]!r} does not decrypt"
                " (altered, or another key of that id)"
            ) from None
        return Payload.FromString(plain)


def codec_from_env(env: Mapping[str, str] | None = None) -> EncryptionCodec | None:
    """The codec of the configured keys, or None without keys.

    Raises:
        PayloadKeysError: The keys are unusable.
    """
    keys = PayloadKeys.from_env(env)
    return EncryptionCodec(keys) if keys is not None else None


def data_converter(
    env: Mapping[str, str] | None = None,
    *,
    codec: PayloadCodec | None = None,
    namespace: str | None = None,
) -> DataConverter:
    """The product's data converter: pydantic models, plus encryption when keys are configured,
    plus large payloads by reference when a payload store is (:mod:`starter.payload_store`).

    With a codec, failure messages and stack traces are moved into an encoded attribute (the
    history then shows "Encoded failure"), so an error quoting its input is encrypted too. The SDK
    encodes before it stores: stored payloads are encrypted too.

    Args:
        env: Default ``os.environ`` (read for the keys unless ``codec`` is given, and the store).
        codec: A codec to use instead of the configured keys.
        namespace: The client's namespace: the payload store refuses references of another.

    Raises:
        PayloadKeysError: The keys (or the payload store's settings) are unusable.
    """
    from temporalio.contrib.pydantic import pydantic_data_converter

    from starter.payload_store import external_storage_from_env

    chosen = codec if codec is not None else codec_from_env(env)
    # With WFA_PAYLOAD_STORE_RUN_INPUT=always, the store looks inside encrypted payloads to find
    # a run's start input (the codec encrypts before the store sees a payload).
    peek = chosen.decrypted if isinstance(chosen, EncryptionCodec) else None
    storage = external_storage_from_env(env, namespace, peek=peek)
    converter = pydantic_data_converter
    if storage is not None:
        converter = dataclasses.replace(converter, external_storage=storage)
    if chosen is None:
        return converter
    return dataclasses.replace(
        converter,
        payload_codec=chosen,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
