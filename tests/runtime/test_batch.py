"""Step batches: padding to a CUDA-graph bucket, and the buckets themselves."""

import pytest

from step3_trt.runtime.batch import make_batch
from step3_trt.runtime.cuda_graphs import batch_buckets
from step3_trt.runtime.request import Request
from step3_trt.runtime.scheduler import Chunk
from step3_trt.sampling import SamplingParams


def test_buckets_cover_every_batch_with_at_most_a_third_padding():
    for top in (1, 5, 16, 100, 256):
        b = batch_buckets(top)
        assert b == sorted(set(b)) and b[0] == 1 and b[-1] == top
        for n in range(1, top + 1):
            fit = next(x for x in b if x >= n)
            assert fit - n <= max(1, fit // 3), (top, n, fit)
    assert batch_buckets(16) == [1, 2, 3, 4, 6, 8, 12, 16]


def test_padding_rows_are_empty_sequences_that_write_no_kv():
    params = SamplingParams()
    chunks = [Chunk(Request(0, [5, 6], params), 2, [7], [9], True),
              Chunk(Request(1, [1], params), 1, [3], [20], True)]
    batch = make_batch(chunks, [[2, 4], [5]], "cpu", rows=4, table_width=6)
    assert batch.ids.tolist() == [7, 3, 0, 0]
    assert batch.positions.tolist() == [2, 1, 0, 0]
    assert batch.slot_mapping.tolist() == [9, 20, -1, -1]
    assert batch.seq_lens.tolist() == [3, 2, 0, 0]
    assert batch.cu_seqlens_q.tolist() == [0, 1, 2, 3, 4]
    assert batch.last_index.tolist() == [0, 1]  # logits only for the real sequences
    assert batch.block_tables.tolist() == [[2, 4, 0, 0, 0, 0], [5, 0, 0, 0, 0, 0]] + \
        [[0] * 6] * 2
    assert batch.is_decode
    with pytest.raises(ValueError, match="more than the 1"):
        make_batch(chunks, [[2, 4], [5]], "cpu", rows=4, table_width=1)
