"""What a strategy's ``configure_*`` hook sends, handed as a value to the round loop and then
to the matching ``aggregate_*``: each message with the request it makes of its client
(:class:`Letter`), and the strategy's own record of what it decided for each client
(PerFedRLNAS's subnet and its bytes, the clients over budget; HAPFNAS's subnets to measure).
Building them changes nothing: the round loop
(:meth:`pfednas.strategies.base.PersonalizedStrategy.play_round`) records each request as it
sends it, and nothing of it is kept on the strategy between the two hooks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from flwr.app import Message

from pfednas.strategies.gate import Request

PlanT = TypeVar("PlanT")


@dataclass(frozen=True)
class Letter:
    """One message to a client and what a valid reply to it is (its :class:`Request`), with
    the bytes of the arrays it carries."""

    client_id: int
    message: Message
    request: Request
    nbytes: int


@dataclass(frozen=True)
class Outgoing(Generic[PlanT]):
    """A stage's letters and the strategy's record of them (``plan``; None: none)."""

    letters: list[Letter] = field(default_factory=list)
    plan: PlanT | None = None

    @property
    def messages(self) -> list[Message]:
        """The messages, in order."""
        return [letter.message for letter in self.letters]

    def __iter__(self) -> Iterator[Message]:
        return iter(self.messages)

    def __len__(self) -> int:
        return len(self.letters)

    def plan_or(self, default: PlanT) -> PlanT:
        """The plan, or ``default`` where none was made."""
        return default if self.plan is None else self.plan

    def clients(self) -> set[int]:
        """The clients the letters go to."""
        return {letter.client_id for letter in self.letters}
