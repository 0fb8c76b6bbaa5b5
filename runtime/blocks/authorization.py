"""Authorization (2.0.1 C; 1.6 Core Authorize): ask the CSMS whether a token may charge.

Offline (or without an answer) a token is refused: the authorization cache and local list are not
built yet (docs/status/E-transactions.md). Never imports the transactions block.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from evstation.protocol.messages import VersionModels
from evstation.protocol.versions import OcppVersion
from evstation.runtime.calls import CallFailed
from evstation.runtime.link import LinkDown
from evstation.runtime.uplink import Uplink

if TYPE_CHECKING:
    from evstation.protocol.v16 import messages as v16
    from evstation.protocol.v201 import messages as v201
else:
    v16 = VersionModels(OcppVersion.V16)
    v201 = VersionModels(OcppVersion.V201)

__all__ = ["Authorization"]

log = logging.getLogger(__name__)

# 1.6 IdToken is CiString20; 2.0.1 IdTokenType.idToken is identifierString(36).
_V16_ID_TAG_MAX = 20
_V201_ID_TOKEN_MAX = 36


class Authorization:
    def __init__(self, *, version: OcppVersion, uplink: Uplink) -> None:
        self.version = version
        self._uplink = uplink

    async def authorize(self, id_token: str, token_type: str) -> bool:
        """Whether the CSMS accepts the token now; False when offline or on any failure."""
        calls = self._uplink.calls
        if calls is None:
            return False
        try:
            if self.version is OcppVersion.V16:
                response = await calls.call("Authorize", {"idTag": id_token[:_V16_ID_TAG_MAX]})
                assert isinstance(response, v16.AuthorizeResponse)
                return response.id_tag_info.status == v16.IdTagInfoStatusEnum.ACCEPTED
            token = {"idToken": id_token[:_V201_ID_TOKEN_MAX], "type": token_type}
            answer = await calls.call("Authorize", {"idToken": token})
            assert isinstance(answer, v201.AuthorizeResponse)
            return answer.id_token_info.status == v201.AuthorizationStatusEnumType.ACCEPTED
        except (CallFailed, LinkDown) as exc:
            log.warning("Authorize %s failed: %s", id_token, exc)
            return False
