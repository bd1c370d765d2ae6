"""Before/after of each performance change made to the library, in one process on the same inputs.

The "before" implementations are kept here verbatim (as they were in lwta_plugin.layers / models) and swapped in
temporarily, so every ratio compares the two versions under the same load:

* ``same_padding``: TF 'SAME' stride-2 conv as ``F.pad`` + conv (before) vs a symmetric conv padding with the
  kernel's zero row/column (after), the MNIST 64->64 3x3 stride-2 layer at 28x28 alone and in the whole model
  (the layer alone is sensitive to the allocator state left by the other candidate: run it in isolation too);
* ``exact_sampler``: U=2 winner mask from bool temporaries + a bool->float copy (before) vs comparing in place
  into the float uniforms, plus (inference only) multiplying into the fresh mask (after);
* ``shared_first_conv``: the input repeated n times through the whole body (before) vs the first conv computed
  once for the n draws of a pass (after), for an EOT gradient and S-sample inference;
* ``relaxed_training``: the U=2 training relaxation + winner KL as autograd expressions (before) vs the
  hand-written backward (after), one training step of the whole model.

Usage: python benchmarks/bench_changes.py [--full] [--images B] [--samples n]
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from common import compare, eval_model, inputs, parser, pick, report, setup, within

import lwta_plugin.layers as L
from lwta_plugin.eot import eot_gradient
from lwta_plugin.models import _repeat


# ------------------------------------------------------------------------------------- before (verbatim)
def _old_sample_winner_mask(h: torch.Tensor, dim: int) -> torch.Tensor:
    if h.shape[dim] == 2:
        h0, h1 = h.unbind(dim)
        win0 = torch.rand_like(h0) < torch.sigmoid(h0 - h1)
        return torch.stack((win0, ~win0), dim).to(h.dtype)
    idx = (h.detach() + L._gumbel_like(h)).argmax(dim, keepdim=True)
    return torch.zeros_like(h).scatter_(dim, idx, 1.0)


_new_lwta = L.lwta


def _old_lwta(h, dim, mode, temperature, straight_through=False):
    if mode == "sample":
        xi = _old_sample_winner_mask(h.detach(), dim)
        if straight_through and h.requires_grad:
            p = torch.softmax(h, dim)
            xi = xi + p - p.detach()
        return h * xi
    return _new_lwta(h, dim, mode, temperature, straight_through)


def _old_relaxed_lwta_with_kl(h, dim, temperature):
    if h.shape[dim] != 2:
        return L.lwta(h, dim, "relaxed", temperature), L.categorical_kl_to_uniform(h, dim).mean()
    h0, h1 = h.unbind(dim)
    d = h0 - h1
    xi0 = torch.sigmoid((d + torch.logit(torch.rand_like(d).clamp_(1e-6, 1 - 1e-6))) / temperature)
    out = torch.stack((h0 * xi0, h1 - h1 * xi0), dim)
    kl = F.logsigmoid(-d) + torch.sigmoid(d) * d
    return out, kl.flatten(1).sum(1).mean() + math.log(2.0) * d[0].numel()


def _old_padding_forward(self, x, n=1, shared=False):
    """StochasticConv2d.forward with the input padded by F.pad for TF 'SAME' (the version before), otherwise the
    current code (so that only the padding differs)."""
    ph, pw = L.same_padding(x.shape[2], self.kernel_size, self.stride), L.same_padding(
        x.shape[3], self.kernel_size, self.stride)
    if ph[0] != ph[1] or pw[0] != pw[1]:
        x = F.pad(x, (pw[0], pw[1], ph[0], ph[1]))
        pad = 0
    else:
        pad = (ph[0], pw[0])
    z = self._z(n)
    w = self.weight
    if z is not None and z.shape[0] == 1:
        w = w * z[0].repeat_interleave(self.U)[:, None, None, None]
        z = None
    if z is None:
        h = F.conv2d(x, w, self.bias, self.stride, pad)
        if shared and n > 1:
            h = h.repeat(n, 1, 1, 1)
    else:
        h = F.conv2d(x, w, None, self.stride, pad)
        zc = z.repeat_interleave(self.U, dim=1)[:, None, :, None, None]
        h = h.unsqueeze(0) if shared else h.view(zc.shape[0], -1, *h.shape[1:])
        h = torch.addcmul(self.bias[:, None, None], h, zc)
        h = h.view(-1, *h.shape[2:])
    B, _, H, W = h.shape
    out = self._activate(h, (B, self.K, self.U, H, W), 2)
    return self.bn(out) if self.bn is not None else out


@contextlib.contextmanager
def swapped(module, name, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


@contextlib.contextmanager
def unshared(model):
    """``model.raw`` without the shared first conv: the input repeated n times through the whole body."""
    model.raw = lambda x, n=1: model.body(_repeat(x - 0.5, n), n)
    try:
        yield
    finally:
        del model.raw


def main(argv: list[str] | None = None) -> dict:
    ap = parser(__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="lwta_ibp_tanh16")
    ap.add_argument("--images", type=int, default=None, help="images (small 10, full 100)")
    ap.add_argument("--samples", type=int, default=20, help="EOT draws n")
    ap.add_argument("--batch", type=int, default=200, help="training batch")
    args = ap.parse_args(argv)
    setup(args.threads, args.seed)
    B, n = pick(args, "images", 10, 100), args.samples
    repeat = pick(args, "repeat", 7, 7)
    model = eval_model(args.model, seed=args.seed)
    x, y = inputs(B, model.input_shape, model.n_classes, args.seed)
    rows = []

    def pair(change, what, before, after, reps=repeat):
        t = {k: v["median_s"] for k, v in compare({"before": before, "after": after}, repeat=reps,
                                                   warmup=args.warmup).items()}
        rows.append({"change": change, "what": what, "before_s": t["before"], "after_s": t["after"],
                     "speedup": t["before"] / t["after"]})
        print(rows[-1], flush=True)

    # same padding: the 28x28 -> 14x14 stride-2 layer on an EOT pass worth of rows
    rows_per_pass = 80
    hx = torch.randn(rows_per_pass, 64, 28, 28, requires_grad=True)
    w = torch.randn(64, 64, 3, 3)
    w4 = F.pad(w, (1, 0, 1, 0))
    g = torch.randn(rows_per_pass, 64, 14, 14)

    def conv_before(grad):
        def fn():
            out = F.conv2d(F.pad(hx, (0, 1, 0, 1)), w, None, 2)
            if grad:
                torch.autograd.grad(out, hx, g)
        return fn

    def conv_after(grad):
        def fn():
            out = F.conv2d(hx, w4, None, 2, 1)
            if grad:
                torch.autograd.grad(out, hx, g)
        return fn

    with torch.no_grad():
        pair("same_padding", f"conv 64->64 3x3/2 28x28, {rows_per_pass} rows, forward", conv_before(False),
             conv_after(False))
    pair("same_padding", f"conv 64->64 3x3/2 28x28, {rows_per_pass} rows, forward+backward", conv_before(True),
         conv_after(True))

    def infer():
        with torch.inference_mode():
            model.forward_samples_chunked(x, n)

    def grad():
        eot_gradient(model, x, y, "ce", n)

    def with_old_padding(fn):
        return within(lambda: swapped(L.StochasticConv2d, "forward", _old_padding_forward), fn)

    pair("same_padding", f"whole model: inference, {n} draws x {B} images", with_old_padding(infer), infer)
    pair("same_padding", f"whole model: EOT gradient, {n} draws x {B} images", with_old_padding(grad), grad)

    # exact sampler: whole model
    def with_old_sampler(fn):
        return within(lambda: swapped(L, "lwta", _old_lwta), fn)

    pair("exact_sampler", f"inference, {n} draws x {B} images", with_old_sampler(infer), infer)
    pair("exact_sampler", f"EOT gradient, {n} draws x {B} images", with_old_sampler(grad), grad)

    # shared first conv
    def no_share(fn):
        return within(lambda: unshared(model), fn)

    def infer5():
        with torch.inference_mode(), model.using(samples=5):
            model(x)

    pair("shared_first_conv", f"EOT gradient, {n} draws x {B} images", no_share(grad), grad)
    pair("shared_first_conv", f"S=5 inference, {B} images", no_share(infer5), infer5)

    # training relaxation: one step of the whole model (forward, KL, backward)
    train_model = eval_model(args.model, seed=args.seed).train()
    xt, yt = inputs(args.batch, train_model.input_shape, train_model.n_classes, args.seed)

    def step():
        loss, _ = train_model.loss(xt, yt)
        (loss + train_model.kl() / 55_000).backward()
        train_model.zero_grad(set_to_none=True)

    old_step = within(lambda: swapped(L, "relaxed_lwta_with_kl", _old_relaxed_lwta_with_kl), step)
    pair("relaxed_training", f"training step (forward+KL+backward), batch {args.batch}", old_step, step,
         reps=pick(args, "repeat", 3, 7))

    # one-hot argmax (deterministic LWTA, argmax sampling, U > 2 winners): torch.argmax along U vs comparing U slices
    max_model = eval_model(args.model.replace("lwta_ibp_", "lwtamax_").replace("lwta_", "lwtamax_"), seed=args.seed)
    xw = x.clone().requires_grad_()

    def input_grad():
        torch.autograd.grad(max_model(xw).sum(), xw)

    def old_argmax(h, dim):
        return torch.zeros_like(h).scatter_(dim, h.detach().argmax(dim, keepdim=True), 1.0)

    pair("argmax_mask", f"LWTAmax model, forward + input gradient, {B} images (a CW/PGD step)",
         within(lambda: swapped(L, "argmax_mask", old_argmax), input_grad), input_grad)

    # CW: backward() computed every weight's gradient too; autograd.grad(loss, w) computes the input's only
    def backward_all():
        max_model(xw).sum().backward()
        max_model.zero_grad(set_to_none=True)

    pair("cw_input_grad_only", f"LWTAmax model, forward + gradient, {B} images", backward_all, input_grad)

    report("changes", rows, ["change", "what", "before_s", "after_s", "speedup"],
           {"model": args.model, "images": B, "samples": n, "batch": args.batch, "repeat": repeat,
            "unit": "median seconds; speedup = before / after"}, args)
    return {"rows": rows}


if __name__ == "__main__":
    main()
