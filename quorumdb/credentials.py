"""What a client or tool presents to a cluster: the CA to verify it with, a token, a certificate.

`ClientCredentials` is handed to `quorumdb.rpc.client_channel`: with a CA the channel is TLS
(verifying the node against the cluster's CA) and every call carries the token as
`authorization: Bearer <token>` metadata; a tool with the data directory also presents the
cluster's admin certificate, which the journal, adjudicator and storage nodes require
(quorumdb/authz.py). Without a CA (an `--insecure` cluster) the channel is plaintext.
"""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ClientCredentials:
    ca_pem: bytes | None = None      # None: plaintext, for an --insecure cluster
    token: str | None = None         # sent on every call (compute nodes and the supervisor need it)
    key_pem: bytes | None = None     # the admin certificate's key (node ports need a certificate)
    cert_pem: bytes | None = None

    @property
    def tls(self) -> bool:
        return self.ca_pem is not None


INSECURE = ClientCredentials()
