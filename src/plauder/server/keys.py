"""Device keys: signed device lists, one-time key upload and claim, the keys-low signal."""

from plauder.crypto import BadSignature, identity
from plauder.protocol.errors import ErrorCode
from plauder.protocol.frames import DeviceBundle, Devices, GetDevices, UploadKeys
from plauder.server.accounts import number_or_error
from plauder.server.config import Config
from plauder.server.errors import ServiceError
from plauder.server.storage import Store


class Keys:
    """Serves device lists and pre-keys; tells devices when their pool runs low."""

    def __init__(self, store: Store, config: Config) -> None:
        self._store = store
        self._config = config

    async def upload(self, device_pk: int, signing_key: str, frame: UploadKeys) -> int:
        """Store a device's new one-time keys after checking their signatures."""
        if len(frame.one_time_keys) > self._config.max_keys_per_upload:
            raise ServiceError(ErrorCode.TOO_MANY_KEYS, "too many one-time keys in one upload")
        try:
            for key in [*frame.one_time_keys, *filter(None, [frame.fallback_key])]:
                identity.verify_signature(
                    signing_key, identity.prekey_payload(key.key), key.signature
                )
        except BadSignature as exc:
            raise ServiceError(ErrorCode.BAD_SIGNATURE, "a key signature does not verify") from exc
        return await self._store.upload_keys(
            device_pk, list(frame.one_time_keys), frame.fallback_key
        )

    async def devices(self, frame: GetDevices) -> tuple[Devices, list[tuple[int, int]]]:
        """An account's devices, with claimed pre-keys; also the pools now running low."""
        number = number_or_error(frame.number)
        found = await self._store.devices(number, frame.claim)
        if found is None:
            raise ServiceError(ErrorCode.UNKNOWN_ACCOUNT, "no account has this number")
        account_key, rows, drawn = found
        bundles = [DeviceBundle(device=row.keys, prekey=prekey) for row, prekey in rows]
        low = [(pk, n) for pk, n in drawn if n < self._config.keys_low_threshold]
        return Devices(id=frame.id, number=number, account_key=account_key, devices=bundles), low
