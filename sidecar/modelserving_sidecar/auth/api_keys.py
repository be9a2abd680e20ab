"""API keys: `Authorization: ApiKey <key>` checked against the hex SHA-256 hashes kept in a Secret
mounted as a directory (file name = key name, content = hash), reloaded when the files change.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from modelserving_sidecar.auth.authenticator import (
    READY,
    AuthHealth,
    Unauthenticated,
    challenge,
    credential,
)
from modelserving_sidecar.config import AuthMode, SidecarConfig

log = logging.getLogger(__name__)

SCHEME = "ApiKey"
# The 401's message when no key is sent (the activator's refusal before a wake says it too).
KEY_REQUIRED = "An API key is required: Authorization: ApiKey <key>"
# How often the mounted Secret is looked at: kubelet swaps its files within a minute or so of a
# change, so a second is prompt enough and costs a few stat calls.
RELOAD_INTERVAL_SECONDS = 1.0
_HASH = re.compile(r"[0-9a-f]{64}")


def hash_api_key(key: str) -> str:
    """What the Secret holds for a key: its SHA-256, in lower-case hex."""
    return hashlib.sha256(key.encode("utf-8", "backslashreplace")).hexdigest()


def new_api_key() -> str:
    """A new random key: 256 bits, URL-safe characters, fit for a header."""
    return secrets.token_urlsafe(32)


def _visible_files(directory: Path) -> list[Path]:
    # Kubelet's layout: `..data` -> `..2024_01_01_00_00_00.123`, and each key `name` links to
    # `..data/name`; a change swaps the `..data` link at once. Dot entries are that machinery.
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    return [directory / name for name in names if not name.startswith(".")]


def directory_fingerprint(directory: Path) -> tuple[object, ...]:
    """Changes whenever a key file is added, removed, replaced or rewritten (links followed)."""
    try:
        data_link = os.readlink(directory / "..data")
    except OSError:
        data_link = None
    entries = []
    for path in _visible_files(directory):
        try:
            st = path.stat()
        except OSError:
            continue  # a dangling link while kubelet swaps: the next look sees the new files
        entries.append((path.name, st.st_ino, st.st_mtime_ns, st.st_size))
    return directory.is_dir(), data_link, tuple(entries)


def read_key_hashes(directory: Path, problems: list[str] | None = None) -> dict[str, str]:
    """Key name -> hash of every well-formed file in the directory; bad ones are logged, skipped
    and said in `problems` (without their content)."""
    hashes: dict[str, str] = {}
    for path in _visible_files(directory):
        try:
            if not path.is_file():
                continue
            content = path.read_text().strip().lower()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not text"
            log.warning("API key %s cannot be read: %s", path.name, exc)
            if problems is not None:
                problems.append(f"API key file {path.name} cannot be read ({reason})")
            continue
        if not _HASH.fullmatch(content):
            log.warning("API key %s is not a hex SHA-256 hash of a key; ignored", path.name)
            if problems is not None:
                problems.append(f"API key file {path.name} is not the hex SHA-256 hash of a key")
            continue
        hashes[path.name] = content
    return hashes


def keys_health(directory: Path, hashes: dict[str, str], problems: list[str]) -> AuthHealth:
    """Whether the mounted API-key Secret is usable: there, readable, every file a key's hash."""
    if not directory.is_dir():
        return AuthHealth(
            False, f"auth.apiKeysDir {directory} does not exist: the API-key Secret is not mounted"
        )
    if problems:
        return AuthHealth(False, "; ".join(problems))
    if not hashes:
        return AuthHealth(
            False,
            f"no API key in {directory}: the API-key Secret is missing or "
            "empty, so no caller can be let in",
        )
    return READY


class ApiKeyAuthenticator:
    """auth.mode apiKey: the caller is the name of the key whose hash matches."""

    mode = AuthMode.API_KEY.value

    def __init__(self, directory: Path, challenge_header: str) -> None:
        self.directory = directory
        self._challenge = challenge_header
        self._keys: tuple[tuple[str, bytes], ...] = ()
        self._fingerprint: tuple[object, ...] | None = None
        self._health = READY

    def reload(self) -> bool:
        """Read the keys again if the directory changed (blocking: run it in a thread)."""
        fingerprint = directory_fingerprint(self.directory)
        if fingerprint == self._fingerprint:
            return False
        problems: list[str] = []
        hashes = read_key_hashes(self.directory, problems)
        self._keys = tuple((name, digest.encode()) for name, digest in hashes.items())
        self._health = keys_health(self.directory, hashes, problems)
        self._fingerprint = fingerprint
        log.info("API keys loaded from %s: %s", self.directory, ", ".join(hashes) or "none")
        return True

    async def authenticate(self, authorization: str | None) -> str | None:
        key = credential(authorization, SCHEME)
        if key is None:
            raise Unauthenticated(self._challenge, KEY_REQUIRED)
        digest = hash_api_key(key).encode()
        caller = None
        # Every stored hash is compared, in constant time, so timing tells nothing of the match.
        for name, stored in self._keys:
            if hmac.compare_digest(digest, stored):
                caller = name
        if caller is None:
            raise Unauthenticated(self._challenge, "The API key is not valid for this serving")
        return caller

    def health(self) -> AuthHealth:
        return self._health

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(RELOAD_INTERVAL_SECONDS)
            try:
                await asyncio.to_thread(self.reload)
            except Exception:
                log.exception(
                    "reloading API keys from %s failed; keeping the loaded ones", self.directory
                )

    @classmethod
    @contextlib.asynccontextmanager
    async def running(cls, config: SidecarConfig) -> AsyncIterator[ApiKeyAuthenticator]:
        authenticator = cls(Path(config.auth.api_keys_dir), challenge(SCHEME, config))
        await asyncio.to_thread(authenticator.reload)
        if not authenticator.directory.is_dir():
            log.warning(
                "auth.apiKeysDir %s does not exist: no key is valid until it does",
                authenticator.directory,
            )
        watcher = asyncio.create_task(authenticator._watch())
        try:
            yield authenticator
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
