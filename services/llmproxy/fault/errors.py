"""Errors of the fault service, each mapped to one gRPC status by the servicer.

FaultError (a common.errors.LlmproxyError)
 ├─ InvalidExperimentError: INVALID_ARGUMENT, a field is missing, unknown or over its cap
 ├─ ExperimentExistsError: ALREADY_EXISTS, the name is taken
 ├─ UnknownExperimentError: NOT_FOUND, no experiment of that name
 ├─ WrongStateError: FAILED_PRECONDITION, e.g. starting a running experiment
 ├─ StoreUnavailableError: UNAVAILABLE, Redis cannot be reached (nothing was applied)
 ├─ NotLeaderError: UNAVAILABLE, this instance does not (or no longer) hold the leader lease
 └─ AgentError (fault.agents): a service's chaos agent could not be reached or refused
"""

from __future__ import annotations

from llmproxy.common.errors import LlmproxyError


class FaultError(LlmproxyError):
    """Base of every error the fault service raises on purpose."""


class InvalidExperimentError(FaultError):
    """A field of the experiment is missing, unknown or over its severity's cap."""


class ExperimentExistsError(FaultError):
    """An experiment of that name already exists."""


class UnknownExperimentError(FaultError):
    """No experiment of that name exists."""


class WrongStateError(FaultError):
    """The experiment is not in a state that allows the operation."""


class StoreUnavailableError(FaultError):
    """Redis cannot be reached; the experiments' records cannot be read or written."""


class NotLeaderError(FaultError):
    """This instance is not the fault leader: it may not change running experiments."""
