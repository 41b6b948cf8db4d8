"""What a strategy's ``configure_*`` hook sends, handed as a value to the matching
``aggregate_*``: the messages, and the strategy's own record of what it decided for each
client (PerFedRLNAS's subnet and its bytes, the clients over budget; HAPFNAS's subnets to
measure). The round loop (:meth:`pfednas.strategies.base.PersonalizedStrategy.play_round`)
passes it on; nothing of it is kept on the strategy between the two hooks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from flwr.app import Message

PlanT = TypeVar("PlanT")


@dataclass(frozen=True)
class Outgoing(Generic[PlanT]):
    """A stage's messages and the strategy's record of them (``plan``; None: none)."""

    messages: list[Message] = field(default_factory=list)
    plan: PlanT | None = None

    def __iter__(self) -> Iterator[Message]:
        return iter(self.messages)

    def __len__(self) -> int:
        return len(self.messages)

    def plan_or(self, default: PlanT) -> PlanT:
        """The plan, or ``default`` where none was made."""
        return default if self.plan is None else self.plan

    def nodes(self) -> set[int]:
        """The nodes the messages go to."""
        return {m.metadata.dst_node_id for m in self.messages}
