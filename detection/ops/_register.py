"""Autograd and fake-tensor (meta) registrations for the compiled RoI ops.

The C++/CUDA files register only device kernels; the backward formulas are themselves compiled ops
(`_roi_align_backward`, `_roi_pool_backward`) wired in here with `torch.library.register_autograd`,
so `torch.ops.detection.roi_align` is differentiable everywhere (eager, TorchScript-free torch.compile).
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


@torch.library.register_fake("detection::roi_align")
def _roi_align_fake(input, rois, spatial_scale, pooled_height, pooled_width, sampling_ratio, aligned):
    shape = (rois.shape[0], input.shape[1], pooled_height, pooled_width)
    # the CPU kernel answers a channels_last map with a channels_last output (csrc/cpu/roi_align_kernel.cpp)
    if (input.device.type == "cpu" and input.dim() == 4 and input.shape[1] > 1
            and not input.is_contiguous() and input.is_contiguous(memory_format=torch.channels_last)):
        return input.new_empty(shape).contiguous(memory_format=torch.channels_last)
    return input.new_empty(shape)


@torch.library.register_fake("detection::roi_pool")
def _roi_pool_fake(input, rois, spatial_scale, pooled_height, pooled_width):
    shape = (rois.shape[0], input.shape[1], pooled_height, pooled_width)
    return input.new_empty(shape), input.new_empty(shape, dtype=torch.int32)


@torch.library.register_fake("detection::nms")
def _nms_fake(dets, scores, iou_threshold):
    ctx = torch.library.get_ctx()
    return dets.new_empty((ctx.new_dynamic_size(),), dtype=torch.int64)


@torch.library.register_fake("detection::_winograd_f4x3_input")
def _winograd_input_fake(input, tile_begin, tile_end):
    return input.new_empty((36, tile_end - tile_begin, input.shape[1]))


@torch.library.register_fake("detection::_winograd_f4x3_output_")
def _winograd_output_fake(out, products, bias, tile_begin, relu):
    return None
