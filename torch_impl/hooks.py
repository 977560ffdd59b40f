"""The steps of the translation that code outside ``torch_impl`` may replace, by name.

Each hook is one step of the original computation (``docs/spec.md``) that a translation can get wrong
on its own, kept as one method, attribute or table entry so that it can be swapped for a naive
variant and the consequence measured: the pitfall gallery (``parity/gallery/``) installs every
naive translation through :func:`replaced` and nothing else of ``torch_impl``'s. Any other private
name may change without notice; these are kept, and ``tests/gallery/test_gallery.py`` checks that every one
resolves. ``tf_impl`` has the same methods because the twins mirror each other step for step; only
the torch side is declared replaceable.

A replacement takes the hook's signature (methods get ``self``; ``GatedResnet._skip`` gets
``(self, a, layer_call)`` where ``layer_call(layer, t)`` runs ``layer`` on ``t`` in the current mode).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import torch_impl
import torch_impl.block as _block
import torch_impl.ema as _ema
import torch_impl.layers as _layers
import torch_impl.mixture as _mixture
import torch_impl.model as _model
import torch_impl.ops as _ops
import torch_impl.optim as _optim
import torch_impl.pixelsnail as _pixelsnail
import torch_impl.train as _train

# name -> (owner, attribute, what it computes). An owner that is a dict has the attribute as a key.
HOOKS: dict[str, tuple[Any, str, str]] = {
    "nonlinearity.concat_elu": (_ops.NONLINEARITIES, "concat_elu", "concat_elu(x) = elu(concat([x, -x])) on channels"),
    "block.CHANNEL_MULTIPLIER": (_block, "CHANNEL_MULTIPLIER", "channels of nonlinearity(x) per channel of x"),
    "block.SECOND_CONV_INIT_SCALE": (_block, "SECOND_CONV_INIT_SCALE", "init_scale of the block's second conv (0.1)"),
    "GatedResnet._skip": (_block.GatedResnet, "_skip", "nin(nonlinearity(a), F)"),
    "GatedResnet._activate_c1": (_block.GatedResnet, "_activate_c1", "the nonlinearity between the convs"),
    "GatedResnet._dropout": (_block.GatedResnet, "_dropout", "element-wise dropout of c1"),
    "GatedResnet._condition": (_block.GatedResnet, "_condition", "h @ hw, broadcast over H and W"),
    "GatedResnet._split": (_block.GatedResnet, "_split", "value (first F channels), gate (last F)"),
    "layer._moments": (_layers._WeightNormLayer, "_moments", "biased mean and variance of the init pass"),
    "layer._init_direction": (_layers._WeightNormLayer, "_init_direction", "l2-normalised V the init measures with"),
    "layer._init_output": (_layers._WeightNormLayer, "_init_output", "what the init pass returns: s * (t - m)"),
    "conv._init_eps": (_layers._Convolution, "_init_eps", "the epsilon of the conv init's variance"),
    "conv._op": (_layers.WeightNormConv2D, "_op", "the convolution itself"),
    "conv.forward": (_layers.WeightNormConv2D, "forward", "a conv layer's whole forward"),
    "deconv._op": (_layers.WeightNormConv2DTranspose, "_op", "the transposed convolution, cropped to in * s + k - 1"),
    "deconv._norm_axes": (_layers.WeightNormConv2DTranspose, "_norm_axes", "the axes V's norm sums over"),
    "down_shifted._pre": (_layers.DownShiftedConv2D, "_pre", "the causal padding before the conv"),
    "ema.one_minus_decay": (_ema, "one_minus_decay", "1 - decay as TensorFlow computes it"),
    "update_averages": (torch_impl, "update_averages", "one Polyak update of every shadow"),
    "reset_averages": (torch_impl, "reset_averages", "shadows restart as copies"),
    "model.with_ones": (_model, "with_ones", "concat([x, ones]): the ones channel"),
    "model.down_pass_a": (_model, "down_pass_a", "the down pass's a of the ul blocks: concat([u, ul_skip])"),
    "model.PixelCNNpp.initialize": (_model.PixelCNNpp, "initialize", "the whole-model init pass"),
    "mixture.EDGE": (_mixture, "EDGE", "|x| beyond which the loss uses the tails (0.999)"),
    "model.right_shift": (_model, "right_shift", "the right shift of the ul stream's first 2x1 conv"),
    "model.output_elu": (_model, "elu", "the output's elu, nin_out(elu(ul)), whatever the blocks' nonlinearity"),
    "mixture.select_log_probs": (_mixture, "select_log_probs", "the loss's branch selection (nested where)"),
    "mixture.softplus": (_mixture, "softplus", "the loss's softplus, as TensorFlow's kernel and gradient"),
    "mixture.bits_per_dim": (_mixture, "bits_per_dim", "loss / (log(2) * B * H * W * 3)"),
    "mixture.sample_from_discretized_mix_logistic": (_mixture, "sample_from_discretized_mix_logistic", "one draw of every pixel"),
    "optim.OriginalAdam": (_optim, "OriginalAdam", "train.py's optimiser, nn.adam_updates"),
    "optim.original_schedule": (_optim, "original_schedule", "train.py's learning rate: lr * lr_decay ** s at step s"),
    "train.train_step": (_train, "train_step", "one training step: loss, gradients, Adam, Polyak update"),
    "train.loss": (_train, "discretized_mix_logistic_loss", "the loss a training step minimises (summed, in nats)"),
    "train.update_averages": (_train, "update_averages", "the Polyak update a training step runs"),
    "pixelsnail.plan": (_pixelsnail, "pixelsnail_plan", "the PixelSNAIL network's layers and their widths"),
    "pixelsnail.background": (_pixelsnail, "background", "the 6 coordinate channels (i - H/2) / H, (j - W/2) / W"),
    "pixelsnail.key_content": (_pixelsnail, "key_content", "the key block's input: concat([x, ul, background])"),
    "pixelsnail.split_raw": (_pixelsnail, "split_raw", "keys (the first K channels of the key nin), values (the rest)"),
    "pixelsnail.causal_mask": (_pixelsnail, "causal_mask", "the attention mask: j < i, pooled as -max_pool(-mask)"),
    "pixelsnail.attention_probs": (_pixelsnail, "attention_probs", "exp of the masked, shifted dots times the mask, / (sum + 1e-6)"),
}

_MISSING = object()


def current(name: str) -> Any:
    """The hook's value now."""
    owner, attr = _resolve(name)
    return owner[attr] if isinstance(owner, dict) else getattr(owner, attr)


def _resolve(name: str) -> tuple[Any, str]:
    if name not in HOOKS:
        raise KeyError(f"expected one of torch_impl.hooks.HOOKS ({', '.join(sorted(HOOKS))}); received {name!r}")
    owner, attr, _ = HOOKS[name]
    if not (attr in owner if isinstance(owner, dict) else hasattr(owner, attr)):
        raise AttributeError(f"torch_impl.hooks: {name} names {attr!r}, which the twin no longer has; update HOOKS")
    return owner, attr


@contextlib.contextmanager
def replaced(overrides: Mapping[str, Any]) -> Iterator[None]:
    """Swap the named hooks for the duration; always restored, in reverse order."""
    resolved = [(*_resolve(name), value) for name, value in overrides.items()]
    saved = []
    for owner, attr, value in resolved:
        if isinstance(owner, dict):
            saved.append((owner, attr, owner[attr]))
            owner[attr] = value
        else:
            saved.append((owner, attr, owner.__dict__.get(attr, _MISSING) if isinstance(owner, type) else getattr(owner, attr)))
            setattr(owner, attr, value)
    try:
        yield
    finally:
        for owner, attr, value in reversed(saved):
            if isinstance(owner, dict):
                owner[attr] = value
            elif value is _MISSING:
                delattr(owner, attr)
            else:
                setattr(owner, attr, value)
