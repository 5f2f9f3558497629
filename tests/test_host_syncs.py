"""Host synchronisations on the inference path, counted on the CPU (dev/host_syncs.py: what would make the host
wait for a GPU), so that a sync added to the detector fails here without a GPU."""
import torch

from detection.ops.shapes import host_values
from host_syncs import HostSyncCounter

# R50-FPN inference, one image, with torchvision's detector (the same weights) beside it: ours makes 7 on the CPU
# proxy (the RPN's and the detections' survivor masks, the RoIs' nonzero, two class-aware NMS calls, the pooler's
# level counts, the per-image split); torchvision 21 on its CPU path (per-class NMS above 1000 boxes), 22 per
# 800x1333 image on an H200 (torch.profiler's cudaStreamSynchronize, docs/benchmarks.md).
MAX_SYNCS_PER_INFERENCE = 8


def test_the_counter_counts_value_reads_masks_copies_and_nms_but_not_host_sizes():
    x = torch.arange(10.0)
    with HostSyncCounter() as counter:
        x[3].item()
        bool((x > 5).any())
        x[x > 7].sum()
        torch.where(x > 2)
        x.tolist()
        torch.ops.detection.nms(torch.tensor([[0.0, 0, 1, 1]]), torch.tensor([1.0]), 0.5)
        host_values(torch.tensor([3, 4]))  # a size computed on the host: no device to wait for
        x + 1
    assert counter.by_op == {"aten::_local_scalar_dense": 2, "aten::index (boolean mask)": 1, "aten::nonzero": 1,
                             "Tensor.tolist": 1, "detection::nms": 1}
    assert counter.total == 6 and "test_host_syncs.py" not in counter.report()  # places are the toolkit's


def test_r50_fpn_inference_syncs_no_more_than_torchvisions():
    from model_pairs import build_fpn_pair

    torch.manual_seed(0)
    ours, tv = build_fpn_pair(256, 320)
    images = [torch.rand(3, 256, 320)]
    counts = {}
    for name, model in (("ours", ours.eval()), ("torchvision", tv.eval())):
        with torch.no_grad():
            model(images)  # anchors cached, as in a serving loop
            with HostSyncCounter() as counter:
                model(images)
        counts[name] = counter
    ours_n, tv_n = counts["ours"].total, counts["torchvision"].total
    assert ours_n <= MAX_SYNCS_PER_INFERENCE and ours_n <= tv_n, counts["ours"].report()
