"""PyTorch references for pfca_jax.bench, timed in the same interleaved rounds: eager training steps.

Used only when PyTorch is installed (it is not a dependency of the project). The references are the
networks our models reproduce: torchvision's resnet50 (and timm's seresnet50 when timm is there) for
resnet50, and BasicSR's MSRResNet definition, written out below, for msrresnet_x4. Each step is
forward, loss, backward and the same optimiser as our config (SGD momentum / Adam) on a fixed
random batch, with PyTorch's default thread count. On the CPU each reference runs in both layouts:
NCHW (PyTorch's default, what most users run) and channels_last (NHWC in memory, as ours, and
oneDNN's faster path on the CPU: experiments/results/speed.md, "Comparison with PyTorch eager");
on a CUDA GPU channels_last only, the layout its tensor-core convolutions want. With `--dtype
bfloat16` the forward runs under bf16 autocast, PyTorch's mixed precision (float32 weights, as ours
keep float32 parameters).
"""

import os
import time


def preload() -> None:
  """Imports PyTorch (and torchvision, timm) if installed; must run before TensorFlow is imported.

  PyTorch's OpenMP threads otherwise spin for a while after each parallel region, taking the cores
  from the JAX step timed next (experiments/results/speed.md, "Untimed step, passive OpenMP").
  """
  os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
  for module in ('torch', 'torchvision', 'timm'):
    try:
      __import__(module)
    except ImportError:
      pass


def _available():
  try:
    import torch  # noqa: F401
    return True
  except ImportError:
    return False


class TorchEntry:
  framework = 'torch'
  compile_s = None
  peak_bytes = None
  bytes_accessed = None
  hlo_ops = None

  def __init__(self, name, benchmark, model, optimizer, loss_fn, inputs, targets, batch, device, dtype):
    import torch
    self.name, self.benchmark, self.attention, self.batch = name, benchmark, 'torch', batch
    self.side = inputs.shape[-1]  # NCHW shape, whatever the memory format.
    self._torch, self._device = torch, device
    self._autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=dtype == 'bfloat16')
    self.model, self.optimizer, self.loss_fn = model.train(), optimizer, loss_fn
    self.inputs, self.targets = inputs, targets
    self.params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    self.run(1)  # Warm-up.

  def run(self, n: int) -> float:
    """Seconds per step over n steps, after one untimed step (see pfca_jax.bench.Entry.run)."""
    self._step()
    self._sync()
    t0 = time.perf_counter()
    for _ in range(n):
      self._step()
    self._sync()
    return (time.perf_counter() - t0) / n

  def _sync(self) -> None:
    """Waits for queued GPU work; eager PyTorch on the CPU has returned when each step has."""
    if self._device.type == 'cuda':
      self._torch.cuda.synchronize()

  def _step(self) -> None:
    self.optimizer.zero_grad(set_to_none=True)
    with self._torch.autocast(**self._autocast):
      outputs = self.model(self.inputs)
    loss = self.loss_fn(outputs.float(), self.targets)
    loss.backward()
    self.optimizer.step()


def msrresnet_x4():
  """BasicSR's MSRResNet (64 features, 16 residual blocks, x4), same initialisation scale (x0.1 Kaiming)."""
  import torch
  from torch import nn
  import torch.nn.functional as F

  class Block(nn.Module):
    def __init__(self, feat):
      super().__init__()
      self.conv1 = nn.Conv2d(feat, feat, 3, 1, 1)
      self.conv2 = nn.Conv2d(feat, feat, 3, 1, 1)

    def forward(self, x):
      return x + self.conv2(F.relu(self.conv1(x)))

  class MSRResNet(nn.Module):
    def __init__(self, feat=64, blocks=16):
      super().__init__()
      self.conv_first = nn.Conv2d(3, feat, 3, 1, 1)
      self.body = nn.Sequential(*[Block(feat) for _ in range(blocks)])
      self.upconv1 = nn.Conv2d(feat, feat * 4, 3, 1, 1)
      self.upconv2 = nn.Conv2d(feat, feat * 4, 3, 1, 1)
      self.conv_hr = nn.Conv2d(feat, feat, 3, 1, 1)
      self.conv_last = nn.Conv2d(feat, 3, 3, 1, 1)
      for m in self.modules():
        if isinstance(m, nn.Conv2d):
          nn.init.kaiming_normal_(m.weight)
          m.weight.data *= 0.1
          nn.init.zeros_(m.bias)

    def forward(self, x):
      act = lambda t: F.leaky_relu(t, 0.1)
      feat = act(self.conv_first(x))
      out = self.body(feat)
      out = act(F.pixel_shuffle(self.upconv1(out), 2))
      out = act(F.pixel_shuffle(self.upconv2(out), 2))
      out = self.conv_last(act(self.conv_hr(out)))
      return out + F.interpolate(x, scale_factor=4, mode='bilinear', align_corners=False)

  torch.manual_seed(0)
  return MSRResNet()


LAYOUTS = ('nchw', 'channels_last')


def entries(benchmarks: list[str], batch: int, log, dtype: str = 'float32', layouts=None,
            side: int | None = None) -> list:
  """The PyTorch references of the requested benchmarks that can be built here ([] without PyTorch).

  They run on the first CUDA GPU when PyTorch sees one, else on the CPU; `layouts` (a subset of
  LAYOUTS) defaults to both on the CPU and channels_last on a GPU. `side` overrides the input side
  (224 for ResNet-50, MSRResNet's LR 32), as the JAX entries' does.
  """
  if not _available():
    log('PyTorch is not installed: JAX figures only (pip install torch torchvision timm to add the references)')
    return []
  import torch
  device = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
  if layouts is None:
    layouts = ('channels_last',) if device.type == 'cuda' else LAYOUTS
  result = []
  for layout in layouts:
    result += _references(benchmarks, batch, log, dtype, device, layout, side)
  return result


def _references(benchmarks, batch, log, dtype, device, layout, side):
  import torch
  from torch import nn
  memory_format = torch.channels_last if layout == 'channels_last' else torch.contiguous_format
  place = lambda t: t.to(device, memory_format=memory_format) if t.dim() == 4 else t.to(device)
  prepare = lambda model: model.to(device, memory_format=memory_format)
  suffix = f'(eager, {device.type}, {layout}{", bf16 autocast" if dtype == "bfloat16" else ""})'
  result = []
  if 'resnet50' in benchmarks:
    images = place(torch.randn(batch, 3, side or 224, side or 224))
    labels = place(torch.randint(0, 1000, (batch,)))
    references = []
    try:
      import torchvision
      references.append((f'torchvision resnet50 {suffix}', prepare(torchvision.models.resnet50())))
    except ImportError:
      log('torchvision is not installed: no torchvision resnet50 reference')
    try:
      import timm
      references.append((f'timm seresnet50 {suffix}', prepare(timm.create_model('seresnet50', pretrained=False))))
    except ImportError:
      log('timm is not installed: no seresnet50 reference')
    for name, model in references:
      optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
      result.append(TorchEntry(name, 'resnet50', model, optimizer, nn.CrossEntropyLoss(), images, labels, batch,
                               device, dtype))
      log(f'ready: {name}')
  if 'msrresnet_x4' in benchmarks:
    model = prepare(msrresnet_x4())
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-4, betas=(0.9, 0.99))
    lr_side = side or 32
    lr, hr = place(torch.rand(batch, 3, lr_side, lr_side)), place(torch.rand(batch, 3, 4 * lr_side, 4 * lr_side))
    name = f'BasicSR msrresnet_x4 {suffix}'
    result.append(TorchEntry(name, 'msrresnet_x4', model, optimizer, nn.L1Loss(), lr, hr, batch, device, dtype))
    log(f'ready: {name}')
  return result
