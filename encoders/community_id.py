"""Community ID flow hashes (version 1, seed 0) of packets' 5-tuples.

The Community ID (https://github.com/corelight/community-id-spec) names a flow the same
way in Zeek's conn.log, Suricata's EVE and most SIEM pipelines: an analyst who has one
from an incident finds the same conversation in those tools' logs. Computed by the
``communityid`` package (the specification's reference implementation in Python);
cached, because an incident's sample packets come from few flows.
"""

from __future__ import annotations

from functools import lru_cache

#: protocols whose Community ID needs both ports (ICMP's "ports" are type and code)
_PORTED = frozenset({1, 6, 17, 58, 132})


@lru_cache(maxsize=1)
def _calculator() -> object:
    import logging

    import communityid

    # the package logs every hash's inputs at INFO: a million lines on an evaluation run
    logging.getLogger("communityid").setLevel(logging.WARNING)
    return communityid.CommunityID(seed=0)


@lru_cache(maxsize=65_536)
def community_id(proto: int, src: str, dst: str, sport: int, dport: int) -> str | None:
    """The flow's Community ID, ``None`` where the tuple cannot make one (an unparsed
    address, a TCP/UDP packet without ports)."""
    import communityid

    try:
        if proto in _PORTED:
            if sport < 0 or dport < 0:
                return None
            flow = communityid.FlowTuple(proto, src, dst, sport, dport)
        else:
            flow = communityid.FlowTuple(proto, src, dst)
        value: str = _calculator().calc(flow)  # type: ignore[attr-defined]
    except (communityid.error.FlowTupleError, ValueError, TypeError):
        return None
    return value


__all__ = ["community_id"]
