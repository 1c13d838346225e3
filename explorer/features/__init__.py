"""Features: from (model, dataset, settings) to checksummed entries in the on-disk store.

- `keys`: which images (`Selection`) and the content key of each feature matrix;
- `capture`: one forward pass, hooks at every requested block, pooling on the device, early exit;
- `job`, `extract`, `sharded`, `pixels`: the jobs that fill the store (one process or torchrun);
- `store`, `request_memo`, `cache_admin`, `sizes`: the cache on disk, what it holds, what it costs;
- `noise`, `streaming`, `host_memory`, `torchrun`: device noise, batched image decoding, heap reuse
  on the CPU and the ranks of a torchrun job.

Submodules are imported explicitly; this package imports nothing, so the CLI's cached fast path
(`explorer.features.request_memo`, `store`) never pulls in torch.
"""
