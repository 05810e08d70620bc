from __future__ import annotations

from pagedllm.core.request import Request, RequestStatus
from pagedllm.core.stop import check_stop

from tests.helpers.core_fakes import make_request

EOS = 2


def _after(request: Request, *tokens: int, max_model_len: int = 100) -> bool:
    """Append tokens one at a time like the scheduler; True if the last one stopped it."""
    stopped = False
    for token in tokens:
        assert not stopped, "stopped before the last token"
        request.append_output_token_ids([token])
        stopped = check_stop(request, max_model_len)
    return stopped


def test_eos_stops() -> None:
    request = make_request([1, 1], eos_token_id=EOS)
    assert _after(request, 5, 6, EOS)
    assert request.status == RequestStatus.FINISHED_STOPPED and request.stop_reason is None
    assert request.get_finish_reason() == "stop"


def test_ignore_eos() -> None:
    request = make_request([1], max_tokens=3, eos_token_id=EOS, ignore_eos=True)
    assert not _after(request, EOS, EOS)
    assert _after(request, EOS)
    assert request.status == RequestStatus.FINISHED_LENGTH_CAPPED


def test_stop_token_ids() -> None:
    request = make_request([1], eos_token_id=EOS, stop_token_ids=[7, 8])
    assert _after(request, 5, 8)
    assert request.status == RequestStatus.FINISHED_STOPPED and request.stop_reason == 8


def test_stop_token_ids_apply_with_ignore_eos() -> None:
    request = make_request([1], eos_token_id=EOS, ignore_eos=True, stop_token_ids=[7])
    assert _after(request, EOS, 7)
    assert request.stop_reason == 7


def test_min_tokens_delays_eos_and_stop_tokens() -> None:
    request = make_request([1], eos_token_id=EOS, stop_token_ids=[7], min_tokens=3)
    assert not _after(request, EOS, 7)  # 1 and 2 outputs < min_tokens
    assert _after(request, 7)  # the 3rd output may stop
    assert request.stop_reason == 7


def test_max_tokens() -> None:
    request = make_request([1], max_tokens=2, eos_token_id=EOS)
    assert _after(request, 5, 6)
    assert request.status == RequestStatus.FINISHED_LENGTH_CAPPED
    assert request.get_finish_reason() == "length"


def test_max_model_len() -> None:
    request = make_request([1, 1, 1], max_tokens=50)
    assert not _after(request, 5, max_model_len=5)
    assert _after(request, 6, max_model_len=5)  # 5 tokens in total
    assert request.status == RequestStatus.FINISHED_LENGTH_CAPPED


def test_stop_token_beats_length_cap() -> None:
    request = make_request([1], max_tokens=1, eos_token_id=EOS)
    assert _after(request, EOS)
    assert request.status == RequestStatus.FINISHED_STOPPED
