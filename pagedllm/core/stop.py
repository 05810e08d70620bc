"""Token-level stop rules, checked after each appended token (no torch).

Stop strings need detokenized text, so the output processor handles them and finishes the
request through `Scheduler.finish_requests`.
"""
from __future__ import annotations

from pagedllm.core.request import Request, RequestStatus


def check_stop(request: Request, max_model_len: int) -> bool:
    """Decide whether the request is done after its last appended output token.

    Sets `request.status` (and `stop_reason` for a stop token) and returns True when it is.
    A stop token wins over the length cap when both apply, so the user learns why it ended.
    """
    sampling_params = request.sampling_params
    num_output_tokens = len(request.output_token_ids)
    if num_output_tokens >= sampling_params.min_tokens:
        last_token_id = request.output_token_ids[-1]
        if last_token_id == request.eos_token_id and not sampling_params.ignore_eos:
            request.status = RequestStatus.FINISHED_STOPPED
            request.stop_reason = None  # EOS is reported as a plain "stop"
            return True
        if last_token_id in sampling_params.all_stop_token_ids:
            request.status = RequestStatus.FINISHED_STOPPED
            request.stop_reason = last_token_id
            return True
    if num_output_tokens >= request.max_tokens or len(request.all_token_ids) >= max_model_len:
        request.status = RequestStatus.FINISHED_LENGTH_CAPPED
        return True
    return False
