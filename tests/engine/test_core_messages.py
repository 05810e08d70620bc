"""What crosses to the engine core decodes into the same request and outputs."""
from __future__ import annotations

from pagedllm.core.request import Request
from pagedllm.engine.core_messages import EngineCoreRequest, add_decoder, encoder, outputs_decoder
from pagedllm.outputs import EngineCoreOutput, EngineCoreOutputs, LogprobsLists, SchedulerStats
from pagedllm.sampling_params import RequestOutputKind, SamplingParams


def test_request_round_trip_keeps_engine_resolved_stop_ids() -> None:
    params = SamplingParams(temperature=0.7, top_k=5, seed=3, stop=["\n\n"], stop_token_ids=[7],
                            logit_bias={11: -2.5}, logprobs=2, max_tokens=9, output_kind=RequestOutputKind.DELTA)
    params.all_stop_token_ids = {7, 2, 49152}  # + generation-config EOS ids, set by the input processor
    request = Request("0_abc", [5, 6, 7], params, eos_token_id=2, arrival_time=12.5, max_tokens=9)
    [wire] = add_decoder.decode(encoder.encode([EngineCoreRequest.from_request(request)]))
    back = wire.to_request()
    assert (back.request_id, back.prompt_token_ids, back.eos_token_id, back.arrival_time, back.max_tokens) == \
        ("0_abc", [5, 6, 7], 2, 12.5, 9)
    assert back.sampling_params.all_stop_token_ids == {7, 2, 49152}
    assert back.sampling_params.logit_bias == {11: -2.5}
    assert back.sampling_params.output_kind is RequestOutputKind.DELTA
    assert back.sampling_params.stop == ["\n\n"] and back.sampling_params.seed == 3


def test_outputs_round_trip() -> None:
    outs = EngineCoreOutputs(
        [EngineCoreOutput("a", [1, 2], LogprobsLists([[1, 3]], [[-0.1, -2.0]], [1]), None, "stop", 2, 16, 3.5)],
        SchedulerStats(num_running=1, num_blocks=10, kv_cache_usage=0.25), errors={"b": "too long"})
    back = outputs_decoder.decode(encoder.encode(outs))
    assert back == outs
