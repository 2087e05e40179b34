"""Parametric push-forward map ``h: x_0 -> x_T`` learnt from flowed particles (section 6.3).

After a flow, the pairs ``(x_0^i, x_T^i)`` of the particles' initial and final features
are a regression data set; a network fitted to them moves samples that were never
flowed (``x_hat_T = h(x)``).  Architectures (appendix C):

* ``autoencoder`` for images: an encoder of 2 convolutions (3x3, stride 2) + 5 fully
  connected layers and a decoder that mirrors it (5 fully connected + 2 transposed
  convolutions);
* ``mlp`` for vector data, residual by default (``h(x) = x + g(x)``) since flows often
  move data only a little.

Training: Adam (lr 1e-3), ``epochs`` (default 20), ``restarts`` random restarts (paper:
10) and the restart with the smallest mean squared error on a held-out split of the
particles wins.  Inputs and outputs are standardised with one global mean/std
(of ``x_0`` and ``x_T`` together) stored in the model.  "MSE" everywhere is the mean of
squared errors over samples *and* coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

PUSHFORWARD_ARCHITECTURES = ("auto", "autoencoder", "mlp")


class ConvAutoencoder(nn.Module):
    """2 conv + 5 FC encoder; mirrored decoder.  Maps ``(n, C, H, W)`` to the same shape."""

    def __init__(self, image_shape: Sequence[int], channels: Sequence[int] = (16, 32),
                 hidden: Sequence[int] = (512, 256, 128, 128, 64)):
        super().__init__()
        c, h, w = (int(s) for s in image_shape)
        if len(channels) != 2 or len(hidden) != 5:
            raise ValueError("ConvAutoencoder: channels needs 2 entries and hidden 5 (2 conv + 5 FC layers)")
        c1, c2 = (int(v) for v in channels)
        sizes = [(h, w)]
        for _ in range(2):
            ph, pw = sizes[-1]
            sizes.append(((ph + 1) // 2, (pw + 1) // 2))  # 3x3 conv, stride 2, padding 1
        flat = c2 * sizes[2][0] * sizes[2][1]
        dims = [flat, *(int(v) for v in hidden)]
        enc: list[nn.Module] = [nn.Conv2d(c, c1, 3, 2, 1), nn.ReLU(), nn.Conv2d(c1, c2, 3, 2, 1), nn.ReLU(), nn.Flatten()]
        for i in range(5):
            enc.append(nn.Linear(dims[i], dims[i + 1]))
            enc.append(nn.ReLU())
        dec: list[nn.Module] = []
        for i in range(5, 0, -1):
            dec.append(nn.Linear(dims[i], dims[i - 1]))
            dec.append(nn.ReLU())
        dec.append(nn.Unflatten(1, (c2, *sizes[2])))

        def out_pad(small, big):  # transposed conv 3x3 stride 2 padding 1 gives 2*small - 1 + pad
            return (big[0] - (2 * small[0] - 1), big[1] - (2 * small[1] - 1))

        dec += [nn.ConvTranspose2d(c2, c1, 3, 2, 1, output_padding=out_pad(sizes[2], sizes[1])), nn.ReLU(),
                nn.ConvTranspose2d(c1, c, 3, 2, 1, output_padding=out_pad(sizes[1], sizes[0]))]
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def forward(self, x):
        return self.decoder(self.encoder(x))


class MLPMap(nn.Module):
    """``d -> hidden... -> d`` ReLU network."""

    def __init__(self, dim: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        width = int(dim)
        for hdim in hidden:
            layers += [nn.Linear(width, int(hdim)), nn.ReLU()]
            width = int(hdim)
        layers.append(nn.Linear(width, int(dim)))
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class PushForwardNet(nn.Module):
    """Flattened rows in, flattened rows out; standardisation and optional residual inside."""

    def __init__(self, body: nn.Module, *, dim: int, image_shape=None, residual: bool = False):
        super().__init__()
        self.body = body
        self.dim = int(dim)
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        self.residual = bool(residual)
        self.register_buffer("shift", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))

    def forward(self, x):
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"push-forward map expects rows of {self.dim} features, got shape {tuple(x.shape)}")
        z = (x - self.shift) / self.scale
        out = self.body(z.reshape(x.shape[0], *self.image_shape) if self.image_shape else z).reshape(x.shape[0], -1)
        if self.residual:
            out = out + z
        return out * self.scale + self.shift


def make_pushforward_net(dim: int, image_shape=None, architecture: str = "auto", residual: bool | None = None,
                         **options) -> PushForwardNet:
    arch = str(architecture).lower()
    if arch not in PUSHFORWARD_ARCHITECTURES:
        raise ValueError(f"unknown push-forward architecture {architecture!r}; valid: {PUSHFORWARD_ARCHITECTURES}")
    is_image = image_shape is not None and len(image_shape) == 3
    if arch == "auto":
        arch = "autoencoder" if is_image else "mlp"
    if arch == "autoencoder":
        if not is_image:
            raise ValueError(f"the autoencoder push-forward needs image data (image_shape (C, H, W)); got {image_shape}")
        body = ConvAutoencoder(image_shape, **options)
        return PushForwardNet(body, dim=dim, image_shape=image_shape, residual=bool(residual) if residual is not None else False)
    body = MLPMap(dim, **options)
    return PushForwardNet(body, dim=dim, residual=True if residual is None else bool(residual))


@dataclass
class PushForward:
    """A fitted push-forward map; call it on new samples (batched, no grad)."""

    model: PushForwardNet
    val_mse: float
    identity_val_mse: float
    best_restart: int
    history: list[dict] = field(default_factory=list)  # per restart: train_mse, val_mse per epoch
    val_index: Any = None

    @torch.no_grad()
    def __call__(self, x, batch_size: int = 1024):
        from dsflow.models.networks import batched_apply

        x = torch.as_tensor(x)
        dev = self.model.shift.device
        dtype = x.dtype if torch.is_floating_point(x) else torch.float32
        return batched_apply(lambda b: self.model(b.to(self.model.shift.dtype)).to(dtype), x, batch_size, dev)

    @torch.no_grad()
    def mse(self, x0, xT) -> float:
        """Mean squared error of ``h(x0)`` against ``xT`` (over samples and coordinates)."""
        return float(((self(x0).double().cpu() - torch.as_tensor(xT).double().cpu()) ** 2).mean())

    def report(self, x, *, oracle=None, y=None, x_target=None) -> dict:
        """Apply to not-flowed samples ``x``; with ``x_target`` report the MSE, with an oracle
        and true labels ``y`` its accuracy on the mapped samples (and on ``x`` unmapped)."""
        mapped = self(x)
        out: dict[str, Any] = {"fit_val_mse": self.val_mse, "identity_val_mse": self.identity_val_mse, "n": int(mapped.shape[0])}
        if x_target is not None:
            out["mse"] = float(((mapped.double().cpu() - torch.as_tensor(x_target).double().cpu()) ** 2).mean())
        if oracle is not None and y is not None:
            from dsflow.models.evaluation import accuracy

            out["accuracy_mapped"] = accuracy(oracle, mapped, y)
            out["accuracy_unmapped"] = accuracy(oracle, x, y)
        return out


def check_pushforward_options(options: dict, *, dim: int, image_shape=None, n: int | None = None) -> None:
    """Validate the ``pushforward.*`` config before the flow (a bad value would otherwise
    surface only after every flow step).  ``options`` are the keyword arguments of
    `fit_pushforward` (``enabled`` removed); ``n`` is the number of flowed particles.  Builds
    the network once (no training) so that a bad ``architecture``/``options`` fails now."""
    from dsflow.config_checks import ConfigValueError

    options = dict(options)
    known = {"architecture", "epochs", "lr", "batch_size", "restarts", "val_fraction", "seed", "residual", "options"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigValueError(f"pushforward.{unknown[0]} is not a push-forward option; valid: {sorted(known)}")

    def whole(key, minimum):
        v = options.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < minimum):
            raise ConfigValueError(f"pushforward.{key}={v!r} is not valid: use a whole number >= {minimum}")

    whole("epochs", 0)
    whole("restarts", 1)
    whole("batch_size", 1)
    lr = options.get("lr")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0):
        raise ConfigValueError(f"pushforward.lr={lr!r} is not valid: use a positive number, e.g. pushforward.lr=1e-3")
    vf = options.get("val_fraction")
    if vf is not None and (isinstance(vf, bool) or not isinstance(vf, (int, float)) or not 0 < vf < 1):
        raise ConfigValueError(f"pushforward.val_fraction={vf!r} is not valid: use a fraction in (0, 1), e.g. 0.2")
    arch = str(options.get("architecture", "auto")).lower()
    if arch not in PUSHFORWARD_ARCHITECTURES:
        raise ConfigValueError(f"pushforward.architecture={options.get('architecture')!r} is not valid; use one of "
                               f"{', '.join(PUSHFORWARD_ARCHITECTURES)}")
    if n is not None:
        n_val = max(1, int(round(float(vf if vf is not None else 0.2) * n)))
        if n - n_val < 1:
            raise ConfigValueError(f"pushforward: {n} flowed particles are too few to hold out a validation split "
                                   "(pushforward.val_fraction); flow more samples or lower holdout")
    try:
        make_pushforward_net(dim, image_shape, arch, options.get("residual"), **dict(options.get("options") or {}))
    except (TypeError, ValueError) as err:
        raise ConfigValueError(f"pushforward.architecture={arch} with pushforward.options="
                               f"{dict(options.get('options') or {})}: {err}") from None


def fit_pushforward(x0, xT, *, image_shape=None, architecture: str = "auto", epochs: int = 20, lr: float = 1e-3,
                    batch_size: int = 64, restarts: int = 10, val_fraction: float = 0.2, seed: int = 0, device=None,
                    residual: bool | None = None, options: dict | None = None,
                    progress: bool | None = None) -> PushForward:
    """Fit ``h`` with ``h(x0[i]) ~ xT[i]`` (see module docstring); returns the best restart.

    ``x0``/``xT`` are ``(n, d)`` (or `LabeledData`, whose ``image_shape`` is then used).
    ``progress``: one bar over all ``restarts x epochs`` on a terminal
    (`dsflow.models.training.progress_bar`; ``None``: the `show_progress` setting).
    """
    from dsflow.data.container import LabeledData
    from dsflow.models.training import progress_bar, resolve_device, small_model_threads

    if isinstance(x0, LabeledData):
        image_shape = image_shape or x0.image_shape
        x0 = x0.x
    if isinstance(xT, LabeledData):
        xT = xT.x
    x0, xT = torch.as_tensor(x0).detach(), torch.as_tensor(xT).detach()
    if x0.ndim != 2 or x0.shape != xT.shape:
        raise ValueError(f"fit_pushforward: x0 and xT must both be (n, d) with the same shape, got {tuple(x0.shape)} and {tuple(xT.shape)}")
    if not 0 < val_fraction < 1:
        raise ValueError(f"fit_pushforward: val_fraction must be in (0, 1), got {val_fraction}")
    if restarts < 1 or epochs < 0:
        raise ValueError(f"fit_pushforward: restarts must be >= 1 and epochs >= 0, got {restarts}, {epochs}")
    n, d = x0.shape
    n_val = max(1, int(round(val_fraction * n)))
    if n - n_val < 1:
        raise ValueError(f"fit_pushforward: {n} particles are too few to hold out a validation split")
    device = resolve_device(device)
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)
    val_idx, tr_idx = perm[:n_val], perm[n_val:]
    x0f, xTf = x0.to(device, torch.float32), xT.to(device, torch.float32)
    xtr, ytr, xval, yval = x0f[tr_idx.to(device)], xTf[tr_idx.to(device)], x0f[val_idx.to(device)], xTf[val_idx.to(device)]
    both = torch.cat([xtr, ytr])
    shift, scale = both.mean(), both.std().clamp_min(1e-8)
    identity = float(((xval.double() - yval.double()) ** 2).mean())

    best = None
    history = []
    bar = progress_bar(int(restarts) * int(epochs), "push-forward fit", progress)
    try:
        for r in range(int(restarts)):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(seed) * 1000 + r)
                net = make_pushforward_net(d, image_shape, architecture, residual, **dict(options or {}))
            net.shift.fill_(shift)
            net.scale.fill_(scale)
            net.to(device)
            opt = torch.optim.Adam(net.parameters(), lr=float(lr))
            g = torch.Generator().manual_seed(int(seed) * 1000 + r)
            rec = {"train_mse": [], "val_mse": []}
            with small_model_threads(net, device):
                _train_restart(net, opt, g, rec, xtr, ytr, xval, yval, epochs=int(epochs),
                               batch_size=int(batch_size), device=device, bar=bar, restart=r)
            final = rec["val_mse"][-1] if rec["val_mse"] else _mse(net, xval, yval)
            rec["final_val_mse"] = final
            history.append(rec)
            if best is None or final < best[0]:
                best = (final, r, net)
    finally:
        if bar is not None:
            bar.close()
    net = best[2].eval().requires_grad_(False)
    return PushForward(model=net, val_mse=best[0], identity_val_mse=identity, best_restart=best[1],
                       history=history, val_index=val_idx)


def _train_restart(net, opt, g, rec, xtr, ytr, xval, yval, *, epochs, batch_size, device, bar=None,
                   restart=0) -> None:
    """Train one restart for ``epochs`` epochs, appending train / held-out MSE per epoch to ``rec``
    (and advancing the progress ``bar``, when there is one, by one epoch)."""
    for _ in range(int(epochs)):
        net.train()
        order = torch.randperm(xtr.shape[0], generator=g).to(device)
        total = torch.zeros((), device=device)
        for s in range(0, xtr.shape[0], int(batch_size)):
            idx = order[s : s + int(batch_size)]
            loss = ((net(xtr[idx]) - ytr[idx]) ** 2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.detach() * idx.numel()
        rec["train_mse"].append(float(total) / xtr.shape[0])
        rec["val_mse"].append(_mse(net, xval, yval))
        if bar is not None:
            bar.set_postfix(restart=restart, val_mse=f"{rec['val_mse'][-1]:.3g}", refresh=False)
            bar.update(1)


@torch.no_grad()
def _mse(net, x, y) -> float:
    net.eval()
    return float(((net(x).double() - y.double()) ** 2).mean())
