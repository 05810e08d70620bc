"""The HTTP layer's own settings (the engine's are the engine's business)."""
from __future__ import annotations

from dataclasses import dataclass, field

from pagedllm.generation_config import SamplingDefaults


@dataclass(frozen=True)
class ServerSettings:
    # Names clients may put in `model`; the first is reported back. Empty: the engine's model path.
    served_model_names: list[str] = field(default_factory=list)
    # When set, every endpoint but /health needs `Authorization: Bearer <api_key>`.
    api_key: str | None = None
    # When set, new generation requests get a 503 while more than this many wait in the engine.
    max_waiting_requests: int | None = None
    # What requests get for the sampling parameters they leave unset (--generation-config).
    sampling_defaults: SamplingDefaults = field(default_factory=SamplingDefaults)

    def __post_init__(self) -> None:
        if any(not name for name in self.served_model_names):
            raise ValueError("served_model_names must be non-empty strings.")
        if self.api_key is not None and not self.api_key:
            raise ValueError("api_key must be non-empty when given.")
        if self.max_waiting_requests is not None and self.max_waiting_requests < 0:
            raise ValueError(f"max_waiting_requests must be >= 0, got {self.max_waiting_requests}.")
