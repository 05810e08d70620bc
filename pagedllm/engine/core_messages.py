"""What crosses the process boundary between the API server and the engine core, and its encoding.

Each ZMQ message is two frames: a one-byte type and a msgpack payload (msgspec). Only new requests,
aborts and per-step outputs travel; the tokenizer and all text stay on the server side.
"""
from __future__ import annotations

import enum

import msgspec

from pagedllm.core.request import Request
from pagedllm.outputs import EngineCoreOutputs
from pagedllm.sampling_params import SamplingParams


class ToCore(bytes, enum.Enum):
    ADD = b"\x00"  # payload: list[EngineCoreRequest] (the n sequences of one user request)
    ABORT = b"\x01"  # payload: AbortMessage
    SHUTDOWN = b"\x02"  # payload: empty


class FromCore(bytes, enum.Enum):
    READY = b"\x10"  # payload: ReadyMessage
    OUTPUTS = b"\x11"  # payload: EngineCoreOutputs
    FAILED = b"\x12"  # payload: FailedMessage (a start-up or step failure)


class EngineCoreRequest(msgspec.Struct, array_like=True, omit_defaults=True):
    request_id: str
    prompt_token_ids: list[int]
    sampling_params: SamplingParams
    # SamplingParams.__post_init__ recomputes this from stop_token_ids when decoding, so the
    # engine-resolved set (generation-config EOS ids included) travels on its own.
    all_stop_token_ids: list[int]
    eos_token_id: int | None
    arrival_time: float
    max_tokens: int

    @staticmethod
    def from_request(r: Request) -> EngineCoreRequest:
        return EngineCoreRequest(r.request_id, r.prompt_token_ids, r.sampling_params,
                                 sorted(r.sampling_params.all_stop_token_ids), r.eos_token_id,
                                 r.arrival_time, r.max_tokens)

    def to_request(self) -> Request:
        self.sampling_params.all_stop_token_ids = set(self.all_stop_token_ids)
        return Request(self.request_id, self.prompt_token_ids, self.sampling_params,
                       eos_token_id=self.eos_token_id, arrival_time=self.arrival_time,
                       max_tokens=self.max_tokens)


class AbortMessage(msgspec.Struct, array_like=True):
    request_ids: list[str]
    status: int  # a RequestStatus: ABORTED for aborts, STOPPED for stop strings found by the server


class ReadyMessage(msgspec.Struct):
    num_blocks: int
    pid: int
    max_model_len: int  # may be lower than asked: what the KV cache fits (CUDA memory profile)


class FailedMessage(msgspec.Struct):
    reason: str  # one line: the exception's message ("Type: message" unless it is bad input)
    traceback: str  # the full traceback text, which the core has logged when it is not bad input
    bad_input: bool  # a ValueError or OSError (the model, its files, a setting): the reason says it all

    @staticmethod
    def from_exception(e: BaseException, traceback: str) -> FailedMessage:
        bad_input = isinstance(e, (ValueError, OSError))
        reason = str(e) if bad_input and str(e) else f"{type(e).__name__}: {e}"
        return FailedMessage(reason.strip().replace("\n", " "), traceback, bad_input)


encoder = msgspec.msgpack.Encoder()
add_decoder = msgspec.msgpack.Decoder(list[EngineCoreRequest])
abort_decoder = msgspec.msgpack.Decoder(AbortMessage)
outputs_decoder = msgspec.msgpack.Decoder(EngineCoreOutputs)
ready_decoder = msgspec.msgpack.Decoder(ReadyMessage)
failed_decoder = msgspec.msgpack.Decoder(FailedMessage)
