"""The root of plauder's exception tree.

PlauderError
 +-- ProtocolError            (plauder.protocol.codec: a frame that cannot be decoded)
 +-- CryptoError              (plauder.crypto.errors: signatures, decryption, pickles)
 |    +-- BadSignature
 |    +-- DecryptionFailed
 |    +-- UntrustedDevice
 |    +-- BadStoreKey
 +-- ClientError              (plauder.client.errors: what the SDK raises)
 |    +-- ServerError         (an error frame from the server, with its code)
 |    +-- ConnectionLost
 |    +-- NotRegistered
 |    +-- UnknownContact
 +-- StorageError             (plauder.server.storage: the database failed)
 +-- ConfigError              (plauder.server.config: bad configuration)
"""


class PlauderError(Exception):
    """Base class of every exception plauder raises on purpose."""
