"""Restricting attention metadata to a subset of a batch's requests, per backend.

The CPU backend is checked with vLLM's real CPU attention kernel: attention computed for a
sub-batch with the subset metadata must equal the same rows of the whole batch's attention.
FlashAttention and Triton attention (GPU only) are checked field by field on CPU tensors."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import vllm  # noqa: F401  (import order: the backends import from a fully loaded vllm)

from polar_vllm.compat.attention_metadata import (
    SUPPORTED_BACKENDS,
    UnsupportedAttentionBackend,
    check_attention_backend,
    subset_attention_metadata,
)

NUM_HEADS, NUM_KV_HEADS, HEAD_SIZE, BLOCK_SIZE = 6, 2, 64, 32
QUERY_LENS = (3, 1, 5, 1)
SEQ_LENS = (40, 9, 70, 33)
SUBSET = (1, 2)


def _offsets(lengths) -> torch.Tensor:
    return torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32)


def _cpu_batch(model_dir: str):
    from vllm import _custom_ops as ops
    from vllm.config import ModelConfig, VllmConfig, set_current_vllm_config
    from vllm.v1.attention.backends.cpu_attn import (
        CPUAttentionBackendImpl,
        CPUAttentionMetadata,
        _get_attn_isa,
    )

    torch.manual_seed(0)
    model_config = ModelConfig(model=model_dir, dtype="float32")
    with set_current_vllm_config(VllmConfig(model_config=model_config)):
        impl = CPUAttentionBackendImpl(
            NUM_HEADS, HEAD_SIZE, HEAD_SIZE**-0.5, NUM_KV_HEADS, None, None, "auto"
        )
    isa = _get_attn_isa(torch.float32, BLOCK_SIZE, HEAD_SIZE, "auto")
    layer = SimpleNamespace(impl=impl, isa=isa)
    blocks_per_request = 3
    block_table = torch.arange(len(QUERY_LENS) * blocks_per_request, dtype=torch.int32)
    block_table = block_table.reshape(len(QUERY_LENS), blocks_per_request)
    query_start_loc = _offsets(QUERY_LENS)
    seq_lens = torch.tensor(SEQ_LENS, dtype=torch.int32)
    scheduler_metadata = ops.cpu_attn_get_scheduler_metadata(
        num_reqs=len(QUERY_LENS),
        num_heads=NUM_HEADS,
        num_kv_heads=NUM_KV_HEADS,
        head_dim=HEAD_SIZE,
        seq_lens=seq_lens,
        dtype=torch.float32,
        query_start_loc=query_start_loc,
        causal=True,
        sliding_window_size=-1,
        isa=isa,
        enable_kv_split=False,
    )
    num_tokens = sum(QUERY_LENS)
    metadata = CPUAttentionMetadata(
        num_actual_tokens=num_tokens,
        max_query_len=max(QUERY_LENS),
        query_start_loc=query_start_loc,
        max_seq_len=max(SEQ_LENS),
        seq_lens=seq_lens,
        block_table=block_table,
        slot_mapping=torch.arange(num_tokens, dtype=torch.int64),
        scheduler_metadata=scheduler_metadata,
    )
    num_blocks = block_table.numel()
    kv_cache = torch.randn(num_blocks, NUM_KV_HEADS, BLOCK_SIZE, 2 * HEAD_SIZE)
    query = torch.randn(num_tokens, NUM_HEADS, HEAD_SIZE)
    return metadata, layer, kv_cache, query


def _cpu_attention(metadata, layer, kv_cache, query) -> torch.Tensor:
    output = torch.zeros_like(query)
    layer_params = SimpleNamespace(isa=layer.isa, _k_scale_float=1.0, _v_scale_float=1.0)
    layer.impl.forward(layer_params, query, None, None, kv_cache, metadata, output)
    return output


def _token_rows(subset) -> torch.Tensor:
    offsets = _offsets(QUERY_LENS).tolist()
    return torch.tensor([row for r in subset for row in range(offsets[r], offsets[r + 1])])


@pytest.mark.parametrize("offsets_given", [False, True])
def test_cpu_subset_attention_equals_the_batch_rows(smollm2_dir, offsets_given):
    """With query offsets from the caller (the batch plan) or computed from the lengths."""
    metadata, layer, kv_cache, query = _cpu_batch(smollm2_dir)
    rows = _token_rows(SUBSET)
    offsets = torch.tensor([0, 1, 6], dtype=torch.int32) if offsets_given else None
    sub = subset_attention_metadata(
        metadata,
        torch.tensor(SUBSET, dtype=torch.int32),
        [QUERY_LENS[r] for r in SUBSET],
        metadata.slot_mapping[rows],
        layer,
        torch.float32,
        query_start_loc=offsets,
    )
    assert sub.query_start_loc.tolist() == [0, 1, 6]
    assert sub.seq_lens.tolist() == [SEQ_LENS[r] for r in SUBSET]
    assert sub.block_table.tolist() == metadata.block_table[list(SUBSET)].tolist()
    assert (sub.num_actual_tokens, sub.max_query_len, sub.max_seq_len) == (6, 5, 70)
    whole = _cpu_attention(metadata, layer, kv_cache, query)
    part = _cpu_attention(sub, layer, kv_cache, query[rows].contiguous())
    torch.testing.assert_close(part, whole[rows], rtol=1e-5, atol=1e-5)


def _gpu_batch_fields() -> dict:
    """The fields FlashAttention and Triton metadata share, for the batch QUERY_LENS/SEQ_LENS."""
    return {
        "num_actual_tokens": sum(QUERY_LENS),
        "max_query_len": max(QUERY_LENS),
        "query_start_loc": _offsets(QUERY_LENS),
        "max_seq_len": max(SEQ_LENS),
        "seq_lens": torch.tensor(SEQ_LENS, dtype=torch.int32),
        "block_table": torch.arange(12, dtype=torch.int32).reshape(4, 3),
        "slot_mapping": torch.arange(sum(QUERY_LENS)),
    }


def _subset_requests(metadata, subset, dtype):
    """Restrict ``metadata`` to the requests ``subset``; check the fields every backend
    restricts (offsets, sequence lengths, block tables, slots, token counts)."""
    rows = _token_rows(subset)
    query_lens = [QUERY_LENS[r] for r in subset]
    index = torch.tensor(subset, dtype=torch.int32)
    sub = subset_attention_metadata(metadata, index, query_lens, rows, None, dtype)
    assert sub.query_start_loc.tolist() == _offsets(query_lens).tolist()
    assert sub.seq_lens.tolist() == [SEQ_LENS[r] for r in subset]
    assert sub.block_table.tolist() == metadata.block_table[list(subset)].tolist()
    assert sub.slot_mapping.tolist() == rows.tolist()
    assert (sub.num_actual_tokens, sub.max_query_len) == (sum(query_lens), max(query_lens))
    return sub


def _flash_metadata(**overrides):
    from vllm.v1.attention.backends.flash_attn import FlashAttentionMetadata

    fields = {**_gpu_batch_fields(), "scheduler_metadata": torch.zeros(8, dtype=torch.int32)}
    fields.update(overrides)
    return FlashAttentionMetadata(**fields)


def test_flash_attention_subset_fields():
    sub = _subset_requests(_flash_metadata(), (0, 3), torch.bfloat16)
    assert sub.query_start_loc.tolist() == [0, 3, 4]
    assert sub.slot_mapping.tolist() == [0, 1, 2, 9]
    assert sub.scheduler_metadata is None  # the batch's split schedule does not fit the subset
    assert (sub.num_decode_reqs, sub.num_prefill_reqs) == (1, 1)


def test_flash_attention_with_context_parallel_is_refused():
    metadata = _flash_metadata(dcp_context_kv_lens=torch.ones(4, dtype=torch.int32))
    with pytest.raises(UnsupportedAttentionBackend, match="dcp_context_kv_lens"):
        subset_attention_metadata(
            metadata, torch.tensor([0], dtype=torch.int32), [3], torch.arange(3), None, None
        )


def _triton_metadata(**overrides):
    from vllm.v1.attention.backends.triton_attn import TritonAttentionMetadata

    threshold, segments = 8, 16
    fields = {
        **_gpu_batch_fields(),
        "seq_threshold_3D": threshold,
        "num_par_softmax_segments": segments,
        "softmax_segm_output": torch.empty(threshold, NUM_HEADS, segments, HEAD_SIZE),
        "softmax_segm_max": torch.empty(threshold, NUM_HEADS, segments),
        "softmax_segm_expsum": torch.empty(threshold, NUM_HEADS, segments),
        "causal": True,
    }
    fields.update(overrides)
    return TritonAttentionMetadata(**fields)


def test_triton_attention_subset_fields():
    metadata = _triton_metadata()
    sub = _subset_requests(metadata, (1, 3), torch.float32)
    assert sub.seq_lens.tolist() == [9, 33]
    assert sub.slot_mapping.tolist() == [3, 9]
    # a decode-only sub-batch: its max query length lets the kernel take the 3D (split) path
    assert (sub.max_query_len, sub.max_seq_len) == (1, 70)
    # the split-softmax scratch is the builder's, sized for any decode batch up to the threshold
    assert sub.softmax_segm_output is metadata.softmax_segm_output
    assert metadata.seq_lens.tolist() == list(SEQ_LENS)  # the batch's metadata is untouched


def test_triton_attention_with_multimodal_prefix_ranges_is_refused():
    metadata = _triton_metadata(mm_prefix_range_tensor=torch.zeros(4, 2, dtype=torch.int32))
    with pytest.raises(UnsupportedAttentionBackend, match="mm_prefix_range_tensor"):
        subset_attention_metadata(
            metadata, torch.tensor([0], dtype=torch.int32), [3], torch.arange(3), None, None
        )


@pytest.mark.parametrize("name", sorted(SUPPORTED_BACKENDS))
def test_supported_backends_are_vllms_own(name):
    """Each supported backend name is a vLLM backend whose builder makes the metadata class
    that PoLar restricts, so the start-up check and the subsetting agree."""
    import typing

    from vllm.v1.attention.backends.registry import AttentionBackendEnum

    backend = AttentionBackendEnum[name].get_class()
    assert backend.get_name() == name
    metadata_class = typing.get_type_hints(backend.get_builder_cls().build)["return"]
    assert metadata_class.__name__ == SUPPORTED_BACKENDS[name][0]
    check_attention_backend(name)


def test_an_unsupported_backend_is_refused_at_start_with_the_remedy():
    with pytest.raises(UnsupportedAttentionBackend, match=r"FLASHINFER.*--attention-backend"):
        check_attention_backend("FLASHINFER")


def test_unknown_backend_fails_loudly():
    with pytest.raises(UnsupportedAttentionBackend, match="SimpleNamespace"):
        subset_attention_metadata(
            SimpleNamespace(),
            torch.tensor([0], dtype=torch.int32),
            [1],
            torch.arange(1),
            None,
            None,
        )
