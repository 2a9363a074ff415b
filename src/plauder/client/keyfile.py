"""The key that encrypts a profile at rest: a 0600 key file, or a passphrase (argon2id)."""

import os
from pathlib import Path

from plauder.client.errors import ClientError
from plauder.crypto import StoreCipher, derive_key, new_key, new_salt

KEY_FILE = "store.key"
SALT_FILE = "store.salt"


def open_cipher(profile_dir: Path, passphrase: str | None) -> StoreCipher:
    """The profile's cipher, creating its key on first use."""
    profile_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path = profile_dir / KEY_FILE
    salt_path = profile_dir / SALT_FILE
    if key_path.exists():
        if key_path.stat().st_mode & 0o077:
            raise ClientError(f"{key_path} must be readable by its owner only (chmod 600)")
        return StoreCipher(key_path.read_bytes())
    if salt_path.exists():
        if passphrase is None:
            raise ClientError("this profile is protected by a passphrase: set PLAUDER_PASSPHRASE")
        return StoreCipher(derive_key(passphrase, salt_path.read_bytes()))
    if passphrase is not None:
        salt = new_salt()
        _write_private(salt_path, salt)
        return StoreCipher(derive_key(passphrase, salt))
    key = new_key()
    _write_private(key_path, key)
    return StoreCipher(key)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
