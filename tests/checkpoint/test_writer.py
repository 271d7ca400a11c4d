import pytest
import torch
from safetensors.torch import load_file

from step3_trt.checkpoint.reader import INDEX_FILE
from step3_trt.checkpoint.writer import (PlannedTensor, StreamingShardWriter, atomic_directory,
                                         write_tensors)


def test_shards_load_with_the_safetensors_library(tmp_path):
    gen = torch.Generator().manual_seed(0)
    tensors = [("a", torch.randn(3, 5, generator=gen)),
               ("b", torch.randn(7, generator=gen).to(torch.bfloat16)),
               ("c", torch.randint(0, 9, (2, 2, 2), generator=gen)),
               ("d", torch.randn(40, generator=gen).to(torch.float16))]
    files = write_tensors(tmp_path, tensors, max_shard_bytes=64)  # 60, 14, 64, 80 bytes
    assert len(files) == 4 and (tmp_path / INDEX_FILE).is_file()
    loaded = {}
    for f in files:
        loaded.update(load_file(str(tmp_path / f)))
    assert loaded.keys() == dict(tensors).keys()
    for name, t in tensors:
        assert loaded[name].dtype == t.dtype and torch.equal(loaded[name], t)


def test_out_of_order_and_incomplete_writes_are_refused(tmp_path):
    layout = [PlannedTensor("x", (2,), "float32"), PlannedTensor("y", (3,), "float32")]
    writer = StreamingShardWriter(tmp_path, layout)
    with pytest.raises(ValueError, match="expected tensor `x`"):
        writer.write("y", torch.zeros(3))
    with pytest.raises(ValueError, match=r"expected tensor `x` \[2\] float32 next, got `x` \[2\] "
                                         r"bfloat16"):
        writer.write("x", torch.zeros(2, dtype=torch.bfloat16))
    writer.write("x", torch.zeros(2))
    with pytest.raises(ValueError, match="only 1 of 2 declared tensors written"):
        writer.close()


def test_atomic_directory_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_directory(out) as tmp:
            (tmp / "config.json").write_text("{}")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    with atomic_directory(out) as tmp:
        (tmp / "done").write_text("1")
    assert (out / "done").is_file()
    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_directory(out):
            pass
