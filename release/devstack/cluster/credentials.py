"""The Nexus connectors' credentials: generated once per stack, kept in 0600 files, never printed."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import bcrypt

from release.errors import ConfigError
from release.fsutil import write_atomic

USERNAME = "fractalops-ci"
SECRET_MODE = 0o600
# docker-registry checks the bcrypt hash on every request (no session): at the usual cost 12 that is a second of
# CPU per blob on a 2-core machine. Cost 5 keeps each check around a millisecond; the file is a stand-in's, the
# password a random one of 32 bytes.
BCRYPT_ROUNDS = 5


@dataclass(frozen=True)
class Credentials:
    """A username and its password (the password is never part of a repr or a message)."""

    username: str
    password: str = field(repr=False)


def secrets_dir(folder: Path) -> Path:
    """Return the folder of secret files (0700), creating it."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def credentials_file(folder: Path) -> Path:
    """Return the file that holds the stack's credentials."""
    return folder / "nexus-credentials.json"


def ensure_credentials(folder: Path) -> Credentials:
    """Return the stack's credentials, generating them (0600 file) on first use."""
    path = credentials_file(secrets_dir(folder))
    if path.exists():
        try:
            data = json.loads(path.read_text())
            found = Credentials(username=str(data["username"]), password=str(data["password"]))
        except (OSError, ValueError, KeyError, TypeError):
            raise ConfigError(f"{path}: not the stack's credentials file; delete it and run `devstack up`") from None
        path.chmod(SECRET_MODE)
        return found
    made = Credentials(username=USERNAME, password=secrets.token_urlsafe(32))
    write_atomic(
        path, (json.dumps({"username": made.username, "password": made.password}) + "\n").encode(), SECRET_MODE
    )
    return made


def read_credentials(folder: Path) -> Credentials | None:
    """Return the stack's credentials if they were generated, else None."""
    path = credentials_file(folder)
    if not path.exists():
        return None
    return ensure_credentials(folder)


def htpasswd_matches(text: str, credentials: Credentials) -> bool:
    """Return whether an htpasswd text has exactly one entry and it is these credentials."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        return False
    user, _, hashed = lines[0].partition(":")
    try:
        return user == credentials.username and bcrypt.checkpw(credentials.password.encode(), hashed.encode())
    except ValueError:
        return False


def write_htpasswd(path: Path, credentials: Credentials) -> bool:
    """Write the registries' htpasswd file (bcrypt, 0600) unless it already holds these credentials; return whether it did."""
    try:
        if htpasswd_matches(path.read_text(), credentials):
            path.chmod(SECRET_MODE)
            return False
    except OSError:
        pass
    hashed = bcrypt.hashpw(credentials.password.encode(), bcrypt.gensalt(rounds=BCRYPT_ROUNDS)).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, f"{credentials.username}:{hashed}\n".encode(), SECRET_MODE)
    return True


def config_has_auths(config: Path, registries: list[str]) -> bool:
    """Return whether a docker config.json holds an `auths` entry for every registry."""
    try:
        auths = json.loads(config.read_text()).get("auths") or {}
    except (OSError, ValueError, AttributeError):
        return False
    return all(isinstance(auths.get(r), dict) and auths[r].get("auth") for r in registries)


def secure_file(path: Path) -> None:
    """Make a file that holds a secret readable by its owner only."""
    if path.exists():
        os.chmod(path, SECRET_MODE)
