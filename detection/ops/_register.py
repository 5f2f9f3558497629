"""Autograd, fake-tensor (meta) and quantized registrations for the compiled ops.

The C++/CUDA files register only device kernels; the backward formulas are themselves compiled ops
(`_roi_align_backward`, `_roi_pool_backward`) wired in here with `torch.library.register_autograd`,
so `torch.ops.detection.roi_align` is differentiable everywhere (eager, torch.compile, torch.export). Every op has a
fake kernel (shapes and dtypes only), which torch.compile / torch.export / `torch.library.opcheck` use; the NMS
ops' output length depends on the data (an unbacked symbolic size).

Quantized tensors (QuantizedCPU, per-tensor affine, as torchvision's quantized nms / roi_align take) are
dequantized, run through the float kernels and, for the RoI ops, quantized back with the input's scale, zero point
and dtype: the result is the float op's on the dequantized values, rounded once.
"""
import torch

_ops = torch.ops.detection


def _roi_align_setup(ctx, inputs, output):
    input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = inputs
    ctx.save_for_backward(rois)
    ctx.args = (spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned)
    ctx.input_shape = input.shape


def _roi_align_backward(ctx, grad_output):
    (rois,) = ctx.saved_tensors
    spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned = ctx.args
    b, c, h, w = ctx.input_shape
    grad_input = _ops._roi_align_backward(
        grad_output.contiguous(), rois, spatial_scale, pooled_height, pooled_width, b, c, h, w,
        sampling_ratio, aligned,
    )
    return grad_input, None, None, None, None, None, None


def _roi_pool_setup(ctx, inputs, output):
    input, rois, spatial_scale, pooled_height, pooled_width = inputs
    # argmax (output[1]) is an int32 tensor with no gradient: without this, autograd would build a zero
    # [K, C, ph, pw] gradient for it on every backward pass.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(rois, output[1])
    ctx.args = (spatial_scale, pooled_height, pooled_width)
    ctx.input_shape = input.shape


def _roi_pool_backward(ctx, grad_output, grad_argmax):
    if grad_output is None:
        return None, None, None, None, None
    rois, argmax = ctx.saved_tensors
    spatial_scale, pooled_height, pooled_width = ctx.args
    b, c, h, w = ctx.input_shape
    grad_input = _ops._roi_pool_backward(
        grad_output.contiguous(), rois, argmax, spatial_scale, pooled_height, pooled_width, b, c, h, w,
    )
    return grad_input, None, None, None, None


torch.library.register_autograd("detection::roi_align", _roi_align_backward, setup_context=_roi_align_setup)
torch.library.register_autograd("detection::roi_pool", _roi_pool_backward, setup_context=_roi_pool_setup)


# ----------------------------------------------------------------------------------------------------- fake kernels
def _is_cpu_channels_last(t):
    """The CPU RoIAlign answers a channels_last map with a channels_last output (csrc/cpu/roi_align_kernel.cpp)."""
    return (t.device.type == "cpu" and t.dim() == 4 and t.shape[1] > 1 and not t.is_contiguous()
            and t.is_contiguous(memory_format=torch.channels_last))


@torch.library.register_fake("detection::roi_align")
def _roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    torch._check(rois.dim() == 2 and rois.shape[1] == 5, lambda: "roi_align: rois must be a [K, 5] tensor")
    torch._check(input.dtype == rois.dtype, lambda: "roi_align: input and rois must have the same dtype")
    shape = (rois.shape[0], input.shape[1], pooled_height, pooled_width)
    if _is_cpu_channels_last(input):
        return input.new_empty(shape).contiguous(memory_format=torch.channels_last)
    return input.new_empty(shape)


@torch.library.register_fake("detection::_roi_align_backward")
def _roi_align_backward_fake(grad, rois, spatial_scale, pooled_height, pooled_width, batch_size, channels, height,
                             width, sampling_ratio, aligned):
    torch._check(grad.dtype == rois.dtype, lambda: "roi_align_backward: grad and rois must have the same dtype")
    return grad.new_empty((batch_size, channels, height, width))


@torch.library.register_fake("detection::roi_pool")
def _roi_pool_fake(input, rois, spatial_scale, pooled_height, pooled_width):
    torch._check(rois.dim() == 2 and rois.shape[1] == 5, lambda: "roi_pool: rois must be a [K, 5] tensor")
    torch._check(input.dtype == rois.dtype, lambda: "roi_pool: input and rois must have the same dtype")
    shape = (rois.shape[0], input.shape[1], pooled_height, pooled_width)
    return input.new_empty(shape), input.new_empty(shape, dtype=torch.int32)


@torch.library.register_fake("detection::_roi_pool_backward")
def _roi_pool_backward_fake(grad, rois, argmax, spatial_scale, pooled_height, pooled_width, batch_size, channels,
                            height, width):
    torch._check(argmax.dtype == torch.int32, lambda: "roi_pool_backward: argmax must be int32")
    return grad.new_empty((batch_size, channels, height, width))


def _kept_indices(boxes):
    """An int64 [M] tensor whose length M (<= N) depends on the data."""
    return boxes.new_empty((torch.library.get_ctx().new_dynamic_size(),), dtype=torch.int64)


@torch.library.register_fake("detection::nms")
def _nms_fake(dets, scores, iou_threshold):
    torch._check(dets.dim() == 2 and dets.shape[1] == 4, lambda: "nms: boxes must be a [N, 4] tensor")
    return _kept_indices(dets)


@torch.library.register_fake("detection::batched_nms")
def _batched_nms_fake(dets, scores, idxs, iou_threshold):
    torch._check(dets.dim() == 2 and dets.shape[1] == 4, lambda: "batched_nms: boxes must be a [N, 4] tensor")
    return _kept_indices(dets)


@torch.library.register_fake("detection::soft_nms")
def _soft_nms_fake(dets, scores, idxs, method, iou_threshold, sigma, min_score):
    torch._check(dets.dim() == 2 and dets.shape[1] == 4, lambda: "soft_nms: boxes must be a [N, 4] tensor")
    keep = _kept_indices(dets)
    return keep, scores.new_empty(keep.shape)


@torch.library.register_fake("detection::_winograd_f4x3_input")
def _winograd_input_fake(input, tile_begin, tile_end):
    return input.new_empty((36, tile_end - tile_begin, input.shape[1]))


@torch.library.register_fake("detection::_winograd_f4x3_output_")
def _winograd_output_fake(out, products, bias, tile_begin, relu):
    return None


# -------------------------------------------------------------------------------------------------------- quantized
_quantized = torch.library.Library("detection", "IMPL")


def _dequantized(*tensors):
    for t in tensors:
        if t.qscheme() not in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            raise RuntimeError(f"detection ops take quantized tensors per tensor only, got {t.qscheme()}")
    return [t.dequantize() for t in tensors]


def _requantized(out, like):
    return torch.quantize_per_tensor(out, like.q_scale(), like.q_zero_point(), like.dtype)


def _nms_quantized(dets, scores, iou_threshold):
    return _ops.nms(*_dequantized(dets, scores), iou_threshold)


def _batched_nms_quantized(dets, scores, idxs, iou_threshold):
    return _ops.batched_nms(*_dequantized(dets, scores), idxs, iou_threshold)


def _roi_align_quantized(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    out = _ops.roi_align(*_dequantized(input, rois), spatial_scale, pooled_height, pooled_width, sampling_ratio,
                         aligned)
    return _requantized(out, input)


def _roi_pool_quantized(input, rois, spatial_scale, pooled_height, pooled_width):
    out, argmax = _ops.roi_pool(*_dequantized(input, rois), spatial_scale, pooled_height, pooled_width)
    return _requantized(out, input), argmax


_quantized.impl("nms", _nms_quantized, "QuantizedCPU")
_quantized.impl("batched_nms", _batched_nms_quantized, "QuantizedCPU")
_quantized.impl("roi_align", _roi_align_quantized, "QuantizedCPU")
_quantized.impl("roi_pool", _roi_pool_quantized, "QuantizedCPU")
