"""What nodes tell each other over Redis pub/sub, and the names of every key and channel.

Pure: no I/O. A device channel carries one of the `DeviceMessage` kinds, the
presence channel carries `PresenceNote`s; both as msgpack arrays whose first
element is the kind (about 6 bytes of overhead around an envelope frame).
"""

import msgspec


class Stored(msgspec.Struct, array_like=True, frozen=True, tag=0):
    """A durable envelope for the device: offer it to the device's feed."""

    eid: int
    data: bytes  # the encoded `envelope` frame


class Ephemeral(msgspec.Struct, array_like=True, frozen=True, tag=1):
    """An unstored frame for the device (ephemeral envelope, keys_low): push it if possible."""

    data: bytes


class Takeover(msgspec.Struct, array_like=True, frozen=True, tag=2):
    """The device connected again: every connection of it with a lower generation closes."""

    gen: int
    node: str


class Evict(msgspec.Struct, array_like=True, frozen=True, tag=3):
    """The device no longer exists (its number was registered again): close its connection."""


class Resync(msgspec.Struct, array_like=True, frozen=True, tag=4):
    """A message to the device may have been lost: its feed re-reads the queue."""


DeviceMessage = Stored | Ephemeral | Takeover | Evict | Resync


class PresenceNote(msgspec.Struct, array_like=True, frozen=True):
    """An account's presence changed: nodes whose connections watch it tell them."""

    node: str  # where it happened (that node has told its own watchers already)
    number: str
    changed_visibility: bool = False


_encoder = msgspec.msgpack.Encoder()
_device_decoder: msgspec.msgpack.Decoder[DeviceMessage] = msgspec.msgpack.Decoder(DeviceMessage)
_presence_decoder = msgspec.msgpack.Decoder(PresenceNote)


def encode(message: DeviceMessage | PresenceNote) -> bytes:
    """Serialize a message for a channel."""
    return _encoder.encode(message)


def decode_device(data: bytes) -> DeviceMessage:
    """Parse a device channel's message; raises msgspec.DecodeError on garbage."""
    return _device_decoder.decode(data)


def decode_presence(data: bytes) -> PresenceNote:
    """Parse a presence channel's message; raises msgspec.DecodeError on garbage."""
    return _presence_decoder.decode(data)


class Names:
    """Every Redis key and channel of one cluster, under its namespace."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.device_prefix = f"{namespace}:d:".encode()  # + device_pk: a device's channel
        self.presence = f"{namespace}:presence".encode()  # channel of PresenceNotes
        self.generation = f"{namespace}:gen"  # counter of connection generations
        self.nodes = f"{namespace}:nodes"  # sorted set: node id scored by expiry (ms)
        self.online_prefix = f"{namespace}:online:"  # + node id: hash number -> devices online

    def device_channel(self, device_pk: int) -> bytes:
        """The channel of one device, subscribed by the node holding its connection."""
        return self.device_prefix + str(device_pk).encode()

    def device_key(self, device_pk: int) -> str:
        """The registry entry of one device: `<generation>:<node id>`, expiring."""
        return f"{self.namespace}:dev:{device_pk}"

    def online(self, node: str) -> str:
        """The hash of one node's online counts per number, expiring with the node."""
        return self.online_prefix + node

    def limit(self, name: str, key: str) -> str:
        """The state of one shared rate limit (a GCRA theoretical arrival time)."""
        return f"{self.namespace}:limit:{name}:{key}"
