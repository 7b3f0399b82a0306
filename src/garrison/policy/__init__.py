"""Authorization (Z1-Z5): the action registry, Cedar policies and decisions with reasons.

``Authorizer.decide`` answers whether a subject may perform a registered action, with the exact
reasons of a deny and the ``policy_version`` that decided. ``match_route`` maps a request path to
its registered action; ``permissions_for`` lists what roles grant (the JWT ``permissions`` claim).
"""

from garrison.policy.authorizer import Authorizer
from garrison.policy.config import PolicyConfig
from garrison.policy.engine import PolicyLoadError
from garrison.policy.model import Decision, Resource, RouteMatch
from garrison.policy.registry import Registry

__all__ = [
    "Authorizer",
    "Decision",
    "PolicyConfig",
    "PolicyLoadError",
    "Registry",
    "Resource",
    "RouteMatch",
]
