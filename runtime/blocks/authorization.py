"""Authorization (2.0.1 C; 1.6 Core Authorize): ask the CSMS whether a token may charge.

Offline (or without an answer) a token is refused: the authorization cache and local list are not
built yet (docs/status/E-transactions.md). Never imports the transactions block.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
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

__all__ = ["Authorization", "TokenVerdict"]

log = logging.getLogger(__name__)

# 1.6 IdToken is CiString20; 2.0.1 IdTokenType.idToken is identifierString(36).
_V16_ID_TAG_MAX = 20
_V201_ID_TOKEN_MAX = 36


@dataclass(frozen=True, slots=True)
class TokenVerdict:
    """The CSMS's answer for a token: accepted or not, and its group (2.0.1 groupIdToken, 1.6
    parentIdTag), which the reservation rules need (H03; 1.6 5.13)."""

    accepted: bool
    group_id_token: str | None = None


class Authorization:
    def __init__(self, *, version: OcppVersion, uplink: Uplink) -> None:
        self.version = version
        self._uplink = uplink

    async def authorize(self, id_token: str, token_type: str) -> bool:
        """Whether the CSMS accepts the token now; False when offline or on any failure."""
        return (await self.authorize_token(id_token, token_type)).accepted

    async def authorize_token(self, id_token: str, token_type: str) -> TokenVerdict:
        """The CSMS's verdict on the token; refused when offline or on any failure."""
        calls = self._uplink.calls
        if calls is None:
            return TokenVerdict(accepted=False)
        try:
            if self.version is OcppVersion.V16:
                response = await calls.call("Authorize", {"idTag": id_token[:_V16_ID_TAG_MAX]})
                assert isinstance(response, v16.AuthorizeResponse)
                info = response.id_tag_info
                return TokenVerdict(info.status == v16.IdTagInfoStatusEnum.ACCEPTED, info.parent_id_tag)
            token = {"idToken": id_token[:_V201_ID_TOKEN_MAX], "type": token_type}
            answer = await calls.call("Authorize", {"idToken": token})
            assert isinstance(answer, v201.AuthorizeResponse)
            token_info = answer.id_token_info
            group = None if token_info.group_id_token is None else token_info.group_id_token.id_token
            return TokenVerdict(token_info.status == v201.AuthorizationStatusEnumType.ACCEPTED, group)
        except (CallFailed, LinkDown) as exc:
            log.warning("Authorize %s failed: %s", id_token, exc)
            return TokenVerdict(accepted=False)
